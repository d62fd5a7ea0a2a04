"""Content-based TF-IDF baseline: each item is the sum of per-field L2-normalised TF-IDF vectors of ``genre:`` tokens,
overview tokens (:func:`hybridrec.preprocessing.tokenize`), ``cast:`` and ``director:`` names, the genre field
weighted (weight chosen on validation); IDF ``log((1+N)/(1+df)) + 1`` over the whole catalog (metadata, not
interactions, so no leakage). The user profile is the mean of the history items' vectors, the score its dot product
with the item's. Scores every catalog item, including items never seen in training. Sparse matrices are the tiny
numpy :class:`hybridrec.training.evaluation.baselines.sparse.CSR` (no scipy).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridrec.preprocessing import tokenize
from hybridrec.training.evaluation.baselines.scorer import tune_on_validation
from hybridrec.training.evaluation.baselines.sparse import CSR, unique_items

if TYPE_CHECKING:
    from hybridrec.data import Movie

__all__ = ["FIELDS", "ContentTFIDF", "item_fields", "item_tokens"]


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
        self._items = CSR(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (0, 0))

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
            self._items = CSR.from_coo(
                np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), (n, len(vocab))
            )
        else:
            self._items = CSR(np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), (n, 0))

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(users), self._items.shape[0]), dtype=np.float32)
        for start in range(0, len(users), self.users_per_block):
            hist = [unique_items(h) for h in histories[start : start + self.users_per_block]]
            counts = np.array([max(len(h), 1) for h in hist], dtype=np.float32)[:, None]
            profile = self._items.sum_rows(hist) / counts  # the mean item vector
            out[start : start + len(hist)] = self._items.matmul_t(profile)
        return out
