"""EASE baseline: Steck's closed form ``B = I - P / diag(P)``, ``P = (X^T X + lambda I)^-1``, restricted to the items
with >= 1 training interaction (the others score lowest), ``lambda`` chosen on validation NDCG@10. With fewer users
than items (ml-latest-small: 610 users, ~9.6k trained items) the exact dual (Woodbury) form is used and no ``I x I``
matrix is formed: ``P = (I - X^T (X X^T + lambda I)^-1 X) / lambda`` and ``h B = h - (h P) / diag(P)``, costing a
``U x U`` inverse per lambda. The primal form (dense ``I x I`` inverse: 9.7k items = 380 MB in float32, 760 MB in
float64, and about two minutes per lambda on two CPU cores) is used only when items <= users.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybridrec.training.evaluation.baselines.scorer import LOWEST, tune_on_validation
from hybridrec.training.evaluation.baselines.sparse import binary_rows, unique_items
from hybridrec.training.evaluation.splits import item_counts

__all__ = ["EASE"]

log = logging.getLogger(__name__)


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck 2019), exact closed form (primal or dual, see the module docstring).

    ``lam`` fixes the L2 weight; with ``lam=None`` it is tuned over ``grid`` on validation when ``fit`` gets ``valid``
    (else 500). ``self.tuning`` holds the validation NDCG@10 of each tried value.
    """

    name = "EASE"

    def __init__(
        self,
        lam: float | None = None,
        grid: Sequence[float] = (10.0, 30.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 10000.0),
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
        self._x = binary_rows([col[unique_items(s)] for s in train.values() if len(s)], len(self.active), np.float64)
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
        rows = [c[c >= 0] for c in (col[unique_items(h)] for h in histories)]
        h = binary_rows(rows, len(self.active), np.float64)
        if self._b is not None:
            s = h @ self._b
        else:
            hp = (h - (h @ self._x.T) @ self._kx) / self.lam
            s = h - hp / self._diag[None, :]
        out = np.full((len(users), self.num_items), LOWEST, dtype=np.float32)
        out[:, self.active] = s
        return out
