"""Retries: the RetryPolicy of idempotent calls, a plan's server Call, and the Attempts of one call."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hybridrec.client.errors import ServerUnavailableError, map_error


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
