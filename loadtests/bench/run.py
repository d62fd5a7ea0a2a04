"""The throughput benchmark, in one command (a benchmark that prints numbers, never a timed test)::

    python -m hybridrec.loadtests.bench.run --run runs/demo [--out runs/perf]

For each workload (`recommend`: one user's history, top-10 of the whole catalog; `rank`: one user's history and
N=50 real candidates **by movieId**, scored against the catalog's embeddings) it measures on this machine:

(a)  the in-process limit: the same ONNX files (``limit.py``) in onnxruntime at the batch sizes Triton's dynamic
     batcher formed in (b) (statistics API) and at 1, 2, 4 .. max batch; model compute only;
(b)  Triton's DEFAULT config set (``config.pbtxt``: ``platform: onnxruntime_onnx``, Triton's official onnxruntime
     backend) through the gRPC client under Locust (closed loop, a sweep of user counts), cross-checked with
     Triton's statistics API; and the same server under ``perf_analyzer`` (``loadtests/perf_analyzer.py``), a second
     load generator, at the same concurrencies;
(b2) Triton's ``cpu`` config set (python backend running the same ONNX files) under the same Locust load;
(c)  the naive peer (``naive_peer.py``: FastAPI + uvicorn, eager PyTorch per request; `rank` looks the candidates up
     in the exported ``catalog.npz``) under the same load generator;
(d)  the default set again, from a copy of the repository whose composing models' configs have ``dynamic_batching``
     removed.

It reports the throughput at a p99 latency budget (the highest measured req/s whose p99 <= budget, no failures), the
ratios (b)/(a), (b)/(c), (b)/(b2) and (b)/(d), and the **ensemble overhead** of every Triton point: the ensemble's
mean request time minus the sum of its composing models' compute (compute input + infer + output per request, from
the statistics API deltas). It writes ``results.json``, ``results.md`` and ``latency_throughput.png`` into ``--out``
(default ``runs/perf``; the committed ``docs/perf`` is written only when asked for with ``--out docs/perf``). Every
server and load generator it starts is a child process on 127.0.0.1, bounded in time and stopped at the end.
``docs/performance.md`` explains the numbers. When the onnxruntime backend is not installed (`hybridrec backend
build`), (b) and (d) serve the ``cpu`` set instead, (b2) is left out, and the results say so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec
from hybridrec.loadtests.bench.limit import WORKLOADS, Limit, measure_limit, step_models

PEER_LOCUSTFILE = Path(__file__).resolve().parent / "peer_locustfile.py"
DEFAULT_OUT = Path("runs") / "perf"
# Locust variants in report order; "perf_analyzer" is (b)'s server under the other load generator.
VARIANTS = ("triton", "triton_cpu", "naive_peer", "triton_no_batching")
TRITON_VARIANTS = ("triton", "triton_cpu", "triton_no_batching")
ALL_SERIES = (*VARIANTS, "perf_analyzer")
LABELS = {
    "limit": "(a) in-process ONNX limit",
    "triton": "(b) Triton, {set} set",
    "perf_analyzer": "(b) Triton, {set} set, perf_analyzer",
    "triton_cpu": "(b2) Triton, cpu set (python backend)",
    "naive_peer": "(c) naive peer (FastAPI, eager)",
    "triton_no_batching": "(d) Triton, {set} set, no dynamic batching",
}
# One workload per run. The peer's Locust file names its users like the shared ones (run_locust accepts those names).
LOCUST_USERS = {"recommend": "RecommendUser", "rank": "RankUser"}
# Why these budgets: see docs/performance.md. Both are interactive calls; `rank` goes by movieId now (a catalog
# lookup and the fusion head over N candidates, no CNN), so it is as cheap as `recommend` and gets the same budget.
DEFAULT_BUDGETS_MS = {"recommend": 50.0, "rank": 50.0}
# (op, value): what the benchmark reports against (never asserts).
TARGETS: dict[str, tuple[str, float]] = {
    "triton_over_limit": (">=", 0.6),
    "triton_over_peer": (">=", 4.0),
    "rank_over_recommend": (">=", 1.0),
    "ensemble_overhead_ms": ("<=", 1.0),
    "batching_gain": (">=", 1.1),
}
PARITY_REQUESTS = 3
PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def label(series: str, config_set: str = "default") -> str:
    return LABELS[series].format(set=config_set)


# --- Triton's statistics API -----------------------------------------------------------------------------------------
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


# --- repositories ----------------------------------------------------------------------------------------------------
def unbatched_copy(repo: Path, dest: Path) -> Path:
    """A copy of ``repo`` whose composing models' configs (every config set present: ``config.pbtxt`` and
    ``configs/*.pbtxt``) have ``dynamic_batching`` removed: each request is then executed on its own. The configs are
    parsed and re-rendered, so everything else (the run's embedding width included) stays as exported."""
    from hybridrec.export.triton_config import parse, render

    shutil.copytree(repo, dest)
    for m in spec.MODELS.values():
        if m.batching is None:
            continue
        folder = dest / m.name
        for path in [folder / "config.pbtxt", *sorted((folder / "configs").glob("*.pbtxt"))]:
            if path.exists():
                cfg = parse(path.read_text())
                cfg.ClearField("dynamic_batching")
                path.write_text(render(cfg))
    return dest


# --- load runs -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What a sweep loads: a variant's address, the repo its payloads are encoded with, where Triton's statistics
    are (None for the peer) and the Locust file of its users (None: the shared one)."""

    variant: str
    host: str
    repo: Path
    stats_url: str | None = None
    locustfile: Path | None = None


def load_point(target: Target, workload: str, users: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One bounded headless Locust run of ``workload`` at ``users`` concurrent closed-loop users; for Triton, the
    statistics it added and the ensemble overhead."""
    from hybridrec.loadtests.runner import run_locust

    before = triton_stats(target.stats_url) if target.stats_url else None
    summary = run_locust(
        target.host,
        users=users,
        spawn_rate=users,  # everyone at once: the ramp is a negligible part of the run
        run_time_s=args.run_time,
        protocol="grpc",
        candidates=args.candidates,
        repo=target.repo,
        data=args.data,
        out_dir=out_dir,
        user_classes=(LOCUST_USERS[workload],),
        # A second -f replaces the shared Locust file (argparse keeps the last value).
        extra_args=[*(["-f", str(target.locustfile)] if target.locustfile else []), "--payloads", str(args.payloads)],
    )
    point: dict[str, Any] = {"users": users, "requests": summary.requests, "failures": summary.failures}
    point.update({k: round(getattr(summary, k), 2) for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms")})
    if target.stats_url and before is not None:
        point["triton_stats"] = stats_delta(before, triton_stats(target.stats_url), workload)
        point["overhead"] = ensemble_overhead(point["triton_stats"], workload, point["p50_ms"])
    return point


def sweep(target: Target, workload: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """One load point per user count."""
    points = []
    for users in args.users:
        point = load_point(target, workload, users, args, workdir / "locust" / target.variant / workload / f"u{users}")
        over = (point.get("overhead") or {}).get("overhead_ms")
        log(
            f"{target.variant} {workload} users={users}: {point['rps']:.1f} req/s, p50 {point['p50_ms']:.0f} ms, "
            f"p99 {point['p99_ms']:.0f} ms, {point['failures']} failures"
            + (f", ensemble overhead {over:.2f} ms" if over is not None else "")
        )
        points.append(point)
    return points


def perf_analyzer_sweep(
    pa: Any, grpc_url: str, http_url: str, workload: str, payloads: Sequence[Any], args: argparse.Namespace, out: Path
) -> list[dict[str, Any]]:
    """perf_analyzer against (b) at every user count as its concurrency, with the statistics delta of each point."""
    from hybridrec.loadtests.perf_analyzer import export_input_data, run_point

    data = export_input_data(payloads, out / f"{workload}-input-data.json")
    points = []
    for c in args.users:
        before = triton_stats(http_url)
        pt = run_point(pa, grpc_url, WORKLOADS[workload].name, data, c, out, duration_s=args.run_time)
        stats = stats_delta(before, triton_stats(http_url), workload)
        requests = pt.requests if pt.requests is not None else round(pt.rps * args.run_time)
        point: dict[str, Any] = {"users": c, "requests": requests, "failures": stats[workload]["failures"]}
        point.update({k: round(getattr(pt, k), 2) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")})
        point["avg_ms"] = round(pt.avg_ms, 2) if pt.avg_ms is not None else None
        point["triton_stats"] = stats
        point["overhead"] = ensemble_overhead(stats, workload, point["p50_ms"])
        log(
            f"perf_analyzer {workload} concurrency={c}: {point['rps']:.1f} req/s, p50 {point['p50_ms']:.1f} ms, "
            f"p99 {point['p99_ms']:.1f} ms, ensemble overhead {point['overhead'].get('overhead_ms')} ms"
        )
        points.append(point)
    return points


# --- answers: the peer does the same work as Triton ------------------------------------------------------------------
def triton_answers(grpc_url: str, pool: Any) -> list[dict[str, np.ndarray]]:
    """Triton's answers to the first few `recommend` and `rank` payloads (`rank`: the real candidates' scores)."""
    from hybridrec.client import RecommenderClient

    answers: list[dict[str, np.ndarray]] = []
    with RecommenderClient(grpc_url, "grpc") as client:
        for rec, rank in zip(pool.recommend[:PARITY_REQUESTS], pool.rank[:PARITY_REQUESTS], strict=True):
            out = client.infer("recommend", rec.arrays)
            scores = client.infer("rank", rank.arrays)["scores"][0]
            rank.check({"scores": scores[None]})
            answers.append(
                {"movie_ids": out["movie_ids"][0], "scores": out["scores"][0], "rank": scores[: len(rank.movie_ids)]}
            )
    return answers


def peer_answers(peer: Any, pool: Any) -> list[dict[str, np.ndarray]]:
    """The naive peer's answers to the same payloads."""
    from hybridrec.loadtests.bench.naive_peer import rank_body, recommend_body

    answers: list[dict[str, np.ndarray]] = []
    for rec, rank in zip(pool.recommend[:PARITY_REQUESTS], pool.rank[:PARITY_REQUESTS], strict=True):
        r = peer.post("/recommend", recommend_body(rec.arrays["history"][0], int(rec.arrays["k"][0])))
        scores = peer.post("/rank", rank_body(rank.arrays["history"][0], rank.movie_ids))["scores"]
        answers.append(
            {
                "movie_ids": np.asarray(r["movie_ids"], np.int64),
                "scores": np.asarray(r["scores"], np.float32),
                "rank": np.array([-np.inf if s is None else s for s in scores], np.float32),
            }
        )
    return answers


def compare_answers(triton: Sequence[Mapping[str, np.ndarray]], peer: Sequence[Mapping[str, np.ndarray]]) -> dict:
    same_ids = all(np.array_equal(t["movie_ids"], p["movie_ids"]) for t, p in zip(triton, peer, strict=True))
    rec_diff = max(float(np.abs(t["scores"] - p["scores"]).max()) for t, p in zip(triton, peer, strict=True))
    rank_diff = max(float(np.abs(t["rank"] - p["rank"]).max()) for t, p in zip(triton, peer, strict=True))
    return {
        "requests": len(triton),
        "recommend_same_movies": same_ids,
        "recommend_max_abs_score_diff": rec_diff,
        "rank_max_abs_score_diff": rank_diff,
    }


# --- summary ---------------------------------------------------------------------------------------------------------
def best_within(points: Sequence[Mapping[str, Any]], budget_ms: float) -> dict[str, Any] | None:
    """The point with the highest req/s whose p99 <= budget and that had no failures (None when none qualifies)."""
    ok = [
        p
        for p in points
        if p["requests"] > 0 and p["failures"] == 0 and math.isfinite(p["p99_ms"]) and p["p99_ms"] <= budget_ms
    ]
    return dict(max(ok, key=lambda p: p["rps"])) if ok else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
        return None
    if b <= 0:
        return math.inf if a > 0 else None
    return round(a / b, 3)


def _overhead_of(point: Mapping[str, Any] | None) -> float | None:
    return ((point or {}).get("overhead") or {}).get("overhead_ms")


def summarise(
    workload: str, budget_ms: float, points: Mapping[str, list[dict[str, Any]]], limit: Limit | None
) -> dict[str, Any]:
    series = [v for v in ALL_SERIES if v in points]
    at_budget = {v: best_within(points[v], budget_ms) for v in series}
    rps = {v: (p["rps"] if p else 0.0) for v, p in at_budget.items()}
    result: dict[str, Any] = {"budget_ms": budget_ms, **{v: points[v] for v in series}}
    result["at_budget"] = {
        v: ({"users": p["users"], "rps": p["rps"], "p99_ms": p["p99_ms"]} if p else None) for v, p in at_budget.items()
    }
    # Ensemble overhead per Triton series: at its lowest concurrency (no queueing from load: the target's number) and
    # at its within-budget point.
    result["overhead"] = {
        v: {
            "lowest_users": min(points[v], key=lambda p: p["users"])["users"],
            "at_lowest_users": min(points[v], key=lambda p: p["users"]).get("overhead") or {},
            "at_budget_ms": _overhead_of(at_budget[v]),
        }
        for v in series
        if v != "naive_peer" and points[v]
    }
    ratios: dict[str, float | None] = {}
    if limit is not None:
        lim = limit.to_json()
        # The batches Triton formed at its operating point: the within-budget point, else its busiest point.
        triton_points = points.get("triton") or []
        ref = at_budget.get("triton") or (max(triton_points, key=lambda p: p["rps"]) if triton_points else None)
        if ref is not None and ref.get("triton_stats"):
            requests = ref["triton_stats"][WORKLOADS[workload].name]["requests"]
            lim["rps_at_triton_batches"] = round(limit.rps_for(executions_of(ref), requests), 2)
            lim["triton_batches_from_users"] = ref["users"]
        result["limit"] = lim
        ratios["triton_over_limit"] = _ratio(rps.get("triton"), lim.get("rps_at_triton_batches"))
        ratios["triton_over_peak_limit"] = _ratio(rps.get("triton"), lim["peak_rps"])
        if "perf_analyzer" in points:
            ratios["perf_analyzer_over_limit"] = _ratio(rps.get("perf_analyzer"), lim.get("rps_at_triton_batches"))
    if "naive_peer" in points:
        ratios["triton_over_peer"] = _ratio(rps.get("triton"), rps.get("naive_peer"))
        if "perf_analyzer" in points:
            ratios["perf_analyzer_over_peer"] = _ratio(rps.get("perf_analyzer"), rps.get("naive_peer"))
    if "triton_cpu" in points:
        ratios["triton_over_cpu_set"] = _ratio(rps.get("triton"), rps.get("triton_cpu"))
    if "perf_analyzer" in points:
        ratios["perf_analyzer_over_locust"] = _ratio(rps.get("perf_analyzer"), rps.get("triton"))
    if "triton_no_batching" in points:
        ratios["batching_on_over_off"] = _ratio(rps.get("triton"), rps.get("triton_no_batching"))
        top_on = max(points["triton"], key=lambda p: p["users"]) if points.get("triton") else None
        top_off = max(points["triton_no_batching"], key=lambda p: p["users"]) if points["triton_no_batching"] else None
        if top_on and top_off:
            ratios["batching_on_over_off_at_max_users"] = _ratio(top_on["rps"], top_off["rps"])
    result["ratios"] = ratios
    return result


def _target(key: str, measured: float | None, what: str) -> dict[str, Any]:
    op, value = TARGETS[key]
    met = None if measured is None else bool(measured >= value if op == ">=" else measured <= value)
    return {"what": what, "target": f"{op} {value:g}", "measured": measured, "met": met}


def targets(summary: Mapping[str, Any], candidates: int = 50) -> dict[str, Any]:
    """The stated targets, checked against the measured numbers (reported, never asserted)."""
    out: dict[str, Any] = {}
    rec, rank = summary.get("recommend"), summary.get("rank")
    if rec:
        r = rec["ratios"]
        if "triton_over_limit" in r:
            out["recommend_triton_over_limit"] = _target(
                "triton_over_limit", r["triton_over_limit"], "`recommend` (b) Locust / (a) limit, at the p99 budget"
            )
        if "perf_analyzer_over_limit" in r:
            out["recommend_perf_analyzer_over_limit"] = _target(
                "triton_over_limit", r["perf_analyzer_over_limit"], "`recommend` (b) perf_analyzer / (a) limit"
            )
        if "triton_over_peer" in r:
            out["recommend_triton_over_peer"] = _target(
                "triton_over_peer", r["triton_over_peer"], "`recommend` (b) Locust / (c) naive peer, at the budget"
            )
    if rec and rank:
        for series in ("triton", "perf_analyzer"):
            a, b = rank["at_budget"].get(series), rec["at_budget"].get(series)
            if series in rank["at_budget"] and series in rec["at_budget"]:
                out[f"rank_over_recommend_{series}"] = _target(
                    "rank_over_recommend",
                    _ratio(a["rps"] if a else 0.0, b["rps"] if b else 0.0),
                    f"`rank` (N={candidates}) / `recommend` req/s at the budget, (b) "
                    + ("Locust" if series == "triton" else "perf_analyzer"),
                )
    for workload, s in summary.items():
        o = s.get("overhead", {}).get("triton")
        if o:
            out[f"{workload}_ensemble_overhead"] = _target(
                "ensemble_overhead_ms",
                (o.get("at_lowest_users") or {}).get("overhead_ms"),
                f"`{workload}` (b) ensemble overhead (mean request - composing compute) at "
                f"{o['lowest_users']} user(s), ms",
            )
        key = "batching_on_over_off_at_max_users"
        if key in s["ratios"]:
            out[f"{workload}_batching_gain"] = _target(
                "batching_gain", s["ratios"][key], f"`{workload}` (b)/(d) at the highest user count"
            )
    return out


# --- report ----------------------------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float | int) else str(value)


def _at(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "0 (no point within budget)"
    return f"{entry['rps']:.1f} ({entry['users']} user{'s' if entry['users'] != 1 else ''})"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main_table(summary: Mapping[str, Any], config_set: str = "default") -> str:
    rows = []
    for workload, s in summary.items():
        lim = s.get("limit") or {}
        a = lim.get("rps_at_triton_batches")
        r, at = s["ratios"], s["at_budget"]
        rows.append(
            [
                workload,
                f"{s['budget_ms']:.0f} ms",
                f"{_f(a)} (peak {_f(lim.get('peak_rps'))} at batch {lim.get('peak_batch')})" if lim else "-",
                *(_at(at[v]) if v in at else "-" for v in (*VARIANTS, "perf_analyzer")),
                *(
                    _f(r.get(k), 2)
                    for k in (
                        "triton_over_limit",
                        "perf_analyzer_over_limit",
                        "triton_over_peer",
                        "triton_over_cpu_set",
                        "batching_on_over_off",
                    )
                ),
            ]
        )
    header = ["workload", "p99 budget", label("limit") + ", req/s"]
    header += [label(v, config_set) for v in (*VARIANTS, "perf_analyzer")]
    header += ["(b)/(a)", "(b) perf_analyzer/(a)", "(b)/(c)", "(b)/(b2)", "(b)/(d)"]
    return md_table(header, rows)


def overhead_table(summary: Mapping[str, Any], config_set: str = "default") -> str:
    rows = []
    for workload, s in summary.items():
        for series, o in (s.get("overhead") or {}).items():
            low = o.get("at_lowest_users") or {}
            rows.append(
                [
                    workload,
                    label(series, config_set),
                    o["lowest_users"],
                    _f(low.get("request_ms"), 2),
                    _f(low.get("compute_ms"), 2),
                    _f(low.get("overhead_ms"), 2),
                    _f(low.get("composing_queue_ms"), 2),
                    _f(low.get("client_p50_minus_compute_ms"), 2),
                    _f(o.get("at_budget_ms"), 2),
                ]
            )
    header = ["workload", "series", "users", "ensemble ms/request", "composing compute ms", "overhead ms"]
    header += ["of which composing queues ms", "client p50 - compute ms", "overhead ms at the budget point"]
    return md_table(header, rows)


def sweep_table(summary: Mapping[str, Any], config_set: str = "default") -> str:
    rows = [
        [
            workload,
            label(variant, config_set),
            p["users"],
            f"{p['rps']:.1f}",
            *(_f(p[q], 1 if variant == "perf_analyzer" else 0) for q in PERCENTILES),
            p["failures"],
            _f(_overhead_of(p), 2),
        ]
        for workload, s in summary.items()
        for variant in ALL_SERIES
        for p in s.get(variant, [])
    ]
    header = ["workload", "variant", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "overhead ms"]
    return md_table(header, rows)


def stats_table(summary: Mapping[str, Any], config_set: str = "default") -> str:
    rows = []
    for workload, s in summary.items():
        for variant in (*TRITON_VARIANTS, "perf_analyzer"):
            for p in s.get(variant, []):
                st = p.get("triton_stats")
                if not st:
                    continue
                ens = st[WORKLOADS[workload].name]
                models = "; ".join(
                    f"{m.name}: {st[m.name]['executions']}, {_f(st[m.name]['avg_batch'], 2)}, "
                    f"{_f(st[m.name]['queue_ms'], 2)}, {_f(st[m.name].get('compute_ms'), 3)}"
                    for m in step_models(workload)
                    if m.name in st
                )
                rows.append(
                    [
                        workload,
                        label(variant, config_set),
                        p["users"],
                        p["requests"],
                        ens["requests"],
                        _f(ens["request_ms"], 2),
                        models,
                    ]
                )
    header = ["workload", "variant", "users", "client requests", "Triton requests", "server ms/request"]
    header += ["model: executions, avg batch, queue ms/request, compute ms/request"]
    return md_table(header, rows)


def limit_table(summary: Mapping[str, Any]) -> str:
    rows = [
        [workload, c["batch"], f"{c['chain_ms']:.2f}", f"{c['rps']:.1f}"]
        for workload, s in summary.items()
        for c in (s.get("limit") or {}).get("chain", [])
    ]
    return md_table(["workload", "batch", "chain ms", "req/s"], rows)


def targets_table(checked: Mapping[str, Any]) -> str:
    met = {True: "yes", False: "**no**", None: "n/a"}
    rows = [[t["what"], t["target"], _f(t["measured"], 2), met[t["met"]]] for t in checked.values()]
    return md_table(["target", "wanted", "measured", "met"], rows)


def markdown(results: Mapping[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    cs = results["config_sets"]["triton"]
    pa = results.get("perf_analyzer") or {}
    parts = [
        "# hybridrec throughput benchmark",
        "",
        f"Measured {results['finished']} on {m['cpu']} ({m['cores']} cores, load average {m['load_before']} before, "
        f"{m['load_after']} after); {s['duration_s']:.0f} s per point, users {s['users']}, N={s['candidates']} "
        f"candidates for `rank` (by movieId, padded to {spec.rank_slots(s['candidates'])} slots), k={s['k']} for "
        f"`recommend`. Config sets: {json.dumps(results['config_sets'])}. perf_analyzer: "
        f"{pa.get('executable') or pa.get('error') or 'not run'}. Command: `{results['command']}` "
        f"({results['wall_s']:.0f} s).",
        "",
        "Throughput at the p99 budget (highest measured req/s with p99 <= budget and no failures):",
        "",
        main_table(results["workloads"], cs),
        "",
        targets_table(results["targets"]),
        "",
        "Ensemble overhead (statistics API deltas: ensemble mean request time minus its composing models' mean "
        "compute per request):",
        "",
        overhead_table(results["workloads"], cs),
        "",
        "![latency vs throughput](latency_throughput.png)",
        "",
        "## Every point",
        "",
        sweep_table(results["workloads"], cs),
        "",
        "## Triton statistics per point (statistics API deltas)",
        "",
        stats_table(results["workloads"], cs),
        "",
        "## In-process limit per batch size (onnxruntime, model compute only)",
        "",
        limit_table(results["workloads"]),
        "",
        f"Naive peer vs Triton answers: {json.dumps(results.get('answers'))}",
        "",
    ]
    return "\n".join(parts)


def _plain(value: float, _pos: int | None = None) -> str:
    return f"{value:g}"


def _leading(value: float) -> int:
    """The leading digit of a positive number (0 for anything else)."""
    return round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0


def plot(results: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    workloads = results["workloads"]
    cs = results["config_sets"]["triton"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.8), squeeze=False)
    styles = {
        "triton": ("tab:blue", "o", "-"),
        "perf_analyzer": ("tab:cyan", "D", "--"),
        "triton_cpu": ("tab:purple", "v", "-"),
        "naive_peer": ("tab:red", "^", "-"),
        "triton_no_batching": ("tab:orange", "s", "-"),
    }
    for ax, (workload, s) in zip(axes[0], workloads.items(), strict=True):
        for variant, (color, marker, line) in styles.items():
            pts = [p for p in s.get(variant, []) if p["requests"] > 0 and math.isfinite(p["p99_ms"])]
            if not pts:
                continue
            ax.plot(
                [p["rps"] for p in pts],
                [p["p99_ms"] for p in pts],
                marker=marker,
                linestyle=line,
                color=color,
                label=label(variant, cs),
            )
            for p in pts:
                ax.annotate(
                    f"{p['users']}u",
                    (p["rps"], p["p99_ms"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=color,
                )
        ax.axhline(
            s["budget_ms"], color="gray", linestyle="--", linewidth=1, label=f"p99 budget {s['budget_ms']:.0f} ms"
        )
        lim = s.get("limit") or {}
        if lim.get("rps_at_triton_batches"):
            ax.axvline(
                lim["rps_at_triton_batches"],
                color="tab:green",
                linestyle=":",
                linewidth=1.5,
                label=f"{label('limit')} at Triton's batches",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 200 and 20, not 2x10^2 and 2x10^1
            axis.set_major_formatter(FuncFormatter(_plain))
            axis.set_minor_formatter(FuncFormatter(lambda v, pos: _plain(v, pos) if _leading(v) in (2, 5) else ""))
        ax.set_xlabel("throughput, requests/s (log)")
        ax.set_ylabel("p99 latency, ms (log)")
        ax.set_title(f"{workload}: p99 latency vs throughput (closed loop, users annotated)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the run ---------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("torch", "onnxruntime", "tritonclient", "nvidia-pytriton", "locust", "fastapi", "uvicorn"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "cpu": cpu or "unknown CPU",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "load_before": _load(),
    }


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@contextlib.contextmanager
def workdir(path: Path | None, prefix: str = "hybridrec-bench-") -> Iterator[Path]:
    """``path`` (kept), or a temporary folder removed at the end (shared by the benchmarks)."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _csv_ints(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _csv_workloads(text: str) -> list[str]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"workloads are {sorted(WORKLOADS)}, got {text!r}")
    return names


SKIPPABLE = ("peer", "no-batching", "cpu-set", "perf-analyzer")


def skip_parser(allowed: Sequence[str]) -> Callable[[str], set[str]]:
    """An argparse type for ``--skip a,b``: a set of names out of ``allowed`` (shared by the benchmarks)."""

    def parse(text: str) -> set[str]:
        names = {s.strip() for s in text.split(",") if s.strip()}
        unknown = names - set(allowed)
        if unknown:
            raise argparse.ArgumentTypeError(f"--skip takes some of {','.join(allowed)}, got {sorted(unknown)}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hybridrec.loadtests.bench.run", description=(__doc__ or "").split("\n\n")[0]
    )
    what = p.add_argument_group("what is served")
    what.add_argument("--run", type=Path, default=Path("runs/demo"), help="trained run folder (the peer loads it)")
    what.add_argument(
        "--repo",
        type=Path,
        help="exported model repository of that run, served read-only (default: export --run into a temp folder)",
    )
    what.add_argument("--workloads", type=_csv_workloads, default=list(WORKLOADS), help="recommend,rank")
    what.add_argument(
        "--skip", type=skip_parser(SKIPPABLE), default=set(), help=f"parts to leave out: {','.join(SKIPPABLE)}"
    )
    load = p.add_argument_group("load (Locust and perf_analyzer, closed loop)")
    load.add_argument("--users", type=_csv_ints, default=[1, 4, 8], help="user counts (= concurrency) of the sweep")
    load.add_argument(
        "--run-time", "--duration", dest="run_time", type=float, default=10.0, help="seconds of load per point"
    )
    for w, budget in DEFAULT_BUDGETS_MS.items():
        load.add_argument(f"--budget-{w}-ms", type=float, default=budget, help=f"p99 budget of `{w}`")
    load.add_argument("--candidates", type=int, default=50, help="movies per `rank` request (N)")
    load.add_argument("--payloads", type=int, default=32, help="distinct real requests per workload")
    load.add_argument("--data", help="MovieLens folder for the payloads (default: resolve_data_dir())")
    lim = p.add_argument_group("in-process limit")
    lim.add_argument("--limit-time", type=float, default=0.3, help="seconds per timing (best of 2 rounds)")
    lim.add_argument("--limit-batches", type=_csv_ints, help="default 1, 2, 4 .. max batch, plus Triton's sizes")
    out = p.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"results.json/.md and the plot (default {DEFAULT_OUT}; `--out docs/perf` rewrites the committed ones)",
    )
    out.add_argument("--workdir", type=Path, help="keep the exported repos, Locust reports and logs here")
    return p


def run(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    from hybridrec.loadtests.bench.naive_peer import PeerServer
    from hybridrec.loadtests.payloads import PayloadPool, PoolKey
    from hybridrec.serving import TritonServer, find_tritonserver

    started = time.monotonic()
    skip = set(args.skip)
    budgets = {w: float(getattr(args, f"budget_{w}_ms")) for w in DEFAULT_BUDGETS_MS}
    info = machine()
    points: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in args.workloads}
    config_sets: dict[str, str] = {}
    pa_info: dict[str, Any] = {}
    with workdir(args.workdir) as work, contextlib.ExitStack() as stack:
        repo = args.repo
        if repo is None:
            from hybridrec.export.onnx_export import export_run

            repo = work / "repo"
            log(f"exporting {args.run} into {repo}")
            export_run(args.run, repo)
        repo = repo.resolve()
        # Every server starts now, side by side: start-up is not measured, and each one then waits idle (no CPU)
        # until its phase, and is stopped right after it. The stack stops whatever is left on any error.
        on = TritonServer(repo, log_file=work / "triton-default.log")  # "auto": the default set where it can be served
        config_sets["triton"] = on.config_set
        if on.config_set != "default":
            log(f"the default config set cannot be served here ({on.config_set_reason}): (b) and (d) serve the cpu set")
        stack.callback(on.stop)
        on.start()
        cpu = off = peer = None
        if "cpu-set" not in skip and on.config_set != "cpu":
            cpu = TritonServer(
                repo,
                binary=find_tritonserver(prefer_bundled=True),
                model_config_name="cpu",
                log_file=work / "triton-cpu.log",
            )
            config_sets["triton_cpu"] = cpu.config_set
            stack.callback(cpu.stop)
            cpu.start()
        if "no-batching" not in skip:
            off = TritonServer(
                unbatched_copy(repo, work / "repo-no-batching"),
                binary=on.binary,
                model_config_name=on.model_config_name,
                log_file=work / "triton-no-batching.log",
            )
            config_sets["triton_no_batching"] = off.config_set
            stack.callback(off.stop)
            off.start()
        if "peer" not in skip:
            peer = PeerServer(args.run, repo, log_file=work / "naive-peer.log")
            stack.callback(peer.stop)
            peer.start()
        # The same requests as the Locust users send (same options and seed): limit, answers and load agree.
        pool = PayloadPool(
            PoolKey(repo=str(repo), data=str(args.data or ""), candidates=args.candidates, payloads=args.payloads)
        )
        answers: dict[str, Any] = {}

        log(f"(b) Triton, {on.config_set} set, dynamic batching")
        on.wait_ready()
        info["tritonserver"] = _server_version(on.http_url)
        answers["triton"] = triton_answers(on.grpc_url, pool)
        for w in args.workloads:
            points[w]["triton"] = sweep(Target("triton", on.grpc_url, repo, on.http_url), w, args, work)
        if "perf-analyzer" not in skip:
            from hybridrec.loadtests.perf_analyzer import (
                PerfAnalyzerError,
                PerfAnalyzerUnavailableError,
                find_perf_analyzer,
            )

            log(f"(b) Triton, {on.config_set} set, under perf_analyzer")
            try:
                pa = find_perf_analyzer()
                pa_info["executable"] = str(pa.executable)
                for w in args.workloads:
                    points[w]["perf_analyzer"] = perf_analyzer_sweep(
                        pa, on.grpc_url, on.http_url, w, pool.get(w), args, work / "perf_analyzer"
                    )
            except (PerfAnalyzerUnavailableError, PerfAnalyzerError) as e:
                pa_info["error"] = str(e).splitlines()[0]
                log(f"perf_analyzer left out: {e}")
        on.stop()

        log("(a) in-process limit")
        limits: dict[str, Limit] = {}
        for w in args.workloads:
            formed: dict[str, set[int]] = {}
            for p in points[w]["triton"]:
                for model, sizes in executions_of(p).items():
                    formed.setdefault(model, set()).update(sizes)
            requests = [p.arrays for p in pool.get(w)]
            limits[w] = measure_limit(
                repo, w, requests, batches=args.limit_batches, extra=formed, min_time_s=args.limit_time
            )
            peak, at = limits[w].peak_rps()
            log(f"limit {w}: peak {peak:.1f} req/s at batch {at}")

        if cpu is not None:
            log("(b2) Triton, cpu set (python backend)")
            cpu.wait_ready()
            for w in args.workloads:
                points[w]["triton_cpu"] = sweep(Target("triton_cpu", cpu.grpc_url, repo, cpu.http_url), w, args, work)
            cpu.stop()

        if off is not None:
            log(f"(d) Triton, {off.config_set} set, without dynamic batching")
            off.wait_ready()
            for w in args.workloads:
                target = Target("triton_no_batching", off.grpc_url, off.model_repository, off.http_url)
                points[w]["triton_no_batching"] = sweep(target, w, args, work)
            off.stop()

        if peer is not None:
            log("(c) naive peer")
            peer.wait_ready()
            answers["peer"] = peer_answers(peer, pool)
            for w in args.workloads:
                points[w]["naive_peer"] = sweep(
                    Target("naive_peer", peer.url, repo, None, PEER_LOCUSTFILE), w, args, work
                )
            peer.stop()

    info["load_after"] = _load()
    summary = {w: summarise(w, budgets[w], points[w], limits.get(w)) for w in args.workloads}
    return {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": info,
        "config_sets": config_sets,
        "perf_analyzer": pa_info or None,
        "settings": {
            "duration_s": args.run_time,
            "users": args.users,
            "candidates": args.candidates,
            "rank_slots": spec.rank_slots(args.candidates),
            "k": spec.DEFAULT_K,
            "payloads": args.payloads,
            "budgets_ms": budgets,
            "protocol": "grpc (Triton), HTTP/JSON (naive peer)",
            "load_generator": "Locust (closed loop, no think time, one process) and perf_analyzer (closed loop, "
            "synchronous gRPC), on the same machine",
        },
        "workloads": summary,
        "targets": targets(summary, args.candidates),
        "answers": compare_answers(answers["triton"], answers["peer"]) if "peer" in answers else None,
    }


def _server_version(http_url: str) -> str:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    try:
        return str(client.get_server_metadata().get("version", "unknown"))
    finally:
        client.close()


def write(results: Mapping[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "latency_throughput.png"}
    paths["json"].write_text(json.dumps(_finite(results), indent=2, default=_json_default, allow_nan=False) + "\n")
    paths["md"].write_text(markdown(results))
    plot(results, paths["png"])
    return paths


def _finite(value: Any) -> Any:
    """Strict JSON: a ratio over zero (a variant with no point within budget) is written as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: list[str] | None = None, *, printer: Callable[[str], None] = print) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not args.run.joinpath("model.pt").exists():
        print(f"no trained model in {args.run}: run `hybridrec train --run {args.run}` first", file=sys.stderr)
        return 2
    command = " ".join(["python -m hybridrec.loadtests.bench.run", *argv])
    results = run(args, command)
    paths = write(results, args.out)
    m, cs = results["machine"], results["config_sets"]["triton"]
    printer(f"{m['cpu']}, {m['cores']} cores, load average {m['load_before']} before, {m['load_after']} after")
    printer(main_table(results["workloads"], cs))
    printer("")
    printer(targets_table(results["targets"]))
    printer("")
    printer(overhead_table(results["workloads"], cs))
    printer("")
    printer(sweep_table(results["workloads"], cs))
    printer(f"\nwritten: {', '.join(str(p) for p in paths.values())} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
