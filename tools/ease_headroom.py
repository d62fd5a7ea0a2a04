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

``--other release_age`` blends a prior on the movie's age when rated instead (:class:`ReleaseAge`; the "ease" keys
hold it too): what the item tower's one standardized year feature, which a dot product can only prefer linearly
(newer or older), leaves out: half of the cold slice's test targets were released within 3 years of their rating.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hybridrec.data import MovieLensData, load_movielens, resolve_data_dir
from hybridrec.training.evaluation.baselines.ease import EASE
from hybridrec.training.evaluation.baselines.popularity import Popularity
from hybridrec.training.evaluation.baselines.scorer import LOWEST
from hybridrec.training.evaluation.hybrid import HybridScorer
from hybridrec.training.evaluation.metrics import ranking_values, row_ranks, target_ranks
from hybridrec.training.evaluation.splits import TRAIN, VALID, ItemIndex, LeaveOneOutSplit, leave_one_out_split
from hybridrec.training.train import load_run_config

BLENDS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RRF_K = 60.0  # reciprocal-rank fusion's usual constant
HEAVY = 166  # training items: docs/results.md's heaviest quarter of test users
LENGTH_EDGES = (33, 68, HEAVY)  # docs/results.md's four groups of test users by training items


class ReleaseAge:
    """log of the rate at which a movie is rated at its age (whole years from its release year to the rating's year),
    per catalog movie of that age: training rows rated at age a / the sum over those rows of the catalog movies that
    were a years old then. Ages are clipped to [MIN_AGE, MAX_AGE] (a negative age is a release date after the rating);
    movies without a year share one more bucket. Scored at each user's last history timestamp (the request's time)."""

    MIN_AGE, MAX_AGE = -2, 40

    def __init__(self, release_years: np.ndarray) -> None:
        self.years = release_years  # [catalog] int64, 0 where unknown
        self.rate = np.zeros(self.MAX_AGE - self.MIN_AGE + 2)

    def _bucket(self, age: np.ndarray, known: np.ndarray) -> np.ndarray:
        return np.where(known, np.clip(age, self.MIN_AGE, self.MAX_AGE) - self.MIN_AGE, len(self.rate) - 1)

    def fit(self, rated_years: np.ndarray, items: np.ndarray) -> ReleaseAge:
        """``rated_years`` [rows] the year of each training rating, ``items`` [rows] its catalog index."""
        known = self.years > 0
        rated = np.bincount(self._bucket(rated_years - self.years[items], known[items]), minlength=len(self.rate))
        exposed = np.zeros(len(self.rate))
        for year, rows in zip(*np.unique(rated_years, return_counts=True), strict=True):
            exposed += rows * np.bincount(self._bucket(year - self.years, known), minlength=len(self.rate))
        self.rate = np.log((rated + 1.0) / (exposed + 1.0))
        return self

    def score(self, now_years: np.ndarray) -> np.ndarray:
        """[users] the year of each user's last history item -> [users, catalog] log rates."""
        return self.rate[self._bucket(now_years[:, None] - self.years[None, :], (self.years > 0)[None, :])]


def _years(timestamps: np.ndarray) -> np.ndarray:
    """Unix seconds -> calendar years (UTC)."""
    return timestamps.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970


def _release_age(
    split: LeaveOneOutSplit, items: ItemIndex, data: MovieLensData
) -> tuple[ReleaseAge, dict[str, dict[int, int]]]:
    """The prior fitted on the gapped training rows (each user's last training row left out, as in a train_gap=1
    fit), and each stage's "now" per user: validation's history ends with the last training row, test's with the
    validation row."""
    r, role = split.ratings, split.role
    train_rows = np.flatnonzero(role == TRAIN)
    last: dict[int, int] = {}
    for i in train_rows.tolist():  # rows are in (user, time) order: the last one written wins
        last[int(r.user_ids[i])] = i
    gapped = np.setdiff1d(train_rows, np.fromiter(last.values(), dtype=np.int64))
    years = np.array([(m.year or 0) if m is not None else 0 for m in items.movies(data)], dtype=np.int64)
    prior = ReleaseAge(years).fit(_years(r.timestamps[gapped]), items.index(r.movie_ids[gapped]))
    valid_rows = np.flatnonzero(role == VALID)
    now = {
        "valid": {u: int(r.timestamps[i]) for u, i in last.items()},
        "test": {int(r.user_ids[i]): int(r.timestamps[i]) for i in valid_rows.tolist()},
    }
    return prior, now


def _z(scores: np.ndarray) -> np.ndarray:
    """Per-user z-scores over the catalog (finite scores only: EASE gives untrained items its lowest value)."""
    s = np.where(np.isfinite(scores) & (scores > LOWEST), scores, np.nan).astype(np.float64)
    mean, std = np.nanmean(s, axis=1, keepdims=True), np.nanstd(s, axis=1, keepdims=True)
    return np.nan_to_num((s - mean) / np.maximum(std, 1e-12), nan=-1e6)


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
        choices=("ease", "popularity", "release_age"),
        default="ease",
        help="what to blend with the hybrid: EASE's scores, log(1 + the movie's count in the training rows), or the "
        "log rate of movies of that age being rated (ReleaseAge)",
    )
    args = parser.parse_args()
    if args.window < 0:
        parser.error("--window must be >= 0")
    if args.window and args.other == "release_age":
        parser.error("--window applies to a score of the history's items; the release-age prior reads no history")
    data = load_movielens(resolve_data_dir(args.data))
    split = leave_one_out_split(data)
    ix = split.indexed(ItemIndex.from_data(data))
    gapped = {u: s[:-1] for u, s in ix.train.items()}  # what a train_gap=1 hybrid trained on
    stages = {stage: ix.stage(stage) for stage in ("valid", "test")}
    ease_scores = {}
    out: dict[str, object] = {"other": args.other, "window": args.window}
    other: EASE | Popularity | None = None
    if args.other == "popularity":
        other = Popularity().fit(gapped, ix.num_items)
    elif args.other == "ease":
        other = EASE().fit(gapped, ix.num_items, valid=ix.valid)
        out["ease_lambda"] = other.lam
    else:
        prior, now = _release_age(split, ix.items, data)
        out["release_age_log_rate"] = {
            str(a + ReleaseAge.MIN_AGE): round(float(v), 3) for a, v in enumerate(prior.rate[:-1]) if a < 12
        } | {"unknown": round(float(prior.rate[-1]), 3)}
    for stage, (users, hist, _) in stages.items():
        if other is None:
            scores = prior.score(_years(np.array([now[stage][u] for u in users], dtype=np.int64)))
        else:
            bags = [hist[u][-args.window :] if args.window else hist[u] for u in users]
            scores = other.score(users, bags)
        ease_scores[stage] = _z(np.log1p(scores) if args.other == "popularity" else scores)
    ease_rank = {stage: row_ranks(scores) for stage, scores in ease_scores.items()}
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
            z, served_rank = _z(dot), row_ranks(served)
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
