"""A tiny run of the whole throughput benchmark (``hybridrec.loadtests.bench.run``): the in-process limit, Triton with
and without dynamic batching, and the naive peer, for both workloads. Only that numbers come out is asserted: the
benchmark measures, it does not judge (docs/performance.md holds the numbers of a real run)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import psutil
import pytest

# Never import locust here: importing it gevent-patches this whole pytest process (threads become greenlets,
# grpc.aio hangs). The runs below start locust in subprocesses.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from hybridrec.loadtests.bench.run import VARIANTS, main

pytestmark = pytest.mark.integration


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_smoke_every_part(tiny_run: Path, exported_repo: Path, data_dir: Path, tmp_path: Path) -> None:
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    printed: list[str] = []
    out = tmp_path / "perf"
    code = main(
        [
            f"--run={tiny_run}",
            f"--repo={exported_repo}",
            f"--data={data_dir}",
            f"--out={out}",
            "--users=1",
            "--duration=1",
            "--candidates=4",
            "--payloads=4",
            "--limit-time=0.02",
            "--limit-batches=1,2",
        ],
        printer=printed.append,
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "latency_throughput.png").stat().st_size > 0
    assert "| recommend |" in (out / "results.md").read_text()
    assert "| rank |" in "\n".join(printed)

    for workload in ("recommend", "rank"):
        w = results["workloads"][workload]
        assert _positive(w["limit"]["peak_rps"]) and _positive(w["limit"]["rps_at_triton_batches"])
        for variant in VARIANTS:
            (point,) = w[variant]
            assert point["requests"] > 0 and _positive(point["rps"]) and _positive(point["p99_ms"]), (variant, point)
        for variant in ("triton", "triton_no_batching"):
            stats = w[variant][0]["triton_stats"]
            assert stats[workload]["requests"] > 0
            assert all(s["executions"] > 0 for name, s in stats.items() if name != workload)
        assert set(w["ratios"]) >= {"triton_over_limit", "triton_over_peer", "batching_on_over_off"}
    assert results["answers"]["requests"] > 0

    # Every server and load generator the benchmark started is gone.
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
    assert not [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], leftovers
