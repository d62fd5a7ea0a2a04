"""Headroom for an interaction autoencoder in the hybrid: how far a late blend of the hybrid's scores with EASE's
(Steck's linear autoencoder over the user's *whole* history, the "linear cousin" of Mult-VAE) ranks above either.

    .venv/bin/python tools/ease_headroom.py runs/exp/wd4/runs/hybrid-s0 runs/exp/wd4/runs/hybrid-s1 \
        [--data DIR] [--window 50] [--other popularity]

A diagnostic, not a served model: it estimates what an F_ae that reads the history as a bag could add. ``--window N``
scores EASE from each user's last N items only (still fitted on whole rows): with N = ``spec.HISTORY_LENGTH``, what
such an F_ae could add on today's served history input, without widening the spec. Runs should be
fitted with ``data.train_gap=1`` (the hybrid never saw the validation user's last training item), so EASE is fitted
on the same gapped training rows and validation mimics test for both; its lambda and the blend weight are chosen on
validation only. Per run it prints validation and test NDCG@10 (and test HR@10, and test NDCG@10 of the users with
166+ training items, docs/results.md's heaviest quarter) for the hybrid as served, its retrieval's dot product
alone, EASE alone, and three blends, each weight a picked from ``BLENDS`` on validation:

- ``blend_dot``: z-scored dot product + a * z-scored EASE score, per user;
- ``blend_rrf``: reciprocal-rank fusion of the served ranking with EASE's, 1 / (60 + rank) + a / (60 + EASE rank);
- ``blend_rrf_by_length``: the same with one weight per quarter of history length (``LENGTH_EDGES``).

``--other popularity`` blends log(1 + the Popularity baseline's count) of each movie instead of EASE (the "ease"
keys then hold it): what an item bias in the retrieval's logits could add, as SASRec-CE's free embeddings carry
popularity in their norm while the item tower's LayerNorm takes it out of the dot product.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hybridrec.data import load_movielens, resolve_data_dir
from hybridrec.training.evaluation.baselines.ease import EASE
from hybridrec.training.evaluation.baselines.popularity import Popularity
from hybridrec.training.evaluation.baselines.scorer import LOWEST
from hybridrec.training.evaluation.hybrid import HybridScorer
from hybridrec.training.evaluation.metrics import ranking_values, target_ranks
from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split
from hybridrec.training.train import load_run_config

BLENDS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RRF_K = 60.0  # reciprocal-rank fusion's usual constant
HEAVY = 166  # training items: docs/results.md's heaviest quarter of test users
LENGTH_EDGES = (33, 68, HEAVY)  # docs/results.md's four groups of test users by training items


def _z(scores: np.ndarray) -> np.ndarray:
    """Per-user z-scores over the catalog (finite scores only: EASE gives untrained items its lowest value)."""
    s = np.where(np.isfinite(scores) & (scores > LOWEST), scores, np.nan).astype(np.float64)
    mean, std = np.nanmean(s, axis=1, keepdims=True), np.nanstd(s, axis=1, keepdims=True)
    return np.nan_to_num((s - mean) / np.maximum(std, 1e-12), nan=-1e6)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Per-user 0-based rank of every item by descending score."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks.astype(np.float64)


def _per_user(scores: np.ndarray, targets: list[int], seen: list[np.ndarray]) -> dict[str, np.ndarray]:
    return ranking_values(target_ranks(scores.copy(), targets, seen), 10)


def _summary(v: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    return {
        "ndcg@10": float(v["ndcg@10"].mean()),
        "hr@10": float(v["hr@10"].mean()),
        "heavy_ndcg@10": float(v["ndcg@10"][rows].mean()),
    }


def _values(scores: np.ndarray, targets: list[int], seen: list[np.ndarray], rows: np.ndarray) -> dict[str, float]:
    return _summary(_per_user(scores, targets, seen), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders of `hybridrec train` (fitted with data.train_gap=1)")
    parser.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="EASE scores from each user's last N training items only (0: the whole history), as an F_ae fed the "
        "served history (spec.HISTORY_LENGTH) would; it is still fitted on whole rows and seen items stay masked",
    )
    parser.add_argument(
        "--other",
        choices=("ease", "popularity"),
        default="ease",
        help="what to blend with the hybrid: EASE's scores, or log(1 + the movie's count in the training rows)",
    )
    args = parser.parse_args()
    if args.window < 0:
        parser.error("--window must be >= 0")
    data = load_movielens(resolve_data_dir(args.data))
    ix = leave_one_out_split(data).indexed(ItemIndex.from_data(data))
    gapped = {u: s[:-1] for u, s in ix.train.items()}  # what a train_gap=1 hybrid trained on
    stages = {stage: ix.stage(stage) for stage in ("valid", "test")}
    ease_scores = {}
    out: dict[str, object] = {"other": args.other, "window": args.window}
    other: EASE | Popularity
    if args.other == "popularity":
        other = Popularity().fit(gapped, ix.num_items)
    else:
        other = EASE().fit(gapped, ix.num_items, valid=ix.valid)
        out["ease_lambda"] = other.lam
    for stage, (users, hist, _) in stages.items():
        bags = [hist[u][-args.window :] if args.window else hist[u] for u in users]
        scores = other.score(users, bags)
        ease_scores[stage] = _z(np.log1p(scores) if args.other == "popularity" else scores)
    ease_rank = {stage: _ranks(scores) for stage, scores in ease_scores.items()}
    for run in args.runs:
        scorer = HybridScorer(load_run_config(run), run, data).load()
        result: dict[str, object] = {}
        # two blends: z-scored retrieval dot product + a * z-scored EASE (scores on one scale), and reciprocal-rank
        # fusion of the served ranking with EASE's (the served scores mix sigmoids and shifted dot products)
        blended: dict[str, dict[float, dict[str, dict[str, float]]]] = {"dot": {}, "rrf": {}}
        rrf_users: dict[float, dict[str, dict[str, np.ndarray]]] = {a: {} for a in BLENDS}
        groups: dict[str, np.ndarray] = {}
        heavy_rows: dict[str, np.ndarray] = {}
        for stage, (users, hist, targets) in stages.items():
            seen = [hist[u] for u in users]
            tgt = [targets[u] for u in users]
            heavy = np.flatnonzero([len(ix.train[u]) >= HEAVY for u in users])
            groups[stage] = np.searchsorted(LENGTH_EDGES, [len(ix.train[u]) for u in users], side="right")
            heavy_rows[stage] = heavy
            served = np.concatenate(
                [scorer.score(users[i : i + 128], seen[i : i + 128]) for i in range(0, len(users), 128)]
            )
            dot = np.concatenate(
                [scorer.retrieval_scores(users[i : i + 128], seen[i : i + 128]) for i in range(0, len(users), 128)]
            )
            result[f"{stage}_served"] = _values(served, tgt, seen, heavy)
            result[f"{stage}_retrieval"] = _values(dot, tgt, seen, heavy)
            result[f"{stage}_ease"] = _values(ease_scores[stage], tgt, seen, heavy)
            z, served_rank = _z(dot), _ranks(served)
            for a in BLENDS:
                both = {
                    "dot": z + a * ease_scores[stage],
                    "rrf": 1.0 / (RRF_K + served_rank) + a / (RRF_K + ease_rank[stage]),
                }
                for kind, scores in both.items():
                    per_user = _per_user(scores, tgt, seen)
                    blended[kind].setdefault(a, {})[stage] = _summary(per_user, heavy)
                    if kind == "rrf":
                        rrf_users[a][stage] = per_user
        for kind, by_a in blended.items():
            best = max(BLENDS, key=lambda a: (by_a[a]["valid"]["ndcg@10"], -a))
            result[f"blend_{kind}"] = {
                "a": best,
                **{f"{s}_{k}": v for s, m in by_a[best].items() for k, v in m.items()},
            }
            result[f"blend_{kind}_valid_ndcg@10_by_a"] = {str(a): by_a[a]["valid"]["ndcg@10"] for a in BLENDS}
        # the weight chosen per group of history length on validation: what a fusion layer that sees the history's
        # size could learn (the served F_ae would know the bag's size)
        chosen = {}
        picked: dict[str, dict[str, np.ndarray]] = {}
        for g in range(len(LENGTH_EDGES) + 1):
            rows = groups["valid"] == g
            chosen[g] = max(BLENDS, key=lambda a: (rrf_users[a]["valid"]["ndcg@10"][rows].mean(), -a))
        for stage in ("valid", "test"):
            picked[stage] = {
                m: np.choose(groups[stage], [rrf_users[chosen[g]][stage][m] for g in sorted(chosen)])
                for m in ("ndcg@10", "hr@10")
            }
        result["blend_rrf_by_length"] = {
            "a_by_group": [chosen[g] for g in sorted(chosen)],
            **{f"{s}_{k}": v for s in picked for k, v in _summary(picked[s], heavy_rows[s]).items()},
        }
        out[run] = result
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
