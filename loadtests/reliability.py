"""The reliability benchmark, in one command (a benchmark that prints numbers, never a timed test)::

    python -m hybridrec.loadtests.reliability --run runs/demo --out runs/reliability \\
        [--soak-minutes 30] [--rate R] [--skip soak,kill,catalog] [--docs docs/reliability.md]

It exports ``--run`` into a temporary model repository (``export_run``, as ``loadtests/bench/run.py`` does) and
serves it with one tritonserver (the config set ``model_config_name="auto"`` picks), explicit model control, a
freshly generated admin key, on free 127.0.0.1 ports. Then, each phase bounded in time:

1. **soak**: Locust's ``MixedUser`` (recommend : rank : encode_items = 10 : 3 : 1) at a FIXED offered rate for
   ``--soak-minutes``: 80% of the highest `recommend` throughput Locust measured on Triton in
   ``docs/perf/results.json`` (or ``--rate``). Each of ``--users`` users is paced with Locust's
   ``constant_throughput(rate / users)`` and starts at a random phase of its period, so the arrivals are spread
   evenly. Recorded: every request's latency per 10-s slot (a request listener in the Locust process, so per-minute
   and 5-minute percentiles are exact), Locust's stats history CSV (``--csv-full-history``), failures, and the RSS of
   tritonserver plus its child processes (from /proc, every 10 s). Reported: per-minute p50/p99, the p99 of the
   first and the last 5 minutes, total failures, and the RSS growth from minute 5 to the end (target < 1%).
2. **kill**: a bounded Locust run of the same users (``--kill-seconds``) and a client created before the kill;
   tritonserver gets SIGKILL mid-run. Checked: the Locust run ends by itself (the locustfile quits after
   ``--max-unavailable`` consecutive 'unavailable' errors), the pre-existing client raises ServerUnavailableError
   while the server is down, a new server on the same ports and repository becomes ready, and the same client object
   answers again. The times of each step are recorded.
3. **catalog**: three ``add_items`` + load of ``spec.CATALOG_STATE_MODELS`` (with the admin key) + prune, while 4
   closed-loop users send `recommend` and `rank`; reported: failed requests (target 0) and requests served.

It writes ``summary.json`` and ``report.md`` into ``--out`` (with every Locust report and the server log), and the
same markdown to ``--docs`` when given. Every process it starts (tritonserver, Locust) is stopped at the end, on an
error, on Ctrl-C and on SIGTERM.

Locust loads THIS file too (``-f``, replacing the shared locustfile, as the benchmark does for its peer): only then
(module name ``reliability``, locust imported) does it define its paced ``MixedUser``, a subclass of the shared one
in ``locustfile.py`` (which stays untouched), and the per-slot latency recorder.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridrec.loadtests.payloads import PayloadPool
    from hybridrec.loadtests.runner import LoadSummary
    from hybridrec.serving import TritonServer

THIS_FILE = Path(__file__).resolve()
DEFAULT_OUT = Path("runs") / "reliability"
DEFAULT_RESULTS = Path("docs") / "perf" / "results.json"
SKIPPABLE = ("soak", "kill", "catalog")
RATE_SHARE = 0.8  # of the highest measured `recommend` throughput
PER_USER_RATE = 10.0  # default users = rate / this: each user's period (100 ms) well above a request's latency
SLOT_S = 10  # latency histograms per slot of this many seconds
RSS_INTERVAL_S = 10.0
WINDOW_S = 300.0  # "the first / last 5 minutes", and RSS growth from minute 5
RSS_TARGET_PCT = 1.0
RECOMMEND_BUDGET_MS = 50.0  # docs/performance.md: `recommend` p99 budget (reported beside the soak's p99)
CATALOG_ADDS = 3
CATALOG_USERS = 4
CATALOG_MAX_S = 180  # the catalog phase's Locust run is ended (SIGTERM) once the adds are done; this bounds it
NEW_MOVIE_BASE = 20_000_000  # the added movies' ids (their content is an existing movie's: a "twin")
SENDING_TIMEOUT_S = 120.0  # how long a Locust run may take to send its first request (imports, payloads)
RECOVERY_TIMEOUT_S = 30.0  # how long the pre-existing client may take to answer again after the restart


def log(message: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the offered rate ---------------------------------------------------------------------------------------------
def highest_recommend_rps(results: Path) -> tuple[float, str]:
    """(req/s, where) of the highest `recommend` throughput Locust measured on Triton (the served default set,
    variant "triton") without failures in the performance benchmark's ``results.json``."""
    data = json.loads(Path(results).read_text())
    points = data.get("workloads", {}).get("recommend", {}).get("triton") or []
    good = [p for p in points if not p.get("failures")]
    if not good:
        raise ValueError(f"{results}: no `recommend` point of Triton under Locust; give --rate")
    best = max(good, key=lambda p: float(p["rps"]))
    config_set = data.get("config_sets", {}).get("triton", "?")
    where = f"{results}: recommend, Triton {config_set} set, Locust, {best['users']} users, p99 {best['p99_ms']:.0f} ms"
    return float(best["rps"]), where


# --- server memory ----------------------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    """ppid -> pids of every live process (from /proc)."""
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            out.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _children()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kb(pid: int) -> tuple[int, int]:
    """(resident set in kB, processes) of ``pid`` and its descendants (tritonserver and its python-backend stubs)."""
    pids = process_tree(pid)
    return sum(_rss_kb(p) for p in pids), len(pids)


class RssSampler:
    """Samples :func:`tree_rss_kb` of ``pid()`` every ``interval_s`` in a thread: (wall time, kB, processes)."""

    def __init__(self, pid: Callable[[], int | None], interval_s: float = RSS_INTERVAL_S) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        pid = self.pid()
        if pid is not None:
            kb, n = tree_rss_kb(pid)
            if kb:
                self.samples.append((time.time(), kb, n))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def rss_growth(samples: Sequence[tuple[float, int, int]], t0: float, duration_s: float) -> dict[str, Any]:
    """RSS growth from minute 5 of the soak (or its middle, for a soak under 10 minutes) to its last sample."""
    if not samples:
        return {"samples": 0}
    base_at = min(WINDOW_S, duration_s / 2)
    base = min(samples, key=lambda s: abs(s[0] - (t0 + base_at)))
    end = samples[-1]
    growth = (end[1] - base[1]) / base[1] * 100.0 if base[1] else math.nan
    # The trend after the baseline (least squares): a leak keeps a slope, a warming allocator flattens out.
    after = [(t, kb / 1024) for t, kb, _ in samples if t >= base[0]]
    slope = math.nan
    if len(after) >= 3:
        mt = sum(t for t, _ in after) / len(after)
        mm = sum(m for _, m in after) / len(after)
        var = sum((t - mt) ** 2 for t, _ in after)
        slope = sum((t - mt) * (m - mm) for t, m in after) / var * 3600 if var else math.nan
    return {
        "samples": len(samples),
        "interval_s": RSS_INTERVAL_S,
        "baseline_at_s": round(base[0] - t0, 1),
        "baseline_mb": round(base[1] / 1024, 1),
        "end_at_s": round(end[0] - t0, 1),
        "end_mb": round(end[1] / 1024, 1),
        "max_mb": round(max(s[1] for s in samples) / 1024, 1),
        "processes": end[2],
        "growth_pct": round(growth, 3),
        "slope_mb_per_hour": round(slope, 2),
        "series": [[round(t - t0, 1), round(kb / 1024, 1)] for t, kb, _ in samples],
    }


# --- latency slots (written by the Locust process, read here) -----------------------------------------------------
def percentile(hist: Mapping[int, int], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of a {milliseconds: count} histogram; NaN when empty."""
    total = sum(hist.values())
    if not total:
        return math.nan
    rank = max(1, math.ceil(q * total))
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= rank:
            return float(ms)
    return float(max(hist))


@dataclass
class Slots:
    """Per 10-s slot of a Locust run: a latency histogram and a failure count per request name."""

    t0: float  # wall time of Locust's test start
    slot_s: int
    hist: dict[int, dict[str, Counter[int]]] = field(default_factory=dict)
    failures: dict[int, Counter[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Slots:
        raw = json.loads(Path(path).read_text())
        out = cls(float(raw["t0"]), int(raw["slot_s"]))
        for slot, names in raw["slots"].items():
            out.hist[int(slot)] = {n: Counter({int(ms): c for ms, c in h.items()}) for n, h in names["hist"].items()}
            out.failures[int(slot)] = Counter(names["failures"])
        return out

    def merged(self, start_s: float, end_s: float, name: str | None = None) -> tuple[Counter[int], int]:
        """(latency histogram, failures) of the slots within [start_s, end_s), of one request name or all."""
        hist: Counter[int] = Counter()
        failures = 0
        for slot in self.hist.keys() | self.failures.keys():
            if start_s <= slot * self.slot_s < end_s:
                for n, h in self.hist.get(slot, {}).items():
                    if name is None or n == name:
                        hist.update(h)
                for n, c in self.failures.get(slot, Counter()).items():
                    if name is None or n == name:
                        failures += c
        return hist, failures

    def names(self) -> list[str]:
        return sorted({n for slot in self.hist.values() for n in slot})

    def window(self, start_s: float, end_s: float, name: str | None = None) -> dict[str, Any]:
        hist, failures = self.merged(start_s, end_s, name)
        n = sum(hist.values()) + failures
        span = max(1e-9, end_s - start_s)
        return {  # percentiles of the requests that succeeded
            "from_s": round(start_s, 1),
            "to_s": round(end_s, 1),
            "requests": n,
            "failures": failures,
            "rps": round(n / span, 1),
            "p50_ms": percentile(hist, 0.50),
            "p99_ms": percentile(hist, 0.99),
        }


def minute_table(slots: Slots, duration_s: float) -> list[dict[str, Any]]:
    """One row per minute of the run (the last one partial): all requests, and the p99 of each request name."""
    rows = []
    for m in range(max(1, math.ceil(duration_s / 60 - 1e-9))):
        end = min((m + 1) * 60.0, duration_s)
        row = {"minute": m + 1, **slots.window(m * 60.0, end)}
        row["p99_by_name_ms"] = {n: slots.window(m * 60.0, end, n)["p99_ms"] for n in slots.names()}
        rows.append(row)
    return rows


# --- Locust in the background ---------------------------------------------------------------------------------------
class BackgroundLocust:
    """:func:`~hybridrec.loadtests.runner.run_locust` in a thread, so that this process can act during the run.

    ``pids`` holds Locust's processes: :meth:`terminate` ends the run early the way Ctrl-C does (Locust writes its
    stats on SIGTERM), :meth:`kill` ends it at once. run_locust itself bounds the run (run time + 90 s) and reaps
    every process it started."""

    def __init__(self, host: str, out_dir: Path, **kwargs: Any) -> None:
        from hybridrec.loadtests.runner import run_locust

        self.out_dir = out_dir
        self.pids: list[int] = []
        self.summary: LoadSummary | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.ended: float | None = None

        def target() -> None:
            try:
                self.summary = run_locust(host, out_dir=out_dir, pids=self.pids, **kwargs)
            except BaseException as e:  # reported by result()
                self.error = e
            finally:
                self.ended = time.monotonic()

        self._thread = threading.Thread(target=target, name="locust", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def requests_so_far(self) -> int:
        """The Aggregated request count of Locust's live stats CSV (rewritten every second); 0 before it exists."""
        path = self.out_dir / "locust_stats.csv"
        with contextlib.suppress(OSError, ValueError, csv.Error), open(path, newline="") as f:
            for row in csv.DictReader(f):
                if (row.get("Name") or "").strip() == "Aggregated":
                    return int(row.get("Request Count") or 0)
        return 0

    def wait_sending(self, timeout_s: float = SENDING_TIMEOUT_S) -> float:
        """Block until Locust has sent requests (after its imports and payloads); seconds waited."""
        deadline = time.monotonic() + timeout_s
        while self.requests_so_far() == 0:
            if not self.running:
                raise RuntimeError(f"Locust ended before sending a request: {self.error}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Locust sent no request within {timeout_s:.0f} s (see {self.out_dir})")
            time.sleep(0.2)
        return time.monotonic() - self.started

    def _signal(self, sig: signal.Signals, group: bool) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig) if group else os.kill(pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM, group=False)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, group=True)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the run to end; whether it did."""
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def result(self) -> LoadSummary:
        if self.error is not None:
            raise self.error
        if self.summary is None:
            raise RuntimeError("the Locust run has not ended")
        return self.summary


def _endpoint_json(summary: LoadSummary) -> dict[str, Any]:
    def row(s: Any) -> dict[str, Any]:
        return {
            "requests": s.requests,
            "failures": s.failures,
            "rps": round(s.rps, 1),
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "p99_ms": s.p99_ms,
        }

    return {"all": row(summary), **{name: row(s) for name, s in sorted(summary.endpoints.items())}}


# --- the phases -------------------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """What the phases share: the options, the served repository, the admin key and the server (replaced by the
    kill phase's restart), the payloads (for the checks and the catalog's movies) and every Locust run started."""

    args: argparse.Namespace
    out: Path
    repo: Path
    key: str
    pool: PayloadPool
    rate: float
    users: int
    locusts: list[BackgroundLocust] = field(default_factory=list)
    servers: list[TritonServer] = field(default_factory=list)  # every one started, the current one last

    @property
    def server(self) -> TritonServer:
        if not self.servers:
            raise RuntimeError("no server started yet")
        return self.servers[-1]

    def paced_locust(self, name: str, run_time_s: float, **extra: Any) -> BackgroundLocust:
        """The paced MixedUser (this file as the locustfile) at ``self.rate`` in all, over gRPC."""
        out = self.out / name
        args = ["-f", str(THIS_FILE), "--user-rate", f"{self.rate / self.users:.6f}"]
        args += ["--slot-stats", str(out / "slots.json"), "--csv-full-history"]
        return self.locust(
            name,
            users=self.users,
            spawn_rate=self.users,  # all at once; each one then waits a random phase of its period
            run_time_s=run_time_s,
            user_classes=("MixedUser",),
            extra_args=args,
            **extra,
        )

    def locust(self, name: str, **kwargs: Any) -> BackgroundLocust:
        out = self.out / name
        if out.exists():
            shutil.rmtree(out)
        opts = {"protocol": "grpc", "repo": self.repo, "data": self.args.data}
        loc = BackgroundLocust(self.server.grpc_url, out, **opts, **kwargs)
        self.locusts.append(loc)
        return loc

    def check_answer(self, client: Any) -> None:
        """One real `recommend` request through ``client``; raises unless the answer is good."""
        payload = self.pool.get("recommend")[0]
        payload.check(client.infer(payload.model, payload.arrays))

    def start_server(
        self, http_port: int | None = None, grpc_port: int | None = None, metrics_port: int | None = None
    ) -> TritonServer:
        from hybridrec.serving import TritonServer

        n = len(self.servers)
        server = TritonServer(
            self.repo,
            model_control_mode="explicit",
            extra_args=["--load-model=*"],
            admin_key=self.key,
            host="127.0.0.1",
            log_file=self.out / f"tritonserver-{n}.log",
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
        )
        self.servers.append(server)
        server.start()
        server.wait_ready()
        return server


def soak(b: Bench) -> dict[str, Any]:
    duration = b.args.soak_minutes * 60.0
    log(f"soak: MixedUser at {b.rate:.1f} req/s ({b.users} users) for {duration / 60:g} min")
    with RssSampler(lambda: b.server.pid) as rss:
        loc = b.paced_locust("soak", duration)
        loc.join(duration + 200)  # run_locust ends it by run time + 90 s
        rss.sample()  # the end
    summary = loc.result()
    slots = Slots.load(b.out / "soak" / "slots.json")
    window = min(WINDOW_S, duration / 2)
    first, last = slots.window(0, window), slots.window(duration - window, duration)
    first_rec = slots.window(0, window, "recommend")
    last_rec = slots.window(duration - window, duration, "recommend")
    achieved = slots.window(0, duration)["requests"] / duration
    out = {
        "duration_s": duration,
        "offered_rps": round(b.rate, 1),
        "achieved_rps": round(achieved, 1),
        "users": b.users,
        "requests": summary.requests,
        "failures": summary.failures,
        "window_s": window,
        "first_window": first,
        "last_window": last,
        "p99_first_ms": first["p99_ms"],
        "p99_last_ms": last["p99_ms"],
        "recommend_p99_first_ms": first_rec["p99_ms"],
        "recommend_p99_last_ms": last_rec["p99_ms"],
        "endpoints": _endpoint_json(summary),
        "minutes": minute_table(slots, duration),
        "rss": rss_growth(rss.samples, slots.t0, duration),
        "history_csv": str(b.out / "soak" / "locust_stats_history.csv"),
    }
    log(
        f"soak: {out['requests']} requests ({out['achieved_rps']} req/s), {out['failures']} failures, p99 first "
        f"{first['p99_ms']:.0f} ms / last {last['p99_ms']:.0f} ms, RSS growth {out['rss'].get('growth_pct')}%"
    )
    return out


def kill(b: Bench) -> dict[str, Any]:
    from hybridrec.client import RecommenderClient, ServerUnavailableError

    seconds = float(b.args.kill_seconds)
    old = b.server
    out: dict[str, Any] = {"run_time_s": seconds, "offered_rps": round(b.rate, 1), "users": b.users}
    client = RecommenderClient(old.grpc_url, "grpc", timeout_s=10.0)  # the default retry policy
    try:
        b.check_answer(client)  # created and used before the kill
        log(f"kill: Locust for {seconds:g} s, then SIGKILL to tritonserver (pid {old.pid})")
        loc = b.paced_locust("kill", seconds)
        loc.wait_sending()
        time.sleep(min(3.0, seconds / 4))
        assert old.pid is not None
        t_kill = time.monotonic()
        os.kill(old.pid, signal.SIGKILL)
        out["killed_after_sending_s"] = round(t_kill - loc.started, 1)

        # the pre-existing client while the server is down
        t = time.monotonic()
        try:
            b.check_answer(client)
            out["client_while_down"] = "answered (the server was not down yet)"
        except ServerUnavailableError as e:
            out["client_while_down"] = f"ServerUnavailableError after {e.attempts} attempt(s)"
        except Exception as e:
            out["client_while_down"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        out["client_raised_unavailable"] = out["client_while_down"].startswith("ServerUnavailableError")
        out["client_error_after_s"] = round(time.monotonic() - t, 2)

        # the Locust run ends by itself, before its run time is up
        ended = loc.join(seconds + 150)
        if not ended:
            loc.kill()
            loc.join(20)
        summary = loc.result() if ended and loc.error is None else None
        locust_log = (b.out / "kill" / "locust.log").read_text(errors="replace") if ended else ""
        out["locust_ended_by_itself"] = bool(ended and loc.error is None and "unavailable for" in locust_log)
        out["locust_end_after_kill_s"] = round((loc.ended or time.monotonic()) - t_kill, 1)
        out["locust_error"] = str(loc.error).splitlines()[0] if loc.error is not None else None
        if summary is not None:
            out["requests"], out["failures"] = summary.requests, summary.failures

        # restart on the same ports and repository
        rc = old.stop(timeout_s=10)  # reaps it (and any stub left), removes its shared memory
        out["killed_server_exit_code"] = rc
        t = time.monotonic()
        b.start_server(http_port=old.http_port, grpc_port=old.grpc_port, metrics_port=old.metrics_port)
        out["restart_ready_s"] = round(time.monotonic() - t, 1)
        out["same_ports"] = (b.server.grpc_port, b.server.http_port) == (old.grpc_port, old.http_port)
        out["down_s"] = round(time.monotonic() - t_kill, 1)

        # the same client object answers again
        t = time.monotonic()
        tries, last_error = 0, ""
        while True:
            tries += 1
            try:
                b.check_answer(client)
                out["client_recovered"] = True
                break
            except Exception as e:
                last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if time.monotonic() - t > RECOVERY_TIMEOUT_S:
                out["client_recovered"] = False
                break
            time.sleep(0.2)
        out["client_recovery_s"] = round(time.monotonic() - t, 2)
        out["client_recovery_calls"] = tries
        out["client_recovery_last_error"] = last_error or None
    finally:
        client.close()
    log(
        f"kill: Locust ended by itself {out.get('locust_ended_by_itself')} ({out.get('locust_end_after_kill_s')} s "
        f"after the kill), client while down: {out.get('client_while_down')}, restart ready in "
        f"{out.get('restart_ready_s')} s, same client answers again: {out.get('client_recovered')}"
    )
    return out


def catalog(b: Bench) -> dict[str, Any]:
    import numpy as np

    from hybridrec import spec
    from hybridrec.client import RecommenderClient
    from hybridrec.export.catalog import add_items, prune_catalog_versions
    from hybridrec.preprocessing import ItemMetadata

    src = b.pool.source
    twins = src.with_poster[:CATALOG_ADDS]  # each added movie is one of these under a new movieId
    new_ids = [NEW_MOVIE_BASE + n for n in range(len(twins))]
    history = src.history(next(iter(src.histories)))[0]
    log(f"catalog: {len(twins)} adds while {CATALOG_USERS} users send recommend and rank (closed loop)")
    loc = b.locust(
        "catalog",
        users=CATALOG_USERS,
        spawn_rate=CATALOG_USERS,
        run_time_s=CATALOG_MAX_S,
        user_classes=("RecommendUser", "RankUser"),
    )
    loc.wait_sending()
    time.sleep(2.0)
    adds: list[dict[str, Any]] = []
    with RecommenderClient(b.server.grpc_url, admin_key=b.key) as operator:
        for movie_id, source in zip(new_ids, twins, strict=True):
            movie = src.dataset.movies[source]
            t0 = time.monotonic()
            _, version = add_items(
                b.repo, [(movie_id, ItemMetadata.of(movie), src.catalog.poster(source))], prune=False
            )
            t1 = time.monotonic()
            for m in spec.CATALOG_STATE_MODELS:
                operator.load_model(m.name)
            t2 = time.monotonic()
            prune_catalog_versions(b.repo, keep=version)
            adds.append(
                {"movie_id": movie_id, "version": version, "add_s": round(t1 - t0, 2), "load_s": round(t2 - t1, 2)}
            )
            log(f"catalog: movie {movie_id} (version {version}): add {t1 - t0:.1f} s, load {t2 - t1:.1f} s")
            time.sleep(1.0)
        scores = operator.rank_tensors(history, np.array(new_ids))
    time.sleep(2.0)
    loc.terminate()  # the adds are done: end the load (Locust writes its stats on SIGTERM)
    if not loc.join(60):
        loc.kill()
        loc.join(20)
    summary = loc.result()
    out = {
        "adds": adds,
        "users": CATALOG_USERS,
        "load_s": round((loc.ended or time.monotonic()) - loc.started, 1),
        "requests": summary.requests,
        "failures": summary.failures,
        "endpoints": _endpoint_json(summary),
        "new_movies_served": bool(np.all(np.isfinite(scores))),
    }
    log(
        f"catalog: {out['requests']} requests, {out['failures']} failures, new movies served {out['new_movies_served']}"
    )
    return out


# --- report -----------------------------------------------------------------------------------------------------------
def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, met: bool | None) -> None:
        rows.append({"name": name, "target": target, "value": value, "met": met})

    for phase in SKIPPABLE:
        if "error" in (results.get(phase) or {}):
            add(f"{phase}: the phase completed", "yes", results[phase]["error"], False)
    s = results.get("soak")
    if s and "error" not in s:
        add("soak: failed requests", "0", s["failures"], s["failures"] == 0)
        g = s["rss"].get("growth_pct")
        add("soak: RSS growth, minute 5 to the end", f"< {RSS_TARGET_PCT:g}%", g, g is not None and g < RSS_TARGET_PCT)
        add(
            "soak: offered load held (achieved / offered)",
            ">= 0.95",
            round(s["achieved_rps"] / s["offered_rps"], 3),
            s["achieved_rps"] >= 0.95 * s["offered_rps"],
        )
        last = s["recommend_p99_last_ms"]
        add(
            "soak: `recommend` p99 of the last window within its budget (docs/performance.md)",
            f"<= {RECOMMEND_BUDGET_MS:g} ms",
            last,
            bool(last <= RECOMMEND_BUDGET_MS),
        )
    k = results.get("kill")
    if k and "error" not in k:
        add(
            "kill -9: Locust run ends by itself",
            "yes",
            k.get("locust_ended_by_itself"),
            k.get("locust_ended_by_itself"),
        )
        add(
            "kill -9: pre-existing client raises ServerUnavailableError",
            "yes",
            k.get("client_while_down"),
            k.get("client_raised_unavailable"),
        )
        add("kill -9: restarted on the same ports", "yes", k.get("same_ports"), k.get("same_ports"))
        add(
            "kill -9: the same client answers after the restart",
            "yes",
            k.get("client_recovered"),
            k.get("client_recovered"),
        )
    c = results.get("catalog")
    if c and "error" not in c:
        add("catalog adds under load: failed requests", "0", c["failures"], c["failures"] == 0)
        add("catalog adds: the new movies are served", "yes", c["new_movies_served"], c["new_movies_served"])
    return rows


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _ms(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f} ms"


def markdown(r: Mapping[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Reliability: soak, kill -9, catalog updates under load",
        "",
        f"Written by `{r['command']}` ({r['finished']}, {r['wall_s'] / 60:.1f} min). "
        "The code is `loadtests/reliability.py` (its docstring says how each phase runs); a smoke test of it is "
        "`tests/integration/test_reliability_bench.py` (15 s of soak, a tiny model).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}; load average "
        f"{m['load_before']} before, {r['load_after']} after. Load generator (Locust) and server share the machine.",
        f"- Server: tritonserver {r.get('tritonserver', '?')}, config set `{r['config_set']}` "
        f"({r['config_set_reason']}), explicit model control, model control behind a generated admin key, "
        "127.0.0.1 only.",
        f"- Model: `{r['settings']['run']}` exported into a temporary repository.",
        f"- Offered load: {r['settings']['rate_rps']:.1f} req/s ({r['settings']['rate_source']}), "
        f"{r['settings']['users']} Locust users paced with `constant_throughput`, MixedUser "
        "(recommend : rank : encode_items = 10 : 3 : 1), gRPC.",
        "",
        "## Targets",
        "",
        "| check | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for t in r["targets"]:
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['name']} | {t['target']} | {t['value']} | {met} |")
    s = r.get("soak")
    if s and "error" not in s:
        w = _span(s["window_s"])
        rss = s["rss"]
        lines += [
            "",
            f"## Soak ({s['duration_s'] / 60:g} min)",
            "",
            f"- Requests: {s['requests']} ({s['achieved_rps']} req/s achieved of {s['offered_rps']} offered), "
            f"failures: {s['failures']}.",
            f"- p99, all requests: first {w} {_ms(s['p99_first_ms'])}, last {w} {_ms(s['p99_last_ms'])}; "
            f"`recommend` alone: {_ms(s['recommend_p99_first_ms'])} / {_ms(s['recommend_p99_last_ms'])}.",
            f"- Server RSS (tritonserver + {max(0, rss.get('processes', 1) - 1)} child processes, every "
            f"{RSS_INTERVAL_S:g} s): {rss.get('baseline_mb')} MB at {rss.get('baseline_at_s')} s, "
            f"{rss.get('end_mb')} MB at the end ({rss.get('end_at_s')} s), max {rss.get('max_mb')} MB: "
            f"**{rss.get('growth_pct')}%**; trend after the baseline {rss.get('slope_mb_per_hour')} MB/hour.",
            "",
            "Per endpoint over the whole soak (Locust):",
            "",
            "| endpoint | requests | failures | req/s | p50 | p95 | p99 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, e in s["endpoints"].items():
            lines.append(
                f"| {name} | {e['requests']} | {e['failures']} | {e['rps']} | {_ms(e['p50_ms'])} | "
                f"{_ms(e['p95_ms'])} | {_ms(e['p99_ms'])} |"
            )
        names = sorted({n for row in s["minutes"] for n in row["p99_by_name_ms"]})
        lines += [
            "",
            "Per minute (every request's latency, recorded in the Locust process; Locust's stats history CSV is kept "
            "beside it in the report folder):",
            "",
            "| minute | requests | failures | req/s | p50 | p99 | " + " | ".join(f"p99 {n}" for n in names) + " |",
            "| --- " * (6 + len(names)) + "|",
        ]
        for row in s["minutes"]:
            by = " | ".join(_ms(row["p99_by_name_ms"].get(n)) for n in names)
            lines.append(
                f"| {row['minute']} | {row['requests']} | {row['failures']} | {row['rps']} | {_ms(row['p50_ms'])} | "
                f"{_ms(row['p99_ms'])} | {by} |"
            )
    k = r.get("kill")
    if k and "error" not in k:
        lines += [
            "",
            "## kill -9 of tritonserver under load",
            "",
            f"- A {k['run_time_s']:g}-s Locust run at {k['offered_rps']} req/s; SIGKILL "
            f"{k.get('killed_after_sending_s')} s after the Locust process started (a few seconds into its load).",
            f"- Locust ended by itself: {k.get('locust_ended_by_itself')}, {k.get('locust_end_after_kill_s')} s after "
            f"the kill ({k.get('requests', '?')} requests, {k.get('failures', '?')} failed: those sent around the "
            "kill).",
            f"- The client created before the kill, called while the server was down: {k.get('client_while_down')}, "
            f"after {k.get('client_error_after_s')} s.",
            f"- Restart on the same ports and repository: ready in {k.get('restart_ready_s')} s "
            f"(down {k.get('down_s')} s in all); the same client answered again: {k.get('client_recovered')} "
            f"({k.get('client_recovery_calls')} call(s), {k.get('client_recovery_s')} s).",
        ]
    c = r.get("catalog")
    if c and "error" not in c:
        lines += [
            "",
            "## Catalog adds under load",
            "",
            f"- {len(c['adds'])} movies added one at a time (`add_items`, load of "
            f"{', '.join(r['catalog_models'])} with the admin key, prune) while {c['users']} closed-loop users sent "
            f"`recommend` and `rank` for {c['load_s']} s: {c['requests']} requests, **{c['failures']} failed**.",
            "- Per add: "
            + "; ".join(
                f"movie {a['movie_id']} v{a['version']}: add {a['add_s']} s, load {a['load_s']} s" for a in c["adds"]
            )
            + f". The new movies are served after the adds: {c['new_movies_served']}.",
        ]
    short = [t for t in r["targets"] if not t["met"]]
    lines += ["", "## What falls short", ""]
    lines += [f"- {t['name']}: {t['value']} (target {t['target']})." for t in short] or ["- Nothing: every target met."]
    if r.get("skipped"):
        lines += ["", f"Skipped in this run: {', '.join(r['skipped'])}."]
    return "\n".join(lines) + "\n"


# --- the run ----------------------------------------------------------------------------------------------------------
def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from hybridrec.loadtests.bench.common import skip_parser  # not at the top: Locust imports this file too

    p = argparse.ArgumentParser(
        prog="python -m hybridrec.loadtests.reliability", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--run", type=Path, default=Path("runs/demo"), help="trained run folder (exported into a temp repo)")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"summary.json, report.md, reports (default {DEFAULT_OUT})"
    )
    p.add_argument("--docs", type=Path, help="also write the markdown report here (e.g. docs/reliability.md)")
    p.add_argument("--soak-minutes", type=_positive, default=30.0, help="soak duration in minutes (default 30)")
    p.add_argument("--rate", type=_positive, help="offered req/s (default: 80%% of the best `recommend` in --results)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the performance benchmark's results.json")
    p.add_argument("--users", type=int, help=f"paced Locust users (default: rate / {PER_USER_RATE:g}, at least 4)")
    p.add_argument("--kill-seconds", type=_positive, default=20.0, help="run time of the kill phase's Locust run")
    p.add_argument(
        "--skip", type=skip_parser(SKIPPABLE), default=set(), help=f"phases to leave out: {','.join(SKIPPABLE)}"
    )
    p.add_argument("--data", help="MovieLens folder for the payloads (default: resolve_data_dir())")
    p.add_argument("--workdir", type=Path, help="keep the exported repository here (default: a temporary folder)")
    return p


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: servers and Locust runs are stopped


def run(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    from hybridrec import spec
    from hybridrec.export.onnx_export import export_run
    from hybridrec.loadtests.bench.common import machine, workdir
    from hybridrec.loadtests.bench.triton_stats import server_version
    from hybridrec.loadtests.payloads import PayloadPool, PoolKey

    started = time.monotonic()
    skip = set(args.skip)
    if args.rate is not None:
        rate, source = float(args.rate), "--rate"
    else:
        best, where = highest_recommend_rps(args.results)
        rate, source = RATE_SHARE * best, f"{RATE_SHARE:.0%} of {best:.1f} req/s, {where}"
    users = args.users or max(4, math.ceil(rate / PER_USER_RATE))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    results: dict[str, Any] = {"command": command}
    with workdir(args.workdir, "hybridrec-reliability-") as work:
        repo = (work / "repo").resolve()
        if repo.exists():
            shutil.rmtree(repo)
        log(f"exporting {args.run} into {repo}")
        export_run(args.run, repo)
        pool = PayloadPool(PoolKey(repo=str(repo), data=str(args.data or "")))
        b: Bench | None = None
        try:
            b = Bench(args, out, repo, secrets.token_urlsafe(24), pool, rate, users)
            log("starting tritonserver (explicit model control, admin key)")
            b.start_server()
            results.update(
                tritonserver=server_version(b.server.http_url),
                config_set=b.server.config_set,
                config_set_reason=b.server.config_set_reason,
            )
            log(f"serving config set {b.server.config_set} on gRPC {b.server.grpc_url}")
            for phase, fn in (("soak", soak), ("kill", kill), ("catalog", catalog)):
                if phase in skip:
                    continue
                try:
                    results[phase] = fn(b)
                except Exception as e:  # reported, and the next phases still run (on a live server)
                    log(f"{phase} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")  # where, for a rerun
                    results[phase] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                    if not b.server.alive:
                        b.server.stop(timeout_s=10)
                        b.start_server()
        finally:
            if b is not None:
                for loc in b.locusts:
                    if loc.running:
                        loc.kill()
                        loc.join(30)
                for server in b.servers:
                    server.stop(timeout_s=10)
    results.update(
        finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        wall_s=round(time.monotonic() - started, 1),
        machine=info,
        load_after=_load(),
        skipped=sorted(skip),
        catalog_models=[m.name for m in spec.CATALOG_STATE_MODELS],
        settings={
            "run": str(args.run),
            "rate_rps": rate,
            "rate_source": source,
            "users": users,
            "soak_minutes": args.soak_minutes,
            "kill_seconds": args.kill_seconds,
        },
    )
    results["targets"] = targets(results)
    return results


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write(results: Mapping[str, Any], out: Path, docs: Path | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    paths = [out / "summary.json", out / "report.md"]
    paths[0].write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
    paths[1].write_text(text)
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(text)
        paths.append(docs)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not args.run.joinpath("model.pt").exists():
        print(f"no trained model in {args.run}: run `hybridrec train --run {args.run}` first", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        results = run(args, " ".join(["python -m hybridrec.loadtests.reliability", *argv]))
    finally:
        signal.signal(signal.SIGTERM, previous)
    paths = write(results, args.out, args.docs)
    for t in results["targets"]:
        print(f"{'ok  ' if t['met'] else 'FAIL'} {t['name']}: {t['value']} (target {t['target']})")
    print(f"written: {', '.join(str(p) for p in paths)} ({results['wall_s']:.0f} s)")
    return 0


# --- Locust's side: loaded as a locustfile (-f this file) -------------------------------------------------------------
if __name__ == "reliability" and "locust" in sys.modules:
    import random

    import gevent
    from locust import events
    from locust.env import Environment
    from locust.user.wait_time import constant_throughput

    from hybridrec.loadtests import locustfile as shared

    _T0: list[float] = []  # wall time of the test start
    _HIST: dict[int, dict[str, Counter[int]]] = {}
    _FAILS: dict[int, Counter[str]] = {}

    @events.init_command_line_parser.add_listener
    def _reliability_options(parser: Any, **_: Any) -> None:
        group = parser.add_argument_group("reliability", "options of hybridrec's reliability benchmark")
        group.add_argument(
            "--user-rate", type=float, default=0.0, help="requests per second of each user (0: no pause)"
        )
        group.add_argument("--slot-stats", default="", help="write per-10-s latency histograms to this JSON file")

    @events.test_start.add_listener
    def _started(**_: Any) -> None:
        _T0[:] = [time.time()]

    @events.request.add_listener
    def _record(name: str, response_time: float, exception: BaseException | None = None, **_: Any) -> None:
        if not _T0:
            return
        slot = int((time.time() - _T0[0]) // SLOT_S)
        if exception is not None:
            _FAILS.setdefault(slot, Counter())[name] += 1
        else:
            _HIST.setdefault(slot, {}).setdefault(name, Counter())[round(response_time)] += 1

    @events.quitting.add_listener
    def _write_slots(environment: Environment, **_: Any) -> None:
        path = getattr(environment.parsed_options, "slot_stats", "")
        if not path or not _T0:
            return
        slots = {
            str(s): {
                "hist": {n: {str(ms): c for ms, c in h.items()} for n, h in _HIST.get(s, {}).items()},
                "failures": dict(_FAILS.get(s, {})),
            }
            for s in sorted(_HIST.keys() | _FAILS.keys())
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"t0": _T0[0], "slot_s": SLOT_S, "slots": slots}))

    class MixedUser(shared.MixedUser):
        """The shared MixedUser, paced: ``--user-rate`` requests per second (``constant_throughput``), starting at a
        random phase of its period so that the users' requests do not arrive in step."""

        def __init__(self, environment: Environment) -> None:
            super().__init__(environment)
            self.rate = float(getattr(environment.parsed_options, "user_rate", 0.0) or 0.0)
            self._pace = constant_throughput(self.rate) if self.rate > 0 else None

        def wait_time(self) -> float:
            return self._pace(self) if self._pace is not None else 0.0

        def on_start(self) -> None:
            super().on_start()
            if self.rate > 0:
                gevent.sleep(random.uniform(0.0, 1.0 / self.rate))
                self._cp_last_run = time.perf_counter()  # constant_pacing's clock starts at this phase


if __name__ == "__main__":
    raise SystemExit(main())
