"""The plot of a benchmark run: p99 latency against throughput per workload (log axes, plain tick labels)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridrec.loadtests.bench.series import label


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
