"""A tiny run of the whole throughput benchmark (``hybridrec.loadtests.bench.run``): the in-process limit, Triton's
default set (onnxruntime backend, where it is built) under Locust and perf_analyzer, the `cpu` set, Triton without
dynamic batching, and the naive peer, for `recommend` and `rank` by movieId. Only that numbers come out is asserted:
the benchmark measures, it does not judge (docs/performance.md holds the numbers of a real run)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import psutil
import pytest

# Never import locust here: importing it gevent-patches this whole pytest process (threads become greenlets,
# grpc.aio hangs). The runs below start locust in subprocesses.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from hybridrec.loadtests.bench.run import DEFAULT_OUT, TRITON_VARIANTS, VARIANTS, build_parser, main
from hybridrec.loadtests.perf_analyzer import PerfAnalyzerUnavailableError, find_perf_analyzer
from hybridrec.serving import choose_config_set, find_tritonserver

pytestmark = pytest.mark.integration


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_writes_under_runs_by_default() -> None:
    # The committed docs/perf is written only when asked for.
    assert build_parser().parse_args([]).out == DEFAULT_OUT and DEFAULT_OUT.parts[0] == "runs"


def test_bench_smoke_every_part(tiny_run: Path, exported_repo: Path, data_dir: Path, tmp_path: Path) -> None:
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    skip = []
    try:
        find_perf_analyzer()
    except PerfAnalyzerUnavailableError as e:
        if e.package is None or os.environ.get("CI", "").lower() == "true":
            raise
        skip.append("perf-analyzer")  # a package cannot be had here (test_loadtest.py reports it too)
    config_set, _ = choose_config_set(find_tritonserver())
    default_served = config_set is None
    printed: list[str] = []
    out = tmp_path / "perf"
    code = main(
        [
            f"--run={tiny_run}",
            f"--repo={exported_repo}",
            f"--data={data_dir}",
            f"--out={out}",
            "--users=1",
            "--run-time=1",
            "--candidates=4",
            "--payloads=4",
            "--limit-time=0.02",
            "--limit-batches=1,2",
            *([f"--skip={','.join(skip)}"] if skip else []),
        ],
        printer=printed.append,
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "latency_throughput.png").stat().st_size > 0
    assert "| recommend |" in (out / "results.md").read_text()
    assert "| rank |" in "\n".join(printed)
    assert results["config_sets"]["triton"] == ("default" if default_served else "cpu")

    variants = [v for v in VARIANTS if default_served or v != "triton_cpu"]
    if not skip:
        variants.append("perf_analyzer")
    for workload in ("recommend", "rank"):
        w = results["workloads"][workload]
        assert _positive(w["limit"]["peak_rps"]) and _positive(w["limit"]["rps_at_triton_batches"])
        for variant in variants:
            (point,) = w[variant]
            assert point["requests"] > 0 and _positive(point["rps"]) and _positive(point["p99_ms"]), (variant, point)
        for variant in [v for v in (*TRITON_VARIANTS, "perf_analyzer") if v in variants]:
            stats = w[variant][0]["triton_stats"]
            assert stats[workload]["requests"] > 0
            assert all(s["executions"] > 0 for name, s in stats.items() if name != workload)
            overhead = w[variant][0]["overhead"]
            # the ensemble's request time covers its composing models' compute
            assert _positive(overhead["request_ms"]) and _positive(overhead["compute_ms"]), (variant, overhead)
            assert overhead["request_ms"] >= overhead["compute_ms"], (variant, overhead)
        assert set(w["ratios"]) >= {"triton_over_limit", "triton_over_peer", "batching_on_over_off"}
    assert results["answers"]["requests"] > 0
    # Same model, same catalog embeddings: the naive peer's `rank` by id scores like the `rank` ensemble.
    assert results["answers"]["rank_max_abs_score_diff"] < 1e-4
    assert results["answers"]["recommend_same_movies"]
    assert {"recommend_ensemble_overhead", "rank_ensemble_overhead", "rank_over_recommend_triton"} <= set(
        results["targets"]
    )

    # Every server and load generator the benchmark started is gone.
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
    assert not [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], leftovers
