"""The user's path: `hybridrec serve` in one process, `hybridrec query` / `catalog add` in another, SIGTERM stops."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridrec.cli import main
from hybridrec.serving import free_port


def test_serve_query_catalog_add_and_stop(
    exported_repo: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(exported_repo, repo)
    http, grpc, metrics = free_port(), free_port(), free_port()
    while len({http, grpc, metrics}) < 3:
        grpc, metrics = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "hybridrec.cli",
        "serve",
        "--repo",
        str(repo),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        assert proc.stdout is not None
        for line in proc.stdout:
            if "tritonserver ready" in line:
                break
            assert time.time() < deadline, "server did not get ready"
        url = f"127.0.0.1:{grpc}"
        assert main(["query", "--url", url, "--repo", str(repo), "--data", str(data_dir), "--user", "2"]) == 0
        assert (
            main(
                [
                    "query",
                    "--url",
                    f"127.0.0.1:{http}",
                    "--protocol",
                    "http",
                    "--repo",
                    str(repo),
                    "--data",
                    str(data_dir),
                    "--history",
                    "1,2,3",
                    "--recommend",
                    "--top",
                    "5",
                ]
            )
            == 0
        )
        poster = next((data_dir / "posters").glob("*.jpg"))
        assert (
            main(
                [
                    "catalog",
                    "add",
                    "--repo",
                    str(repo),
                    "--movie-id",
                    "123456789",
                    "--title",
                    "New (2026)",
                    "--genres",
                    "Drama",
                    "--poster",
                    str(poster),
                    "--url",
                    url,
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "Top 10 of 200 unseen candidates for user 2" in out
        assert "Top 5 of the whole catalog for the history" in out
        assert "the movie is served now" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
