"""Latency versus throughput: one bounded locust run per user count, one point per run.

    python -m hybridrec.loadtests.sweep --url 127.0.0.1:8001 --users 1,2,4,8 --run-time 10 --out DIR \\
        [--user-classes MixedUser] [--protocol grpc] [--workers 0]
    hybridrec loadtest -- --users 1,2,4,8 --url 127.0.0.1:8001 --run-time 10 --out DIR

Each user count runs as :func:`hybridrec.loadtests.runner.run_locust` (closed loop, so the user count is the
concurrency) with its reports in ``DIR/users-<n>/``. ``DIR/sweep.json`` holds every point's summary (rewritten after
each run, so a failed sweep keeps the points it measured) and ``DIR/latency_throughput.png`` plots p50/p95/p99
against the measured req/s, each point annotated with its user count: where the curve turns upwards, more
concurrency buys latency, not throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridrec.loadtests.runner import (
    DEFAULT_REPORTS,
    LoadSummary,
    LoadTestError,
    add_run_arguments,
    run_locust,
    run_options,
    user_counts,
)

SWEEP_JSON = "sweep.json"
PLOT_PNG = "latency_throughput.png"
DEFAULT_USERS = (1, 2, 4, 8)
PERCENTILES = (("p50_ms", "p50", "o-"), ("p95_ms", "p95", "s--"), ("p99_ms", "p99", "^:"))


def sweep(
    host: str,
    users: Sequence[int] = DEFAULT_USERS,
    run_time_s: float = 10,
    *,
    out_dir: Path,
    **options: Any,
) -> list[LoadSummary]:
    """One run per user count (ascending), all users spawned within a second; writes ``sweep.json`` and the plot.

    ``options`` go to every :func:`~hybridrec.loadtests.runner.run_locust` (``protocol``, ``user_classes``,
    ``workers``, ``candidates``, ``repo``, ``data``, ``extra_args``)."""
    counts = sorted(set(users))
    if not counts or counts[0] < 1:
        raise ValueError(f"user counts must be positive, got {list(users)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries: list[LoadSummary] = []
    for n in counts:
        summaries.append(
            run_locust(host, users=n, spawn_rate=n, run_time_s=run_time_s, out_dir=out / f"users-{n}", **options)
        )
        write_sweep(out / SWEEP_JSON, host, summaries)
    first = summaries[0]
    plot_sweep(summaries, out / PLOT_PNG, title=f"{first.label} over {first.protocol} ({host})")
    return summaries


def write_sweep(path: Path, host: str, summaries: Sequence[LoadSummary]) -> None:
    first = summaries[0]
    doc: dict[str, Any] = {
        "host": host,
        "protocol": first.protocol,
        "user_classes": list(first.user_classes),
        "workers": first.workers,
        "run_time_s": first.run_time_s,
        "points": [s.to_json() for s in summaries],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load_sweep(path: Path) -> list[LoadSummary]:
    return [LoadSummary.from_json(p) for p in json.loads(Path(path).read_text())["points"]]


def plot_sweep(summaries: Sequence[LoadSummary], path: Path, *, title: str = "") -> Path:
    """p50/p95/p99 (ms, log scale: a mixed workload's p50 and p99 lie an order of magnitude apart) against
    throughput (req/s), one marker per run, annotated with its user count; drawn with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    points = sorted(summaries, key=lambda s: s.users)
    rps = [s.rps for s in points]
    fig = Figure(figsize=(7.5, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    ax = fig.add_subplot()
    for attr, name, style in PERCENTILES:
        ax.plot(rps, [getattr(s, attr) for s in points], style, label=name, markersize=6)
    for s in points:  # the user count above the p99 marker, the highest of the three
        ax.annotate(
            f"{s.users} user{'s' if s.users > 1 else ''}",
            (s.rps, s.p99_ms),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.9},
        )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # 20, 50, 100 ms rather than 10^2
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)
    ax.margins(x=0.12, y=0.15)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="latency", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a point
    failures = sum(s.failures for s in points)
    suffix = f", {failures} failed requests" if failures else ""
    ax.set_title(
        f"{title or 'latency vs throughput'}\n"
        f"closed loop (users = concurrency), {points[0].run_time_s:.0f} s per point{suffix}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def run_sweep_command(args: argparse.Namespace, counts: Sequence[int], out: Path) -> int:
    """The command-line sweep (``python -m hybridrec.loadtests.sweep`` and ``hybridrec loadtest -- --sweep``)."""
    try:
        summaries = sweep(args.url, counts, args.run_time, out_dir=out, **run_options(args))
    except LoadTestError as e:
        print(f"sweep failed: {e}", file=sys.stderr)
        return 2
    for s in summaries:
        first, *rest = s.lines()
        print(f"{s.users:>3} users  {first}" + "".join(f"\n          {line.strip()}" for line in rest))
    print(f"sweep in {out / SWEEP_JSON}, plot in {out / PLOT_PNG}", file=sys.stderr)
    return 1 if any(s.failures for s in summaries) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hybridrec.loadtests.sweep", description=__doc__.splitlines()[0])
    add_run_arguments(p)
    p.add_argument(
        "--users", type=user_counts, default=list(DEFAULT_USERS), metavar="1,2,4,8", help="user counts, one run each"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or DEFAULT_REPORTS / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    return run_sweep_command(args, args.users, out)


if __name__ == "__main__":
    raise SystemExit(main())
