"""Item-kNN baseline: cosine similarity of item columns of the binary user-item training matrix, each item keeping its
``k`` most similar items (self excluded, similarity > 0); ``score(u, j) = sum of sim(i, j)`` over history items ``i``
among ``j``'s neighbours (RecBole's ItemKNN convention). With a shrink term ``s`` the similarity is
``|U_i & U_j| / (sqrt(|U_i| |U_j|) + s)`` (RecBole's ``shrink``), which damps pairs of rarely consumed items.
``k`` and ``s`` are chosen together on validation NDCG@10 (test never read). Similarities are
computed in item blocks (``block x I`` float32 at a time); only the ``I x k_max`` neighbour lists are kept, so no
``I x I`` matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybridrec.training.evaluation.baselines.scorer import tune_on_validation, validation_ndcg
from hybridrec.training.evaluation.baselines.sparse import CSR, binary_rows, unique_items

__all__ = ["ItemKNN"]

log = logging.getLogger(__name__)


class ItemKNN:
    """Item-based CF: cosine on the binary user-item matrix, top-k neighbours per scored item.

    ``k`` fixes the neighbourhood size and ``shrink`` the shrink term; each one left None is tuned on validation
    when ``fit`` gets ``valid``, over ``grid`` and ``shrink_grid`` (every pair; ties: the smaller shrink, then the
    smaller k), else 100 and 0. ``self.tuning`` holds the validation NDCG@10 of each ``k`` tried with the chosen
    shrink, ``self.shrink_tuning`` the best NDCG@10 of each shrink.
    """

    name = "ItemKNN"

    def __init__(
        self,
        k: int | None = None,
        grid: Sequence[int] = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500),
        block: int = 1024,
        shrink: float | None = None,
        shrink_grid: Sequence[float] = (0.0, 10.0, 50.0, 100.0),
    ):
        self.k_fixed = k
        self.grid = tuple(grid)
        self.block = block
        self.shrink_fixed = shrink
        self.shrink_grid = tuple(shrink_grid)
        self.shrink = 0.0
        self.shrink_tuning: dict[float, float] = {}
        self.k = 0
        self.num_items = 0
        self.tuning: dict[int, float] = {}
        self._nbr = np.zeros((0, 0), dtype=np.int64)
        self._sim = np.zeros((0, 0), dtype=np.float32)
        self._by_source = CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (0, 0))

    def fit(
        self, train: Mapping[int, np.ndarray], num_items: int, *, valid: Mapping[int, int] | None = None, **side: Any
    ) -> ItemKNN:
        self.num_items = num_items
        tune_k = self.k_fixed is None and bool(valid)
        k_max = max(self.grid) if tune_k else (self.k_fixed or 100)
        shrinks = self.shrink_grid if self.shrink_fixed is None and valid else (self.shrink_fixed or 0.0,)
        x = binary_rows([unique_items(s) for s in train.values() if len(s)], num_items)
        best: tuple[float, float, int] | None = None  # (validation NDCG@10, -shrink, -k)
        self.shrink_tuning = {}
        for shrink in shrinks:
            self.shrink = float(shrink)
            self._nbr, self._sim = self._neighbours(x, k_max, self.shrink)
            if tune_k and valid:
                k, tuning = tune_on_validation(self.grid, self._use, self.score, train, valid)
            else:
                self._use(k_max)
                k = k_max
                tuning = {k: validation_ndcg(self.score, train, valid)} if valid and len(shrinks) > 1 else {}
            self.shrink_tuning[self.shrink] = tuning.get(k, 0.0)
            key = (tuning.get(k, 0.0), -self.shrink, -k)
            if best is None or key > best:
                best, self.tuning = key, tuning
        assert best is not None
        if len(shrinks) > 1 and -best[1] != self.shrink:  # refit the winner (the last one fitted lost)
            self.shrink = -best[1]
            self._nbr, self._sim = self._neighbours(x, k_max, self.shrink)
        self._use(-best[2])
        if valid:
            log.info("ItemKNN: k=%d shrink=%g (validation NDCG@10 %s)", self.k, self.shrink, self.shrink_tuning)
        return self

    def _neighbours(self, x: np.ndarray, k_max: int, shrink: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
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
            if shrink:
                s = (x[:, b0:b1].T @ x) / (norms[b0:b1, None] * norms[None, :] + np.float32(shrink))  # [block, I]
            else:
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
        self._by_source = CSR.from_coo(nbr[keep], target, sim[keep], (self.num_items, self.num_items))

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._by_source.sum_rows([unique_items(h) for h in histories])
