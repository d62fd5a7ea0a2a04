"""Popularity baseline: the number of training users of each item, the same ranking for everyone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybridrec.training.evaluation.splits import item_counts

__all__ = ["Popularity"]


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
