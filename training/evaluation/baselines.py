"""Baseline scorers for the full-ranking leave-one-out evaluation, all behind one interface.

Interface (:class:`Scorer`)
    ``fit(train, num_items, **side) -> self`` with ``train`` = userId -> int array of catalog item indices in
    chronological order (see :class:`hybridrec.training.evaluation.splits.IndexedSplit`), then
    ``score(users, histories) -> float32 [len(users), num_items]``: one row per user over every catalog item, from that
    user's history (training items for validation, training + validation item for test). ``score`` only ever sees the
    users it is given, so :func:`hybridrec.training.evaluation.metrics.evaluate_ranking` can call it chunk by chunk.
    Masking seen items is the metric's job, not the scorer's.

    Side information is passed by keyword and every scorer ignores the keys it does not use, so one driver can pass
    the same side information to all of them:

    * ``valid``: userId -> validation item index. Scorers with a hyper-parameter grid (item-kNN's ``k``, EASE's
      ``lambda``) pick the value with the best validation NDCG@10 (full ranking, training items masked) when the value
      is not fixed in the constructor; SASRec early-stops on it.
    * ``movies``: the :class:`hybridrec.data.Movie` (or None) of every item index
      (:meth:`hybridrec.training.evaluation.splits.ItemIndex.movies`), for the content-based scorer.

Scorers
    * :class:`Popularity`: the number of training users of each item, the same for everyone.
    * :class:`ItemKNN`: cosine similarity of item columns of the binary user-item training matrix, each item keeping
      its ``k`` most similar items (self excluded, similarity > 0); ``score(u, j) = sum of sim(i, j)`` over history
      items ``i`` among ``j``'s neighbours (RecBole's ItemKNN convention). Similarities are computed in item blocks
      (``block x I`` float32 at a time); only the ``I x k_max`` neighbour lists are kept, so no ``I x I`` matrix.
    * :class:`EASE`: Steck's closed form ``B = I - P / diag(P)``, ``P = (X^T X + lambda I)^-1``, restricted to the
      items with >= 1 training interaction (the others score lowest). With fewer users than items (ml-latest-small:
      610 users, ~9.6k trained items) the exact dual (Woodbury) form is used and no ``I x I`` matrix is formed:
      ``P = (I - X^T (X X^T + lambda I)^-1 X) / lambda`` and ``h B = h - (h P) / diag(P)``, costing a ``U x U``
      inverse per lambda. The primal form (dense ``I x I`` inverse: 9.7k items = 380 MB in float32, 760 MB in
      float64, and about two minutes per lambda on two CPU cores) is used only when items <= users.
    * :class:`ContentTFIDF`: each item is the sum of per-field L2-normalised TF-IDF vectors of ``genre:`` tokens,
      overview tokens (:func:`hybridrec.preprocessing.tokenize`), ``cast:`` and ``director:`` names, the genre field
      weighted (weight chosen on validation); IDF ``log((1+N)/(1+df)) + 1`` over the whole catalog (metadata, not
      interactions, so no leakage). The user profile is the mean of the history items' vectors, the score its dot
      product with the item's. Scores every catalog item,
      including items never seen in training. Sparse matrices are a tiny numpy CSR (:class:`_CSR`; no scipy).
    * :class:`SASRec`: a causal self-attention sequence model (Kang & McAuley 2018; pre-LN transformer blocks,
      learned positions, tied input/output item embeddings, 2 blocks, d = 64, max length 50, dropout 0.2) trained with
      the full softmax cross-entropy over all catalog items (``SASRec-CE``), Adam 1e-3. An epoch cuts every training
      sequence into windows of <= 50 consecutive items (cut points shifted at random each epoch) and trains every
      position of every window at once, so each training prefix is a target exactly once per epoch. Early stopping on
      validation NDCG@10 (full ranking) with the best epoch's weights kept. Cost: ml-latest-small has ~99k training
      targets per epoch, and the ``[targets x 9742]`` logits and their two backward products dominate (~3.7e11 FLOP
      per epoch, i.e. a few seconds on two idle cores); on a shared 2-core machine with ``threads=1`` epochs took
      15-50 s (two threads were 2-4x slower than one under contention). Smaller ``batch_size`` means more Adam
      updates per epoch for the same compute.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from hybridrec.preprocessing import tokenize
from hybridrec.training.evaluation.metrics import evaluate_ranking
from hybridrec.training.evaluation.splits import item_counts

if TYPE_CHECKING:
    from hybridrec.data import Movie

__all__ = [
    "EASE",
    "ContentTFIDF",
    "ItemKNN",
    "Popularity",
    "SASRec",
    "SASRecConfig",
    "Scorer",
    "tune_on_validation",
    "validation_ndcg",
]

log = logging.getLogger(__name__)

P = TypeVar("P", int, float)  # a hyper-parameter value
LOWEST = float(np.finfo(np.float32).min)  # score of items a scorer cannot rank at all (below every real score)


class Scorer(Protocol):
    name: str

    def fit(self, train: Mapping[int, np.ndarray], num_items: int, **side: Any) -> Scorer: ...

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray: ...


def validation_ndcg(
    score_fn: Callable[[Sequence[int], Sequence[np.ndarray]], np.ndarray],
    train: Mapping[int, np.ndarray],
    valid: Mapping[int, int],
    k: int = 10,
) -> float:
    """Mean NDCG@k of the validation items given the training histories (training items masked)."""
    users = sorted(valid)
    return evaluate_ranking(score_fn, users, {u: train[u] for u in users}, valid, k=k).summary()[f"ndcg@{k}"]


def tune_on_validation(
    grid: Sequence[P],
    apply: Callable[[P], None],
    score_fn: Callable[[Sequence[int], Sequence[np.ndarray]], np.ndarray],
    train: Mapping[int, np.ndarray],
    valid: Mapping[int, int],
) -> tuple[P, dict[P, float]]:
    """Set each grid value with ``apply`` and score validation NDCG@10; leaves the best applied (ties: the smaller
    value) and returns it with every value's NDCG@10."""
    tuning = {value: 0.0 for value in grid}
    for value in grid:
        apply(value)
        tuning[value] = validation_ndcg(score_fn, train, valid)
    best = max(tuning, key=lambda v: (tuning[v], -v))
    apply(best)
    return best, tuning


def _unique(history: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(history, dtype=np.int64))


def _binary_rows(rows: Sequence[np.ndarray], num_cols: int, dtype: type = np.float32) -> np.ndarray:
    out: np.ndarray = np.zeros((len(rows), num_cols), dtype=dtype)
    for r, cols in enumerate(rows):
        out[r, np.asarray(cols, dtype=np.int64)] = 1
    return out


def _gather_ranges(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(indptr[r], indptr[r + 1])`` for every r in rows (vectorised)."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


@dataclass(frozen=True)
class _CSR:
    """A minimal compressed-sparse-row float32 matrix (what the scorers need and nothing more)."""

    indptr: np.ndarray  # int64 [rows + 1]
    indices: np.ndarray  # int64 [nnz], column of each entry
    data: np.ndarray  # float32 [nnz]
    shape: tuple[int, int]

    @classmethod
    def from_coo(cls, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> _CSR:
        order = np.lexsort((cols, rows))
        counts = np.bincount(rows, minlength=shape[0])
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return cls(indptr, cols[order].astype(np.int64), vals[order].astype(np.float32), shape)

    def sum_rows(self, groups: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(groups), cols]: row g is the sum of this matrix's rows listed in ``groups[g]``."""
        n_cols = self.shape[1]
        parts, weights = [], []
        for g, rows in enumerate(groups):
            idx = _gather_ranges(self.indptr, np.asarray(rows, dtype=np.int64))
            parts.append(self.indices[idx] + g * n_cols)
            weights.append(self.data[idx])
        if not parts:
            return np.zeros((0, n_cols), dtype=np.float32)
        flat = np.bincount(np.concatenate(parts), weights=np.concatenate(weights), minlength=len(groups) * n_cols)
        return flat.reshape(len(groups), n_cols).astype(np.float32)

    def matmul_t(self, dense: np.ndarray) -> np.ndarray:
        """float32 [C, rows] = dense [C, cols] @ self.T."""
        c = dense.shape[0]
        if self.indices.size == 0:
            return np.zeros((c, self.shape[0]), dtype=np.float32)
        products = dense[:, self.indices] * self.data  # [C, nnz]
        products = np.concatenate([products, np.zeros((c, 1), dtype=products.dtype)], axis=1)
        out = np.add.reduceat(products, self.indptr[:-1], axis=1)
        out[:, self.indptr[1:] == self.indptr[:-1]] = 0.0  # reduceat returns the next entry for empty rows
        return out.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------------------
# Popularity


class Popularity:
    """The number of distinct training users of each item, identical for every user."""

    name = "Popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)

    def fit(self, train: Mapping[int, np.ndarray], num_items: int, **side: Any) -> Popularity:
        self.counts = item_counts(train, num_items).astype(np.float32)
        return self

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.tile(self.counts, (len(users), 1))


# ----------------------------------------------------------------------------------------------------------------------
# item-kNN


class ItemKNN:
    """Item-based CF: cosine on the binary user-item matrix, top-k neighbours per scored item.

    ``k`` fixes the neighbourhood size; with ``k=None`` it is tuned over ``grid`` on validation when ``fit`` gets
    ``valid`` (else 100). ``self.tuning`` holds the validation NDCG@10 of each tried value.
    """

    name = "ItemKNN"

    def __init__(
        self, k: int | None = None, grid: Sequence[int] = (1, 2, 3, 5, 10, 20, 50, 100, 200), block: int = 1024
    ):
        self.k_fixed = k
        self.grid = tuple(grid)
        self.block = block
        self.k = 0
        self.num_items = 0
        self.tuning: dict[int, float] = {}
        self._nbr = np.zeros((0, 0), dtype=np.int64)
        self._sim = np.zeros((0, 0), dtype=np.float32)
        self._by_source = _CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (0, 0))

    def fit(
        self, train: Mapping[int, np.ndarray], num_items: int, *, valid: Mapping[int, int] | None = None, **side: Any
    ) -> ItemKNN:
        self.num_items = num_items
        tune = self.k_fixed is None and bool(valid)
        k_max = max(self.grid) if tune else (self.k_fixed or 100)
        x = _binary_rows([_unique(s) for s in train.values() if len(s)], num_items)
        self._nbr, self._sim = self._neighbours(x, k_max)
        if tune and valid:
            best, self.tuning = tune_on_validation(self.grid, self._use, self.score, train, valid)
            log.info("ItemKNN: k=%d (validation NDCG@10 %s)", best, self.tuning)
        else:
            self._use(k_max)
        return self

    def _neighbours(self, x: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
        """[I, k] neighbour indices and cosine similarities per item, best first (ties: lower index first)."""
        n_items = x.shape[1]
        k = max(0, min(k_max, n_items - 1))
        norms = np.sqrt(x.sum(axis=0))
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        nbr = np.zeros((n_items, k), dtype=np.int64)
        sim = np.zeros((n_items, k), dtype=np.float32)
        if k == 0:
            return nbr, sim
        for b0 in range(0, n_items, self.block):
            b1 = min(b0 + self.block, n_items)
            s = (x[:, b0:b1].T @ x) * inv[b0:b1, None] * inv[None, :]  # [block, I]
            s[np.arange(b1 - b0), np.arange(b0, b1)] = -1.0  # never its own neighbour
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            vals = np.take_along_axis(s, part, axis=1)
            order = np.lexsort((part, -vals), axis=-1)
            nbr[b0:b1] = np.take_along_axis(part, order, axis=1)
            sim[b0:b1] = np.take_along_axis(vals, order, axis=1)
        return nbr, sim

    def _use(self, k: int) -> None:
        self.k = k
        nbr, sim = self._nbr[:, :k], self._sim[:, :k]
        keep = sim > 0
        target = np.repeat(np.arange(nbr.shape[0]), keep.sum(axis=1))
        # rows = history (source) item i, columns = scored item j with i among j's neighbours
        self._by_source = _CSR.from_coo(nbr[keep], target, sim[keep], (self.num_items, self.num_items))

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._by_source.sum_rows([_unique(h) for h in histories])


# ----------------------------------------------------------------------------------------------------------------------
# EASE


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck 2019), exact closed form (primal or dual, see the module docstring).

    ``lam`` fixes the L2 weight; with ``lam=None`` it is tuned over ``grid`` on validation when ``fit`` gets ``valid``
    (else 500). ``self.tuning`` holds the validation NDCG@10 of each tried value.
    """

    name = "EASE"

    def __init__(
        self, lam: float | None = None, grid: Sequence[float] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    ) -> None:
        self.lam_fixed = lam
        self.grid = tuple(grid)
        self.lam = 0.0
        self.num_items = 0
        self.tuning: dict[float, float] = {}
        self.active = np.zeros(0, dtype=np.int64)  # items with >= 1 training interaction
        self._x = np.zeros((0, 0))  # [users, active] binary, float64
        self._kx = np.zeros((0, 0))  # dual: (X X^T + lam I)^-1 X
        self._diag = np.zeros(0)  # diag(P)
        self._b: np.ndarray | None = None  # primal: B [active, active]

    @property
    def dual(self) -> bool:
        return self._x.shape[0] < self._x.shape[1]

    def fit(
        self, train: Mapping[int, np.ndarray], num_items: int, *, valid: Mapping[int, int] | None = None, **side: Any
    ) -> EASE:
        self.num_items = num_items
        self.active = np.flatnonzero(item_counts(train, num_items) > 0)
        col = np.full(num_items, -1, dtype=np.int64)
        col[self.active] = np.arange(len(self.active))
        self._x = _binary_rows([col[_unique(s)] for s in train.values() if len(s)], len(self.active), np.float64)
        if self.lam_fixed is None and valid:
            best, self.tuning = tune_on_validation(self.grid, self._solve, self.score, train, valid)
            log.info("EASE: lambda=%g (validation NDCG@10 %s)", best, self.tuning)
        else:
            self._solve(500.0 if self.lam_fixed is None else self.lam_fixed)
        return self

    def _solve(self, lam: float) -> None:
        self.lam = float(lam)
        x = self._x
        n_users, m = x.shape
        if self.dual:
            k = np.linalg.inv(x @ x.T + lam * np.eye(n_users))
            self._kx = k @ x
            self._diag = (1.0 - np.einsum("ui,ui->i", x, self._kx)) / lam
            self._b = None
        else:
            p = np.linalg.inv(x.T @ x + lam * np.eye(m))
            self._diag = np.diag(p).copy()
            b = -p / self._diag[None, :]
            np.fill_diagonal(b, 0.0)
            self._b = b

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        col = np.full(self.num_items, -1, dtype=np.int64)
        col[self.active] = np.arange(len(self.active))
        rows = [c[c >= 0] for c in (col[_unique(h)] for h in histories)]
        h = _binary_rows(rows, len(self.active), np.float64)
        if self._b is not None:
            s = h @ self._b
        else:
            hp = (h - (h @ self._x.T) @ self._kx) / self.lam
            s = h - hp / self._diag[None, :]
        out = np.full((len(users), self.num_items), LOWEST, dtype=np.float32)
        out[:, self.active] = s
        return out


# ----------------------------------------------------------------------------------------------------------------------
# content-based


FIELDS = ("genre", "overview", "cast", "director")


def item_fields(movie: Movie | None) -> dict[str, Counter[str]]:
    """Term counts of one movie's content, per field (genres, overview words, cast, directors)."""
    if movie is None:
        return {f: Counter() for f in FIELDS}
    return {
        "genre": Counter(f"genre:{g}" for g in movie.genres),
        "overview": Counter(tokenize(movie.overview)),
        "cast": Counter(f"cast:{p}" for p in movie.cast),
        "director": Counter(f"director:{p}" for p in movie.directors),
    }


def item_tokens(movie: Movie | None) -> Counter[str]:
    """Term counts of one movie's whole content document (every field)."""
    out: Counter[str] = Counter()
    for c in item_fields(movie).values():
        out.update(c)
    return out


class ContentTFIDF:
    """Content-based: the user's mean item vector against every item vector (dot product).

    An item vector is the sum of one L2-normalised TF-IDF vector per field (genres, overview, cast, director), each
    scaled by the field's weight; a field the item lacks contributes nothing. (A single normalised vector over all
    tokens made the thousands of movies known by their genres alone the closest to every profile, since genres are
    what all of a user's movies share, and ranked every real target out of the top 10.) The genre weight is chosen
    on validation from ``genre_grid`` when ``valid`` is given."""

    name = "Content-TFIDF"

    def __init__(
        self,
        users_per_block: int = 32,
        genre_weight: float | None = None,
        genre_grid: Sequence[float] = (0.1, 0.3, 1.0),
    ) -> None:
        self.users_per_block = users_per_block
        self.genre_weight = genre_weight
        self.genre_grid = tuple(genre_grid)
        self.tuning: dict[float, float] = {}
        self.vocabulary: tuple[str, ...] = ()
        self._fields: list[dict[str, Counter[str]]] = []
        self._idf: dict[str, float] = {}
        self._items = _CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (0, 0))

    def fit(
        self,
        train: Mapping[int, np.ndarray],
        num_items: int,
        *,
        movies: Sequence[Movie | None] | None = None,
        valid: Mapping[int, int] | None = None,
        **side: Any,
    ) -> ContentTFIDF:
        if movies is None or len(movies) != num_items:
            raise ValueError("ContentTFIDF.fit needs movies=<one Movie or None per item index> (ItemIndex.movies)")
        self._fields = [item_fields(m) for m in movies]
        df: Counter[str] = Counter(t for d in self._fields for c in d.values() for t in c)
        self.vocabulary = tuple(sorted(df))
        self._idf = {t: math.log((1 + num_items) / (1 + df[t])) + 1.0 for t in self.vocabulary}
        if self.genre_weight is not None or not valid:
            self._build(1.0 if self.genre_weight is None else self.genre_weight)
        else:
            self.genre_weight, self.tuning = tune_on_validation(self.genre_grid, self._build, self.score, train, valid)
        return self

    def _build(self, genre_weight: float) -> None:
        vocab = {t: i for i, t in enumerate(self.vocabulary)}
        weights = {"genre": genre_weight, "overview": 1.0, "cast": 1.0, "director": 1.0}
        rows, cols, vals = [], [], []
        for i, fields in enumerate(self._fields):
            for field, counts in fields.items():
                if not counts:
                    continue
                c = np.array([vocab[t] for t in counts], dtype=np.int64)
                v = np.array(list(counts.values()), dtype=np.float64) * np.array([self._idf[t] for t in counts])
                rows.append(np.full(len(c), i, dtype=np.int64))
                cols.append(c)
                vals.append(weights[field] * v / np.linalg.norm(v))
        n = len(self._fields)
        if rows:
            self._items = _CSR.from_coo(
                np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), (n, len(vocab))
            )
        else:
            self._items = _CSR(np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (n, 0))

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(users), self._items.shape[0]), dtype=np.float32)
        for start in range(0, len(users), self.users_per_block):
            hist = [_unique(h) for h in histories[start : start + self.users_per_block]]
            counts = np.array([max(len(h), 1) for h in hist], dtype=np.float32)[:, None]
            profile = self._items.sum_rows(hist) / counts  # the mean item vector
            out[start : start + len(hist)] = self._items.matmul_t(profile)
        return out


# ----------------------------------------------------------------------------------------------------------------------
# SASRec with full softmax cross-entropy


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 16  # windows of <= max_len positions per step (~600 targets: many updates per epoch)
    epochs: int = 200  # upper bound; early stopping usually ends training first
    patience: int = 5  # epochs without a validation NDCG@10 gain before stopping (needs `valid`)
    max_seconds: float | None = None  # wall-time budget: stop after the epoch that crosses it
    threads: int | None = None  # torch intra-op threads during fit/score (None: leave torch's setting)
    seed: int = 0


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (None or 0: leave the setting), then restore it."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sasrec_network(num_items: int, cfg: SASRecConfig) -> Any:
    import torch
    from torch import Tensor, nn

    class SASRecNet(nn.Module):
        causal: Tensor

        def __init__(self) -> None:
            super().__init__()
            self.item = nn.Embedding(num_items + 1, cfg.dim, padding_idx=0)  # row 0 = padding, item i = row i + 1
            self.position = nn.Embedding(cfg.max_len, cfg.dim)
            self.dropout = nn.Dropout(cfg.dropout)
            layer = nn.TransformerEncoderLayer(
                cfg.dim,
                cfg.heads,
                dim_feedforward=cfg.dim,
                dropout=cfg.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.dim)
            causal = torch.triu(torch.full((cfg.max_len, cfg.max_len), float("-inf")), diagonal=1)
            self.register_buffer("causal", causal, persistent=False)
            nn.init.normal_(self.item.weight, std=0.02)
            nn.init.normal_(self.position.weight, std=0.02)
            with torch.no_grad():
                self.item.weight[0].zero_()

        def forward(self, seq: Tensor) -> Tensor:
            """[B, L] right-padded item rows (0 = pad) -> [B, L, D]; position t sees positions <= t only."""
            length = seq.shape[1]
            x = self.item(seq) + self.position.weight[:length]
            x = self.dropout(x) * (seq > 0).unsqueeze(-1)
            h = self.encoder(x, mask=self.causal[:length, :length], is_causal=True)
            return self.norm(h)

        def logits(self, hidden: Tensor) -> Tensor:
            """[N, D] -> [N, num_items] over every catalog item (tied embeddings, padding row excluded)."""
            return hidden @ self.item.weight[1:].T

    return SASRecNet()


class SASRec:
    """SASRec trained with full-softmax cross-entropy (see the module docstring); ``SASRec(epochs=1, threads=2)``
    overrides :class:`SASRecConfig` fields. After ``fit``: ``history`` (per epoch: loss, validation NDCG@10,
    seconds), ``best_epoch`` and ``epochs_run``."""

    name = "SASRec-CE"

    def __init__(self, config: SASRecConfig | None = None, **overrides: Any) -> None:
        self.cfg = replace(config or SASRecConfig(), **overrides)
        self.num_items = 0
        self.net: Any = None
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.epochs_run = 0
        self.fit_seconds = 0.0

    def _windows(self, train: Mapping[int, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) [W, max_len] item rows (index + 1, 0 = pad), right-padded: every training position >= 1
        is a target exactly once, its input the preceding items of its window."""
        length = self.cfg.max_len
        inputs, targets = [], []
        for seq in train.values():
            rows = np.asarray(seq, dtype=np.int64) + 1
            n = len(rows)
            if n < 2:
                continue
            # target positions 1 .. n-1, cut into blocks of <= length ending at a random shift from the end
            end = n - 1 - int(rng.integers(length))
            cuts = list(range(end, 0, -length))
            bounds = [(max(1, c - length + 1), c) for c in cuts]
            if end < n - 1:
                bounds.append((max(1, end + 1), n - 1))
            for lo, hi in bounds:
                if lo > hi:
                    continue
                w = hi - lo + 1
                x = np.zeros(length, dtype=np.int64)
                y = np.zeros(length, dtype=np.int64)
                x[:w] = rows[lo - 1 : hi]
                y[:w] = rows[lo : hi + 1]
                inputs.append(x)
                targets.append(y)
        if not inputs:
            return np.zeros((0, length), np.int64), np.zeros((0, length), np.int64)
        return np.stack(inputs), np.stack(targets)

    def fit(
        self, train: Mapping[int, np.ndarray], num_items: int, *, valid: Mapping[int, int] | None = None, **side: Any
    ) -> SASRec:
        import torch
        import torch.nn.functional as F

        cfg = self.cfg
        t0 = time.time()
        self.num_items = num_items
        with torch_threads(cfg.threads):
            torch.manual_seed(cfg.seed)
            self.net = _sasrec_network(num_items, cfg)
            opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
            best, best_state, bad = -1.0, None, 0
            self.history, self.best_epoch, self.epochs_run = [], 0, 0
            for epoch in range(cfg.epochs):
                rng = np.random.default_rng(cfg.seed * 100_003 + epoch)
                inputs, targets = self._windows(train, rng)
                order = rng.permutation(len(inputs))
                self.net.train()
                losses = []
                for start in range(0, len(order), cfg.batch_size):
                    batch = order[start : start + cfg.batch_size]
                    x = torch.from_numpy(inputs[batch])
                    y = torch.from_numpy(targets[batch])
                    keep = y > 0
                    hidden = self.net(x)[keep]
                    loss = F.cross_entropy(self.net.logits(hidden), y[keep] - 1)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                self.epochs_run = epoch + 1
                row = {"epoch": float(epoch + 1), "loss": float(np.mean(losses)) if losses else 0.0}
                if valid:
                    row["val_ndcg@10"] = validation_ndcg(self.score, train, valid)
                row["seconds"] = time.time() - t0
                self.history.append(row)
                log.info("SASRec epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
                if valid:
                    if row["val_ndcg@10"] > best:
                        best, bad, self.best_epoch = row["val_ndcg@10"], 0, epoch + 1
                        best_state = copy.deepcopy(self.net.state_dict())
                    else:
                        bad += 1
                        if bad >= cfg.patience:
                            break
                else:
                    self.best_epoch = epoch + 1
                if cfg.max_seconds is not None and time.time() - t0 > cfg.max_seconds:
                    break
            if best_state is not None:
                self.net.load_state_dict(best_state)
            self.net.eval()
        self.fit_seconds = time.time() - t0
        return self

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
        import torch

        if self.net is None:
            raise RuntimeError("SASRec.score before fit")
        length = self.cfg.max_len
        out = np.zeros((len(histories), self.num_items), dtype=np.float32)
        was_training = self.net.training
        self.net.eval()
        with torch_threads(self.cfg.threads), torch.no_grad():
            for start in range(0, len(histories), batch):
                chunk = histories[start : start + batch]
                seq = np.zeros((len(chunk), length), dtype=np.int64)
                last = np.zeros(len(chunk), dtype=np.int64)
                for r, h in enumerate(chunk):
                    recent = np.asarray(h, dtype=np.int64)[-length:] + 1
                    seq[r, : len(recent)] = recent
                    last[r] = max(len(recent) - 1, 0)
                hidden = self.net(torch.from_numpy(seq))[torch.arange(len(chunk)), torch.from_numpy(last)]
                out[start : start + len(chunk)] = self.net.logits(hidden).numpy()
        self.net.train(was_training)
        return out
