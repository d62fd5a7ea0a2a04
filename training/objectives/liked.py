"""The liked objective: binary cross-entropy of the fusion head's logit for (user history, item) on the temporal
split's train rows (``liked = rating >= 4``), plus the autoencoder's reconstruction MSE; validation AUC is the score
the fit loop (training/fit.py) early-stops on. The model inputs of one split (:class:`HybridInputs`) do not depend on
the seed and are built once by :func:`prepare_hybrid_inputs`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hybridrec import spec
from hybridrec.data import MovieLensData, Ratings
from hybridrec.preprocessing import Artifacts, ItemCatalog, fit_artifacts
from hybridrec.training.config import RunConfig
from hybridrec.training.evaluation.metrics import auc
from hybridrec.training.evaluation.splits import TemporalSplit, liked
from hybridrec.training.features import ItemTable, item_embeddings, pad_histories, poster_cache
from hybridrec.training.modules import HybridModel
from hybridrec.training.objectives.next_item import BLENDS  # the served blend's grid, here for the deep logit's weight

SCORE_CHUNK = 8192  # rows per fusion-head call when scoring


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
    # rating statistics per row (:func:`_rating_inputs`), from train rows only (what the bias baselines fit on): the
    # user's and the movie's; for a train row from the train rows before it, for a validation or test row from all
    train_ratings: np.ndarray  # float32 [train rows, RATING_FEATURES]
    valid_ratings: np.ndarray
    test_ratings: np.ndarray

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


RATING_FEATURES = 6  # 3 of the user's train ratings, 3 of the item's
RATING_PRIOR = 5.0  # pseudo-ratings at the global means: a user or item with few ratings gets features near 0


def rating_features(count: np.ndarray, liked_sum: np.ndarray, rating_sum: np.ndarray, train: Ratings) -> np.ndarray:
    """[N, 3] float32 per row from ``count`` ratings (their liked and rating sums): their liked rate and mean
    rating, each shrunk towards the train rows' global value and centred on it, and log(1 + count) / 7 (so that
    1,000 ratings give about 1)."""
    g_liked = float(liked(train).mean()) if len(train) else 0.0
    g_rating = float(np.mean(train.ratings)) if len(train) else 0.0
    n = count.astype(np.float64)
    denom = n + RATING_PRIOR
    return np.stack(
        [
            (liked_sum + RATING_PRIOR * g_liked) / denom - g_liked,
            (rating_sum + RATING_PRIOR * g_rating) / denom - g_rating,
            np.log1p(n) / 7.0,
        ],
        axis=1,
    ).astype(np.float32)


Totals = dict[int, tuple[int, float, float]]  # key -> (count, liked sum, rating sum) over all train rows


def _prior_stats(keys: np.ndarray, train: Ratings) -> tuple[Totals, np.ndarray]:
    """Rating statistics grouped by ``keys`` (one per train row: its user or its movie): the totals over all train
    rows, and [train rows, 3] features of each train row from the train rows of its key before it in time."""
    keys = np.asarray(keys, dtype=np.int64)
    order = np.lexsort((np.arange(len(keys)), keys))  # by key, then the split's time order
    y = liked(train).astype(np.float64)[order]
    r = np.asarray(train.ratings, dtype=np.float64)[order]
    k = keys[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(k)), 0))  # index of the key's first row
    cy, cr = np.cumsum(y) - y, np.cumsum(r) - r  # sums over all earlier rows
    prior_liked, prior_rating = cy - cy[start], cr - cr[start]
    count = np.arange(len(k)) - start
    feats = np.empty((len(k), 3), dtype=np.float32)
    feats[order] = rating_features(count, prior_liked, prior_rating, train)
    totals: Totals = {}
    for i in np.flatnonzero(np.append(first[1:], True)).tolist():  # each key's last row
        totals[int(k[i])] = (int(count[i]) + 1, float(prior_liked[i] + y[i]), float(prior_rating[i] + r[i]))
    return totals, feats


def _total_features(keys: np.ndarray, totals: Totals, train: Ratings) -> np.ndarray:
    stats = np.array([totals.get(int(x), (0, 0.0, 0.0)) for x in keys.tolist()], dtype=np.float64).reshape(-1, 3)
    return rating_features(stats[:, 0], stats[:, 1], stats[:, 2], train)


def _rating_inputs(split: TemporalSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[rows, RATING_FEATURES] of train, valid and test rows: the user's then the movie's train rating statistics
    (a train row's from the train rows before it, a validation or test row's from all train rows)."""
    train = split.train
    by_user, user_train = _prior_stats(train.user_ids, train)
    by_item, item_train = _prior_stats(train.movie_ids, train)

    def later(part: Ratings) -> np.ndarray:
        return np.concatenate(
            [_total_features(part.user_ids, by_user, train), _total_features(part.movie_ids, by_item, train)], axis=1
        )

    return np.concatenate([user_train, item_train], axis=1), later(split.valid), later(split.test)


WIDE_L2 = 1e-4


def fit_wide(features: np.ndarray, labels: np.ndarray, iterations: int = 25) -> np.ndarray:
    """Logistic regression of ``labels`` on ``features`` (plus an intercept, last) by Newton's method with a small
    L2 penalty: deterministic, a few milliseconds for 70k rows. Returns the weights [F + 1]."""
    x = np.concatenate([features.astype(np.float64), np.ones((len(features), 1))], axis=1)
    y = labels.astype(np.float64)
    w = np.zeros(x.shape[1])
    reg = WIDE_L2 * len(x) * np.eye(x.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not penalised
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def wide_logits(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    return features.astype(np.float64) @ weights[:-1] + weights[-1]


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
    train_ratings, valid_ratings, test_ratings = _rating_inputs(split)
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
        train_ratings=train_ratings,
        valid_ratings=valid_ratings,
        test_ratings=test_ratings,
    )


def all_item_embeddings(model: HybridModel, inputs: HybridInputs, cache: Tensor | None) -> Tensor:
    """[vocab + cold, D] embeddings (no gradients); ``cache`` = the vocabulary's current poster features."""
    with torch.no_grad():
        vocab = item_embeddings(model, inputs.table, cache)
        if len(inputs.cold) == 0:
            return vocab
        cold = item_embeddings(model, inputs.cold, poster_cache(model, inputs.cold))
        return torch.cat([vocab, cold])


def eval_scores(
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
        for s in range(0, len(user_row), SCORE_CHUNK):
            u, i = user_row[s : s + SCORE_CHUNK], item_row[s : s + SCORE_CHUNK]
            out.append(model.fusion_head.logits(user_emb[u], items[i].unsqueeze(1))[0][:, 0])
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


class LikedObjective:
    """:class:`hybridrec.training.fit.Objective` of the liked task. Each epoch shuffles every train row once; the
    vocabulary's pooled poster features are cached per epoch and ``live_posters`` of each batch's items run through
    the CNN with gradients; only the batch's items are embedded per step. ``validate`` keeps the epoch's item
    embeddings and validation scores (``last``) so that the best epoch's need not be recomputed.

    With ``wide`` (weights of :func:`fit_wide` over the rows' rating statistics, fitted once on the train rows), the
    hybrid is wide & deep: the deep logit is trained as a residual on the fixed wide logit, and each validation picks
    the deep logit's weight ``w`` in :data:`BLENDS` (score = wide + w * deep) that maximises validation AUC, as the
    next-item task picks its served blend. The wide part alone (w = 0) is the ``Rating statistics`` baseline, so the
    blend's validation AUC is never below it."""

    def __init__(
        self,
        model: HybridModel,
        inputs: HybridInputs,
        cfg: RunConfig,
        rng: np.random.Generator,
        wide: np.ndarray | None = None,
    ) -> None:
        self.model, self.inputs, self.o, self.rng = model, inputs, cfg.optim, rng
        self.use_ae = cfg.model.fusion.use_autoencoder
        self.recon_weight = cfg.model.fusion.reconstruction_weight
        self.labels = torch.from_numpy(inputs.train_label)
        self.wide = wide
        self.train_offset = (
            None if wide is None else torch.from_numpy(wide_logits(wide, inputs.train_ratings).astype(np.float32))
        )
        self.cache: Tensor | None = None
        self.last: tuple[Tensor, np.ndarray, float] | None = None  # (all item embeddings, deep valid logits, blend)

    def batches(self, epoch: int) -> Sequence[np.ndarray]:
        if self.cache is None or epoch == 0:
            self.model.eval()
            with torch.no_grad():
                self.cache = poster_cache(self.model, self.inputs.table)
        perm = self.rng.permutation(len(self.inputs.train_item))
        b = self.o.batch_size
        return [perm[i : i + b] for i in range(0, len(perm), b)]

    def loss(self, rows: np.ndarray) -> Tensor:
        inputs, model, length = self.inputs, self.model, self.inputs.history_length
        hist = pad_histories(
            [
                inputs.train_seq[u][max(0, p - length) : p]
                for u, p in zip(inputs.train_user[rows].tolist(), inputs.train_pos[rows].tolist(), strict=True)
            ],
            length,
        )
        # Embed only this batch's items (the fusion is per item, so this equals gathering from all of them).
        uniq, inverse = torch.unique(torch.from_numpy(inputs.train_item[rows]), return_inverse=True)
        pooled = None if self.cache is None else self.cache[uniq]
        if pooled is not None and self.o.live_posters > 0:
            live = torch.randperm(len(uniq))[: self.o.live_posters]
            live_feat = model.item_encoder.poster_features(inputs.table.tensors["poster"][uniq[live]])
            pooled = pooled.index_put((live,), live_feat)
        sub = _subtable(inputs.table, {k: v[uniq] for k, v in inputs.table.tensors.items()})
        items = item_embeddings(model, sub, pooled)[inverse]  # [B, D]
        user = model.sequence_encoder(hist)
        logits, x, z = model.fusion_head.logits(user, items.unsqueeze(1))
        logit = logits[:, 0] if self.train_offset is None else logits[:, 0] + self.train_offset[rows]
        loss = F.binary_cross_entropy_with_logits(logit, self.labels[rows])
        if self.use_ae:
            loss = loss + self.recon_weight * F.mse_loss(model.fusion_head.decoder(z[:, 0]), x[:, 0].detach())
        return loss

    def combine(self, deep: np.ndarray, features: np.ndarray, blend: float) -> np.ndarray:
        """The task's score of rows with deep logits ``deep`` and rating statistics ``features``."""
        return deep if self.wide is None else wide_logits(self.wide, features) + blend * deep

    def validate(self) -> dict[str, float]:
        inputs = self.inputs
        self.cache = poster_cache(self.model, inputs.table)  # also the next epoch's training cache: same weights
        all_items = all_item_embeddings(self.model, inputs, self.cache)
        deep = eval_scores(self.model, inputs, all_items, inputs.valid_hist, inputs.valid_user, inputs.valid_item)
        label = inputs.valid_label
        if self.wide is None:
            self.last = (all_items, deep, 1.0)
            value = auc(deep, label)
            return {"score": value, "valid_auc": value}
        aucs = {w: auc(self.combine(deep, inputs.valid_ratings, w), label) for w in BLENDS}
        blend = max(BLENDS, key=lambda w: (aucs[w], -w))  # ties: the smaller deep weight
        self.last = (all_items, deep, blend)
        return {
            "score": aucs[blend],
            "valid_auc": aucs[blend],
            "valid_auc_wide": aucs[0.0],
            "valid_auc_deep": auc(deep, label),
            "blend": blend,
        }
