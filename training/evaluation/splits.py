"""The two evaluation splits, both deterministic (no randomness anywhere) and torch-free.

(a) Next-item chronological leave-one-out (:func:`leave_one_out_split`)
    Each user's ratings are ordered by ``(timestamp, movieId)`` (the order of
    :meth:`hybridrec.data.MovieLensData.histories`). For a user with >= 3 ratings the last one is the test item, the
    second-to-last the validation item and the rest the training sequence; a user with fewer than 3 ratings has
    training items only (and is never evaluated). ``training/train.py`` trains the hybrid on this same split (one
    implementation), and it keeps every row's role so that exports (RecBole) carry each interaction's rating and
    timestamp.

    Evaluation stages (:meth:`IndexedSplit.stage`):

    * ``valid``: history = training sequence, target = validation item, seen (masked) = training items;
    * ``test``: history = training sequence + validation item, target = test item, seen = both.

    Scorers rank over the whole catalog (:class:`ItemIndex`: every movie of ``movies.csv``, index = position in
    ascending movieId order), not just the items seen in training, so items without training interactions stay
    candidates (they can only be found by content-based scorers).

(b) Temporal split of all ratings (:func:`temporal_split`)
    All ratings are sorted by ``(timestamp, userId, movieId)``; the first ``floor(0.70 n)`` rows are train, the rows up
    to ``floor(0.85 n)`` validation and the rest test. The cut is by position, so rows sharing a timestamp can fall on
    both sides of a boundary, in the tie-break order. Each row's label is ``liked = rating >= 4`` (on the 0.5-5
    MovieLens scale). This split is for the rating-classification view (precision/recall/F1/AUC of "will the user
    like it"), where every model must predict the future from the past across all users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hybridrec.data import Movie, MovieLensData, Ratings

__all__ = [
    "LIKED_THRESHOLD",
    "TEST",
    "TRAIN",
    "VALID",
    "IndexedSplit",
    "ItemIndex",
    "LeaveOneOutSplit",
    "Stage",
    "TemporalSplit",
    "item_counts",
    "leave_one_out_split",
    "liked",
    "temporal_split",
]

TRAIN, VALID, TEST = 0, 1, 2  # row roles of a LeaveOneOutSplit
LIKED_THRESHOLD = 4.0
Stage = Literal["valid", "test"]


# ----------------------------------------------------------------------------------------------------------------------
# (a) leave-one-out


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Per-user chronological leave-one-out in movieIds, plus the role of every rating row.

    ``ratings`` is the dataset's ratings in ``(userId, timestamp, movieId)`` order and ``role[i]`` is TRAIN, VALID or
    TEST for row ``i``; ``train``/``valid``/``test`` are the same split as movieId sequences (users ascending).
    """

    train: dict[int, np.ndarray]  # userId -> int64 movieIds, chronological; every user
    valid: dict[int, int]  # userId -> movieId; users with >= 3 ratings
    test: dict[int, int]  # userId -> movieId; same users as valid
    ratings: Ratings
    role: np.ndarray  # int8, one per row of ``ratings``

    def indexed(self, items: ItemIndex) -> IndexedSplit:
        """The same split in catalog item indices (what the scorers consume)."""
        return IndexedSplit(
            items=items,
            train={u: items.index(s) for u, s in self.train.items()},
            valid={u: int(items.index([m])[0]) for u, m in self.valid.items()},
            test={u: int(items.index([m])[0]) for u, m in self.test.items()},
        )


def leave_one_out_split(data: MovieLensData | Ratings) -> LeaveOneOutSplit:
    """The leave-one-out split of a dataset (or of bare ratings); see the module docstring."""
    ratings = (data.ratings if isinstance(data, MovieLensData) else data).chronological()
    n = len(ratings)
    role = np.full(n, TRAIN, dtype=np.int8)
    train: dict[int, np.ndarray] = {}
    valid: dict[int, int] = {}
    test: dict[int, int] = {}
    if n == 0:
        return LeaveOneOutSplit(train, valid, test, ratings, role)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ratings.user_ids)) + 1))
    ends = np.append(starts[1:], n)
    movies = ratings.movie_ids.astype(np.int64, copy=False)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        user = int(ratings.user_ids[start])
        if end - start >= 3:
            role[end - 2], role[end - 1] = VALID, TEST
            train[user] = movies[start : end - 2].copy()
            valid[user], test[user] = int(movies[end - 2]), int(movies[end - 1])
        else:
            train[user] = movies[start:end].copy()
    return LeaveOneOutSplit(train, valid, test, ratings, role)


@dataclass(frozen=True)
class ItemIndex:
    """The catalog's movieIds in ascending order; an item's index is its position (0 .. len - 1)."""

    movie_ids: np.ndarray  # int64, strictly ascending

    def __post_init__(self) -> None:
        ids = np.asarray(self.movie_ids, dtype=np.int64)
        if ids.ndim != 1 or (len(ids) > 1 and not np.all(np.diff(ids) > 0)):
            raise ValueError("ItemIndex.movie_ids must be a strictly ascending 1-D array")
        object.__setattr__(self, "movie_ids", ids)

    @classmethod
    def from_data(cls, data: MovieLensData) -> ItemIndex:
        return cls(np.array(sorted(data.movies), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.movie_ids)

    def index(self, movie_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """int64 indices of catalog movieIds; KeyError naming the first ids that are not in the catalog."""
        ids = np.asarray(movie_ids if isinstance(movie_ids, np.ndarray) else list(movie_ids), dtype=np.int64)
        if len(self.movie_ids) == 0:
            ok = np.zeros(ids.shape, dtype=bool)
            pos = np.zeros(ids.shape, dtype=np.int64)
        else:
            pos = np.searchsorted(self.movie_ids, ids)
            ok = self.movie_ids[np.minimum(pos, len(self.movie_ids) - 1)] == ids
        if not np.all(ok):
            raise KeyError(f"movie ids not in the catalog: {ids[~ok][:10].tolist()}")
        return pos.astype(np.int64)

    def movies(self, data: MovieLensData) -> list[Movie | None]:
        """``data``'s Movie per item index (the content-based scorer's side information)."""
        return [data.movies.get(int(m)) for m in self.movie_ids]


@dataclass(frozen=True)
class IndexedSplit:
    """A :class:`LeaveOneOutSplit` in catalog item indices."""

    items: ItemIndex
    train: dict[int, np.ndarray]  # userId -> int64 item indices, chronological
    valid: dict[int, int]
    test: dict[int, int]

    @property
    def num_items(self) -> int:
        return len(self.items)

    def stage(self, stage: Stage) -> tuple[list[int], dict[int, np.ndarray], dict[int, int]]:
        """(users, histories, targets) of an evaluation stage; the histories are also what is masked as seen."""
        if stage == "valid":
            users = sorted(self.valid)
            return users, {u: self.train[u] for u in users}, dict(self.valid)
        if stage == "test":
            users = sorted(self.test)
            hist = {u: np.append(self.train[u], np.int64(self.valid[u])) for u in users}
            return users, hist, dict(self.test)
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


def item_counts(train: Mapping[int, np.ndarray], num_items: int) -> np.ndarray:
    """int64 [num_items]: the number of training interactions of each item (a user counted once per item)."""
    if not train:
        return np.zeros(num_items, dtype=np.int64)
    flat = np.concatenate([np.unique(np.asarray(s, dtype=np.int64)) for s in train.values()])
    return np.bincount(flat, minlength=num_items).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------------
# (b) temporal


def liked(ratings: Ratings | np.ndarray) -> np.ndarray:
    """bool per row: rating >= 4."""
    values = ratings.ratings if isinstance(ratings, Ratings) else np.asarray(ratings)
    return np.asarray(values >= LIKED_THRESHOLD)


@dataclass(frozen=True)
class TemporalSplit:
    """All ratings cut by time into train / valid / test, each in (timestamp, userId, movieId) order."""

    train: Ratings
    valid: Ratings
    test: Ratings

    @property
    def labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``liked`` (rating >= 4) of train, valid and test."""
        return liked(self.train), liked(self.valid), liked(self.test)


def temporal_split(data: MovieLensData | Ratings, fractions: tuple[float, float] = (0.70, 0.85)) -> TemporalSplit:
    """Sort all ratings by (timestamp, userId, movieId) and cut at ``floor(f * n)`` for the two cumulative fractions
    (default 70% / 15% / 15%)."""
    first, second = fractions
    if not 0.0 < first <= second <= 1.0:
        raise ValueError(f"fractions must satisfy 0 < train <= train+valid <= 1, got {fractions}")
    ratings = data.ratings if isinstance(data, MovieLensData) else data
    order = np.lexsort((ratings.movie_ids, ratings.user_ids, ratings.timestamps))
    n = len(order)
    a, b = int(np.floor(first * n)), int(np.floor(second * n))
    return TemporalSplit(ratings.take(order[:a]), ratings.take(order[a:b]), ratings.take(order[b:]))
