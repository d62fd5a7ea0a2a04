"""The client's errors: RecommenderError and its subclasses, and the mapping of what tritonclient raises to them.

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
import sys


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


class AdminKeyError(RecommenderError, PermissionError):
    """A model-control call (load, unload, repository index) without the server's admin key, or with a wrong one."""


# --- error mapping -------------------------------------------------------------------------------------------------
# tritonclient's InferenceServerException.status(): "StatusCode.X" over gRPC, the HTTP status code over HTTP.
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
