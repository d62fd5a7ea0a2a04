"""The throughput benchmark, in one command (a benchmark that prints numbers, never a timed test)::

    python -m hybridrec.loadtests.bench.run --run runs/demo --out docs/perf

For each workload (`recommend`: one user's history, top-10 of the whole catalog; `rank`: N=50 real candidates with
posters) it measures on this machine:

(a) the in-process limit: the same ONNX models in onnxruntime at the batch sizes Triton's dynamic batcher formed in
    (b) (statistics API) and at 1, 2, 4 .. max batch; model compute only (``limit.py``);
(b) the Triton ensemble through the gRPC client under Locust, closed loop, a sweep of user counts, cross-checked
    with Triton's statistics API (requests, executions, batch sizes, queue and compute time per model);
(c) the naive peer (``naive_peer.py``: FastAPI + uvicorn, eager PyTorch per request) under the same load generator;
(d) Triton again, from a copy of the repository whose composing models' configs are generated without
    ``dynamic_batching``.

It reports the throughput at a p99 latency budget (the highest measured req/s whose p99 <= budget, no failures) and
the ratios (b)/(a), (b)/(c) and (b)/(d), and writes ``results.json``, ``results.md`` and ``latency_throughput.png``
into ``--out``. Every server and load generator it starts is a child process on 127.0.0.1, bounded in time and
stopped at the end. ``docs/performance.md`` explains the numbers.
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
VARIANTS = ("triton", "naive_peer", "triton_no_batching")
LABELS = {
    "limit": "(a) in-process ONNX limit",
    "triton": "(b) Triton, dynamic batching",
    "naive_peer": "(c) naive peer (FastAPI, eager)",
    "triton_no_batching": "(d) Triton, no dynamic batching",
}
# One workload per run. The peer's Locust file names its users like the shared ones (run_locust accepts those names).
LOCUST_USERS = {"recommend": "RecommendUser", "rank": "RankUser"}
# Why these budgets: see docs/performance.md. `recommend` is an interactive call (a page of movies); `rank` runs a CNN
# over 50 posters (about 100 ms of compute alone on 2 cores), so its budget leaves room for a short queue.
DEFAULT_BUDGETS_MS = {"recommend": 50.0, "rank": 500.0}
TARGETS = {"triton_over_limit": 0.6, "triton_over_peer": 3.0, "batching_gain": 1.1}
PARITY_REQUESTS = 3
PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def _batches(entry: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    """batch size -> (executions, compute ns) from a model's batch_stats."""
    out: dict[int, tuple[int, int]] = {}
    for b in entry.get("batch_stats", []) or []:
        ns = sum(_count(b, part, "ns") for part in ("compute_input", "compute_infer", "compute_output"))
        out[int(b["batch_size"])] = (_count(b, "compute_infer", "count"), ns)
    return out


def stats_delta(before: Mapping[str, Any], after: Mapping[str, Any], workload: str) -> dict[str, Any]:
    """What one load run added to the ensemble's and its composing models' statistics."""
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
        out[name] = entry
    return out


def _ms(ns: int, count: int) -> float | None:
    return round(ns / count / 1e6, 3) if count > 0 else None


def executions_of(point: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """model -> batch size -> executions, from a Triton point's statistics."""
    stats = point.get("triton_stats") or {}
    return {
        name: {int(size): int(n) for size, n in (entry.get("batches") or {}).items()} for name, entry in stats.items()
    }


# --- repositories ----------------------------------------------------------------------------------------------------
def unbatched_copy(repo: Path, dest: Path) -> Path:
    """A copy of ``repo`` whose composing models' configs (every config set present) are generated from the spec
    with ``dynamic_batching`` cleared: each request is then executed on its own."""
    from hybridrec.export.triton_config import PROFILES, model_config, render

    shutil.copytree(repo, dest)
    for m in spec.MODELS.values():
        if m.batching is None:
            continue
        folder = dest / m.name
        files = [(folder / "config.pbtxt", "default")]
        files += [(folder / "configs" / f"{p}.pbtxt", p) for p in PROFILES if p != "default"]
        for path, profile in files:
            if path.exists():
                cfg = model_config(m, profile)
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
    statistics it added."""
    from hybridrec.loadtests.runner import run_locust

    before = triton_stats(target.stats_url) if target.stats_url else None
    summary = run_locust(
        target.host,
        users=users,
        spawn_rate=users,  # everyone at once: the ramp is a negligible part of the run
        run_time_s=args.duration,
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
    return point


def sweep(target: Target, workload: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """One load point per user count."""
    points = []
    for users in args.users:
        point = load_point(target, workload, users, args, workdir / "locust" / target.variant / workload / f"u{users}")
        log(
            f"{target.variant} {workload} users={users}: {point['rps']:.1f} req/s, p50 {point['p50_ms']:.0f} ms, "
            f"p99 {point['p99_ms']:.0f} ms, {point['failures']} failures"
        )
        points.append(point)
    return points


# --- answers: the peer does the same work as Triton ------------------------------------------------------------------
def triton_answers(grpc_url: str, pool: Any) -> list[dict[str, np.ndarray]]:
    """Triton's answers to the first few `recommend` and `rank` payloads."""
    from hybridrec.client import RecommenderClient

    answers: list[dict[str, np.ndarray]] = []
    with RecommenderClient(grpc_url, "grpc") as client:
        for rec, rank in zip(pool.recommend[:PARITY_REQUESTS], pool.rank[:PARITY_REQUESTS], strict=True):
            out = client.infer("recommend", rec.arrays)
            answers.append(
                {
                    "movie_ids": out["movie_ids"][0],
                    "scores": out["scores"][0],
                    "rank": client.infer("rank", rank.arrays)["scores"],
                }
            )
    return answers


def peer_answers(peer: Any, pool: Any) -> list[dict[str, np.ndarray]]:
    """The naive peer's answers to the same payloads."""
    from hybridrec.loadtests.bench.naive_peer import rank_body, recommend_body

    answers: list[dict[str, np.ndarray]] = []
    for rec, rank in zip(pool.recommend[:PARITY_REQUESTS], pool.rank[:PARITY_REQUESTS], strict=True):
        r = peer.post("/recommend", recommend_body(rec.arrays["history"][0], int(rec.arrays["k"][0])))
        answers.append(
            {
                "movie_ids": np.asarray(r["movie_ids"], np.int64),
                "scores": np.asarray(r["scores"], np.float32),
                "rank": np.asarray(peer.post("/rank", rank_body(rank.arrays))["scores"], np.float32),
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


def summarise(
    workload: str, budget_ms: float, points: Mapping[str, list[dict[str, Any]]], limit: Limit | None
) -> dict[str, Any]:
    at_budget = {v: best_within(points[v], budget_ms) for v in VARIANTS if v in points}
    rps = {v: (p["rps"] if p else 0.0) for v, p in at_budget.items()}
    result: dict[str, Any] = {"budget_ms": budget_ms, **{v: points[v] for v in VARIANTS if v in points}}
    result["at_budget"] = {
        v: ({"users": p["users"], "rps": p["rps"], "p99_ms": p["p99_ms"]} if p else None) for v, p in at_budget.items()
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
    if "naive_peer" in points:
        ratios["triton_over_peer"] = _ratio(rps.get("triton"), rps.get("naive_peer"))
    if "triton_no_batching" in points:
        ratios["batching_on_over_off"] = _ratio(rps.get("triton"), rps.get("triton_no_batching"))
        top_on = max(points["triton"], key=lambda p: p["users"]) if points.get("triton") else None
        top_off = max(points["triton_no_batching"], key=lambda p: p["users"]) if points["triton_no_batching"] else None
        if top_on and top_off:
            ratios["batching_on_over_off_at_max_users"] = _ratio(top_on["rps"], top_off["rps"])
    result["ratios"] = ratios
    return result


def targets(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The stated targets, checked against the measured numbers (reported, never asserted)."""
    out: dict[str, Any] = {}
    rec = summary.get("recommend")
    if rec:
        r = rec["ratios"]
        for key in ("triton_over_limit", "triton_over_peer"):
            if key in r:
                out[f"recommend_{key}"] = {
                    "target": TARGETS[key],
                    "measured": r[key],
                    "met": _met(r[key], TARGETS[key]),
                }
    for workload, s in summary.items():
        key = "batching_on_over_off_at_max_users"
        if key in s["ratios"]:
            value = s["ratios"][key]
            out[f"{workload}_batching_gain"] = {
                "target": TARGETS["batching_gain"],
                "measured": value,
                "met": _met(value, TARGETS["batching_gain"]),
            }
    return out


def _met(value: float | None, target: float) -> bool | None:
    return None if value is None else bool(value >= target)


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


def main_table(summary: Mapping[str, Any]) -> str:
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
                *(_at(at[v]) if v in at else "-" for v in VARIANTS),
                *(
                    _f(r.get(k), 2)
                    for k in (
                        "triton_over_limit",
                        "triton_over_peer",
                        "batching_on_over_off",
                        "batching_on_over_off_at_max_users",
                    )
                ),
            ]
        )
    header = ["workload", "p99 budget", "(a) in-process limit, req/s", "(b) Triton", "(c) naive peer"]
    header += ["(d) Triton, no batching", "(b)/(a)", "(b)/(c)", "(b)/(d) at budget", "(b)/(d) at max users"]
    return md_table(header, rows)


def sweep_table(summary: Mapping[str, Any]) -> str:
    rows = [
        [workload, LABELS[variant], p["users"], f"{p['rps']:.1f}", *(_f(p[q], 0) for q in PERCENTILES), p["failures"]]
        for workload, s in summary.items()
        for variant in VARIANTS
        for p in s.get(variant, [])
    ]
    return md_table(["workload", "variant", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures"], rows)


def stats_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for workload, s in summary.items():
        for variant in ("triton", "triton_no_batching"):
            for p in s.get(variant, []):
                st = p.get("triton_stats")
                if not st:
                    continue
                ens = st[WORKLOADS[workload].name]
                models = "; ".join(
                    f"{m.name}: {st[m.name]['executions']}, {_f(st[m.name]['avg_batch'], 2)}, "
                    f"{_f(st[m.name]['queue_ms'], 2)}, {_f(st[m.name]['compute_ms_per_execution'], 2)}"
                    for m in step_models(workload)
                    if m.name in st
                )
                rows.append(
                    [workload, variant, p["users"], p["requests"], ens["requests"], _f(ens["request_ms"], 2), models]
                )
    header = ["workload", "variant", "users", "Locust requests", "Triton requests", "server ms/request"]
    header += ["model: executions, avg batch, queue ms/request, compute ms/execution"]
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
    rows = [[name, f">= {t['target']}", _f(t["measured"], 2), met[t["met"]]] for name, t in checked.items()]
    return md_table(["target", "wanted", "measured", "met"], rows)


def markdown(results: Mapping[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    parts = [
        "# hybridrec throughput benchmark",
        "",
        f"Measured {results['finished']} on {m['cpu']} ({m['cores']} cores, load average {m['load_before']} before, "
        f"{m['load_after']} after); {s['duration_s']:.0f} s per point, users {s['users']}, N={s['candidates']} "
        f"candidates for `rank`, k={s['k']} for `recommend`. Command: `{results['command']}`.",
        "",
        "Throughput at the p99 budget (highest measured req/s with p99 <= budget and no failures):",
        "",
        main_table(results["workloads"]),
        "",
        targets_table(results["targets"]),
        "",
        "![latency vs throughput](latency_throughput.png)",
        "",
        "## Every point",
        "",
        sweep_table(results["workloads"]),
        "",
        "## Triton statistics per point (statistics API deltas)",
        "",
        stats_table(results["workloads"]),
        "",
        "## In-process limit per batch size (onnxruntime, model compute only)",
        "",
        limit_table(results["workloads"]),
        "",
        f"Naive peer vs Triton answers: {json.dumps(results.get('answers'))}",
        "",
    ]
    return "\n".join(parts)


def plot(results: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = results["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.8), squeeze=False)
    styles = {"triton": ("tab:blue", "o"), "naive_peer": ("tab:red", "^"), "triton_no_batching": ("tab:orange", "s")}
    for ax, (workload, s) in zip(axes[0], workloads.items(), strict=True):
        for variant, (color, marker) in styles.items():
            pts = [p for p in s.get(variant, []) if p["requests"] > 0 and math.isfinite(p["p99_ms"])]
            if not pts:
                continue
            ax.plot(
                [p["rps"] for p in pts], [p["p99_ms"] for p in pts], marker=marker, color=color, label=LABELS[variant]
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
                label=f"{LABELS['limit']} at Triton's batches",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
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
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hybridrec-bench-") as tmp:
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
    what.add_argument("--skip", default="", help="parts to leave out, comma-separated: peer,no-batching")
    load = p.add_argument_group("load (Locust, closed loop)")
    load.add_argument("--users", type=_csv_ints, default=[1, 2, 4, 8], help="user counts of the sweep")
    load.add_argument("--duration", type=float, default=15.0, help="seconds of load per point")
    for w, budget in DEFAULT_BUDGETS_MS.items():
        load.add_argument(f"--budget-{w}-ms", type=float, default=budget, help=f"p99 budget of `{w}`")
    load.add_argument("--candidates", type=int, default=50, help="movies per `rank` request (N)")
    load.add_argument("--payloads", type=int, default=32, help="distinct real requests per workload")
    load.add_argument("--data", help="MovieLens folder for the payloads (default: resolve_data_dir())")
    lim = p.add_argument_group("in-process limit")
    lim.add_argument("--limit-time", type=float, default=0.3, help="seconds per timing (best of 2 rounds)")
    lim.add_argument("--limit-batches", type=_csv_ints, help="default 1, 2, 4 .. max batch, plus Triton's sizes")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("docs/perf"), help="results.json/.md and the plot")
    out.add_argument("--workdir", type=Path, help="keep the exported repos, Locust reports and logs here")
    return p


def run(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    from hybridrec.loadtests.bench.naive_peer import PeerServer
    from hybridrec.loadtests.payloads import PayloadPool, PoolKey
    from hybridrec.serving import TritonServer

    started = time.monotonic()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    budgets = {w: float(getattr(args, f"budget_{w}_ms")) for w in DEFAULT_BUDGETS_MS}
    info = machine()
    points: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in args.workloads}
    with _workdir(args.workdir) as work, contextlib.ExitStack() as stack:
        repo = args.repo
        if repo is None:
            from hybridrec.export.onnx_export import export_run

            repo = work / "repo"
            log(f"exporting {args.run} into {repo}")
            export_run(args.run, repo)
        repo = repo.resolve()
        # Every server starts now, side by side: start-up is not measured, and each one then waits idle (no CPU)
        # until its phase, and is stopped right after it. The stack stops whatever is left on any error.
        on = TritonServer(repo, log_file=work / "triton-batching.log")
        stack.callback(on.stop)
        on.start()
        off = peer = None
        if "no-batching" not in skip:
            off = TritonServer(
                unbatched_copy(repo, work / "repo-no-batching"), log_file=work / "triton-no-batching.log"
            )
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

        log("(b) Triton with dynamic batching")
        on.wait_ready()
        info["tritonserver"] = _server_version(on.http_url)
        answers["triton"] = triton_answers(on.grpc_url, pool)
        for w in args.workloads:
            points[w]["triton"] = sweep(Target("triton", on.grpc_url, repo, on.http_url), w, args, work)
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

        if off is not None:
            log("(d) Triton without dynamic batching")
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
        "settings": {
            "duration_s": args.duration,
            "users": args.users,
            "candidates": args.candidates,
            "k": spec.DEFAULT_K,
            "payloads": args.payloads,
            "budgets_ms": budgets,
            "protocol": "grpc (Triton), HTTP/JSON (naive peer)",
            "load_generator": "Locust, closed loop, no think time, one process on the same machine",
        },
        "workloads": summary,
        "targets": targets(summary),
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
    m = results["machine"]
    printer(f"{m['cpu']}, {m['cores']} cores, load average {m['load_before']} before, {m['load_after']} after")
    printer(main_table(results["workloads"]))
    printer("")
    printer(targets_table(results["targets"]))
    printer("")
    printer(sweep_table(results["workloads"]))
    printer(f"\nwritten: {', '.join(str(p) for p in paths.values())} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
