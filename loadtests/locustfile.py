"""Locust load test of the served models over Triton gRPC or HTTP, with requests built from the real data pack.

Users (pick them by class name at the end of the locust command line; locust runs every class when none is named):

* ``MixedUser``: the realistic mix, ``recommend`` : ``rank`` : ``encode_items`` = 10 : 3 : 1 (see :data:`MIX`);
* ``RecommendUser``: one user's history + k=10 -> the `recommend` ensemble (top-10 of the whole catalog);
* ``RankUser``: one user's history + N real candidate movies **by movieId** (padded to ``spec.rank_slots(N)`` like
  the client pads them) -> the `rank` ensemble (catalog lookup + fusion head; no posters travel);
* ``RankContentUser``: one user's history + N real candidate movies with posters + metadata -> the `rank_content`
  ensemble (the cold-start path; not in the mix);
* ``EncodeItemsUser``: N=16 real catalog movies (posters + metadata) -> the `item_encoder` model.

Each request is reported under its workload's name (``recommend``, ``rank``, ``encode_items``, ``rank_content``), so
a mixed run's stats have one row per endpoint. Run it headless and bounded through ``hybridrec loadtest -- --host
127.0.0.1:8001 --user-classes MixedUser`` (``loadtests/runner.py``, also distributed and as a sweep of user
counts), or directly::

    locust -f loadtests/locustfile.py --headless -u 4 -r 4 -t 30s --host 127.0.0.1:8001 \\
        --protocol grpc --candidates 50 --repo model_repository MixedUser

``--host`` is ``host:port`` without a scheme (an ``http://`` prefix is stripped): 8001 is Triton's gRPC port,
8000 its HTTP port. Custom options: ``--protocol grpc|http``, ``--candidates N`` (items ranked per `rank` request),
``--items N`` (movies per encode_items request), ``--k K`` (movies per `recommend` answer), ``--repo`` (model
repository holding ``artifacts.json``; default ``$HYBRIDREC_REPO`` or ``model_repository``), ``--data`` (MovieLens
folder; default :func:`hybridrec.data.resolve_data_dir`), ``--payloads`` (distinct requests prepared per workload
and process), ``--request-timeout`` and ``--max-unavailable``. In a distributed run give the workers the same custom
options as the master (``runner.py`` does): each worker builds its own payloads at import, before it connects to
the master, so that the master's run time is not spent on them.

Design:

* gRPC under gevent: ``grpc.experimental.gevent.init_gevent()`` runs at import, before any channel exists (locust has
  already monkey-patched by then); without it every user's call blocks the whole process and users are serialised.
* One :class:`~hybridrec.client.RecommenderClient` per user, created in ``on_start`` and closed in ``on_stop``.
* A pool of request payloads is built ONCE PER PROCESS (``events.init``), not per user, and only for the workloads
  of the selected user classes (``hybridrec.loadtests.payloads``): real user histories from the ratings, ``N``
  unseen popular movies per rank request (movieIds; with their real posters and metadata for rank_content) and
  ``N`` catalog movies per encode_items request, already encoded into the spec's tensors. A task only picks a
  random payload and sends it, so the load generator spends no time in preprocessing, and different payloads keep a
  response cache from answering instead of the models.
* Closed loop, no think time (``wait_time = between(0, 0)``): each user sends its next request as soon as the previous
  one is answered, so ``users`` is the concurrency and the measured req/s is the throughput at that concurrency.
  (``constant_throughput`` would cap the rate instead, which hides the server's limit.)
* Every call fires exactly one ``request`` event, success or failure; nothing is raised into locust. When the server
  is unreachable for ``--max-unavailable`` consecutive calls the run quits by itself instead of failing forever.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

import gevent
import grpc.experimental.gevent
import numpy as np
from locust import TaskSet, User, between, events
from locust.env import Environment
from locust.runners import MasterRunner

from hybridrec import spec
from hybridrec.client import RecommenderClient, RecommenderError, ServerUnavailableError
from hybridrec.loadtests.payloads import (
    DEFAULT_CANDIDATES,
    DEFAULT_ITEMS,
    DEFAULT_PAYLOADS,
    WORKLOADS,
    Payload,
    PayloadPool,
    PoolKey,
)

grpc.experimental.gevent.init_gevent()  # before any channel exists: makes gRPC calls cooperative under gevent

_POOLS: dict[PoolKey, PayloadPool] = {}  # one payload pool per process and options

log = logging.getLogger("hybridrec.loadtests")

DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_MAX_UNAVAILABLE = 5


def default_repo() -> str:
    return os.environ.get("HYBRIDREC_REPO") or "model_repository"


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    group = parser.add_argument_group("hybridrec", "options of the hybridrec load test")
    group.add_argument(
        "--protocol",
        choices=("grpc", "http"),
        default="grpc",
        help="Triton protocol; --host is then the gRPC (8001) or HTTP (8000) address",
    )
    group.add_argument(
        "--candidates", type=int, default=DEFAULT_CANDIDATES, help="movies ranked per rank / rank_content request"
    )
    group.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="movies embedded per encode_items request")
    group.add_argument("--k", type=int, default=spec.DEFAULT_K, help="movies asked per recommend request")
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
        help="distinct requests prepared per workload and process",
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


def _opt(options: Any, name: str, default: Any) -> Any:
    """An option from parsed options (``None``, or an option left unset, gives ``default``)."""
    value = getattr(options, name, None)
    return default if value is None else value


def _option(environment: Environment, name: str, default: Any) -> Any:
    return _opt(environment.parsed_options, name, default)


def _pool(options: Any) -> PayloadPool:
    """This process's payload pool for parsed options (locust's, or :func:`_prepare_before_connecting`'s)."""
    key = PoolKey(
        repo=str(_opt(options, "repo", default_repo())),
        data=str(_opt(options, "data", "")),
        candidates=int(_opt(options, "candidates", DEFAULT_CANDIDATES)),
        payloads=int(_opt(options, "payloads", DEFAULT_PAYLOADS)),
        items=int(_opt(options, "items", DEFAULT_ITEMS)),
        k=int(_opt(options, "k", spec.DEFAULT_K)),
    )
    if key not in _POOLS:
        _POOLS[key] = PayloadPool(key)
    return _POOLS[key]


def payload_pool(environment: Environment) -> PayloadPool:
    """This process's payloads for the environment's options, shared by all users; each workload's list is built on
    its first use (see :func:`_prepare_pool`)."""
    return _pool(environment.parsed_options)


@events.init.add_listener
def _prepare_pool(environment: Environment, **_: Any) -> None:
    # Built before the run (and its -t timer) starts, for the selected users' workloads only; a master of a
    # distributed run sends no requests itself.
    if isinstance(environment.runner, MasterRunner):
        return
    wanted = {w for u in environment.user_classes if issubclass(u, TritonUser) for w in u.workloads}
    pool = payload_pool(environment)
    for workload in (w for w in WORKLOADS if w in wanted):
        payloads = pool.get(workload)
        log.info(
            "%d %s payloads (%.1f kB each) from %s, built in %.1f s",
            len(payloads),
            workload,
            payloads[0].nbytes / 1e3,
            pool.key.data or "the default data pack",
            pool.build_seconds[workload],
        )
    # The event loop caches its clock, and building the payloads blocked it for seconds: without this update the
    # `-t` timer, started next, counts from the stale time and the run ends that much early.
    gevent.get_hub().loop.update_now()


def _prepare(pool: PayloadPool, wanted: set[str]) -> None:
    """Build the ``wanted`` workloads' payloads now, in a fixed order (those built already are kept)."""
    for workload in WORKLOADS:
        if workload in wanted:
            pool.get(workload)


@events.quitting.add_listener
def _final_csv_pass(environment: Environment, **_: Any) -> None:
    # Locust's --csv writer rewrites locust_stats.csv once a second; give it one more pass after the last request,
    # so the file holds the final numbers (the runner parses it).
    if getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(1.2)


EXIT_WATCHDOG_S = 10.0  # far above a normal exit (closing the CSV files), far below the runner's 90 s of slack


@events.quit.add_listener
def _exit_watchdog(exit_code: int, **_: Any) -> None:
    # Locust fires `quit` after its last stats and calls sys.exit right after. After the server died mid-run, that exit
    # has hung once in CI: the log ended with Locust's final stats, and the process lived on until its supervisor
    # killed it 100 s later, without Locust's own exit code (gRPC's threads under gevent are the likely holders).
    start_exit_watchdog(exit_code, EXIT_WATCHDOG_S)


def start_exit_watchdog(code: int, seconds: float) -> None:
    """End this process with ``code`` if it is still alive ``seconds`` from now. It runs on a real OS thread that the
    interpreter never joins (not a greenlet: the gevent hub no longer runs once exit has begun)."""
    from gevent import monkey

    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    sleep = monkey.get_original("time", "sleep")

    def _expire() -> None:
        sleep(seconds)
        os._exit(code)

    start_new_thread(_expire, ())


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


def _answer(client: RecommenderClient, payload: Payload) -> dict[str, np.ndarray]:
    """Send one prepared payload; RecommenderError unless the answer is good (:meth:`Payload.check`: the expected
    leading shape, finite scores for real candidates and -inf for `rank`'s padding)."""
    out = client.infer(payload.model, payload.arrays)
    try:
        payload.check(out)
    except ValueError as e:
        raise RecommenderError(str(e)) from None
    return out


class TritonUser(User):
    """A Locust user holding one RecommenderClient; :meth:`call` times one request and reports it to locust.

    The workload methods (:meth:`recommend`, :meth:`rank`, :meth:`encode_items`, :meth:`rank_content`) are not
    tasks here; the concrete
    users below pick them (with weights) in ``tasks`` and name them in ``workloads``, the payloads they need."""

    abstract = True
    wait_time = between(0, 0)  # closed loop, as fast as possible per user: users = concurrency (see module doc)
    workloads: ClassVar[tuple[str, ...]] = ()

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
        # no client-side retries: a load test must see (and count) a failing server at once
        return RecommenderClient(self.address, self.protocol, timeout_s=timeout, retries=0)

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

    # --- workloads: one random prepared payload per request, reported under the workload's name ---
    def send(self, workload: str) -> None:
        payloads = payload_pool(self.environment).get(workload)
        self.call(workload, lambda client: _answer(client, random.choice(payloads)))

    def recommend(self) -> None:
        """Top-k of the whole catalog for a real user's history (`recommend` ensemble)."""
        self.send("recommend")

    def rank(self) -> None:
        """N unseen popular catalog movies, by movieId, scored for a real user (`rank` ensemble)."""
        self.send("rank")

    def encode_items(self) -> None:
        """Embeddings of N catalog movies from their posters and metadata (`item_encoder`)."""
        self.send("encode_items")

    def rank_content(self) -> None:
        """N unseen popular movies given by posters and metadata scored for a real user (`rank_content`)."""
        self.send("rank_content")


# The realistic mix, in requests per 14 sent. `recommend` is what every home-page visit calls: the most frequent
# request (one GRU pass + catalog dot product + rerank of 100). `rank` runs when a user opens a shortlist (a genre
# row, search results): fewer visits, and since it goes by movieId (catalog lookup + fusion head over N candidates)
# it is about as cheap as `recommend`. `encode_items` is the operator-side path that embeds new catalog movies (cold
# start): rare next to user traffic, but heavy (16 posters through the CNN). `rank_content` (posters for movies
# outside the catalog) is rarer still and has its own user class, outside the mix.
MIX: dict[str, int] = {"recommend": 10, "rank": 3, "encode_items": 1}


def _tasks(weights: dict[str, int]) -> list[TaskSet | Callable[..., Any]]:
    """Locust's task list for ``{workload: weight}``: each workload method repeated ``weight`` times (what locust
    makes of a ``tasks`` dict)."""
    return [getattr(TritonUser, w) for w, weight in weights.items() for _ in range(weight)]


class MixedUser(TritonUser):
    """recommend : rank : encode_items = 10 : 3 : 1 (see :data:`MIX`), one request per task."""

    workloads = tuple(MIX)
    tasks = _tasks(MIX)


class RecommendUser(TritonUser):
    """Only `recommend`: top-k for a real user's history."""

    workloads = ("recommend",)
    tasks = _tasks({"recommend": 1})


class RankUser(TritonUser):
    """Only `rank`: N unseen popular catalog movies, by movieId, scored for a real user."""

    workloads = ("rank",)
    tasks = _tasks({"rank": 1})


class RankContentUser(TritonUser):
    """Only `rank_content`: N unseen popular movies, given by posters and metadata, scored for a real user."""

    workloads = ("rank_content",)
    tasks = _tasks({"rank_content": 1})


class EncodeItemsUser(TritonUser):
    """Only `encode_items`: N catalog movies through the item encoder."""

    workloads = ("encode_items",)
    tasks = _tasks({"encode_items": 1})


USER_CLASSES: dict[str, type[TritonUser]] = {
    u.__name__: u for u in (MixedUser, RecommendUser, RankUser, RankContentUser, EncodeItemsUser)
}


def _prepare_before_connecting(argv: list[str]) -> None:
    """Build a distributed worker's payloads at import, from its own command line.

    A worker connects to its master before locust's ``init`` event, and a headless master starts the run (and its
    ``-t`` timer) as soon as all workers are connected: payloads built in ``init`` would eat the first seconds of
    the run. Built here, ``init`` finds them ready. Options given only through locust's environment variables or
    config files are not seen here; ``init`` then builds the pool those options ask for, as in a local run."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_options(parser)
    options, rest = parser.parse_known_args(argv)
    named = [USER_CLASSES[a] for a in rest if a in USER_CLASSES] or list(USER_CLASSES.values())
    _prepare(_pool(options), {w for u in named for w in u.workloads})


if "--worker" in sys.argv[1:]:
    _prepare_before_connecting(sys.argv[1:])
