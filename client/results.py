"""The client's typed results: ScoredItem, RankResult and Health."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypedDict

import numpy as np


@dataclass(frozen=True)
class ScoredItem:
    movie_id: int
    score: float
    title: str | None = None


@dataclass(frozen=True)
class RankResult:
    """Movies with their scores, best first, and the server round trip that produced them."""

    items: tuple[ScoredItem, ...]  # best first
    latency_ms: float

    def top(self, k: int) -> tuple[ScoredItem, ...]:
        return self.items[:k]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ScoredItem]:
        return iter(self.items)

    @property
    def movie_ids(self) -> np.ndarray:
        """INT64 [N], best first."""
        return np.array([it.movie_id for it in self.items], dtype=np.int64)

    @property
    def scores(self) -> np.ndarray:
        """FP32 [N], best first (non-increasing)."""
        return np.array([it.score for it in self.items], dtype=np.float32)

    @property
    def titles(self) -> list[str | None]:
        return [it.title for it in self.items]


class Health(TypedDict):
    live: bool
    ready: bool
    models: dict[str, bool]  # every model of hybridrec.spec -> ready
