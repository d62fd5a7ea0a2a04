"""The hybrid as a full-ranking scorer over the whole catalog (numbers are not asserted: a tiny CI model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.training.evaluation.hybrid import HybridScorer
from hybridrec.training.evaluation.metrics import evaluate_ranking
from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split

pytestmark = pytest.mark.export


def test_hybrid_scorer_ranks_the_catalog_like_recommend(tiny_run: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    from hybridrec.training.train import load_run_config

    data = dataset.subset(24)
    scorer = HybridScorer(load_run_config(tiny_run), tiny_run, data).load()
    ix = leave_one_out_split(data).indexed(ItemIndex.from_data(data))
    users, hist, targets = ix.stage("test")
    scores = scorer.score(users[:3], [hist[u] for u in users[:3]])
    assert scores.shape == (3, ix.num_items) and np.isfinite(scores).all()
    for row, u in zip(scores, users[:3], strict=True):
        retrieved = row >= 0.0  # reranked by the fusion head: sigmoid scores; everything else is below 0
        assert retrieved.sum() == spec.RETRIEVAL_DEPTH
        assert not retrieved[hist[u]].any()  # seen items are never retrieved
        assert (row[retrieved] <= 1.0).all()
    # every item the rerank leaves below the retrieved ones keeps its dot product, shifted by one constant per user
    dot = scorer.retrieval_scores(users[:3], [hist[u] for u in users[:3]])
    assert dot.shape == scores.shape
    for served, retrieval in zip(scores, dot, strict=True):
        shift = served[served < 0.0] - retrieval[served < 0.0]
        np.testing.assert_allclose(shift, shift[0], atol=1e-5)
    result = evaluate_ranking(scorer.score, users, hist, targets).summary()
    assert result["users"] == len(users) and 0.0 <= result["ndcg@10"] <= result["hr@10"] <= 1.0
