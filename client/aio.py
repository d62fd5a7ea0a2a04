"""AsyncRecommenderClient: the RecommenderClient surface over tritonclient.grpc.aio / tritonclient.http.aio.

Request building, result parsing, the error mapping and the retry policy are the sync client's (the plans of
:class:`hybridrec.client.plans.ClientCore`); only the running of the calls differs: awaited, and the independent calls
of one step (health's readiness checks, encode_items' chunks) in flight together.

The tritonclient connection is opened on first use, inside the running event loop, and bound to that loop::

    async with AsyncRecommenderClient("127.0.0.1:8001", artifacts="model_repository") as client:
        result = await client.recommend([1, 50, 260], k=10)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from hybridrec import spec
from hybridrec.client.errors import RecommenderError
from hybridrec.client.plans import MAX_ITEMS_PER_REQUEST, ClientCore, PosterSource
from hybridrec.client.results import Health, RankResult
from hybridrec.client.retries import Attempts, Call
from hybridrec.client.transport import Plan, T
from hybridrec.preprocessing import ItemMetadata


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


class AsyncRecommenderClient(ClientCore):
    """One reused asyncio connection to a Triton server serving hybridrec's model repository.

    Same constructor and methods as :class:`hybridrec.client.RecommenderClient`, as coroutines; use it as an async
    context manager or ``await client.close()``."""

    _aio = True

    def _open(self) -> None:
        self._client: Any = None  # opened on first use, in the running event loop

    def _connection(self) -> Any:
        if self._client is None:
            if self.protocol == "grpc" and _gevent_patched():
                raise RecommenderError(
                    "grpc.aio hangs in a process that gevent has monkey-patched (e.g. one that imported locust): "
                    "use protocol='http' or the blocking RecommenderClient there"
                )
            if self.protocol == "http":  # no session-wide limit: every call is bounded by its own timeout
                self._client = self._mod.InferenceServerClient(self.url, conn_timeout=None)
            else:
                self._client = self._mod.InferenceServerClient(self.url)
        return self._client

    # --- lifecycle ---
    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> AsyncRecommenderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- running plans ---
    async def _invoke(self, call: Call) -> Any:
        method = getattr(self._connection(), call.method)
        if self.protocol == "grpc":
            return await method(*call.args, **call.kwargs, client_timeout=call.timeout_s)
        return await asyncio.wait_for(method(*call.args, **call.kwargs), call.timeout_s)

    async def _call(self, call: Call) -> Any:
        attempts = Attempts(call, self.retry)
        while True:
            try:
                return await self._invoke(call)
            except Exception as e:
                delay = attempts.failed(e)
            await asyncio.sleep(delay)

    async def _run(self, plan: Plan[T]) -> T:
        try:
            calls = next(plan)
            while True:
                calls = plan.send(list(await asyncio.gather(*map(self._call, calls))))
        except StopIteration as done:
            return done.value

    # --- server ---
    async def health(self, *, timeout_s: float | None = None) -> Health:
        """Liveness, readiness and every model's readiness; raises ServerUnavailableError if unreachable."""
        return await self._run(self._plan_health(timeout_s))

    async def model_metadata(self, model_name: str, *, timeout_s: float | None = None) -> Any:
        """The server's metadata of one model (raises ModelNotFoundError for a model it does not serve)."""
        return await self._run(self._plan_model_metadata(model_name, timeout_s))

    async def load_model(self, model_name: str, *, timeout_s: float | None = None) -> None:
        """(Re)load a model on a server started with --model-control-mode=explicit (never retried; admin key)."""
        await self._run(self._plan_model_control("load_model", model_name, timeout_s))

    async def unload_model(self, model_name: str, *, timeout_s: float | None = None) -> None:
        """Unload a model (explicit model control; needs the admin key)."""
        await self._run(self._plan_model_control("unload_model", model_name, timeout_s))

    # --- tensors ---
    async def infer(
        self, model_name: str, arrays: dict[str, np.ndarray], *, check: bool = True, timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run any served model on spec-named numpy arrays (with batch axis); returns its outputs by name."""
        return await self._run(self._plan_infer(model_name, arrays, check, timeout_s))

    async def rank_tensors(
        self, history: np.ndarray, movie_ids: np.ndarray, *, timeout_s: float | None = None
    ) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against catalog movieIds [N] (`rank`); -inf = not served."""
        return await self._run(self._plan_rank_ids_tensors(history, movie_ids, timeout_s))

    async def rank_content_tensors(
        self, history: np.ndarray, items: dict[str, np.ndarray], *, timeout_s: float | None = None
    ) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against item tensors [N, ...] (`rank_content`)."""
        return await self._run(self._plan_rank_content_tensors(history, items, timeout_s))

    async def recommend_tensors(
        self, history: np.ndarray, k: int = spec.DEFAULT_K, *, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids [K], scores [K]) from the `recommend` ensemble for one encoded history [L]."""
        return await self._run(self._plan_recommend_tensors(history, k, timeout_s))

    # --- movies ---
    async def recommend(
        self, history: Sequence[int], k: int = spec.DEFAULT_K, *, timeout_s: float | None = None
    ) -> RankResult:
        """Top-k unseen catalog movies for a chronological history of movieIds (oldest first)."""
        return await self._run(self._plan_recommend(history, k, timeout_s))

    async def rank(
        self, history: Sequence[int], candidates: Sequence[int], *, timeout_s: float | None = None
    ) -> RankResult:
        """Rank catalog movieIds for a user whose chronological history (movieIds, oldest first) is given."""
        return await self._run(self._plan_rank(history, candidates, timeout_s))

    async def rank_items(
        self,
        history: Sequence[int],
        items: Sequence[tuple[ItemMetadata, PosterSource]],
        *,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Scores [N] of items given by metadata + poster alone (e.g. brand-new movies), through `rank_content`."""
        return await self._run(self._plan_rank_items(history, items, timeout_s))

    async def encode_items(
        self,
        posters: Sequence[PosterSource],
        metadata: Sequence[ItemMetadata],
        *,
        chunk_size: int = MAX_ITEMS_PER_REQUEST,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Item embeddings [M, D] from the served `item_encoder`, from content alone (item id UNK); a few chunks
        of at most ``chunk_size`` items in flight at a time. Posters as in RecommenderClient.encode_items."""
        return await self._run(self._plan_encode_items(posters, metadata, chunk_size, timeout_s))
