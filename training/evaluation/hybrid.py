"""Full-ranking evaluation of a trained hybrid run, on the same leave-one-out protocol as the baselines.

Every catalog movie is a candidate (its embedding from the exported catalog, i.e. exactly what `recommend` serves);
the user's training + validation items are masked; the test item is the target. Two scorers are reported: the fusion
head over all items (what `rank` computes) and the dot product alone (what `recommend` retrieves with).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hybridrec.data import MovieLensData
from hybridrec.export.catalog import CatalogEmbeddings
from hybridrec.preprocessing import encode_history
from hybridrec.training.evaluation.metrics import RankingResult, target_ranks
from hybridrec.training.train import leave_one_out, load_model


def full_ranking(
    run_dir: str | Path, repo: str | Path, data: MovieLensData, chunk: int = 32
) -> dict[str, RankingResult]:
    model, artifacts = load_model(run_dir)
    train, val, test = leave_one_out(data.histories())
    cat = CatalogEmbeddings.load(repo)
    movie_ids = cat.movie_ids[cat.valid]
    emb = torch.from_numpy(cat.embeddings[cat.valid])
    column = {int(m): i for i, m in enumerate(movie_ids)}
    users = sorted(u for u in test if test[u] in column)
    ranks: dict[str, list[np.ndarray]] = {"fusion": [], "dot": []}
    with torch.no_grad():
        for start in range(0, len(users), chunk):
            part = users[start : start + chunk]
            hist = [np.append(train[u], val[u]) for u in part]
            user = model.sequence_encoder(
                torch.from_numpy(np.stack([encode_history(h.tolist(), artifacts) for h in hist]))
            )
            logits, _, _ = model.fusion_head.logits(user, emb.unsqueeze(0).expand(len(part), -1, -1))
            targets = [column[test[u]] for u in part]
            seen = [np.array([column[int(m)] for m in h if int(m) in column], dtype=np.int64) for h in hist]
            ranks["fusion"].append(target_ranks(logits.numpy().copy(), targets, seen))
            ranks["dot"].append(target_ranks((user @ emb.T).numpy(), targets, seen))
    order = np.array(users, dtype=np.int64)
    return {name: RankingResult(order, np.concatenate(r)) for name, r in ranks.items()}
