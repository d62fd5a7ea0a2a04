"""The report of a benchmark run: its markdown tables (also printed by ``run.py``), ``results.md``, the strict JSON
of ``results.json``, and ``write`` (both files and the plot)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec
from hybridrec.loadtests.bench.limit import WORKLOADS, step_models
from hybridrec.loadtests.bench.plots import plot
from hybridrec.loadtests.bench.series import ALL_SERIES, TRITON_VARIANTS, VARIANTS, label
from hybridrec.loadtests.bench.summary import overhead_of

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


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
            _f(overhead_of(p), 2),
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
