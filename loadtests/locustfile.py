"""Locust load test of the `rank` ensemble over Triton gRPC or HTTP, with requests built from the real data pack.

Run it headless and bounded through ``hybridrec loadtest -- --host 127.0.0.1:8001`` (``loadtests/runner.py``), or
directly::

    locust -f loadtests/locustfile.py --headless -u 4 -r 4 -t 30s --host 127.0.0.1:8001 \\
        --protocol grpc --candidates 50 --repo model_repository

``--host`` is ``host:port`` without a scheme (an ``http://`` prefix is stripped): 8001 is Triton's gRPC port,
8000 its HTTP port. Custom options: ``--protocol grpc|http``, ``--candidates N`` (items ranked per request),
``--repo`` (model repository holding ``artifacts.json``; default ``$HYBRIDREC_REPO`` or ``model_repository``),
``--data`` (MovieLens folder; default :func:`hybridrec.data.resolve_data_dir`), ``--payloads`` (distinct requests
prepared per process), ``--request-timeout`` and ``--max-unavailable``.

Design:

* gRPC under gevent: ``grpc.experimental.gevent.init_gevent()`` runs at import, before any channel exists (locust has
  already monkey-patched by then); without it every user's call blocks the whole process and users are serialised.
* One :class:`~hybridrec.client.client.RecommenderClient` per user, created in ``on_start`` and closed in ``on_stop``.
* A pool of request payloads is built ONCE PER PROCESS (``events.init``), not per user: real user histories from the
  ratings, and for each of them ``N`` unseen popular movies with their real posters and metadata, already encoded
  into the spec's tensors. A task only picks a random payload and sends it, so the load generator spends no time in
  preprocessing, and different payloads keep a response cache from answering instead of the models.
* Closed loop, no think time (``wait_time = between(0, 0)``): each user sends its next request as soon as the previous
  one is answered, so ``users`` is the concurrency and the measured req/s is the throughput at that concurrency.
  (``constant_throughput`` would cap the rate instead, which hides the server's limit.)
* Every call fires exactly one ``request`` event, success or failure; nothing is raised into locust. When the server
  is unreachable for ``--max-unavailable`` consecutive calls the run quits by itself instead of failing forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar

import gevent
import grpc.experimental.gevent
import numpy as np
from locust import User, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner

from hybridrec.client.client import RecommenderClient, RecommenderError, ServerUnavailableError
from hybridrec.loadtests.payloads import (
    DEFAULT_CANDIDATES,
    DEFAULT_PAYLOADS,
    PoolKey,
    RankPayload,
    build_payloads,
)

grpc.experimental.gevent.init_gevent()  # before any channel exists: makes gRPC calls cooperative under gevent

_POOLS: dict[PoolKey, list[RankPayload]] = {}  # one payload pool per process

log = logging.getLogger("hybridrec.loadtests")

DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_MAX_UNAVAILABLE = 5


def default_repo() -> str:
    return os.environ.get("HYBRIDREC_REPO") or "model_repository"


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    group = parser.add_argument_group("hybridrec", "options of the hybridrec rank load test")
    group.add_argument(
        "--protocol",
        choices=("grpc", "http"),
        default="grpc",
        help="Triton protocol; --host is then the gRPC (8001) or HTTP (8000) address",
    )
    group.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help="movies ranked per request (N)")
    group.add_argument(
        "--repo",
        default=default_repo(),
        help="model repository (or folder) holding artifacts.json; default $HYBRIDREC_REPO or model_repository",
    )
    group.add_argument("--data", default="", help="MovieLens folder (default: hybridrec.data.resolve_data_dir())")
    group.add_argument(
        "--payloads",
        type=int,
        default=DEFAULT_PAYLOADS,
        help="distinct (history, candidates) requests prepared per process",
    )
    group.add_argument(
        "--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, help="client timeout per request, seconds"
    )
    group.add_argument(
        "--max-unavailable",
        type=int,
        default=DEFAULT_MAX_UNAVAILABLE,
        help="quit the run after this many consecutive 'server unavailable' errors",
    )


def _option(environment: Environment, name: str, default: Any) -> Any:
    opts = environment.parsed_options
    value = getattr(opts, name, None) if opts is not None else None
    return default if value is None else value


def payload_pool(environment: Environment) -> list[RankPayload]:
    """This process's payloads for the environment's options, built on first use and then shared by all users."""
    key = PoolKey(
        repo=str(_option(environment, "repo", default_repo())),
        data=str(_option(environment, "data", "")),
        candidates=int(_option(environment, "candidates", DEFAULT_CANDIDATES)),
        payloads=int(_option(environment, "payloads", DEFAULT_PAYLOADS)),
    )
    if key not in _POOLS:
        t0 = time.perf_counter()
        pool = build_payloads(key.repo, key.data or None, candidates=key.candidates, payloads=key.payloads)
        _POOLS[key] = pool
        log.info(
            "prepared %d rank payloads (N=%d, %.1f MB each) from %s in %.1f s",
            len(pool),
            key.candidates,
            pool[0].nbytes / 1e6,
            key.data or "the default data pack",
            time.perf_counter() - t0,
        )
    return _POOLS[key]


@events.init.add_listener
def _prepare_pool(environment: Environment, **_: Any) -> None:
    # Built before the run (and its -t timer) starts; a master of a distributed run sends no requests itself.
    if isinstance(environment.runner, MasterRunner):
        return
    if not any(issubclass(u, RankUser) for u in environment.user_classes):
        return
    payload_pool(environment)


@events.quitting.add_listener
def _final_csv_pass(environment: Environment, **_: Any) -> None:
    # Locust's --csv writer rewrites locust_stats.csv once a second; give it one more pass after the last request,
    # so the file holds the final numbers (the runner parses it).
    if getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(1.2)


# --- users --------------------------------------------------------------------------------------------------------
def _address(host: str | None) -> str:
    """``host:port`` for tritonclient: no scheme, no trailing slash."""
    addr = (host or "").strip()
    for scheme in ("http://", "https://", "grpc://"):
        if addr.lower().startswith(scheme):
            addr = addr[len(scheme) :]
    return addr.rstrip("/")


def _length(result: Any) -> int:
    if result is None:
        return 0
    if isinstance(result, np.ndarray):
        return int(result.nbytes)
    if isinstance(result, dict):
        return sum(_length(v) for v in result.values())
    with contextlib.suppress(TypeError):
        return len(result)
    return 0


class TritonUser(User):
    """A Locust user holding one RecommenderClient; :meth:`call` times one request and reports it to locust."""

    abstract = True
    wait_time = between(0, 0)  # closed loop, as fast as possible per user: users = concurrency (see module doc)

    # Consecutive 'unavailable' errors in this process (all users): greenlets switch only at I/O, so no lock needed.
    _unavailable_streak: ClassVar[int] = 0
    _quitting: ClassVar[bool] = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.protocol: str = str(_option(environment, "protocol", "grpc"))
        self.address = _address(self.host)
        self.client: RecommenderClient | None = None

    # --- lifecycle ---
    def on_start(self) -> None:
        try:
            self.client = self._connect()
        except Exception as e:  # reported once; call() retries the connection on every request
            self._report("connect", 0.0, 0, e)

    def on_stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _connect(self) -> RecommenderClient:
        if not self.address:
            raise RecommenderError("no --host given (host:port of Triton's gRPC or HTTP endpoint)")
        timeout = float(_option(self.environment, "request_timeout", DEFAULT_REQUEST_TIMEOUT_S))
        return RecommenderClient(self.address, self.protocol, timeout_s=timeout)

    # --- requests ---
    def call(self, name: str, fn: Callable[[RecommenderClient], Any]) -> Any:
        """Run ``fn(client)``, fire exactly one request event for it and return its result (None on failure)."""
        result: Any = None
        exc: Exception | None = None
        t0 = time.perf_counter()
        try:
            if self.client is None:
                self.client = self._connect()
            result = fn(self.client)
        except Exception as e:  # never into locust: a failure is a stat, not a crash
            exc = e
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        self._report(name, elapsed_ms, _length(result) if exc is None else 0, exc)
        self._track_availability(exc)
        return None if exc is not None else result

    def _report(self, name: str, elapsed_ms: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=self.protocol,
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exc,
            context={},
        )

    def _track_availability(self, exc: Exception | None) -> None:
        cls = TritonUser
        if not isinstance(exc, ServerUnavailableError):
            cls._unavailable_streak = 0
            return
        cls._unavailable_streak += 1
        limit = int(_option(self.environment, "max_unavailable", DEFAULT_MAX_UNAVAILABLE))
        if limit > 0 and cls._unavailable_streak >= limit and not cls._quitting:
            cls._quitting = True
            log.error(
                "server %s (%s) unavailable for %d consecutive calls, stopping the run: %s",
                self.address,
                self.protocol,
                cls._unavailable_streak,
                exc,
            )
            runner = self.environment.runner
            if runner is not None:
                # From a separate greenlet: quit() stops every user, this one included, and must not be cut short
                # by this greenlet's own GreenletExit.
                gevent.spawn(runner.quit)


class RankUser(TritonUser):
    """Ranks N unseen popular movies for a real user per request (`rank` ensemble, random prepared payload)."""

    @task
    def rank(self) -> None:
        self.call("rank", self._rank)

    def _rank(self, client: RecommenderClient) -> np.ndarray:
        payload = random.choice(payload_pool(self.environment))
        scores = client.infer("rank", payload.arrays)["scores"]
        n = len(payload.movie_ids)
        if scores.shape != (1, n) or not np.all(np.isfinite(scores)):
            raise RecommenderError(f"rank: bad scores, shape {scores.shape} (expected (1, {n})) or not finite")
        return scores
