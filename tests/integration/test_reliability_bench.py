"""A short run of the reliability benchmark (``hybridrec.loadtests.reliability``) on the tiny model: 15 s of paced
soak, a kill -9 of tritonserver under load with a restart on the same ports, and three catalog adds under load.
Asserted: the summary's fields, no failed request while the catalog changes, the kill -9 checks, and that nothing the
command started outlives it. The soak's numbers are only reported (docs/reliability.md holds a real run's)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Never import locust here (it gevent-patches the pytest process): the command runs in a subprocess.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)

pytestmark = pytest.mark.integration

TIMEOUT_S = 240  # the run takes about a minute; this only bounds a hang


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and int(cmdline.parent.name) != os.getpid():
            found.append(f"{cmdline.parent.name}: {cmd[:200]}")
    return found


def _evidence(out: Path, stderr: str) -> str:
    """The bench's log (with a failed phase's traceback), the end of each server's log and the kill's Locust log."""
    text = f"--- the bench's stderr (end) ---\n{stderr[-6000:]}"
    for path in [*sorted(out.glob("tritonserver-*.log")), out / "kill" / "locust.log"]:
        if not path.exists():
            continue
        tail = path.read_text(errors="replace").splitlines()[-25:]
        text += f"\n--- {path.relative_to(out)} (end) ---\n" + "\n".join(tail)
    return text


def test_reliability_bench_smoke(tiny_run: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "hybridrec.loadtests.reliability",
        f"--run={tiny_run}",
        f"--out={out}",
        f"--data={data_dir}",
        f"--workdir={tmp_path / 'work'}",
        "--soak-minutes=0.25",
        "--rate=20",  # light: a smoke test, on a machine that runs other tests beside it
        "--kill-seconds=10",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    evidence = _evidence(out, proc.stderr)
    for phase in ("soak", "kill", "catalog"):  # a phase that raised is recorded as {"error": ...}: show why
        assert "error" not in summary.get(phase, {}), f"{phase}: {summary[phase]}\n{evidence}"
    assert "## Catalog adds under load" in (out / "report.md").read_text()

    for key in ("command", "machine", "settings", "config_set", "soak", "kill", "catalog", "targets", "wall_s"):
        assert key in summary, key
    soak = summary["soak"]
    for key in ("requests", "failures", "p99_first_ms", "p99_last_ms", "minutes", "rss", "achieved_rps"):
        assert key in soak, key
    assert soak["requests"] > 0 and soak["minutes"][0]["requests"] > 0
    assert soak["rss"]["samples"] >= 2 and soak["rss"]["baseline_mb"] > 0 and "growth_pct" in soak["rss"]
    assert (out / "soak" / "locust_stats_history.csv").stat().st_size > 0

    kill = summary["kill"]
    assert kill["locust_ended_by_itself"], f"{kill}\n{evidence}"
    assert kill["client_raised_unavailable"], f"{kill}\n{evidence}"
    assert kill["same_ports"] and kill["client_recovered"], f"{kill}\n{evidence}"
    for key in ("locust_end_after_kill_s", "client_error_after_s", "restart_ready_s", "client_recovery_s"):
        assert isinstance(kill[key], int | float), key

    catalog = summary["catalog"]
    assert len(catalog["adds"]) == 3
    assert catalog["requests"] > 0
    assert catalog["failures"] == 0, catalog
    assert catalog["new_movies_served"]

    # every server and load generator it started is gone (their command lines name the tmp folder)
    assert not _processes_mentioning(str(tmp_path)), _processes_mentioning(str(tmp_path))
