"""Run the rank load test headless, bounded from outside, and summarise locust's CSV stats.

``run_locust(...)`` starts ``locust -f loadtests/locustfile.py --headless ...`` as a subprocess in its own process
group, kills the group if it outlives ``run_time + 90 s`` (a locust run whose server died was seen to hang past its
``-t``), parses the "Aggregated" row of ``<out>/locust_stats.csv`` into a :class:`LoadSummary` and writes
``<out>/summary.json``. ``main`` is the ``hybridrec loadtest`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_REPORTS = Path("loadtests") / "reports"
OUTER_MARGIN_S = 90.0  # start-up (payload preparation), --stop-timeout and report writing fit well inside this


class LoadTestError(RuntimeError):
    """Locust failed, hung, or wrote no stats; the message carries the tail of its output."""


@dataclass(frozen=True)
class LoadSummary:
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    protocol: str
    users: int
    run_time_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self, model: str = "rank") -> str:
        return (
            f"{model} over {self.protocol}: {self.requests} requests, {self.failures} failures, {self.rps:.1f} req/s, "
            f"p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
        )


def locust_executable() -> Path:
    """The ``locust`` script beside this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "locust"
    if here.is_file():
        return here
    found = shutil.which("locust")
    if found is None:
        raise LoadTestError("locust not found: install it with `pip install 'hybridrec[loadtest]'`")
    return Path(found)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no locust output)"
    return "\n".join(text.splitlines()[-lines:]) or "(locust printed nothing)"


def _number(row: dict[str, str], column: str) -> float:
    value = (row.get(column) or "").strip()
    try:
        return float(value)
    except ValueError:
        return math.nan  # locust writes "N/A" for percentiles of an entry without requests


def parse_stats(stats_csv: Path, *, protocol: str, users: int, run_time_s: float) -> LoadSummary:
    """The "Aggregated" row of a locust ``*_stats.csv`` file as a LoadSummary; LoadTestError if there is none."""
    if not stats_csv.is_file():
        raise LoadTestError(f"locust wrote no stats file {stats_csv}")
    with open(stats_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("Name") or "").strip() == "Aggregated"]
    if not rows:
        raise LoadTestError(f"{stats_csv} has no 'Aggregated' row")
    row = rows[-1]
    return LoadSummary(
        requests=int(_number(row, "Request Count")),
        failures=int(_number(row, "Failure Count")),
        rps=_number(row, "Requests/s"),
        p50_ms=_number(row, "50%"),
        p95_ms=_number(row, "95%"),
        p99_ms=_number(row, "99%"),
        avg_ms=_number(row, "Average Response Time"),
        protocol=protocol,
        users=users,
        run_time_s=run_time_s,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (locust writes its reports on SIGTERM), then SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers in the group
        os.killpg(proc.pid, signal.SIGKILL)


def run_locust(
    host: str,
    *,
    users: int = 4,
    spawn_rate: float = 4,
    run_time_s: float = 10,
    protocol: str = "grpc",
    candidates: int = 50,
    repo: str | Path | None = None,
    data: str | Path | None = None,
    out_dir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> LoadSummary:
    """One headless locust run of RankUser against ``host`` (``host:port``), bounded by ``run_time_s + 90`` s."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    if users < 1 or spawn_rate <= 0 or run_time_s <= 0:
        raise ValueError("users, spawn_rate and run_time_s must be positive")
    out = Path(out_dir) if out_dir is not None else DEFAULT_REPORTS / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "locust"
    stats_csv = out / "locust_stats.csv"
    stats_csv.unlink(missing_ok=True)  # never summarise a previous run's file
    seconds = max(1, math.ceil(run_time_s))
    cmd = [
        str(locust_executable()),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "0",
        "--protocol",
        protocol,
        "--candidates",
        str(candidates),
    ]
    if repo is not None:
        cmd += ["--repo", str(repo)]
    if data is not None:
        cmd += ["--data", str(data)]
    cmd += list(extra_args)
    log_path = out / "locust.log"
    limit = seconds + OUTER_MARGIN_S
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise LoadTestError(
                f"locust still running after {limit:.0f} s (run time {seconds} s): killed.\n"
                f"command: {' '.join(cmd)}\n--- last lines of {log_path} ---\n{_tail(log_path)}"
            ) from None
        except BaseException:  # Ctrl-C in the caller: leave no locust behind
            _kill_group(proc)
            raise
    if code != 0:
        raise LoadTestError(
            f"locust exited with code {code}.\ncommand: {' '.join(cmd)}\n--- last lines of {log_path} ---\n"
            f"{_tail(log_path)}"
        )
    try:
        summary = parse_stats(stats_csv, protocol=protocol, users=users, run_time_s=float(seconds))
    except LoadTestError as e:
        raise LoadTestError(f"{e}\n--- last lines of {log_path} ---\n{_tail(log_path)}") from None
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybridrec loadtest", description="bounded headless locust run of `rank`")
    p.add_argument("--host", required=True, help="Triton address host:port (gRPC 8001 or HTTP 8000), no scheme")
    p.add_argument("--users", type=int, default=4, help="concurrent users (closed loop, no think time)")
    p.add_argument("--spawn-rate", type=float, default=4, help="users started per second")
    p.add_argument("--run-time", type=float, default=10, help="seconds of load")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--candidates", type=int, default=50, help="movies ranked per request (N)")
    p.add_argument("--repo", help="model repository holding artifacts.json (default $HYBRIDREC_REPO, model_repository)")
    p.add_argument("--data", help="MovieLens folder (default: resolve_data_dir())")
    p.add_argument("--out", type=Path, help="report folder (default loadtests/reports/<timestamp>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--"]:
        args_in = args_in[1:]
    args = build_parser().parse_args(args_in)
    out = args.out or DEFAULT_REPORTS / time.strftime("%Y%m%d-%H%M%S")
    try:
        summary = run_locust(
            args.host,
            users=args.users,
            spawn_rate=args.spawn_rate,
            run_time_s=args.run_time,
            protocol=args.protocol,
            candidates=args.candidates,
            repo=args.repo,
            data=args.data,
            out_dir=out,
        )
    except LoadTestError as e:
        print(f"load test failed: {e}", file=sys.stderr)
        return 2
    print(summary.line())
    print(f"reports in {out}", file=sys.stderr)
    return 1 if summary.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
