"""Bounded headless Locust runs of the `rank` ensemble against the live tiny-model server, over gRPC and HTTP."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

pytest.importorskip("locust")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tritonclient.http")

from hybridrec.loadtests.runner import LoadSummary, LoadTestError, main, run_locust
from hybridrec.serving import TritonServer, free_port

pytestmark = pytest.mark.integration


def _check_clean(summary: LoadSummary, out: Path, protocol: str) -> None:
    assert summary.protocol == protocol
    assert summary.requests > 0, summary
    assert summary.failures == 0, f"{summary}\n{(out / 'locust.log').read_text()[-3000:]}"
    assert summary.rps > 0
    assert all(math.isfinite(v) and v > 0 for v in (summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.avg_ms))
    assert summary.p50_ms <= summary.p95_ms <= summary.p99_ms
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary.to_json()
    assert (out / "locust.html").is_file()


def test_rank_load_over_grpc(live_server: TritonServer, exported_repo: Path, data_dir: Path, tmp_path: Path) -> None:
    summary = run_locust(
        live_server.grpc_url,
        users=2,
        spawn_rate=2,
        run_time_s=10,
        protocol="grpc",
        repo=exported_repo,
        data=data_dir,
        out_dir=tmp_path,
    )
    _check_clean(summary, tmp_path, "grpc")
    assert summary.users == 2 and summary.run_time_s == 10


def test_rank_load_over_http_via_main(
    live_server: TritonServer, exported_repo: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The `hybridrec loadtest -- ...` path: a leading "--" is dropped; an http:// prefix on --host is stripped.
    code = main(
        [
            "--",
            "--host",
            f"http://{live_server.http_url}",
            "--protocol",
            "http",
            "--users",
            "2",
            "--spawn-rate",
            "2",
            "--run-time",
            "5",
            "--repo",
            str(exported_repo),
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.startswith("rank over http: ")
    _check_clean(LoadSummary(**json.loads((tmp_path / "summary.json").read_text())), tmp_path, "http")


def test_unreachable_server_ends_the_run_by_itself(exported_repo: Path, data_dir: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    try:
        summary = run_locust(
            f"127.0.0.1:{port}",
            users=2,
            spawn_rate=2,
            run_time_s=30,
            protocol="grpc",
            repo=exported_repo,
            data=data_dir,
            out_dir=tmp_path,
        )
    except LoadTestError:
        summary = None
    elapsed = time.monotonic() - t0
    # It must stop on the connection errors, long before its 30 s run time (and far before the outer kill at 120 s).
    assert elapsed < 25, f"took {elapsed:.0f} s"
    if summary is not None:
        assert summary.failures > 0 and summary.failures == summary.requests, summary
