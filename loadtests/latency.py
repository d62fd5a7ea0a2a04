"""Single-request latency of `rank` and `recommend` (one request at a time, real payloads): a benchmark that
prints numbers, not a timed test.

    hybridrec latency --url 127.0.0.1:8001 [--protocol grpc] [--requests 200] [--candidates 50]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.client import RecommenderClient
from hybridrec.loadtests.payloads import build_payloads


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "requests": float(len(a)),
        "mean_ms": round(float(a.mean()), 2),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
    }


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
) -> dict[str, Any]:
    payloads = build_payloads(repo, data, candidates=candidates, payloads=32)
    out: dict[str, Any] = {"protocol": protocol, "candidates": candidates, "k": k}
    with RecommenderClient(url, protocol) as client:
        for name, call in (
            (f"rank_n{candidates}", lambda p: client.infer("rank", p.arrays)),
            ("recommend", lambda p: client.recommend_tensors(p.arrays["history"][0], k)),
        ):
            times = []
            for i in range(warmup + requests):
                p = payloads[i % len(payloads)]
                t0 = time.perf_counter()
                call(p)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
            out[name] = _percentiles(times)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hybridrec latency", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--url", required=True)
    p.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    p.add_argument("--repo", default="model_repository")
    p.add_argument("--data")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--candidates", type=int, default=50)
    args = p.parse_args(argv)
    result = measure(
        args.url, args.protocol, repo=args.repo, data=args.data, requests=args.requests, candidates=args.candidates
    )
    print(json.dumps(result, indent=2))
    return 0
