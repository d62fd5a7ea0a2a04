"""The interface every baseline scorer implements, and the validation-only hyper-parameter search they share.

``fit(train, num_items, **side) -> self`` with ``train`` = userId -> int array of catalog item indices in chronological
order (see :class:`hybridrec.training.evaluation.splits.IndexedSplit`), then ``score(users, histories) -> float32
[len(users), num_items]``: one row per user over every catalog item, from that user's history (training items for
validation, training + validation item for test). ``score`` only ever sees the users it is given, so
:func:`hybridrec.training.evaluation.metrics.evaluate_ranking` can call it chunk by chunk. Masking seen items is the
metric's job, not the scorer's. Side information is passed by keyword and every scorer ignores the keys it does not
use, so one driver can pass the same side information to all of them: ``valid`` (userId -> validation item index:
scorers with a hyper-parameter grid pick the value with the best validation NDCG@10 through
:func:`tune_on_validation`, full ranking with the training items masked; the sequence models early-stop on it) and
``movies`` (the :class:`hybridrec.data.Movie` or None of every item index, for the content-based scorer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from hybridrec.training.evaluation.metrics import evaluate_ranking

__all__ = ["LOWEST", "Scorer", "tune_on_validation", "validation_ndcg"]

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
