"""Single-request latency of `recommend`, `rank` (by movieId) and `rank_content` (posters), one request at a time
with real payloads: a benchmark that prints numbers, not a timed test.

    hybridrec latency --url 127.0.0.1:8001 [--protocol grpc] [--requests 200] [--candidates 50]

Every call goes through :class:`~hybridrec.client.RecommenderClient`'s tensor methods, so the time includes what the
client does per request (padding the candidates to ``spec.rank_slots(N)``, building the request), not only the
server round trip. The payloads are the load test's (``hybridrec.loadtests.payloads``): real users' histories and N
unseen popular movies each.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.client import RecommenderClient
from hybridrec.loadtests.payloads import Payload, PayloadPool, PoolKey

PAYLOADS = 32


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "requests": float(len(a)),
        "mean_ms": round(float(a.mean()), 2),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
    }


def _time(call: Callable[[Payload], Any], payloads: list[Payload], requests: int, warmup: int) -> dict[str, float]:
    times = []
    for i in range(warmup + requests):
        p = payloads[i % len(payloads)]
        t0 = time.perf_counter()
        call(p)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return _percentiles(times)


def measure(
    url: str,
    protocol: str = "grpc",
    *,
    repo: str | Path = "model_repository",
    data: str | Path | None = None,
    requests: int = 200,
    candidates: int = 50,
    k: int = 10,
    warmup: int = 5,
    content: bool = True,
) -> dict[str, Any]:
    """Latency percentiles of ``recommend``, ``rank_n{candidates}`` (by movieId) and, with ``content``,
    ``rank_content_n{candidates}`` (posters + metadata), ``requests`` sequential calls each after ``warmup``."""
    pool = PayloadPool(PoolKey(repo=str(repo), data=str(data or ""), candidates=candidates, payloads=PAYLOADS, k=k))
    out: dict[str, Any] = {"protocol": protocol, "candidates": candidates, "k": k}
    with RecommenderClient(url, protocol) as client:
        runs: list[tuple[str, str, Callable[[Payload], Any]]] = [
            ("recommend", "recommend", lambda p: client.recommend_tensors(p.arrays["history"][0], k)),
            (
                f"rank_n{candidates}",
                "rank",
                lambda p: client.rank_tensors(p.arrays["history"][0], np.array(p.movie_ids)),
            ),
        ]
        if content:
            runs.append(
                (
                    f"rank_content_n{candidates}",
                    "rank_content",
                    lambda p: client.rank_content_tensors(
                        p.arrays["history"][0], {name: a[0] for name, a in p.arrays.items() if name != "history"}
                    ),
                )
            )
        for name, workload, call in runs:
            out[name] = _time(call, pool.get(workload), requests, warmup)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="hybridrec latency",
        description="single-request latency of recommend, rank and rank_content, one request at a time (a benchmark)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton address host:port (gRPC 8001 or HTTP 8000)")
    p.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="the client's protocol")
    p.add_argument(
        "--repo",
        default=os.environ.get("HYBRIDREC_REPO", "model_repository"),
        help="model repository holding artifacts.json ($HYBRIDREC_REPO)",
    )
    p.add_argument("--data", help="MovieLens folder for the real payloads (default: resolve_data_dir())")
    p.add_argument("--requests", type=int, default=200, help="requests per endpoint, one at a time")
    p.add_argument("--candidates", type=int, default=50, help="movies per rank request (N)")
    p.add_argument("--no-content", action="store_true", help="leave out rank_content (posters through the CNN)")
    args = p.parse_args(argv)
    result = measure(
        args.url,
        args.protocol,
        repo=args.repo,
        data=args.data,
        requests=args.requests,
        candidates=args.candidates,
        content=not args.no_content,
    )
    print(json.dumps(result, indent=2))
    return 0
