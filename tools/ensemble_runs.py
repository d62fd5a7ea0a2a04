"""What several fitted hybrids would score together: reciprocal-rank fusion of their served rankings, on `hybridrec
evaluate`'s protocol (every catalog movie ranked, every user counted, seen movies masked).

    .venv/bin/python tools/ensemble_runs.py runs/exp/det8/runs/hybrid-s0 runs/exp/det8/runs/hybrid-s1 [--data DIR]

A diagnostic, not a served model: serving K hybrids costs K times the model. It measures how much of a fit's error
is its seed's variance (what averaging fits removes) rather than the model's bias (what it keeps). Prints each run's
validation and test NDCG@10 / HR@10 as served, then two fusions of all the runs:

- ``rrf``: sum over runs of 1 / (60 + served rank), the runs weighted equally (no weight is chosen, so validation
  and test are read the same way);
- ``retrieval_z``: the sum of the runs' per-user z-scored retrieval dot products (the ensemble of the retrievals
  alone, before any rerank).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hybridrec.data import load_movielens, resolve_data_dir
from hybridrec.training.evaluation.hybrid import HybridScorer
from hybridrec.training.evaluation.metrics import evaluate_ranking, row_ranks
from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split
from hybridrec.training.train import load_run_config

RRF_K = 60.0  # reciprocal-rank fusion's usual constant


def rrf(scores: list[np.ndarray]) -> np.ndarray:
    """Reciprocal-rank fusion [B, I] of several score matrices [B, I] (0-based ranks by descending score)."""
    fused = np.zeros(scores[0].shape, dtype=np.float64)
    for s in scores:
        fused += 1.0 / (RRF_K + row_ranks(s))
    return fused


def zsum(scores: list[np.ndarray]) -> np.ndarray:
    """The sum of per-row z-scores [B, I]."""
    fused = np.zeros(scores[0].shape, dtype=np.float64)
    for s in scores:
        fused += (s - s.mean(1, keepdims=True)) / np.maximum(s.std(1, keepdims=True), 1e-12)
    return fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders of `hybridrec train` (at least 2)")
    parser.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give at least 2 runs")
    data = load_movielens(resolve_data_dir(args.data))
    ix = leave_one_out_split(data).indexed(ItemIndex.from_data(data))
    scorers = [HybridScorer(load_run_config(run), run, data).load() for run in args.runs]
    score_fns = {
        **{run: scorer.score for run, scorer in zip(args.runs, scorers, strict=True)},
        "rrf": lambda users, hist: rrf([s.score(users, hist) for s in scorers]),
        "retrieval_z": lambda users, hist: zsum([s.retrieval_scores(users, hist) for s in scorers]),
    }
    out: dict[str, dict[str, float]] = {}
    for name, fn in score_fns.items():
        for stage in ("valid", "test"):
            summary = evaluate_ranking(fn, *ix.stage(stage)).summary()
            out.setdefault(name, {}).update({f"{stage}_{k}": round(summary[k], 4) for k in ("ndcg@10", "hr@10")})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
