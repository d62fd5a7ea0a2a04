"""The numbers of a benchmark run: per workload, each series' best point within the p99 budget, the ensemble
overhead, the in-process limit at Triton's batches and the ratios between series; and the stated targets checked
against them (reported, never asserted)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hybridrec.loadtests.bench.limit import WORKLOADS, Limit
from hybridrec.loadtests.bench.series import ALL_SERIES
from hybridrec.loadtests.bench.triton_stats import executions_of

# (op, value): what the benchmark reports against (never asserts).
TARGETS: dict[str, tuple[str, float]] = {
    "triton_over_limit": (">=", 0.6),
    "triton_over_peer": (">=", 4.0),
    "rank_over_recommend": (">=", 1.0),
    "ensemble_overhead_ms": ("<=", 1.0),
    "batching_gain": (">=", 1.1),
}


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


def overhead_of(point: Mapping[str, Any] | None) -> float | None:
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
            "at_budget_ms": overhead_of(at_budget[v]),
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
