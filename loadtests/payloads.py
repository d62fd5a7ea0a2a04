"""Request payloads built from the real data pack, shared by the Locust users and the latency benchmark.

Importing this module patches nothing (the locustfile does the gevent set-up), so plain scripts can use it too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridrec import spec

DEFAULT_CANDIDATES = 50
DEFAULT_PAYLOADS = 32
MIN_HISTORY = 5  # users with fewer ratings say little about themselves; skip them
POPULAR_POOL = 4  # candidates are drawn from the POPULAR_POOL * N most popular movies the user has not seen


@dataclass(frozen=True)
class RankPayload:
    """One ready `rank` request: spec-named arrays with the batch axis (batch 1 = one user)."""

    user_id: int
    movie_ids: tuple[int, ...]  # the N candidates, in request order
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


@dataclass(frozen=True)
class PoolKey:
    repo: str
    data: str
    candidates: int
    payloads: int
    seed: int = 0


def build_payloads(
    repo: str | Path,
    data: str | Path | None = None,
    *,
    candidates: int = DEFAULT_CANDIDATES,
    payloads: int = DEFAULT_PAYLOADS,
    seed: int = 0,
) -> list[RankPayload]:
    """``payloads`` rank requests from real users: each user's history (most recent items, encoded with the repo's
    artifacts) and ``candidates`` popular movies that user has not rated, with real posters where the movie has one."""
    from hybridrec.data import load_movielens, resolve_data_dir
    from hybridrec.preprocessing import Artifacts, ItemCatalog, encode_history

    if candidates < 1:
        raise ValueError(f"--candidates must be >= 1, got {candidates}")
    if payloads < 1:
        raise ValueError(f"--payloads must be >= 1, got {payloads}")
    artifacts = Artifacts.load(repo)
    dataset = load_movielens(resolve_data_dir(data or None))
    catalog = ItemCatalog(dataset, artifacts)
    histories = {u: h for u, h in dataset.histories().items() if len(h) >= MIN_HISTORY}
    if not histories:
        raise ValueError(f"{dataset.root}: no user with >= {MIN_HISTORY} ratings")
    ids, counts = np.unique(dataset.ratings.movie_ids, return_counts=True)
    order = np.lexsort((ids, -counts))  # most rated first, ties by movieId
    popular = [int(m) for m in ids[order] if int(m) in catalog]
    # Posters are the heavy part of a request; prefer movies that have one, so the payload carries real pixels.
    with_poster = [m for m in popular if dataset.movies[m].poster is not None]
    ranked = with_poster + [m for m in popular if dataset.movies[m].poster is None]
    if len(ranked) < candidates:
        raise ValueError(f"--candidates {candidates} but the catalog has only {len(ranked)} rated movies")

    rng = random.Random(seed)
    users = sorted(histories)
    chosen = rng.sample(users, payloads) if payloads <= len(users) else [rng.choice(users) for _ in range(payloads)]
    pool: list[RankPayload] = []
    for user in chosen:
        seen = {int(m) for m in histories[user]}
        unseen: list[int] = []
        for m in ranked:
            if m not in seen:
                unseen.append(m)
                if len(unseen) >= POPULAR_POOL * candidates:
                    break
        if len(unseen) < candidates:  # a user who rated nearly everything: allow seen movies
            unseen += [m for m in ranked if m not in unseen][: candidates - len(unseen)]
        movie_ids = rng.sample(unseen, candidates)
        items = catalog.features(movie_ids)
        arrays = {"history": encode_history(histories[user].tolist(), artifacts)[None]}
        arrays.update({name: np.ascontiguousarray(a[None]) for name, a in items.items()})
        for t in spec.RANK.inputs:  # fail here, once, rather than on every request
            t.check(arrays[t.name])
        pool.append(RankPayload(user, tuple(movie_ids), arrays))
    return pool
