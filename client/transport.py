"""Transport: the tritonclient module (gRPC or HTTP, blocking or asyncio), the Plan protocol between request plans
and the code that runs them, and the blocking runner of :class:`hybridrec.client.RecommenderClient`.

A plan (see :mod:`hybridrec.client.plans`) yields the server calls it needs (a list of :class:`Call`; the calls of
one list are independent) and receives their raw tritonclient results. :class:`BlockingTransport` runs plans with
blocking calls, one after the other; :class:`hybridrec.client.aio.AsyncRecommenderClient` awaits them, the calls of
one list concurrently.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from types import ModuleType
from typing import Any, TypeAlias, TypeVar

from hybridrec.client.retries import Attempts, Call, RetryPolicy

T = TypeVar("T")
Plan: TypeAlias = Generator[list[Call], list[Any], T]


def _module(protocol: str, aio: bool) -> ModuleType:
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    import importlib

    return importlib.import_module(f"tritonclient.{protocol}{'.aio' if aio else ''}")


class BlockingTransport:
    """Runs plans over one blocking tritonclient client (a mixin of :class:`hybridrec.client.plans.ClientCore`)."""

    url: str
    protocol: str
    timeout_s: float
    retry: RetryPolicy
    _mod: ModuleType

    def _open(self) -> None:
        # gRPC takes a deadline per call; the HTTP client's socket timeouts are fixed per connection pool, so HTTP
        # keeps one tritonclient client per distinct timeout (normally one: the client's).
        self._clients: dict[float, Any] = {}
        self._client = self._connection(self.timeout_s)

    def _connection(self, timeout_s: float) -> Any:
        key = 0.0 if self.protocol == "grpc" else timeout_s
        if key not in self._clients:
            if self.protocol == "http":
                self._clients[key] = self._mod.InferenceServerClient(
                    self.url, connection_timeout=timeout_s, network_timeout=timeout_s
                )
            else:
                self._clients[key] = self._mod.InferenceServerClient(self.url)
        return self._clients[key]

    # --- lifecycle ---
    def close(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            c.close()

    # --- running plans ---
    def _invoke(self, call: Call) -> Any:
        method = getattr(self._connection(call.timeout_s), call.method)
        if self.protocol == "grpc":
            return method(*call.args, **call.kwargs, client_timeout=call.timeout_s)
        return method(*call.args, **call.kwargs)

    def _call(self, call: Call) -> Any:
        attempts = Attempts(call, self.retry)
        while True:
            try:
                return self._invoke(call)
            except Exception as e:
                delay = attempts.failed(e)
            time.sleep(delay)

    def _run(self, plan: Plan[T]) -> T:
        try:
            calls = next(plan)
            while True:
                calls = plan.send([self._call(c) for c in calls])
        except StopIteration as done:
            return done.value
