"""The "liked" classification view (will this user rate this movie >= 4?): baselines and the hybrid, temporal split.

Protocol
    :func:`hybridrec.training.evaluation.splits.temporal_split` cuts all ratings by time into 70% train, 15% validation
    and 15% test; each row's label is ``liked = rating >= 4``. Every model is fit on the train rows only (their labels
    and item ids). Validation labels are used only to choose the decision threshold (max F1) and, for the hybrid, the
    early-stopping epoch (validation AUC); test rows are scored once with the chosen model and threshold
    (:func:`hybridrec.training.evaluation.metrics.classification_report`). No model ever sees the rating or label of a
    row it scores.

Models
    * ``All-positive``: predicts liked for every row (precision = positive rate, recall 1, F1 = 2p / (1 + p),
      AUC 0.5); computed as a constant score, so its threshold is the constant.
    * ``Item liked-rate`` (:class:`ItemMeanClassifier`): the item's train liked-rate shrunk towards the global rate.
    * ``User+item bias`` (:class:`BiasClassifier`): ``mu + b_user + b_item`` fit to the 0/1 train labels by
      regularised alternating least squares.
    * ``Rating statistics``: logistic regression (:func:`~hybridrec.training.objectives.liked.fit_wide`) over the
      user's and the movie's train-row rating statistics (liked rate and mean rating shrunk towards the global
      values, log count); for a train row, only the train rows before it count.
    * ``Hybrid`` (:func:`train_hybrid_liked`): the project's model (poster CNN + metadata item encoder, BiGRU user
      encoder over the history, fusion head with autoencoder) trained with binary cross-entropy on the train labels.
      The user of a row is encoded from the item ids the user rated before it: for a train row, the user's earlier
      train rows (the split's order, so ties follow ``(timestamp, userId, movieId)``); for a validation row, all of
      the user's train rows; for a test row, the train and validation rows. The item vocabulary (learned id rows) is
      the movies of the train rows; any other movie is encoded from its content alone with the UNK id, both as a
      scored item and inside a history. By default it is wide & deep: its logit is a residual on the
      ``Rating statistics`` logit, and validation picks the deep logit's weight (``info["blend"]``).

:func:`liked_task` runs them all on one split and returns a JSON-able summary (mean and std over the hybrid's seeds).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hybridrec.data import MovieLensData, Ratings
from hybridrec.training.config import RunConfig
from hybridrec.training.evaluation.baselines import torch_threads
from hybridrec.training.evaluation.metrics import classification_report
from hybridrec.training.evaluation.splits import TemporalSplit, item_counts, liked, temporal_split
from hybridrec.training.features import poster_cache
from hybridrec.training.fit import fit, make_optimizer
from hybridrec.training.modules import HybridModel
from hybridrec.training.objectives.liked import (
    HybridInputs,
    LikedObjective,
    all_item_embeddings,
    check_split,
    eval_scores,
    fit_wide,
    prepare_hybrid_inputs,
    wide_logits,
)
from hybridrec.training.train import set_seed

__all__ = [
    "MODEL_NAMES",
    "BiasClassifier",
    "HybridInputs",
    "ItemMeanClassifier",
    "check_split",
    "liked_task",
    "prepare_hybrid_inputs",
    "train_hybrid_liked",
]

log = logging.getLogger(__name__)

MODEL_NAMES = ("All-positive", "Item liked-rate", "User+item bias", "Rating statistics", "Hybrid")


# ----------------------------------------------------------------------------------------------------------------------
# numpy baselines


def _labels_of(train: Ratings) -> np.ndarray:
    if len(train) == 0:
        raise ValueError("cannot fit on zero training rows")
    return liked(train).astype(np.float64)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[position of query in the sorted keys], 0 where the query is not a key."""
    q = np.asarray(query, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(q.shape, dtype=np.float64)
    pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return np.where(keys[pos] == q, values[pos], 0.0)


class ItemMeanClassifier:
    """The item's train liked-rate, shrunk towards the global rate ``mu`` by ``prior`` pseudo-rows:
    ``(liked_i + prior * mu) / (n_i + prior)``; an item without train rows scores ``mu``."""

    def __init__(self, prior: float = 5.0) -> None:
        if prior < 0:
            raise ValueError(f"prior must be >= 0, got {prior}")
        self.prior = prior
        self.mu: float | None = None
        self.items = np.zeros(0, dtype=np.int64)
        self.offset = np.zeros(0, dtype=np.float64)  # smoothed rate - mu, per item in ``items``

    def fit(self, train: Ratings) -> ItemMeanClassifier:
        y = _labels_of(train)
        self.mu = float(y.mean())
        self.items, idx = np.unique(np.asarray(train.movie_ids, dtype=np.int64), return_inverse=True)
        n = np.bincount(idx, minlength=len(self.items))
        pos = np.bincount(idx, weights=y, minlength=len(self.items))
        self.offset = (pos + self.prior * self.mu) / (n + self.prior) - self.mu
        return self

    def score(self, ratings: Ratings) -> np.ndarray:
        if self.mu is None:
            raise RuntimeError("ItemMeanClassifier.score called before fit")
        return self.mu + _lookup(self.items, self.offset, ratings.movie_ids)


class BiasClassifier:
    """``mu + b_user + b_item`` fit to the 0/1 liked labels of the train rows (the classic rating baseline of Koren,
    on labels instead of ratings).

    ``mu`` is the train liked-rate; the biases minimise ``sum (y - mu - b_u - b_i)^2 + reg (sum b_u^2 + sum b_i^2)``
    by alternating exact least-squares updates (items, then users), ``iterations`` rounds; each bias is then a
    residual mean shrunk as if ``reg`` extra rows sat at zero, so a user or item with few rows stays near ``mu``. The
    default ``reg = 5`` shrinks a 5-row item's bias by half; ten rounds change the biases by < 1e-4 on MovieLens.
    Users and items without train rows get bias 0.
    """

    def __init__(self, reg: float = 5.0, iterations: int = 10) -> None:
        if reg < 0:
            raise ValueError(f"reg must be >= 0, got {reg}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.reg = reg
        self.iterations = iterations
        self.mu: float | None = None
        self.users = np.zeros(0, dtype=np.int64)
        self.items = np.zeros(0, dtype=np.int64)
        self.user_bias = np.zeros(0, dtype=np.float64)
        self.item_bias = np.zeros(0, dtype=np.float64)

    def fit(self, train: Ratings) -> BiasClassifier:
        y = _labels_of(train)
        self.mu = float(y.mean())
        self.users, u = np.unique(np.asarray(train.user_ids, dtype=np.int64), return_inverse=True)
        self.items, i = np.unique(np.asarray(train.movie_ids, dtype=np.int64), return_inverse=True)
        n_u = np.bincount(u, minlength=len(self.users))
        n_i = np.bincount(i, minlength=len(self.items))
        resid = y - self.mu
        bu = np.zeros(len(self.users))
        bi = np.zeros(len(self.items))
        # reg + n > 0 always: every user/item in the unique lists has at least one row
        for _ in range(self.iterations):
            bi = np.bincount(i, weights=resid - bu[u], minlength=len(self.items)) / (self.reg + n_i)
            bu = np.bincount(u, weights=resid - bi[i], minlength=len(self.users)) / (self.reg + n_u)
        self.user_bias, self.item_bias = bu, bi
        return self

    def score(self, ratings: Ratings) -> np.ndarray:
        if self.mu is None:
            raise RuntimeError("BiasClassifier.score called before fit")
        return (
            self.mu
            + _lookup(self.users, self.user_bias, ratings.user_ids)
            + _lookup(self.items, self.item_bias, ratings.movie_ids)
        )


# ----------------------------------------------------------------------------------------------------------------------
# hybrid


def train_hybrid_liked(
    data: MovieLensData,
    split: TemporalSplit,
    run_cfg: RunConfig,
    seed: int,
    *,
    progress: bool = False,
    inputs: HybridInputs | None = None,
    rating_stats: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train the hybrid on the train rows' liked labels; return (valid logits, test logits, info).

    The objective is :class:`~hybridrec.training.objectives.liked.LikedObjective` (BCE of the fusion head's logit,
    plus the autoencoder's reconstruction), trained by the one fit loop (:func:`hybridrec.training.fit.fit`: Adam with
    ``run_cfg.optim``'s lr, weight decay, batch size and epochs, gradient clipping, early stopping on validation AUC
    with ``patience``, ``max_minutes``); the best epoch's weights score validation and test. ``inputs`` (from
    :func:`prepare_hybrid_inputs`) may be passed to share the item tables between seeds. ``rating_stats``: wide & deep,
    the deep logit a residual on the ``Rating statistics`` model's (see :class:`LikedObjective`).

    info: ``epochs`` run, ``best_epoch``, ``best_valid_auc``, ``wall_s``, ``history`` (per epoch: loss, valid AUC,
    elapsed seconds), ``vocabulary_items`` and ``cold_items`` (item rows outside the vocabulary).
    """
    t0 = time.time()
    o = run_cfg.optim
    if o.batch_size < 1:
        raise ValueError(f"optim.batch_size must be >= 1, got {o.batch_size}")
    if inputs is None:
        inputs = prepare_hybrid_inputs(data, split, run_cfg.data.history_length)
    elif len(inputs.valid_item) != len(split.valid) or len(inputs.test_item) != len(split.test):
        raise ValueError("inputs were prepared for a different split")
    elif inputs.history_length != run_cfg.data.history_length:
        raise ValueError(
            f"inputs were prepared for history_length {inputs.history_length}, the config has "
            f"{run_cfg.data.history_length}"
        )
    with torch_threads(o.threads):
        set_seed(seed)
        model = HybridModel(run_cfg.model, inputs.artifacts)
        counts = item_counts(inputs.train_seq, inputs.artifacts.num_items)
        model.item_encoder.set_id_counts(torch.from_numpy(counts))
        opt = make_optimizer(model, o)
        wide = fit_wide(inputs.train_ratings, inputs.train_label) if rating_stats else None
        objective = LikedObjective(model, inputs, run_cfg, np.random.default_rng(seed), wide)
        best: list[Any] = []  # the best epoch's (weights, item embeddings, deep validation logits, blend)

        def keep_best(_: dict[str, float]) -> None:
            assert objective.last is not None
            best[:] = [copy.deepcopy(model.state_dict()), *objective.last]

        state = fit(model, objective, opt, o, name="liked", progress=progress, on_best=keep_best)
        history = state.history
        model.eval()
        if not best:  # no epoch ran (epochs = 0): score the initial weights
            all_items = all_item_embeddings(model, inputs, poster_cache(model, inputs.table))
            deep_valid = eval_scores(model, inputs, all_items, inputs.valid_hist, inputs.valid_user, inputs.valid_item)
            blend = 1.0
        else:  # the best epoch's own item embeddings and validation logits: eval mode is deterministic
            weights, all_items, deep_valid, blend = best
            model.load_state_dict(weights)
        deep_test = eval_scores(model, inputs, all_items, inputs.test_hist, inputs.test_user, inputs.test_item)
        valid_scores = objective.combine(deep_valid, inputs.valid_ratings, blend)
        test_scores = objective.combine(deep_test, inputs.test_ratings, blend)
        best_auc = state.best
        best_epoch = state.best_epoch
    info: dict[str, Any] = {
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_valid_auc": best_auc if history else None,
        "wall_s": round(time.time() - t0, 2),
        "history": history,
        "vocabulary_items": len(inputs.artifacts.item_ids),
        "cold_items": len(inputs.cold),
        **({"blend": blend} if rating_stats else {}),
    }
    return valid_scores, test_scores, info


# ----------------------------------------------------------------------------------------------------------------------
# the task


def _summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"seeds": runs, "mean": {...}, "std": {...}} over the classification_report metrics of each run (std with
    ddof = 1; 0 for a single run)."""
    keys = [k for k, v in runs[0]["metrics"].items() if isinstance(v, float | int)]
    values = {k: np.array([r["metrics"][k] for r in runs], dtype=np.float64) for k in keys}
    return {
        "seeds": list(runs),
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
    }


def liked_task(
    data: MovieLensData,
    run_cfg: RunConfig,
    seeds: Sequence[int],
    *,
    progress: bool = False,
    rating_stats: bool = True,
) -> dict[str, Any]:
    """The liked classification comparison on the temporal split of ``data`` (first ``run_cfg.data.max_users``
    users when set).

    Returns ``{"split": {...}, "models": {name: {"seeds": [...], "mean": {...}, "std": {...}}}}`` with the names of
    :data:`MODEL_NAMES` (all but ``Rating statistics`` when ``rating_stats`` is false). Each entry of ``seeds`` is
    ``{"seed", "metrics", "wall_s"}`` (plus ``info`` for the hybrid; the deterministic baselines run once with seed
    None); ``metrics`` is :func:`classification_report`'s dict and ``mean``/``std`` are taken over it.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("liked_task needs at least one seed")
    if run_cfg.data.max_users:
        data = data.subset(run_cfg.data.max_users)
    split = temporal_split(data)
    check_split(split)
    y_train, y_valid, y_test = split.labels
    vocab = set(np.unique(split.train.movie_ids).tolist())
    out: dict[str, Any] = {
        "split": {
            "users": len(np.unique(data.ratings.user_ids)),
            **{f"{n}_rows": len(p) for n, p in (("train", split.train), ("valid", split.valid), ("test", split.test))},
            **{
                f"{n}_positive_rate": float(y.mean())
                for n, y in (("train", y_train), ("valid", y_valid), ("test", y_test))
            },
            # rows whose movie has no train row: only content (hybrid) or the global rate (baselines) can score them
            "valid_cold_item_rate": float(np.mean([m not in vocab for m in split.valid.movie_ids.tolist()])),
            "test_cold_item_rate": float(np.mean([m not in vocab for m in split.test.movie_ids.tolist()])),
        },
        "models": {},
    }

    def baseline(valid_scores: np.ndarray, test_scores: np.ndarray, t0: float) -> dict[str, Any]:
        report = classification_report(valid_scores, y_valid, test_scores, y_test)
        return _summary([{"seed": None, "metrics": report, "wall_s": round(time.time() - t0, 3)}])

    t0 = time.time()
    out["models"]["All-positive"] = baseline(np.zeros(len(y_valid)), np.zeros(len(y_test)), t0)
    for name, clf in (("Item liked-rate", ItemMeanClassifier()), ("User+item bias", BiasClassifier())):
        t0 = time.time()
        fitted = clf.fit(split.train)
        out["models"][name] = baseline(fitted.score(split.valid), fitted.score(split.test), t0)

    inputs = prepare_hybrid_inputs(data, split, run_cfg.data.history_length)
    if rating_stats:  # the wide part alone: what the hybrid's deep part must add to
        t0 = time.time()
        wide = fit_wide(inputs.train_ratings, inputs.train_label)
        out["models"]["Rating statistics"] = baseline(
            wide_logits(wide, inputs.valid_ratings), wide_logits(wide, inputs.test_ratings), t0
        )
    runs = []
    for seed in seeds:
        valid_scores, test_scores, info = train_hybrid_liked(
            data, split, run_cfg, seed, progress=progress, inputs=inputs, rating_stats=rating_stats
        )
        report = classification_report(valid_scores, y_valid, test_scores, y_test)
        runs.append({"seed": seed, "metrics": report, "wall_s": info["wall_s"], "info": info})
        log.info("liked hybrid seed %d: test AUC %.4f F1 %.4f", seed, report["auc"], report["f1"])
    out["models"]["Hybrid"] = _summary(runs)
    return out
