"""Small numpy helpers shared by the sparse scorers (item-kNN, EASE, content TF-IDF): binary user-item rows and a
minimal compressed-sparse-row matrix (:class:`CSR`) with the two products the scorers need, so scipy is not needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CSR", "binary_rows", "gather_ranges", "unique_items"]


def unique_items(history: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(history, dtype=np.int64))


def binary_rows(rows: Sequence[np.ndarray], num_cols: int, dtype: type = np.float32) -> np.ndarray:
    out: np.ndarray = np.zeros((len(rows), num_cols), dtype=dtype)
    for r, cols in enumerate(rows):
        out[r, np.asarray(cols, dtype=np.int64)] = 1
    return out


def gather_ranges(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(indptr[r], indptr[r + 1])`` for every r in rows (vectorised)."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


@dataclass(frozen=True)
class CSR:
    """A minimal compressed-sparse-row float32 matrix (what the scorers need and nothing more)."""

    indptr: np.ndarray  # int64 [rows + 1]
    indices: np.ndarray  # int64 [nnz], column of each entry
    data: np.ndarray  # float32 [nnz]
    shape: tuple[int, int]

    @classmethod
    def from_coo(cls, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> CSR:
        order = np.lexsort((cols, rows))
        counts = np.bincount(rows, minlength=shape[0])
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return cls(indptr, cols[order].astype(np.int64), vals[order].astype(np.float32), shape)

    def sum_rows(self, groups: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(groups), cols]: row g is the sum of this matrix's rows listed in ``groups[g]``."""
        n_cols = self.shape[1]
        parts, weights = [], []
        for g, rows in enumerate(groups):
            idx = gather_ranges(self.indptr, np.asarray(rows, dtype=np.int64))
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
