"""Bounded headless Locust runs against the live tiny-model server (the default config set where the onnxruntime
backend exists): `rank` by movieId over gRPC and HTTP, `rank_content` (posters), the mixed workload (recommend + rank
+ encode_items), Locust's distributed mode, a latency-vs-throughput sweep, and perf_analyzer as the second load
generator."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

# Never import locust here: importing it gevent-patches this whole pytest process (threads become greenlets,
# grpc.aio hangs). The runs below start locust in subprocesses.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tritonclient.http")

from hybridrec import spec
from hybridrec.loadtests.payloads import PayloadPool, PoolKey
from hybridrec.loadtests.runner import LoadSummary, LoadTestError, main, run_locust
from hybridrec.loadtests.sweep import PLOT_PNG, SWEEP_JSON, load_sweep
from hybridrec.serving import TritonServer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def grpc_run(exported_repo: Path, data_dir: Path, tmp_path: Path) -> Callable[..., LoadSummary]:
    """run_locust over gRPC with the test repo, data and report folder bound; users spawn within a second."""

    def run(host: str, users: int = 2, **options: Any) -> LoadSummary:
        return run_locust(
            host,
            users=users,
            spawn_rate=users,
            protocol="grpc",
            repo=exported_repo,
            data=data_dir,
            out_dir=tmp_path,
            **options,
        )

    return run


def _check_clean(summary: LoadSummary, out: Path, protocol: str) -> None:
    assert summary.protocol == protocol
    assert summary.requests > 0, summary
    assert summary.failures == 0, f"{summary}\n{(out / 'locust.log').read_text()[-3000:]}"
    assert summary.rps > 0
    assert all(math.isfinite(v) and v > 0 for v in (summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.avg_ms))
    assert summary.p50_ms <= summary.p95_ms <= summary.p99_ms
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary.to_json()
    assert LoadSummary.from_json(saved) == summary
    assert (out / "locust.html").is_file()
    assert sum(row.requests for row in summary.endpoints.values()) == summary.requests


def _alive(pids: list[int]) -> list[int]:
    """The pids that are still a live locust process (a reused pid running something else does not count)."""
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "locust" in " ".join(proc.cmdline()):
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_rank_load_over_grpc(live_server: TritonServer, grpc_run: Callable[..., LoadSummary], tmp_path: Path) -> None:
    summary = grpc_run(live_server.grpc_url, run_time_s=10)
    _check_clean(summary, tmp_path, "grpc")
    assert summary.users == 2 and summary.run_time_s == 10


def test_rank_load_over_http_via_main(
    live_server: TritonServer, exported_repo: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The `hybridrec loadtest -- ...` path: a leading "--" is dropped; an http:// prefix on --url is stripped.
    code = main(
        [
            "--",
            "--url",
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
    _check_clean(LoadSummary.from_json(json.loads((tmp_path / "summary.json").read_text())), tmp_path, "http")


def test_mixed_workload_over_grpc(
    live_server: TritonServer, grpc_run: Callable[..., LoadSummary], tmp_path: Path
) -> None:
    summary = grpc_run(live_server.grpc_url, run_time_s=10, user_classes=["MixedUser"])
    _check_clean(summary, tmp_path, "grpc")
    assert summary.user_classes == ("MixedUser",) and summary.label == "mixed"
    # The default mix: recommend, rank (by id) and encode_items; rank_content is not in it.
    assert set(summary.endpoints) == {"recommend", "rank", "encode_items"}, summary.endpoints
    for name, row in summary.endpoints.items():
        assert row.requests > 0 and row.failures == 0, (name, row)
        assert math.isfinite(row.p99_ms) and row.p50_ms <= row.p99_ms, (name, row)
    # The 10 : 3 : 1 mix: recommend is most of the requests (a check that stays far from flaky at ~100 requests).
    counts = {name: row.requests for name, row in summary.endpoints.items()}
    assert counts["recommend"] > counts["rank"] + counts["encode_items"], counts


def test_rank_content_load_over_grpc(
    live_server: TritonServer, grpc_run: Callable[..., LoadSummary], tmp_path: Path
) -> None:
    # The cold-start path (posters + metadata through the CNN): its own user class, outside the default mix.
    summary = grpc_run(live_server.grpc_url, users=1, run_time_s=5, candidates=8, user_classes=["RankContentUser"])
    _check_clean(summary, tmp_path, "grpc")
    assert summary.label == "rank_content" and set(summary.endpoints) == {"rank_content"}


def test_rank_payloads_go_by_movie_id_padded_like_the_client(exported_repo: Path, data_dir: Path) -> None:
    pool = PayloadPool(PoolKey(str(exported_repo), str(data_dir), candidates=20, payloads=3))
    for p in pool.rank:
        assert p.model == "rank" and set(p.arrays) == {"history", "movie_id"}
        assert p.arrays["history"].shape == (1, spec.HISTORY_LENGTH)
        ids = p.arrays["movie_id"][0]
        assert ids.shape == (spec.rank_slots(20),) == (32,) and p.expect == (1, 32) and p.scored == 20
        assert tuple(ids[:20]) == p.movie_ids and np.all(ids[20:] == spec.NO_MOVIE)
        assert len(set(p.movie_ids)) == 20
    (content,) = pool.rank_content[:1]
    assert content.model == "rank_content" and content.arrays["poster"].shape[:2] == (1, 20)


def test_distributed_run_leaves_no_process(
    live_server: TritonServer, grpc_run: Callable[..., LoadSummary], tmp_path: Path
) -> None:
    pids: list[int] = []
    summary = grpc_run(live_server.grpc_url, users=4, run_time_s=8, user_classes=["MixedUser"], workers=2, pids=pids)
    assert len(pids) == 3  # one master, two workers
    assert not _alive(pids), f"locust processes left running: {_alive(pids)}"
    assert summary.workers == 2
    assert summary.requests > 0 and summary.failures == 0, "\n".join(summary.lines())
    assert all((tmp_path / f"locust-worker-{i}.log").is_file() for i in range(2))


def test_sweep_via_main_writes_json_and_plot(
    live_server: TritonServer, exported_repo: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `hybridrec loadtest -- --users 2,1 ...`: one run per user count (sorted), then sweep.json and the plot.
    # RecommendUser: the cheapest payloads to prepare, so the two short runs spend their time under load.
    args = [
        "--",
        "--users",
        "2,1",
        "--url",
        live_server.grpc_url,
        "--user-classes",
        "RecommendUser",
        "--run-time",
        "4",
    ]
    code = main([*args, "--repo", str(exported_repo), "--data", str(data_dir), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summaries = load_sweep(tmp_path / SWEEP_JSON)
    assert [s.users for s in summaries] == [1, 2], printed
    assert all(s.requests > 0 and s.failures == 0 and s.user_classes == ("RecommendUser",) for s in summaries), printed
    saved = json.loads((tmp_path / SWEEP_JSON).read_text())
    assert saved["host"] == live_server.grpc_url and saved["protocol"] == "grpc" and len(saved["points"]) == 2
    png = (tmp_path / PLOT_PNG).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert all((tmp_path / f"users-{n}" / "summary.json").is_file() for n in (1, 2))


def test_unreachable_server_ends_the_run_by_itself(grpc_run: Callable[..., LoadSummary]) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    summary: LoadSummary | None
    try:
        summary = grpc_run(f"127.0.0.1:{port}", run_time_s=30)
    except LoadTestError:
        summary = None
    elapsed = time.monotonic() - t0
    # It must stop on the connection errors, long before its 30 s run time (and far before the outer kill at 120 s).
    assert elapsed < 25, f"took {elapsed:.0f} s"
    if summary is not None:
        assert summary.failures > 0 and summary.failures == summary.requests, summary


def test_perf_analyzer_against_the_live_server(
    live_server: TritonServer, exported_repo: Path, data_dir: Path, tmp_path: Path
) -> None:
    """perf_analyzer (the real binary, installed into its own venv on first use) for a few seconds per workload, fed
    with real requests. A package that cannot be had fails the test in CI and skips it elsewhere."""
    from hybridrec.loadtests.perf_analyzer import PerfAnalyzerUnavailableError, find_perf_analyzer, measure

    try:
        pa = find_perf_analyzer()
    except PerfAnalyzerUnavailableError as e:
        if e.package is not None and os.environ.get("CI", "").lower() != "true":
            pytest.skip(f"perf_analyzer cannot be installed here ({e.package}): {e}")
        pytest.fail(f"perf_analyzer unavailable: {e}")
    pool = PayloadPool(PoolKey(str(exported_repo), str(data_dir), candidates=8, payloads=4))
    pids: list[int] = []
    t0 = time.monotonic()
    for workload in ("recommend", "rank"):
        (point,) = measure(
            live_server.grpc_url, pool.get(workload), [2], tmp_path / workload, duration_s=2, pa=pa, pids=pids
        )
        assert point.concurrency == 2 and point.rps > 0 and point.requests and point.requests > 0, point
        assert 0 < point.p50_ms <= point.p99_ms, point
    assert time.monotonic() - t0 < 60
    assert not _alive_any(pids), "perf_analyzer processes left running"


def _alive_any(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive
