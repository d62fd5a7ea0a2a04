"""Triton's statistics API: every model's cumulative statistics, what one load run added to them (the ensemble and
its composing models), the ensemble's overhead over its composing models' compute, and the server's version."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hybridrec.loadtests.bench.limit import WORKLOADS, step_models


def triton_stats(http_url: str) -> dict[str, dict[str, Any]]:
    """Every model's cumulative statistics (``/v2/models/stats``), by model name."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url, connection_timeout=10.0, network_timeout=30.0)
    try:
        raw = client.get_inference_statistics()
    finally:
        client.close()
    return {m["name"]: m for m in raw.get("model_stats", [])}


def _count(entry: Mapping[str, Any], *path: str) -> int:
    value: Any = entry
    for key in path:
        value = value.get(key, {}) if isinstance(value, Mapping) else {}
    return int(value) if isinstance(value, int | float | str) and str(value) else 0


COMPUTE_PARTS = ("compute_input", "compute_infer", "compute_output")


def _batches(entry: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    """batch size -> (executions, compute ns) from a model's batch_stats."""
    out: dict[int, tuple[int, int]] = {}
    for b in entry.get("batch_stats", []) or []:
        ns = sum(_count(b, part, "ns") for part in COMPUTE_PARTS)
        out[int(b["batch_size"])] = (_count(b, "compute_infer", "count"), ns)
    return out


def stats_delta(before: Mapping[str, Any], after: Mapping[str, Any], workload: str) -> dict[str, Any]:
    """What one load run added to the ensemble's and its composing models' statistics. Per composing model,
    ``compute_ms`` is the mean compute (input + infer + output) per request: Triton adds a batch's compute time to
    every request in it, so this is the compute each request waited for."""
    out: dict[str, Any] = {}
    for name in (WORKLOADS[workload].name, *(m.name for m in step_models(workload))):
        a, b = after.get(name, {}), before.get(name, {})

        def delta(*path: str, a: Mapping[str, Any] = a, b: Mapping[str, Any] = b) -> int:
            return _count(a, *path) - _count(b, *path)

        requests = delta("inference_stats", "success", "count")
        executions = delta("execution_count")
        inferences = delta("inference_count")
        entry: dict[str, Any] = {
            "requests": requests,
            "failures": delta("inference_stats", "fail", "count"),
            "inferences": inferences,
            "executions": executions,
            "request_ms": _ms(delta("inference_stats", "success", "ns"), requests),
            "queue_ms": _ms(delta("inference_stats", "queue", "ns"), requests),
        }
        if name != WORKLOADS[workload].name:
            old = _batches(b)
            per_size = {
                size: (n - old.get(size, (0, 0))[0], ns - old.get(size, (0, 0))[1])
                for size, (n, ns) in _batches(a).items()
            }
            per_size = {size: v for size, v in sorted(per_size.items()) if v[0] > 0}
            entry["avg_batch"] = round(inferences / executions, 2) if executions else None
            entry["batches"] = {str(size): n for size, (n, _) in per_size.items()}
            entry["compute_ms_per_execution"] = _ms(sum(ns for _, ns in per_size.values()), executions)
            entry["compute_ms"] = _ms(sum(delta("inference_stats", part, "ns") for part in COMPUTE_PARTS), requests)
        out[name] = entry
    return out


def _ms(ns: int, count: int) -> float | None:
    return round(ns / count / 1e6, 3) if count > 0 else None


def ensemble_overhead(stats: Mapping[str, Any], workload: str, client_p50_ms: float | None = None) -> dict[str, Any]:
    """The ensemble's mean request time (statistics API) minus the sum of its composing models' mean compute per
    request: what the ensemble scheduler, the composing models' queues (batching waits) and Triton's per-model
    overhead add to the model compute. ``client_p50_ms`` (the load generator's p50) gives the same difference as the
    client sees it (network, serialisation and the client library included)."""
    ens = stats.get(WORKLOADS[workload].name) or {}
    models = [stats.get(m.name) or {} for m in step_models(workload)]
    request_ms = ens.get("request_ms")
    computes = [m.get("compute_ms") for m in models]
    if request_ms is None or any(c is None for c in computes):
        return {"overhead_ms": None}
    compute = sum(c for c in computes if c is not None)
    queue = sum(m.get("queue_ms") or 0.0 for m in models)
    out = {
        "request_ms": request_ms,
        "compute_ms": round(compute, 3),
        "overhead_ms": round(request_ms - compute, 3),
        "composing_queue_ms": round(queue, 3),
        "overhead_without_queues_ms": round(request_ms - compute - queue, 3),
        "ensemble_queue_ms": ens.get("queue_ms"),
    }
    if client_p50_ms is not None and math.isfinite(client_p50_ms):
        out["client_p50_ms"] = client_p50_ms
        out["client_p50_minus_compute_ms"] = round(client_p50_ms - compute, 3)
    return out


def executions_of(point: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """model -> batch size -> executions, from a Triton point's statistics."""
    stats = point.get("triton_stats") or {}
    return {
        name: {int(size): int(n) for size, n in (entry.get("batches") or {}).items()} for name, entry in stats.items()
    }


def server_version(http_url: str) -> str:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    try:
        return str(client.get_server_metadata().get("version", "unknown"))
    finally:
        client.close()
