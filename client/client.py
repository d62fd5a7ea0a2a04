"""RecommenderClient: a typed client of the served models over tritonclient gRPC or HTTP (no torch needed).

Requests are built from hybridrec.spec and features from hybridrec.preprocessing, the same code that training used.

The request logic is written once, without I/O, as *plans* (generators in :class:`ClientCore`): a plan yields the
server calls it needs (a list of :class:`Call`; the calls of one list are independent) and receives their raw
tritonclient results. :class:`RecommenderClient` runs plans with blocking calls, one after the other;
:class:`hybridrec.client.aio.AsyncRecommenderClient` awaits them, the calls of one list concurrently. Both share the
error mapping and the retry policy below.

Errors (what tritonclient 2.73 raises -> what the client raises):

======================================  =====================================  ============================
gRPC (sync and aio)                     HTTP (sync: geventhttpclient; aio)     raised
======================================  =====================================  ============================
StatusCode.INVALID_ARGUMENT             status 400 (also 413)                  InvalidRequestError
StatusCode.NOT_FOUND                    status 404                             ModelNotFoundError
StatusCode.UNAVAILABLE (refused port,   ConnectionRefusedError/-ResetError,    ServerUnavailableError
server stopping, explicit load refused)  geventhttpclient HTTPConnectionClosed,  (retried if idempotent)
                                        aiohttp ClientConnectionError, 503
StatusCode.DEADLINE_EXCEEDED            TimeoutError (socket timeout, sync),   RequestTimeoutError
                                        asyncio.TimeoutError (aio), 408/504
anything else                           anything else                          RecommenderError
======================================  =====================================  ============================
"""

from __future__ import annotations

import asyncio
import errno
import random
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias, TypedDict, TypeVar

import numpy as np

from hybridrec import admin, spec
from hybridrec.preprocessing import (
    Artifacts,
    ImageSpec,
    ItemCatalog,
    ItemMetadata,
    PosterError,
    decode_poster,
    encode_history,
    item_features,
    load_titles,
    stack_items,
)


class RecommenderError(RuntimeError):
    """A request the server did not serve. ``attempts``: how many times it was sent (> 1 after retries)."""

    attempts: int = 1


class InvalidRequestError(RecommenderError, ValueError):
    """The request was malformed (wrong shape/dtype, unknown id ...); rejected client- or server-side."""


class ModelNotFoundError(RecommenderError):
    """The server does not serve (or has not loaded) the model."""


class ServerUnavailableError(RecommenderError, ConnectionError):
    """The server could not be reached (refused, reset) or said UNAVAILABLE; idempotent calls were retried first."""


class RequestTimeoutError(RecommenderError, TimeoutError):
    """The call did not finish within its timeout (gRPC DEADLINE_EXCEEDED, HTTP network timeout)."""


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


# --- error mapping -------------------------------------------------------------------------------------------------
# tritonclient's InferenceServerException.status(): "StatusCode.X" over gRPC, the HTTP status code over HTTP.
class AdminKeyError(RecommenderError, PermissionError):
    """A model-control call (load, unload, repository index) without the server's admin key, or with a wrong one."""


_STATUS: dict[str, type[RecommenderError]] = {
    "INVALID_ARGUMENT": InvalidRequestError,
    "OUT_OF_RANGE": InvalidRequestError,
    "400": InvalidRequestError,
    "413": InvalidRequestError,
    "403": AdminKeyError,
    "PERMISSION_DENIED": AdminKeyError,
    "NOT_FOUND": ModelNotFoundError,
    "404": ModelNotFoundError,
    "UNAVAILABLE": ServerUnavailableError,
    "503": ServerUnavailableError,
    "DEADLINE_EXCEEDED": RequestTimeoutError,
    "408": RequestTimeoutError,
    "504": RequestTimeoutError,
}
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}


def _transport_error(e: BaseException) -> type[RecommenderError] | None:
    """The error type of an exception raised by the transport itself (socket, geventhttpclient, aiohttp)."""
    if isinstance(e, TimeoutError | asyncio.TimeoutError):  # sync HTTP socket timeout, aio wait_for, aiohttp timeouts
        return RequestTimeoutError
    # Only an aiohttp / geventhttpclient that is already imported can have raised: no import just to check.
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(e, aiohttp.ClientConnectionError):  # refused, reset, disconnected
        return ServerUnavailableError
    gevent_response = sys.modules.get("geventhttpclient.response")
    if gevent_response is not None and isinstance(e, gevent_response.HTTPConnectionClosed):
        return ServerUnavailableError
    if isinstance(e, ConnectionError) or (isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNOS):
        return ServerUnavailableError
    return None


def map_error(e: BaseException, target: str, attempts: int = 1, timeout_s: float | None = None) -> RecommenderError:
    """The typed error for an exception raised by tritonclient (or its transport) while calling ``target``."""
    if isinstance(e, RecommenderError):
        return e
    status = ""
    if callable(getattr(e, "status", None)) and callable(getattr(e, "message", None)):  # InferenceServerException
        status = str(e.status() or "").removeprefix("StatusCode.")  # type: ignore[attr-defined]
        text = str(e.message() or e)  # type: ignore[attr-defined]
    else:
        text = str(e) or type(e).__name__
    kind = _STATUS.get(status) or _transport_error(e) or RecommenderError
    if "is restricted, expecting header" in text:  # Triton says UNAVAILABLE over gRPC: not a retryable outage
        kind = AdminKeyError
    elif "onnx runtime error 2:" in text:  # onnxruntime's INVALID_ARGUMENT (a size guard), which Triton calls INTERNAL
        kind = InvalidRequestError
    if kind is RecommenderError and "unknown model" in text.lower():
        kind = ModelNotFoundError
    tag = f"[{status}] " if status and kind is RecommenderError else ""
    if kind is RequestTimeoutError and timeout_s is not None:
        tag = f"no answer within {timeout_s:g} s: "
    after = f" (after {attempts} attempts)" if attempts > 1 else ""
    err = kind(f"{target}: {tag}{text}{after}")
    err.attempts = attempts
    return err


# --- retries -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for idempotent calls that failed with UNAVAILABLE.

    Retry ``i`` (0-based) waits ``backoff_s * 2**i``, capped at ``max_backoff_s``, times a random factor in
    ``[1, 1 + jitter)``: never less than the nominal backoff, so a caller can bound the waiting from both sides."""

    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.jitter < 0:
            raise ValueError(f"retries, backoff_s and jitter must be >= 0: {self}")

    def delays(self) -> Iterator[float]:
        for i in range(self.retries):
            yield min(self.backoff_s * 2**i, self.max_backoff_s) * (1.0 + self.jitter * random.random())

    def total_backoff_s(self) -> float:
        """The least time all retries wait together (without jitter)."""
        return sum(min(self.backoff_s * 2**i, self.max_backoff_s) for i in range(self.retries))


@dataclass(frozen=True)
class Call:
    """One server call of a plan: a tritonclient method, its arguments and whether it may be retried."""

    method: str  # a method of tritonclient's InferenceServerClient ("infer", "is_server_live", ...)
    target: str  # the model (or "server") it concerns, for error messages
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 60.0
    idempotent: bool = True  # inference is a pure function of its inputs; loading a model is not


class Attempts:
    """The attempts of one call: maps each failure and decides whether (and after how long) to try again."""

    def __init__(self, call: Call, policy: RetryPolicy) -> None:
        self.call = call
        self.count = 0
        self._delays = policy.delays() if call.idempotent else iter(())

    def failed(self, e: Exception) -> float:
        """Raises the typed error unless a retry is due; returns the delay to wait before it."""
        self.count += 1
        err = map_error(e, self.call.target, self.count, self.call.timeout_s)
        delay = next(self._delays, None) if isinstance(err, ServerUnavailableError) else None
        if delay is None:
            raise err from e
        return delay


# --- shared request building and result parsing ---------------------------------------------------------------------
T = TypeVar("T")
Plan: TypeAlias = Generator[list[Call], list[Any], T]
PosterSource: TypeAlias = bytes | str | Path | np.ndarray | None  # JPEG/PNG bytes or file, UINT8 [3, H, W], missing
# Items per image_encoder request: what the TensorRT profiles accept (spec.TRT_RANGES) and a bounded payload.
MAX_ITEMS_PER_REQUEST = spec.MAX_ITEMS
# encode_items keeps this many requests in flight (the async client): the image encoder's preferred batch size.
_ENCODE_CONCURRENCY = spec.IMAGE_ENCODER.batching.preferred_batch_sizes[0] if spec.IMAGE_ENCODER.batching else 1


def _module(protocol: str, aio: bool) -> ModuleType:
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    import importlib

    return importlib.import_module(f"tritonclient.{protocol}{'.aio' if aio else ''}")


def poster_pixels(source: PosterSource, image: ImageSpec, position: int) -> np.ndarray | None:
    """UINT8 [C, H, W] pixels of one poster source; InvalidRequestError naming ``position`` if it is unusable."""
    if source is None:
        return None
    if isinstance(source, np.ndarray):
        want = (image.channels, image.height, image.width)
        if source.dtype != np.uint8 or source.shape != want:
            raise InvalidRequestError(
                f"poster {position}: {source.dtype} {source.shape} array, but UINT8 {want} (CHW) expected"
            )
        return source
    if not isinstance(source, bytes | bytearray | memoryview | str | Path):
        raise InvalidRequestError(f"poster {position}: {type(source).__name__} is not bytes, a path or an array")
    try:
        return decode_poster(bytes(source) if not isinstance(source, str | Path) else source, image)
    except PosterError as e:
        raise InvalidRequestError(f"poster {position}: {e}") from None


class ClientCore:
    """Everything the sync and async clients share: configuration, request building, plans and result parsing."""

    _aio = False

    def __init__(
        self,
        url: str,
        protocol: str = "grpc",
        *,
        artifacts: Artifacts | str | Path | None = None,
        catalog: ItemCatalog | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        admin_key: str | None = None,
    ) -> None:
        """``timeout_s`` bounds every call (each method takes its own ``timeout_s`` too); ``retries`` and
        ``backoff_s`` set the :class:`RetryPolicy` of idempotent calls that find the server UNAVAILABLE."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.admin_key = admin_key  # None: read from $HYBRIDREC_ADMIN_KEY or the key file when a call needs it
        self.retry = RetryPolicy(retries, backoff_s)
        self._mod = _module(protocol, self._aio)
        # movieId -> title: the served catalog's own map, shipped beside artifacts.json in the model repository
        self.titles: dict[int, str] = {}
        if isinstance(artifacts, str | Path):
            if Path(artifacts).is_dir():
                self.titles = load_titles(artifacts)
            artifacts = Artifacts.load(artifacts)
        self.artifacts = artifacts if artifacts is not None else (catalog.artifacts if catalog else None)
        self.catalog = catalog
        self._open()

    def _open(self) -> None:
        """Set up the connection state (the sync and async clients differ)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, {self.protocol!r}, timeout_s={self.timeout_s})"

    def _timeout(self, timeout_s: float | None) -> float:
        t = self.timeout_s if timeout_s is None else timeout_s
        if t <= 0:
            raise ValueError(f"timeout_s must be > 0, got {t}")
        return t

    def _need_artifacts(self, what: str) -> Artifacts:
        if self.artifacts is None:
            raise RecommenderError(
                f"{what} needs the fitted artifacts: {type(self).__name__}(..., artifacts=repo_dir or catalog=...)"
            )
        return self.artifacts

    def _need_catalog(self) -> ItemCatalog:
        if self.catalog is None:
            raise RecommenderError(
                f"this call needs a catalog: {type(self).__name__}(..., catalog=ItemCatalog(data, artifacts))"
            )
        return self.catalog

    # --- tensors ---
    def build_inputs(self, model: spec.ModelSpec, arrays: dict[str, np.ndarray]) -> list[Any]:
        """InferInputs for ``model`` from numpy arrays (with batch axis), checked against the spec first."""
        checked = {t.name: np.ascontiguousarray(arrays[t.name]) for t in model.inputs if t.name in arrays}
        try:
            model.check_request(checked, fixed=spec.REQUEST_SIZES)
        except ValueError as e:
            raise InvalidRequestError(f"{model.name}: {e}") from None
        return self._raw_inputs(checked)

    def _raw_inputs(self, arrays: dict[str, np.ndarray]) -> list[Any]:
        inputs = []
        for name, a in arrays.items():
            x = self._mod.InferInput(name, list(a.shape), spec.wire_dtype(a.dtype))
            x.set_data_from_numpy(np.ascontiguousarray(a))
            inputs.append(x)
        return inputs

    def _infer_call(self, model_name: str, arrays: dict[str, np.ndarray], check: bool, timeout_s: float | None) -> Call:
        try:
            m = spec.model_spec(model_name)
        except KeyError as e:
            raise ModelNotFoundError(f"{model_name}: {e.args[0]}") from None
        # check=False is a raw passthrough: it lets tests send malformed requests to the server on purpose
        inputs = self.build_inputs(m, arrays) if check else self._raw_inputs(arrays)
        outputs = [self._mod.InferRequestedOutput(n) for n in m.output_names]
        return Call("infer", m.name, (m.name, inputs), {"outputs": outputs}, self._timeout(timeout_s))

    @staticmethod
    def _outputs(call: Call, result: Any) -> dict[str, np.ndarray]:
        return {o.name(): result.as_numpy(o.name()) for o in call.kwargs["outputs"]}

    def _plan_infer(
        self, model_name: str, arrays: dict[str, np.ndarray], check: bool = True, timeout_s: float | None = None
    ) -> Plan[dict[str, np.ndarray]]:
        call = self._infer_call(model_name, arrays, check, timeout_s)
        (result,) = yield [call]
        return self._outputs(call, result)

    def _plan_rank_content_tensors(
        self, history: np.ndarray, items: dict[str, np.ndarray], timeout_s: float | None
    ) -> Plan[np.ndarray]:
        arrays = {"history": spec.served_history(history)[None]}
        arrays.update({k: np.asarray(v)[None] for k, v in items.items()})
        out = yield from self._plan_infer("rank_content", arrays, True, timeout_s)
        return out["scores"][0]

    def _plan_rank_ids_tensors(
        self, history: np.ndarray, movie_ids: np.ndarray, timeout_s: float | None
    ) -> Plan[np.ndarray]:
        """Scores [N] of catalog movieIds; -inf for ids the served catalog does not hold.

        Candidates are padded (with an id that is never a movie) to a power of two, and lists longer than
        spec.MAX_RANK_CANDIDATES are sent as several requests: requests of identical shape are what the
        onnxruntime backend's dynamic batcher merges."""
        ids = np.asarray(movie_ids, dtype=np.int64).reshape(-1)
        if not ids.size:
            raise InvalidRequestError("rank: no candidates given")
        hist = spec.served_history(history)[None]
        calls = []
        for lo in range(0, ids.size, spec.MAX_RANK_CANDIDATES):
            padded = spec.rank_candidates(ids[lo : lo + spec.MAX_RANK_CANDIDATES])
            calls.append(self._infer_call("rank", {"history": hist, "movie_id": padded}, True, timeout_s))
        results = yield calls
        parts = [self._outputs(c, r)["scores"][0] for c, r in zip(calls, results, strict=True)]
        return np.concatenate(parts)[: ids.size]

    def _plan_recommend_tensors(
        self, history: np.ndarray, k: int, timeout_s: float | None
    ) -> Plan[tuple[np.ndarray, np.ndarray]]:
        arrays = {"history": spec.served_history(history)[None], "k": np.array([k], dtype=np.int64)}
        out = yield from self._plan_infer("recommend", arrays, True, timeout_s)
        return out["movie_ids"][0], out["scores"][0]

    # --- movies ---
    def _encode_history(self, history: Sequence[int]) -> np.ndarray:
        return encode_history(history, self._need_artifacts("this call"))

    def _plan_recommend(self, history: Sequence[int], k: int, timeout_s: float | None) -> Plan[RankResult]:
        if k < 1:
            raise InvalidRequestError(f"recommend: k must be >= 1, got {k}")
        encoded = self._encode_history(history)
        t0 = time.perf_counter()
        ids, scores = yield from self._plan_recommend_tensors(encoded, k, timeout_s)
        latency = (time.perf_counter() - t0) * 1000.0
        items = tuple(
            ScoredItem(int(m), float(s), self._title(int(m))) for m, s in zip(ids, scores, strict=True) if m >= 0
        )
        return RankResult(items, latency)

    def _title(self, movie_id: int) -> str | None:
        if movie_id in self.titles:
            return self.titles[movie_id]
        return self.catalog.title(movie_id) if self.catalog else None

    def _plan_rank(
        self, history: Sequence[int], candidates: Sequence[int], timeout_s: float | None
    ) -> Plan[RankResult]:
        """Catalog movies by movieId: only ids travel; the server looks their embeddings up in its catalog."""
        if not len(candidates):
            raise InvalidRequestError("rank: no candidates given")
        encoded = self._encode_history(history)
        t0 = time.perf_counter()
        scores = yield from self._plan_rank_ids_tensors(encoded, np.asarray(candidates, np.int64), timeout_s)
        latency = (time.perf_counter() - t0) * 1000.0
        unknown = [int(candidates[i]) for i in np.flatnonzero(np.isneginf(scores))]
        if unknown:
            raise InvalidRequestError(
                f"rank: movie ids not in the served catalog: {unknown[:10]} (use rank_items for new movies)"
            )
        order = np.argsort(-scores, kind="stable")
        ranked = tuple(ScoredItem(int(candidates[i]), float(scores[i]), self._title(int(candidates[i]))) for i in order)
        return RankResult(ranked, latency)

    @staticmethod
    def _check_items(posters: Sequence[PosterSource], metadata: Sequence[ItemMetadata], what: str) -> None:
        if len(posters) != len(metadata):
            raise InvalidRequestError(f"{what}: {len(posters)} posters but {len(metadata)} metadata")
        if not len(metadata):
            raise InvalidRequestError(f"{what}: no items given")

    def item_tensors(
        self, posters: Sequence[PosterSource], metadata: Sequence[ItemMetadata], what: str = "items", offset: int = 0
    ) -> dict[str, np.ndarray]:
        """Item tensors [M, ...] of movies given by poster and metadata alone (item id UNK: pure content).

        Errors name positions counted from ``offset`` (the position of ``posters[0]`` in the caller's sequence)."""
        art = self._need_artifacts(what)
        self._check_items(posters, metadata, what)
        rows = []
        for i, (poster, md) in enumerate(zip(posters, metadata, strict=True), start=offset):
            if not isinstance(md, ItemMetadata):
                raise InvalidRequestError(f"{what}: metadata {i} is a {type(md).__name__}, not an ItemMetadata")
            try:
                pixels = poster_pixels(poster, art.image, i)
            except InvalidRequestError as e:
                raise InvalidRequestError(f"{what}: {e}") from None
            rows.append(item_features(md, pixels, art, spec.UNK_ID))
        return stack_items(rows)

    def _plan_rank_items(
        self, history: Sequence[int], items: Sequence[tuple[ItemMetadata, PosterSource]], timeout_s: float | None
    ) -> Plan[np.ndarray]:
        feats = self.item_tensors([p for _, p in items], [md for md, _ in items], "rank_items")
        scores = yield from self._plan_rank_content_tensors(self._encode_history(history), feats, timeout_s)
        return scores

    def _plan_encode_items(
        self,
        posters: Sequence[PosterSource],
        metadata: Sequence[ItemMetadata],
        chunk_size: int,
        timeout_s: float | None,
    ) -> Plan[np.ndarray]:
        if not 1 <= chunk_size <= MAX_ITEMS_PER_REQUEST:
            raise ValueError(f"chunk_size must be in 1..{MAX_ITEMS_PER_REQUEST}, got {chunk_size}")
        self._need_artifacts("encode_items")
        self._check_items(posters, metadata, "encode_items")  # before anything is decoded
        out: list[np.ndarray] = []
        group = chunk_size * _ENCODE_CONCURRENCY  # posters are decoded group by group: bounded memory
        for start in range(0, len(metadata), group):
            calls = []
            for lo in range(start, min(start + group, len(metadata)), chunk_size):
                hi = lo + chunk_size
                feats = self.item_tensors(posters[lo:hi], metadata[lo:hi], "encode_items", offset=lo)
                calls.append(self._infer_call("image_encoder", {k: v[None] for k, v in feats.items()}, True, timeout_s))
            results = yield calls
            out.extend(self._outputs(c, r)["item_embedding"][0] for c, r in zip(calls, results, strict=True))
        return np.concatenate(out).astype(np.float32, copy=False)

    # --- server ---
    def _plan_health(self, timeout_s: float | None) -> Plan[Health]:
        t = self._timeout(timeout_s)
        names = list(spec.MODELS)
        live, ready = yield [
            Call("is_server_live", "server", timeout_s=t),
            Call("is_server_ready", "server", timeout_s=t),
        ]
        models = yield [Call("is_model_ready", n, (n,), timeout_s=t) for n in names]
        return {"live": bool(live), "ready": bool(ready), "models": dict(zip(names, map(bool, models), strict=True))}

    def _plan_model_metadata(self, model_name: str, timeout_s: float | None) -> Plan[Any]:
        (meta,) = yield [Call("get_model_metadata", model_name, (model_name,), timeout_s=self._timeout(timeout_s))]
        return meta

    def _admin_headers(self) -> dict[str, str]:
        key = self.admin_key if self.admin_key is not None else admin.read_key()
        return admin.headers(key, self.protocol)

    def _plan_model_control(self, method: str, model_name: str, timeout_s: float | None) -> Plan[None]:
        kwargs = {"headers": self._admin_headers()}
        yield [Call(method, model_name, (model_name,), kwargs, timeout_s=self._timeout(timeout_s), idempotent=False)]


class RecommenderClient(ClientCore):
    """One reused connection to a Triton server serving hybridrec's model repository (blocking calls).

    ``artifacts`` (fitted preprocessing: pass the model repository folder, which also gives the titles) is needed by
    the movie-level calls (``recommend``, ``rank``, ``rank_items``, ``encode_items``); the tensor-level calls need
    nothing. No call needs the dataset: ``rank`` sends movieIds and the server looks them up in its catalog. Every call
    takes ``timeout_s`` (default: the client's); idempotent calls are retried on UNAVAILABLE (see RetryPolicy)."""

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

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # --- server ---
    def health(self, *, timeout_s: float | None = None) -> Health:
        """Liveness, readiness and every model's readiness; raises ServerUnavailableError if unreachable."""
        return self._run(self._plan_health(timeout_s))

    def model_metadata(self, model_name: str, *, timeout_s: float | None = None) -> Any:
        """The server's metadata of one model (raises ModelNotFoundError for a model it does not serve)."""
        return self._run(self._plan_model_metadata(model_name, timeout_s))

    def load_model(self, model_name: str, *, timeout_s: float | None = None) -> None:
        """(Re)load a model on a server started with --model-control-mode=explicit (never retried). Needs the
        server's admin key (``admin_key=``, else $HYBRIDREC_ADMIN_KEY or the key file): AdminKeyError otherwise."""
        self._run(self._plan_model_control("load_model", model_name, timeout_s))

    def unload_model(self, model_name: str, *, timeout_s: float | None = None) -> None:
        """Unload a model (explicit model control; needs the admin key like :meth:`load_model`)."""
        self._run(self._plan_model_control("unload_model", model_name, timeout_s))

    # --- tensors ---
    def infer(
        self, model_name: str, arrays: dict[str, np.ndarray], *, check: bool = True, timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run any served model on spec-named numpy arrays (with batch axis); returns its outputs by name."""
        return self._run(self._plan_infer(model_name, arrays, check, timeout_s))

    def rank_tensors(self, history: np.ndarray, movie_ids: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against catalog movieIds [N] (`rank`); -inf = not served."""
        return self._run(self._plan_rank_ids_tensors(history, movie_ids, timeout_s))

    def rank_content_tensors(
        self, history: np.ndarray, items: dict[str, np.ndarray], *, timeout_s: float | None = None
    ) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against item tensors [N, ...] (`rank_content`)."""
        return self._run(self._plan_rank_content_tensors(history, items, timeout_s))

    def recommend_tensors(
        self, history: np.ndarray, k: int = spec.DEFAULT_K, *, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids [K], scores [K]) from the `recommend` ensemble for one encoded history [L]."""
        return self._run(self._plan_recommend_tensors(history, k, timeout_s))

    # --- movies ---
    def recommend(
        self, history: Sequence[int], k: int = spec.DEFAULT_K, *, timeout_s: float | None = None
    ) -> RankResult:
        """Top-k unseen catalog movies for a chronological history of movieIds (oldest first)."""
        return self._run(self._plan_recommend(history, k, timeout_s))

    def rank(self, history: Sequence[int], candidates: Sequence[int], *, timeout_s: float | None = None) -> RankResult:
        """Rank catalog movieIds for a user whose chronological history (movieIds, oldest first) is given.

        Raises InvalidRequestError naming candidates the served catalog does not hold."""
        return self._run(self._plan_rank(history, candidates, timeout_s))

    def rank_items(
        self,
        history: Sequence[int],
        items: Sequence[tuple[ItemMetadata, PosterSource]],
        *,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Scores [N] of items given by metadata + poster alone (e.g. brand-new movies), through `rank_content`."""
        return self._run(self._plan_rank_items(history, items, timeout_s))

    def encode_items(
        self,
        posters: Sequence[PosterSource],
        metadata: Sequence[ItemMetadata],
        *,
        chunk_size: int = MAX_ITEMS_PER_REQUEST,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Item embeddings [M, D] from the served `image_encoder`, from content alone (item id UNK).

        ``posters[i]``: JPEG/PNG bytes, a file path, UINT8 [3, 192, 128] pixels, or None (no poster). An unreadable
        poster raises InvalidRequestError naming its position. At most ``chunk_size`` (<= 256) items per request."""
        return self._run(self._plan_encode_items(posters, metadata, chunk_size, timeout_s))
