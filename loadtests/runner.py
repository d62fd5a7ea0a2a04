"""Run the load test headless, bounded from outside, and summarise locust's CSV stats.

``run_locust(...)`` starts ``locust -f loadtests/locustfile.py --headless ... <UserClass ...>`` as a subprocess in
its own process group, kills the group if it outlives ``run_time + 90 s`` (a locust run whose server died was seen to
hang past its ``-t``), parses ``<out>/locust_stats.csv`` into a :class:`LoadSummary` (the "Aggregated" row plus one
row per endpoint) and writes ``<out>/summary.json``.

With ``workers=N`` it runs Locust's distributed mode on this machine instead: one ``--master --expect-workers N``
process (it alone writes the stats) and N ``--worker`` processes, each in its own process group, under the same outer
bound. When the master ends (normally or not) the workers get a few seconds to follow it and are then killed; a
worker that fails before the master ends the whole run. Every process started is gone when ``run_locust`` returns
or raises.

``main`` is the ``hybridrec loadtest`` command; ``--sweep 1,2,4,8`` hands over to :mod:`hybridrec.loadtests.sweep`.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_REPORTS = Path("runs") / "loadtest"  # outputs under runs/, never among committed files
OUTER_MARGIN_S = 90.0  # start-up (payload preparation), --stop-timeout and report writing fit well inside this
WORKER_WAIT_S = 60  # a master gives up when its workers have not all connected by then (--expect-workers-max-wait)
WORKER_SETTLE_S = 5.0  # after the master ends, how long its workers get to quit by themselves before they are killed

# The user classes of locustfile.py and the label of each in a summary line.
USER_CLASSES: dict[str, str] = {
    "MixedUser": "mixed",
    "RecommendUser": "recommend",
    "RankUser": "rank",
    "RankContentUser": "rank_content",
    "EncodeItemsUser": "encode_items",
}
DEFAULT_USER_CLASSES = ("RankUser",)


class LoadTestError(RuntimeError):
    """Locust failed, hung, or wrote no stats; the message carries the tail of its output."""


@dataclass(frozen=True)
class EndpointStats:
    """One row of locust's stats: an endpoint (request name) or the aggregate of all of them."""

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float


@dataclass(frozen=True)
class LoadSummary(EndpointStats):
    """The aggregate of a run (the inherited fields), how it ran, and one :class:`EndpointStats` per request name."""

    protocol: str
    users: int
    run_time_s: float
    user_classes: tuple[str, ...] = DEFAULT_USER_CLASSES
    workers: int = 0
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["user_classes"] = list(self.user_classes)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSummary:
        d = dict(data)
        d["user_classes"] = tuple(d.get("user_classes", DEFAULT_USER_CLASSES))
        d["endpoints"] = {name: EndpointStats(**row) for name, row in d.get("endpoints", {}).items()}
        return cls(**d)

    @property
    def label(self) -> str:
        return "+".join(USER_CLASSES.get(c, c) for c in self.user_classes)

    def line(self, label: str | None = None) -> str:
        return f"{label or self.label} over {self.protocol}: {_stats_text(self)}"

    def lines(self) -> list[str]:
        """The summary line, then one line per endpoint when there are several."""
        out = [self.line()]
        if len(self.endpoints) > 1:
            out += [f"  {name}: {_stats_text(row)}" for name, row in sorted(self.endpoints.items())]
        return out


def _stats_text(s: EndpointStats) -> str:
    return (
        f"{s.requests} requests, {s.failures} failures, {s.rps:.1f} req/s, "
        f"p50 {s.p50_ms:.0f} ms, p95 {s.p95_ms:.0f} ms, p99 {s.p99_ms:.0f} ms"
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


def _row_stats(row: dict[str, str]) -> EndpointStats:
    return EndpointStats(
        requests=int(_number(row, "Request Count")),
        failures=int(_number(row, "Failure Count")),
        rps=_number(row, "Requests/s"),
        p50_ms=_number(row, "50%"),
        p95_ms=_number(row, "95%"),
        p99_ms=_number(row, "99%"),
        avg_ms=_number(row, "Average Response Time"),
    )


def parse_stats(
    stats_csv: Path,
    *,
    protocol: str,
    users: int,
    run_time_s: float,
    user_classes: Sequence[str] = DEFAULT_USER_CLASSES,
    workers: int = 0,
) -> LoadSummary:
    """A locust ``*_stats.csv`` file as a LoadSummary: the "Aggregated" row, and every other row by its request name
    (the locustfile names requests by workload); LoadTestError if there is no aggregate."""
    if not stats_csv.is_file():
        raise LoadTestError(f"locust wrote no stats file {stats_csv}")
    with open(stats_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    aggregated = [r for r in rows if (r.get("Name") or "").strip() == "Aggregated"]
    if not aggregated:
        raise LoadTestError(f"{stats_csv} has no 'Aggregated' row")
    endpoints = {
        (r.get("Name") or "").strip(): _row_stats(r) for r in rows if (r.get("Name") or "").strip() != "Aggregated"
    }
    return LoadSummary(
        **asdict(_row_stats(aggregated[-1])),
        protocol=protocol,
        users=users,
        run_time_s=run_time_s,
        user_classes=tuple(user_classes),
        workers=workers,
        endpoints=endpoints,
    )


# --- processes ----------------------------------------------------------------------------------------------------
def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _wait_all(procs: Sequence[subprocess.Popen[bytes]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.01, deadline - time.monotonic()))


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], *, settle_s: float = 0.0) -> None:
    """Let ``procs`` end by themselves for ``settle_s``, then SIGTERM each one's process group (locust writes its
    reports on SIGTERM), wait, and SIGKILL the groups (stragglers in a group included). Every process is reaped."""
    if settle_s > 0:
        _wait_all(procs, settle_s)
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    _wait_all(running, 10.0)
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
    _wait_all(procs, 5.0)


def _supervise(master: subprocess.Popen[bytes], workers: Sequence[subprocess.Popen[bytes]], limit_s: float) -> int:
    """The master's exit code once it ends; LoadTestError when the run outlives ``limit_s`` or a worker fails first."""
    deadline = time.monotonic() + limit_s
    while True:
        code = master.poll()
        if code is not None:
            return code
        for i, worker in enumerate(workers):
            worker_code = worker.poll()
            if worker_code not in (None, 0):
                raise LoadTestError(f"locust worker {i} exited with code {worker_code} during the run")
        if time.monotonic() > deadline:
            raise LoadTestError(f"locust still running after {limit_s:.0f} s: killed")
        time.sleep(0.1)


def _free_port() -> int:
    from hybridrec.serving import free_port

    return free_port()


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
    user_classes: Sequence[str] = DEFAULT_USER_CLASSES,
    workers: int = 0,
    extra_args: Sequence[str] = (),
    pids: list[int] | None = None,
) -> LoadSummary:
    """One headless locust run of ``user_classes`` (names from locustfile.py) against ``host`` (``host:port``),
    bounded by ``run_time_s + 90`` s. ``workers`` > 0: distributed, one master and that many worker processes.
    ``pids``, when given, receives the pid of every process started (for callers that check the clean-up)."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    if users < 1 or spawn_rate <= 0 or run_time_s <= 0:
        raise ValueError("users, spawn_rate and run_time_s must be positive")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    classes = tuple(user_classes)
    unknown = [c for c in classes if c not in USER_CLASSES]
    if not classes or unknown:
        raise ValueError(f"user classes must be some of {list(USER_CLASSES)}, got {list(classes)}")
    out = Path(out_dir) if out_dir is not None else DEFAULT_REPORTS / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    stats_csv = out / "locust_stats.csv"
    stats_csv.unlink(missing_ok=True)  # never summarise a previous run's file
    seconds = max(1, math.ceil(run_time_s))

    # The hybridrec options go to every process: each worker builds its own payloads at start-up.
    options = ["--host", host, "--exit-code-on-error", "0", "--protocol", protocol, "--candidates", str(candidates)]
    if repo is not None:
        options += ["--repo", str(repo)]
    if data is not None:
        options += ["--data", str(data)]
    options += list(extra_args)
    base = [str(locust_executable()), "-f", str(LOCUSTFILE)]
    master_cmd = [
        *base,
        "--headless",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        f"{seconds}s",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--stop-timeout",
        "5",
        *options,
    ]
    worker_cmd: list[str] = []
    if workers:
        port = str(_free_port())
        master_cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port]
        master_cmd += ["--expect-workers", str(workers), "--expect-workers-max-wait", str(WORKER_WAIT_S)]
        worker_cmd = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port, *options, *classes]
    master_cmd += classes

    log_path = out / "locust.log"
    worker_logs = [out / f"locust-worker-{i}.log" for i in range(workers)]
    limit = seconds + OUTER_MARGIN_S
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(cmd: list[str], path: Path) -> subprocess.Popen[bytes]:
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        if pids is not None:
            pids.append(proc.pid)
        return proc

    def describe() -> str:
        text = f"command: {' '.join(master_cmd)}\n--- last lines of {log_path} ---\n{_tail(log_path)}"
        for path in worker_logs:
            text += f"\n--- last lines of {path} ---\n{_tail(path, 15)}"
        return text

    procs: list[subprocess.Popen[bytes]] = []
    code: int | None = None
    try:
        procs.append(start(master_cmd, log_path))
        procs += [start(worker_cmd, path) for path in worker_logs]
        code = _supervise(procs[0], procs[1:], limit)
    except LoadTestError as e:
        raise LoadTestError(f"{e} (run time {seconds} s).\n{describe()}") from None
    finally:  # also on errors and Ctrl-C in the caller: leave no locust behind
        # A master that ended cleanly has told its workers to quit: give them a moment to do so by themselves.
        _stop_all(procs, settle_s=WORKER_SETTLE_S if code == 0 and workers else 0.0)
    if code != 0:
        raise LoadTestError(f"locust exited with code {code}.\n{describe()}")
    try:
        summary = parse_stats(
            stats_csv, protocol=protocol, users=users, run_time_s=float(seconds), user_classes=classes, workers=workers
        )
    except LoadTestError as e:
        raise LoadTestError(f"{e}\n{describe()}") from None
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary


# --- command line -------------------------------------------------------------------------------------------------
def user_counts(text: str) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8] (an argparse type): positive, ascending, no repeats."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected user counts like 1,2,4,8, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"user counts must be positive integers, got {text!r}")
    return sorted(set(counts))


def _class_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in USER_CLASSES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"user classes are some of {','.join(USER_CLASSES)}; got {text!r}")
    return names


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of one run, shared by ``hybridrec loadtest`` and the sweep (which adds its own ``--users``)."""
    p.add_argument(
        "--url",
        "--host",
        dest="url",
        default="127.0.0.1:8001",
        help="Triton address host:port (gRPC 8001 or HTTP 8000), no scheme (--host: Locust's name for it)",
    )
    p.add_argument("--run-time", type=float, default=10, help="seconds of load (per run)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument(
        "--user-classes",
        type=_class_names,
        default=DEFAULT_USER_CLASSES,
        help=f"comma-separated locust user classes, of {','.join(USER_CLASSES)} (default RankUser)",
    )
    p.add_argument("--workers", type=int, default=0, help="distributed: one master + this many worker processes")
    p.add_argument("--candidates", type=int, default=50, help="movies ranked per rank / rank_content request (N)")
    p.add_argument("--repo", help="model repository holding artifacts.json (default $HYBRIDREC_REPO, model_repository)")
    p.add_argument("--data", help="MovieLens folder (default: resolve_data_dir())")
    p.add_argument("--out", type=Path, help="report folder (default loadtests/reports/<timestamp>)")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_locust` keyword arguments from the options :func:`add_run_arguments` defines (host, run time and
    report folder aside)."""
    return {
        "protocol": args.protocol,
        "user_classes": args.user_classes,
        "workers": args.workers,
        "candidates": args.candidates,
        "repo": args.repo,
        "data": args.data,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hybridrec loadtest",
        description="a bounded headless Locust run (or a sweep of user counts) against a live server",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument(
        "--users",
        type=user_counts,
        default=[4],
        metavar="4 | 1,2,4,8",
        help="concurrent users (closed loop, no think time); several = a sweep, one run per count: "
        "sweep.json + latency_throughput.png in --out",
    )
    p.add_argument("--spawn-rate", type=float, default=4, help="users started per second")
    p.add_argument("--sweep", type=user_counts, help=argparse.SUPPRESS)  # the old name of --users 1,2,4
    return p


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--"]:
        args_in = args_in[1:]
    args = build_parser().parse_args(args_in)
    out = args.out or DEFAULT_REPORTS / time.strftime("%Y%m%d-%H%M%S")
    counts = args.sweep or args.users
    if len(counts) > 1 or args.sweep:
        from hybridrec.loadtests.sweep import run_sweep_command

        return run_sweep_command(args, counts, out)
    args.users = counts[0]
    try:
        summary = run_locust(
            args.url,
            users=args.users,
            spawn_rate=args.spawn_rate,
            run_time_s=args.run_time,
            out_dir=out,
            **run_options(args),
        )
    except LoadTestError as e:
        print(f"load test failed: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    print(f"reports in {out}", file=sys.stderr)
    return 1 if summary.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
