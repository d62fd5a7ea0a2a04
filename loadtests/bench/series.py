"""The benchmark's series (the variants it measures), in report order, and their labels in tables and plots."""

from __future__ import annotations

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


def label(series: str, config_set: str = "default") -> str:
    return LABELS[series].format(set=config_set)
