"""Request payloads built from the real data pack, shared by the Locust users and the latency benchmark.

Four workloads, each a list of ready requests (spec-named arrays with the batch axis, checked against the spec once),
built exactly as :class:`~hybridrec.client.RecommenderClient` builds them (the served history length, the
candidate padding of ``spec.rank_slots``):

* ``recommend``: a real user's chronological history (encoded, padded to ``spec.HISTORY_LENGTH``) and ``k`` -> the
  `recommend` ensemble;
* ``rank``: a real user's history and ``N`` popular movies that user has not rated, **by movieId** (padded with
  ``spec.NO_MOVIE`` to ``spec.rank_slots(N)``, a power of two >= 16, like the client does) -> the `rank` ensemble,
  which looks their embeddings up in the served catalog; no posters travel;
* ``encode_items``: ``N`` catalog movies that have a poster, with their metadata -> the `item_encoder` model
  (batch axis 1 holding N items: what embedding a batch of new catalog items costs);
* ``rank_content``: a real user's history and ``N`` unseen popular movies with their posters and metadata -> the
  `rank_content` ensemble (the cold-start path for movies outside the catalog; the payload `rank` had before it
  went by id). Available to the load test and the latency benchmark, not part of the default mix.

:class:`PayloadPool` loads the dataset once and builds each workload's list on first use, so a process that only
ranks by id never decodes a poster. Importing this module patches nothing (the locustfile does the gevent set-up),
so plain scripts can use it too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec import spec

if TYPE_CHECKING:
    from hybridrec.data import MovieLensData
    from hybridrec.preprocessing import Artifacts, ItemCatalog

DEFAULT_CANDIDATES = 50
DEFAULT_ITEMS = 16  # movies embedded per encode_items request
DEFAULT_PAYLOADS = 32
MIN_HISTORY = 5  # users with fewer ratings say little about themselves; skip them
POPULAR_POOL = 4  # candidates are drawn from the POPULAR_POOL * N most popular movies the user has not seen

# The request name of each workload in Locust's stats and the served model it calls.
WORKLOAD_MODELS: dict[str, str] = {
    "recommend": spec.RECOMMEND.name,
    "rank": spec.RANK.name,
    "encode_items": spec.ITEM_ENCODER.name,
    "rank_content": spec.RANK_CONTENT.name,
}
WORKLOADS = tuple(WORKLOAD_MODELS)


@dataclass(frozen=True)
class Payload:
    """One ready request for ``model``: spec-named arrays with the batch axis (batch 1 = one user / one item batch).

    ``expect`` is the leading shape of every output of a good answer (``(1, N)`` scores or embeddings, ``(1, k)``
    recommendations). ``scored`` is how many leading entries of the last axis of a float output must be finite
    (None: all); the rest are padding that must come back as -inf (`rank` by id pads its candidates)."""

    model: str
    user_id: int | None  # the real user whose history is sent (None for encode_items)
    movie_ids: tuple[int, ...]  # the N movies sent, in request order, padding left out (empty for recommend)
    arrays: dict[str, np.ndarray]
    expect: tuple[int, ...]
    scored: int | None = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def check(self, outputs: dict[str, np.ndarray]) -> None:
        """Raise ValueError unless ``outputs`` (the server's answer, by name) is a good answer to this request."""
        for name, a in outputs.items():
            if a.shape[: len(self.expect)] != self.expect:
                raise ValueError(f"{self.model}: output '{name}' has shape {a.shape}, expected {self.expect}")
            if a.dtype.kind != "f":
                continue
            real, pad = (a, a[..., :0]) if self.scored is None else (a[..., : self.scored], a[..., self.scored :])
            if not np.all(np.isfinite(real)):
                raise ValueError(f"{self.model}: output '{name}' is not finite")
            if not np.all(np.isneginf(pad)):
                raise ValueError(f"{self.model}: output '{name}': padded candidates must score -inf")


RankPayload = Payload  # the name of a `rank` payload before the other workloads existed


def _payload(
    model: spec.ModelSpec,
    user_id: int | None,
    movie_ids: tuple[int, ...],
    arrays: dict[str, np.ndarray],
    expect: tuple[int, ...],
    scored: int | None = None,
) -> Payload:
    for t in model.inputs:  # fail here, once, rather than on every request
        t.check(arrays[t.name], batched=model.batched)
    return Payload(model.name, user_id, movie_ids, arrays, expect, scored)


def _item_arrays(items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """[N, ...] item tensors -> [1, N, ...]: one request holding N items."""
    return {name: np.ascontiguousarray(a[None]) for name, a in items.items()}


@dataclass(frozen=True)
class PoolKey:
    repo: str
    data: str
    candidates: int = DEFAULT_CANDIDATES
    payloads: int = DEFAULT_PAYLOADS
    seed: int = 0
    items: int = DEFAULT_ITEMS
    k: int = spec.DEFAULT_K


class DataSource:
    """The dataset, the repo's fitted artifacts and a catalog of item features, loaded once."""

    def __init__(self, repo: str | Path, data: str | Path | None = None) -> None:
        from hybridrec.data import load_movielens, resolve_data_dir
        from hybridrec.preprocessing import Artifacts, ItemCatalog

        self.artifacts: Artifacts = Artifacts.load(repo)
        self.dataset: MovieLensData = load_movielens(resolve_data_dir(data or None))
        self.catalog: ItemCatalog = ItemCatalog(self.dataset, self.artifacts)
        self.histories = {u: h for u, h in self.dataset.histories().items() if len(h) >= MIN_HISTORY}
        if not self.histories:
            raise ValueError(f"{self.dataset.root}: no user with >= {MIN_HISTORY} ratings")

    @cached_property
    def popular(self) -> list[int]:
        """Rated catalog movies, most rated first (ties by movieId)."""
        ids, counts = np.unique(self.dataset.ratings.movie_ids, return_counts=True)
        order = np.lexsort((ids, -counts))
        return [int(m) for m in ids[order] if int(m) in self.catalog]

    @cached_property
    def by_popularity(self) -> list[int]:
        """:attr:`popular`, movies with a poster before those without: posters are the heavy part of a
        `rank_content` request, and its payload should carry real pixels."""
        movies = self.dataset.movies
        popular = self.popular
        return [m for m in popular if movies[m].poster is not None] + [m for m in popular if movies[m].poster is None]

    @cached_property
    def with_poster(self) -> list[int]:
        """Every catalog movie that has a poster file, by movieId."""
        return sorted(m for m, movie in self.dataset.movies.items() if movie.poster is not None)

    def users(self, count: int, rng: random.Random) -> list[int]:
        """``count`` users with enough history: distinct when there are that many."""
        users = sorted(self.histories)
        return rng.sample(users, count) if count <= len(users) else [rng.choice(users) for _ in range(count)]

    def history(self, user: int) -> np.ndarray:
        """The user's encoded history [1, spec.HISTORY_LENGTH] as the client sends it (most recent items, 0-padded)."""
        from hybridrec.preprocessing import encode_history

        return spec.served_history(encode_history(self.histories[user].tolist(), self.artifacts))[None]

    def unseen(self, user: int, ranked: Sequence[int], count: int, rng: random.Random) -> tuple[int, ...]:
        """``count`` movies drawn from the ``POPULAR_POOL * count`` first of ``ranked`` that ``user`` has not rated
        (seen ones fill up for a user who rated nearly everything)."""
        seen = {int(m) for m in self.histories[user]}
        unseen: list[int] = []
        for m in ranked:
            if m not in seen:
                unseen.append(m)
                if len(unseen) >= POPULAR_POOL * count:
                    break
        if len(unseen) < count:
            unseen += [m for m in ranked if m not in unseen][: count - len(unseen)]
        return tuple(rng.sample(unseen, count))


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")


def _check_candidates(candidates: int, ranked: Sequence[int]) -> None:
    if candidates > spec.MAX_RANK_CANDIDATES:
        raise ValueError(f"--candidates {candidates}: one request holds at most {spec.MAX_RANK_CANDIDATES}")
    if len(ranked) < candidates:
        raise ValueError(f"--candidates {candidates} but the catalog has only {len(ranked)} rated movies")


def rank_payloads(src: DataSource, *, candidates: int, payloads: int, seed: int = 0) -> list[Payload]:
    """``payloads`` `rank` requests by movieId: each user's history and ``candidates`` popular movies that user has
    not rated, padded to ``spec.rank_slots(candidates)`` slots; a good answer scores the padding -inf."""
    _check_counts(candidates=candidates, payloads=payloads)
    ranked = src.popular
    _check_candidates(candidates, ranked)
    rng = random.Random(seed)
    pool: list[Payload] = []
    for user in src.users(payloads, rng):
        movie_ids = src.unseen(user, ranked, candidates, rng)
        arrays = {"history": src.history(user), "movie_id": spec.rank_candidates(np.asarray(movie_ids))}
        slots = arrays["movie_id"].shape[1]
        pool.append(_payload(spec.RANK, user, movie_ids, arrays, (1, slots), scored=candidates))
    return pool


def rank_content_payloads(src: DataSource, *, candidates: int, payloads: int, seed: int = 0) -> list[Payload]:
    """``payloads`` `rank_content` requests: each user's history and ``candidates`` popular movies that user has not
    rated, with their posters and metadata (the same users and movies as :func:`rank_payloads` where the catalog's
    most popular movies have posters)."""
    _check_counts(candidates=candidates, payloads=payloads)
    ranked = src.by_popularity
    _check_candidates(candidates, ranked)
    rng = random.Random(seed)
    pool: list[Payload] = []
    for user in src.users(payloads, rng):
        movie_ids = src.unseen(user, ranked, candidates, rng)
        arrays = {"history": src.history(user), **_item_arrays(src.catalog.features(movie_ids))}
        pool.append(_payload(spec.RANK_CONTENT, user, movie_ids, arrays, (1, candidates)))
    return pool


def recommend_payloads(src: DataSource, *, payloads: int, k: int = spec.DEFAULT_K, seed: int = 0) -> list[Payload]:
    """``payloads`` recommend requests: distinct real users' histories, top-``k`` asked."""
    _check_counts(payloads=payloads, k=k)
    expect = (1, min(k, spec.RETRIEVAL_DEPTH))  # the server clamps k to the retrieval depth
    rng = random.Random(seed + 1)  # other users than the rank payloads' where the data allows
    k_array = np.array([k], dtype=np.int64)
    return [
        _payload(spec.RECOMMEND, user, (), {"history": src.history(user), "k": k_array}, expect)
        for user in src.users(payloads, rng)
    ]


def item_payloads(src: DataSource, *, items: int, payloads: int, seed: int = 0) -> list[Payload]:
    """``payloads`` image-encoder requests of ``items`` distinct catalog movies each, all with a real poster."""
    _check_counts(items=items, payloads=payloads)
    movies = src.with_poster
    if len(movies) < items:
        raise ValueError(f"--items {items} but only {len(movies)} catalog movies have a poster")
    rng = random.Random(seed + 2)
    pool: list[Payload] = []
    for _ in range(payloads):
        movie_ids = tuple(rng.sample(movies, items))
        arrays = _item_arrays(src.catalog.features(movie_ids))
        pool.append(_payload(spec.ITEM_ENCODER, None, movie_ids, arrays, (1, items)))
    return pool


class PayloadPool:
    """Every workload's requests for one :class:`PoolKey`; the dataset is loaded once and each workload's list is
    built on its first use, then shared."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.build_seconds: dict[str, float] = {}  # per workload built so far (data loading counted in the first)

    @cached_property
    def source(self) -> DataSource:
        return DataSource(self.key.repo, self.key.data or None)

    @cached_property
    def rank(self) -> list[Payload]:
        k = self.key
        return rank_payloads(self.source, candidates=k.candidates, payloads=k.payloads, seed=k.seed)

    @cached_property
    def recommend(self) -> list[Payload]:
        return recommend_payloads(self.source, payloads=self.key.payloads, k=self.key.k, seed=self.key.seed)

    @cached_property
    def encode_items(self) -> list[Payload]:
        return item_payloads(self.source, items=self.key.items, payloads=self.key.payloads, seed=self.key.seed)

    @cached_property
    def rank_content(self) -> list[Payload]:
        k = self.key
        return rank_content_payloads(self.source, candidates=k.candidates, payloads=k.payloads, seed=k.seed)

    def get(self, workload: str) -> list[Payload]:
        if workload not in WORKLOADS:
            raise KeyError(f"unknown workload {workload!r}; known: {list(WORKLOADS)}")
        t0 = time.perf_counter()
        payloads: list[Payload] = getattr(self, workload)
        self.build_seconds.setdefault(workload, time.perf_counter() - t0)
        return payloads


def build_payloads(
    repo: str | Path,
    data: str | Path | None = None,
    *,
    candidates: int = DEFAULT_CANDIDATES,
    payloads: int = DEFAULT_PAYLOADS,
    seed: int = 0,
) -> list[Payload]:
    """``payloads`` `rank` requests from real users: each user's history (most recent items, encoded with the repo's
    artifacts) and ``candidates`` popular movies that user has not rated, by movieId (see :func:`rank_payloads`)."""
    _check_counts(candidates=candidates, payloads=payloads)  # before loading anything
    return rank_payloads(DataSource(repo, data), candidates=candidates, payloads=payloads, seed=seed)
