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
    * ``Hybrid`` (:func:`train_hybrid_liked`): the project's model (poster CNN + metadata item encoder, BiGRU user
      encoder over the history, fusion head with autoencoder) trained with binary cross-entropy on the train labels.
      The user of a row is encoded from the item ids the user rated before it: for a train row, the user's earlier
      train rows (the split's order, so ties follow ``(timestamp, userId, movieId)``); for a validation row, all of
      the user's train rows; for a test row, the train and validation rows. The item vocabulary (learned id rows) is
      the movies of the train rows; any other movie is encoded from its content alone with the UNK id, both as a
      scored item and inside a history.

:func:`liked_task` runs all four on one split and returns a JSON-able summary (mean and std over the hybrid's seeds).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hybridrec import spec
from hybridrec.data import MovieLensData, Ratings
from hybridrec.preprocessing import Artifacts, ItemCatalog, fit_artifacts
from hybridrec.training.config import RunConfig
from hybridrec.training.evaluation.baselines import torch_threads
from hybridrec.training.evaluation.metrics import auc, classification_report
from hybridrec.training.evaluation.splits import TemporalSplit, liked, temporal_split
from hybridrec.training.modules import HybridModel
from hybridrec.training.train import (
    ItemTable,
    item_embeddings,
    pad_histories,
    poster_cache,
    progress_bar,
    set_seed,
)

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

MODEL_NAMES = ("All-positive", "Item liked-rate", "User+item bias", "Hybrid")
_GRAD_CLIP = 5.0  # as in training/train.py
_SCORE_CHUNK = 8192  # rows per fusion-head call when scoring


def check_split(split: TemporalSplit) -> None:
    """ValueError unless train, valid and test each hold at least one liked and one not-liked row."""
    for name, part in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        y = liked(part)
        if len(y) == 0:
            raise ValueError(f"the {name} part of the temporal split is empty (too few ratings)")
        n_pos = int(y.sum())
        if n_pos == 0:
            raise ValueError(f"the {name} part of the temporal split has no liked (rating >= 4) rows")
        if n_pos == len(y):
            raise ValueError(f"the {name} part of the temporal split has no not-liked (rating < 4) rows")


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


@dataclass
class HybridInputs:
    """Everything the hybrid needs from one split that does not depend on the seed (built once, shared by seeds).

    Item rows: ``0 .. vocab - 1`` are the vocabulary (``table``, indexed by :meth:`Artifacts.item_index`), then one
    row per movie of the validation/test rows outside the vocabulary (``cold``, features with the UNK id)."""

    artifacts: Artifacts
    table: ItemTable
    cold: ItemTable  # same layout as ``table``; rows = cold movies
    history_length: int
    # train rows
    train_seq: dict[int, np.ndarray]  # userId -> vocabulary indices of the user's train rows, in split order
    train_user: np.ndarray  # int64 userId per train row
    train_pos: np.ndarray  # int64 position of each train row in its user's train_seq
    train_item: np.ndarray  # int64 vocabulary index per train row
    train_label: np.ndarray  # float32 liked per train row
    # evaluation rows: history per user, item row per rating row
    valid_hist: dict[int, np.ndarray]
    test_hist: dict[int, np.ndarray]
    valid_user: np.ndarray
    test_user: np.ndarray
    valid_item: np.ndarray  # int64 item row (vocabulary, or vocab + cold position)
    test_item: np.ndarray
    valid_label: np.ndarray  # bool

    @property
    def vocab_size(self) -> int:
        return len(self.table)


def _user_sequences(ratings: Ratings, index: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """(userId -> ``index`` values of the user's rows in the given row order, position of each row in its user's
    sequence)."""
    users = np.asarray(ratings.user_ids, dtype=np.int64)
    order = np.argsort(users, kind="stable")  # stable: keeps the split's time order inside each user
    pos = np.zeros(len(users), dtype=np.int64)
    seqs: dict[int, np.ndarray] = {}
    if len(users) == 0:
        return seqs, pos
    sorted_users = users[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_users)) + 1))
    ends = np.append(starts[1:], len(users))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = order[s:e]
        seqs[int(sorted_users[s])] = index[rows]
        pos[rows] = np.arange(e - s)
    return seqs, pos


def _subtable(like: ItemTable, tensors: dict[str, Tensor]) -> ItemTable:
    """An ItemTable holding ``tensors`` (so poster_cache / item_embeddings accept it) without rebuilding features."""
    out = copy.copy(like)
    out.tensors = tensors
    return out


def prepare_hybrid_inputs(data: MovieLensData, split: TemporalSplit, history_length: int) -> HybridInputs:
    """Fit the artifacts on the train rows' movies and build the item tables and histories (see HybridInputs)."""
    check_split(split)
    if history_length < 1:
        raise ValueError(f"history_length must be >= 1, got {history_length}")
    missing = sorted(
        {int(m) for part in (split.train, split.valid, split.test) for m in np.unique(part.movie_ids)}
        - set(data.movies)
    )
    if missing:
        raise ValueError(f"the split rates movies missing from the dataset's catalog: {missing[:10]}")
    artifacts = fit_artifacts(data, np.unique(split.train.movie_ids).tolist(), history_length=history_length)
    table = ItemTable(data, artifacts)
    vocab = len(table)
    cold_ids = sorted(
        {int(m) for m in np.concatenate([split.valid.movie_ids, split.test.movie_ids]).tolist()}
        - set(artifacts.item_ids)
    )
    catalog = ItemCatalog(data, artifacts)
    if cold_ids:
        feats = catalog.features(cold_ids)
    else:  # keep the tensors' shapes: zero rows
        feats = {k: v[:0] for k, v in catalog.empty_features(spec.UNK_ID).items()}
    cold = _subtable(table, {t.name: torch.from_numpy(np.ascontiguousarray(feats[t.name])) for t in spec.ITEM_INPUTS})
    row_of = {m: artifacts.item_index(m) for m in artifacts.item_ids}
    row_of.update({m: vocab + k for k, m in enumerate(cold_ids)})

    def rows(movie_ids: np.ndarray) -> np.ndarray:
        return np.fromiter((row_of[int(m)] for m in movie_ids), dtype=np.int64, count=len(movie_ids))

    def vocab_index(movie_ids: np.ndarray) -> np.ndarray:  # history items: cold movies are UNK, as when serving
        return np.fromiter((artifacts.item_index(int(m)) for m in movie_ids), dtype=np.int64, count=len(movie_ids))

    train_item = rows(split.train.movie_ids)
    train_seq, train_pos = _user_sequences(split.train, train_item)
    valid_seq, _ = _user_sequences(split.valid, vocab_index(split.valid.movie_ids))
    empty = np.zeros(0, dtype=np.int64)
    valid_users = np.unique(split.valid.user_ids).tolist()
    test_users = np.unique(split.test.user_ids).tolist()
    return HybridInputs(
        artifacts=artifacts,
        table=table,
        cold=cold,
        history_length=history_length,
        train_seq=train_seq,
        train_user=np.asarray(split.train.user_ids, dtype=np.int64),
        train_pos=train_pos,
        train_item=train_item,
        train_label=liked(split.train).astype(np.float32),
        valid_hist={u: train_seq.get(u, empty) for u in valid_users},
        test_hist={u: np.concatenate([train_seq.get(u, empty), valid_seq.get(u, empty)]) for u in test_users},
        valid_user=np.asarray(split.valid.user_ids, dtype=np.int64),
        test_user=np.asarray(split.test.user_ids, dtype=np.int64),
        valid_item=rows(split.valid.movie_ids),
        test_item=rows(split.test.movie_ids),
        valid_label=liked(split.valid),
    )


def _all_item_embeddings(model: HybridModel, inputs: HybridInputs, cache: Tensor | None) -> Tensor:
    """[vocab + cold, D] embeddings (no gradients); ``cache`` = the vocabulary's current poster features."""
    with torch.no_grad():
        vocab = item_embeddings(model, inputs.table, cache)
        if len(inputs.cold) == 0:
            return vocab
        cold = item_embeddings(model, inputs.cold, poster_cache(model, inputs.cold))
        return torch.cat([vocab, cold])


def _eval_scores(
    model: HybridModel,
    inputs: HybridInputs,
    items: Tensor,
    hist: dict[int, np.ndarray],
    users: np.ndarray,
    item_rows: np.ndarray,
) -> np.ndarray:
    """Fusion-head logits of (user, item row) pairs; each user is encoded once from ``hist``."""
    order = sorted(hist)
    with torch.no_grad():
        user_emb = torch.cat(
            [
                model.sequence_encoder(pad_histories([hist[u] for u in order[s : s + 512]], inputs.history_length))
                for s in range(0, len(order), 512)
            ]
        )
        user_row = torch.from_numpy(np.searchsorted(np.asarray(order, dtype=np.int64), users))
        item_row = torch.from_numpy(np.asarray(item_rows, dtype=np.int64))
        out = []
        for s in range(0, len(user_row), _SCORE_CHUNK):
            u, i = user_row[s : s + _SCORE_CHUNK], item_row[s : s + _SCORE_CHUNK]
            out.append(model.fusion_head.logits(user_emb[u], items[i].unsqueeze(1))[0][:, 0])
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def train_hybrid_liked(
    data: MovieLensData,
    split: TemporalSplit,
    run_cfg: RunConfig,
    seed: int,
    *,
    progress: bool = False,
    inputs: HybridInputs | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train the hybrid on the train rows' liked labels; return (valid logits, test logits, info).

    Loss: BCE-with-logits of the fusion head's logit for (user history, item), plus
    ``reconstruction_weight`` x the autoencoder's MSE when ``use_autoencoder``. Adam (``run_cfg.optim`` lr, weight
    decay, batch size, epochs), gradient norm clipped at 5 as in training. Each epoch shuffles every train row once;
    the vocabulary's pooled poster features are cached once per epoch and ``live_posters`` of each batch's items run
    through the CNN with gradients (as in training/train.py); only the batch's items are embedded per step. Early
    stopping on validation AUC with ``patience``; the best epoch's weights score validation and test. ``max_minutes``
    stops training after the epoch that crosses it. ``inputs`` (from :func:`prepare_hybrid_inputs`) may be passed to
    share the item tables between seeds.

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
    use_ae = run_cfg.model.fusion.use_autoencoder
    recon_w = run_cfg.model.fusion.reconstruction_weight
    length = inputs.history_length
    n_train = len(inputs.train_item)
    labels = torch.from_numpy(inputs.train_label)
    with torch_threads(o.threads):
        set_seed(seed)
        rng = np.random.default_rng(seed)
        model = HybridModel(run_cfg.model, inputs.artifacts)
        opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        best_auc, best_epoch, bad = -math.inf, 0, 0
        best: tuple[dict[str, Tensor], Tensor, np.ndarray] | None = None  # weights, item embeddings, valid scores
        history: list[dict[str, float]] = []
        model.eval()
        cache = poster_cache(model, inputs.table)
        for epoch in range(o.epochs):
            model.train()
            perm = rng.permutation(n_train)
            losses: list[float] = []
            steps = math.ceil(n_train / o.batch_size)
            for step in progress_bar(range(steps), progress, f"liked epoch {epoch + 1}/{o.epochs}"):
                rows = perm[step * o.batch_size : (step + 1) * o.batch_size]
                hist = pad_histories(
                    [
                        inputs.train_seq[u][max(0, p - length) : p]
                        for u, p in zip(inputs.train_user[rows].tolist(), inputs.train_pos[rows].tolist(), strict=True)
                    ],
                    length,
                )
                # Embed only this batch's items (the fusion is per item, so this equals gathering from all of them).
                uniq, inverse = torch.unique(torch.from_numpy(inputs.train_item[rows]), return_inverse=True)
                pooled = None if cache is None else cache[uniq]
                if pooled is not None and o.live_posters > 0:
                    live = torch.randperm(len(uniq))[: o.live_posters]
                    live_feat = model.item_encoder.poster_features(inputs.table.tensors["poster"][uniq[live]])
                    pooled = pooled.index_put((live,), live_feat)
                sub = _subtable(inputs.table, {k: v[uniq] for k, v in inputs.table.tensors.items()})
                items = item_embeddings(model, sub, pooled)[inverse]  # [B, D]
                user = model.sequence_encoder(hist)
                logits, x, z = model.fusion_head.logits(user, items.unsqueeze(1))
                loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels[rows])
                if use_ae:
                    recon = F.mse_loss(model.fusion_head.decoder(z[:, 0]), x[:, 0].detach())
                    loss = loss + recon_w * recon
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), _GRAD_CLIP)
                opt.step()
                losses.append(float(loss.detach()))
            model.eval()
            cache = poster_cache(model, inputs.table)  # also the next epoch's training cache: same weights
            all_items = _all_item_embeddings(model, inputs, cache)
            valid_scores = _eval_scores(
                model, inputs, all_items, inputs.valid_hist, inputs.valid_user, inputs.valid_item
            )
            valid_auc = auc(valid_scores, inputs.valid_label)
            row = {
                "epoch": float(epoch + 1),
                "loss": float(np.mean(losses)) if losses else 0.0,
                "valid_auc": valid_auc,
                "elapsed_s": time.time() - t0,
            }
            history.append(row)
            log.info(
                "liked epoch %d: loss %.4f valid AUC %.4f (%.0fs)", epoch + 1, row["loss"], valid_auc, row["elapsed_s"]
            )
            if valid_auc > best_auc:
                best_auc, best_epoch, bad = valid_auc, epoch + 1, 0
                best = (copy.deepcopy(model.state_dict()), all_items, valid_scores)
            else:
                bad += 1
            if bad >= o.patience:
                log.info("liked: early stop, no validation AUC gain for %d epochs", bad)
                break
            if o.max_minutes is not None and time.time() - t0 > 60 * o.max_minutes:
                log.info("liked: wall-time budget of %.1f min reached", o.max_minutes)
                break
        if best is None:  # no epoch ran (epochs = 0): score the initial weights
            all_items = _all_item_embeddings(model, inputs, cache)
            valid_scores = _eval_scores(
                model, inputs, all_items, inputs.valid_hist, inputs.valid_user, inputs.valid_item
            )
        else:  # the best epoch's own item embeddings and validation scores: eval mode is deterministic
            state, all_items, valid_scores = best
            model.load_state_dict(state)
        model.eval()
        test_scores = _eval_scores(model, inputs, all_items, inputs.test_hist, inputs.test_user, inputs.test_item)
    info: dict[str, Any] = {
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_valid_auc": best_auc if history else None,
        "wall_s": round(time.time() - t0, 2),
        "history": history,
        "vocabulary_items": len(inputs.artifacts.item_ids),
        "cold_items": len(inputs.cold),
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
    data: MovieLensData, run_cfg: RunConfig, seeds: Sequence[int], *, progress: bool = False
) -> dict[str, Any]:
    """The liked classification comparison on the temporal split of ``data`` (first ``run_cfg.data.max_users``
    users when set).

    Returns ``{"split": {...}, "models": {name: {"seeds": [...], "mean": {...}, "std": {...}}}}`` with the names of
    :data:`MODEL_NAMES`. Each entry of ``seeds`` is ``{"seed", "metrics", "wall_s"}`` (plus ``info`` for the hybrid;
    the deterministic baselines run once with seed None); ``metrics`` is :func:`classification_report`'s dict and
    ``mean``/``std`` are taken over it.
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
    runs = []
    for seed in seeds:
        valid_scores, test_scores, info = train_hybrid_liked(
            data, split, run_cfg, seed, progress=progress, inputs=inputs
        )
        report = classification_report(valid_scores, y_valid, test_scores, y_test)
        runs.append({"seed": seed, "metrics": report, "wall_s": info["wall_s"], "info": info})
        log.info("liked hybrid seed %d: test AUC %.4f F1 %.4f", seed, report["auc"], report["f1"])
    out["models"]["Hybrid"] = _summary(runs)
    return out
