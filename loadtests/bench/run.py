"""The throughput benchmark, in one command (a benchmark that prints numbers, never a timed test)::

    python -m hybridrec.loadtests.bench.run --run runs/demo [--out runs/perf]

For each workload (`recommend`: one user's history, top-10 of the whole catalog; `rank`: one user's history and
N=50 real candidates **by movieId**, scored against the catalog's embeddings) it measures on this machine:

(a)  the in-process limit: the same ONNX files (``limit.py``) in onnxruntime at the batch sizes Triton's dynamic
     batcher formed in (b) (statistics API) and at 1, 2, 4 .. max batch; model compute only;
(b)  Triton's DEFAULT config set (``config.pbtxt``: ``platform: onnxruntime_onnx``, Triton's official onnxruntime
     backend) through the gRPC client under Locust (closed loop, a sweep of user counts), cross-checked with
     Triton's statistics API; and the same server under ``perf_analyzer`` (``loadtests/perf_analyzer.py``), a second
     load generator, at the same concurrencies;
(b2) Triton's ``cpu`` config set (python backend running the same ONNX files) under the same Locust load;
(c)  the naive peer (``naive_peer.py``: FastAPI + uvicorn, eager PyTorch per request; `rank` looks the candidates up
     in the exported ``catalog.npz``) under the same load generator;
(d)  the default set again, from a copy of the repository whose composing models' configs have ``dynamic_batching``
     removed.

It reports the throughput at a p99 latency budget (the highest measured req/s whose p99 <= budget, no failures), the
ratios (b)/(a), (b)/(c), (b)/(b2) and (b)/(d), and the **ensemble overhead** of every Triton point: the ensemble's
mean request time minus the sum of its composing models' compute (compute input + infer + output per request, from
the statistics API deltas). It writes ``results.json``, ``results.md`` and ``latency_throughput.png`` into ``--out``
(default ``runs/perf``; the committed ``docs/perf`` is written only when asked for with ``--out docs/perf``). Every
server and load generator it starts is a child process on 127.0.0.1, bounded in time and stopped at the end.
``docs/performance.md`` explains the numbers. When the onnxruntime backend is not installed (`hybridrec backend
build`), (b) and (d) serve the ``cpu`` set instead, (b2) is left out, and the results say so.

This module is the orchestration (the command line, the servers, the load sweeps); the parts it calls are
``triton_stats.py`` (statistics API deltas, ensemble overhead), ``repository.py`` (the copy without batching),
``answers.py`` (Triton's and the peer's answers compared), ``summary.py`` (numbers at the budget, ratios, targets),
``report.py`` (tables, ``results.md``/``results.json``) with ``plots.py``, ``series.py`` (variants and labels) and
``common.py`` (helpers shared with ``loadtests/reliability.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridrec import spec
from hybridrec.loadtests.bench.answers import compare_answers, peer_answers, triton_answers
from hybridrec.loadtests.bench.common import csv_ints, load_average, machine, skip_parser, workdir
from hybridrec.loadtests.bench.limit import WORKLOADS, Limit, measure_limit
from hybridrec.loadtests.bench.report import main_table, overhead_table, sweep_table, targets_table, write
from hybridrec.loadtests.bench.repository import unbatched_copy
from hybridrec.loadtests.bench.series import TRITON_VARIANTS as TRITON_VARIANTS  # re-exported: the benchmark's names
from hybridrec.loadtests.bench.series import VARIANTS as VARIANTS
from hybridrec.loadtests.bench.summary import summarise, targets
from hybridrec.loadtests.bench.triton_stats import (
    ensemble_overhead,
    executions_of,
    server_version,
    stats_delta,
    triton_stats,
)

PEER_LOCUSTFILE = Path(__file__).resolve().parent / "peer_locustfile.py"
DEFAULT_OUT = Path("runs") / "perf"
# One workload per run. The peer's Locust file names its users like the shared ones (run_locust accepts those names).
LOCUST_USERS = {"recommend": "RecommendUser", "rank": "RankUser"}
# Why these budgets: see docs/performance.md. Both are interactive calls; `rank` goes by movieId now (a catalog
# lookup and the fusion head over N candidates, no CNN), so it is as cheap as `recommend` and gets the same budget.
DEFAULT_BUDGETS_MS = {"recommend": 50.0, "rank": 50.0}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- load runs -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What a sweep loads: a variant's address, the repo its payloads are encoded with, where Triton's statistics
    are (None for the peer) and the Locust file of its users (None: the shared one)."""

    variant: str
    host: str
    repo: Path
    stats_url: str | None = None
    locustfile: Path | None = None


def load_point(target: Target, workload: str, users: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One bounded headless Locust run of ``workload`` at ``users`` concurrent closed-loop users; for Triton, the
    statistics it added and the ensemble overhead."""
    from hybridrec.loadtests.runner import run_locust

    before = triton_stats(target.stats_url) if target.stats_url else None
    summary = run_locust(
        target.host,
        users=users,
        spawn_rate=users,  # everyone at once: the ramp is a negligible part of the run
        run_time_s=args.run_time,
        protocol="grpc",
        candidates=args.candidates,
        repo=target.repo,
        data=args.data,
        out_dir=out_dir,
        user_classes=(LOCUST_USERS[workload],),
        # A second -f replaces the shared Locust file (argparse keeps the last value).
        extra_args=[*(["-f", str(target.locustfile)] if target.locustfile else []), "--payloads", str(args.payloads)],
    )
    point: dict[str, Any] = {"users": users, "requests": summary.requests, "failures": summary.failures}
    point.update({k: round(getattr(summary, k), 2) for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms")})
    if target.stats_url and before is not None:
        point["triton_stats"] = stats_delta(before, triton_stats(target.stats_url), workload)
        point["overhead"] = ensemble_overhead(point["triton_stats"], workload, point["p50_ms"])
    return point


def sweep(target: Target, workload: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """One load point per user count."""
    points = []
    for users in args.users:
        point = load_point(target, workload, users, args, workdir / "locust" / target.variant / workload / f"u{users}")
        over = (point.get("overhead") or {}).get("overhead_ms")
        log(
            f"{target.variant} {workload} users={users}: {point['rps']:.1f} req/s, p50 {point['p50_ms']:.0f} ms, "
            f"p99 {point['p99_ms']:.0f} ms, {point['failures']} failures"
            + (f", ensemble overhead {over:.2f} ms" if over is not None else "")
        )
        points.append(point)
    return points


def perf_analyzer_sweep(
    pa: Any, grpc_url: str, http_url: str, workload: str, payloads: Sequence[Any], args: argparse.Namespace, out: Path
) -> list[dict[str, Any]]:
    """perf_analyzer against (b) at every user count as its concurrency, with the statistics delta of each point."""
    from hybridrec.loadtests.perf_analyzer import export_input_data, run_point

    data = export_input_data(payloads, out / f"{workload}-input-data.json")
    points = []
    for c in args.users:
        before = triton_stats(http_url)
        pt = run_point(pa, grpc_url, WORKLOADS[workload].name, data, c, out, duration_s=args.run_time)
        stats = stats_delta(before, triton_stats(http_url), workload)
        requests = pt.requests if pt.requests is not None else round(pt.rps * args.run_time)
        point: dict[str, Any] = {"users": c, "requests": requests, "failures": stats[workload]["failures"]}
        point.update({k: round(getattr(pt, k), 2) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")})
        point["avg_ms"] = round(pt.avg_ms, 2) if pt.avg_ms is not None else None
        point["triton_stats"] = stats
        point["overhead"] = ensemble_overhead(stats, workload, point["p50_ms"])
        log(
            f"perf_analyzer {workload} concurrency={c}: {point['rps']:.1f} req/s, p50 {point['p50_ms']:.1f} ms, "
            f"p99 {point['p99_ms']:.1f} ms, ensemble overhead {point['overhead'].get('overhead_ms')} ms"
        )
        points.append(point)
    return points


# --- the run ---------------------------------------------------------------------------------------------------------
def _csv_workloads(text: str) -> list[str]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"workloads are {sorted(WORKLOADS)}, got {text!r}")
    return names


SKIPPABLE = ("peer", "no-batching", "cpu-set", "perf-analyzer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hybridrec.loadtests.bench.run", description=(__doc__ or "").split("\n\n")[0]
    )
    what = p.add_argument_group("what is served")
    what.add_argument("--run", type=Path, default=Path("runs/demo"), help="trained run folder (the peer loads it)")
    what.add_argument(
        "--repo",
        type=Path,
        help="exported model repository of that run, served read-only (default: export --run into a temp folder)",
    )
    what.add_argument("--workloads", type=_csv_workloads, default=list(WORKLOADS), help="recommend,rank")
    what.add_argument(
        "--skip", type=skip_parser(SKIPPABLE), default=set(), help=f"parts to leave out: {','.join(SKIPPABLE)}"
    )
    load = p.add_argument_group("load (Locust and perf_analyzer, closed loop)")
    load.add_argument("--users", type=csv_ints, default=[1, 4, 8], help="user counts (= concurrency) of the sweep")
    load.add_argument(
        "--run-time", "--duration", dest="run_time", type=float, default=10.0, help="seconds of load per point"
    )
    for w, budget in DEFAULT_BUDGETS_MS.items():
        load.add_argument(f"--budget-{w}-ms", type=float, default=budget, help=f"p99 budget of `{w}`")
    load.add_argument("--candidates", type=int, default=50, help="movies per `rank` request (N)")
    load.add_argument("--payloads", type=int, default=32, help="distinct real requests per workload")
    load.add_argument("--data", help="MovieLens folder for the payloads (default: resolve_data_dir())")
    lim = p.add_argument_group("in-process limit")
    lim.add_argument("--limit-time", type=float, default=0.3, help="seconds per timing (best of 2 rounds)")
    lim.add_argument("--limit-batches", type=csv_ints, help="default 1, 2, 4 .. max batch, plus Triton's sizes")
    out = p.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"results.json/.md and the plot (default {DEFAULT_OUT}; `--out docs/perf` rewrites the committed ones)",
    )
    out.add_argument("--workdir", type=Path, help="keep the exported repos, Locust reports and logs here")
    return p


def run(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    from hybridrec.loadtests.bench.naive_peer import PeerServer
    from hybridrec.loadtests.payloads import PayloadPool, PoolKey
    from hybridrec.serving import TritonServer, find_tritonserver

    started = time.monotonic()
    skip = set(args.skip)
    budgets = {w: float(getattr(args, f"budget_{w}_ms")) for w in DEFAULT_BUDGETS_MS}
    info = machine()
    points: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in args.workloads}
    config_sets: dict[str, str] = {}
    pa_info: dict[str, Any] = {}
    with workdir(args.workdir) as work, contextlib.ExitStack() as stack:
        repo = args.repo
        if repo is None:
            from hybridrec.export.onnx_export import export_run

            repo = work / "repo"
            log(f"exporting {args.run} into {repo}")
            export_run(args.run, repo)
        repo = repo.resolve()
        # Every server starts now, side by side: start-up is not measured, and each one then waits idle (no CPU)
        # until its phase, and is stopped right after it. The stack stops whatever is left on any error.
        on = TritonServer(repo, log_file=work / "triton-default.log")  # "auto": the default set where it can be served
        config_sets["triton"] = on.config_set
        if on.config_set != "default":
            log(f"the default config set cannot be served here ({on.config_set_reason}): (b) and (d) serve the cpu set")
        stack.callback(on.stop)
        on.start()
        cpu = off = peer = None
        if "cpu-set" not in skip and on.config_set != "cpu":
            cpu = TritonServer(
                repo,
                binary=find_tritonserver(prefer_bundled=True),
                model_config_name="cpu",
                log_file=work / "triton-cpu.log",
            )
            config_sets["triton_cpu"] = cpu.config_set
            stack.callback(cpu.stop)
            cpu.start()
        if "no-batching" not in skip:
            off = TritonServer(
                unbatched_copy(repo, work / "repo-no-batching"),
                binary=on.binary,
                model_config_name=on.model_config_name,
                log_file=work / "triton-no-batching.log",
            )
            config_sets["triton_no_batching"] = off.config_set
            stack.callback(off.stop)
            off.start()
        if "peer" not in skip:
            peer = PeerServer(args.run, repo, log_file=work / "naive-peer.log")
            stack.callback(peer.stop)
            peer.start()
        # The same requests as the Locust users send (same options and seed): limit, answers and load agree.
        pool = PayloadPool(
            PoolKey(repo=str(repo), data=str(args.data or ""), candidates=args.candidates, payloads=args.payloads)
        )
        answers: dict[str, Any] = {}

        log(f"(b) Triton, {on.config_set} set, dynamic batching")
        on.wait_ready()
        info["tritonserver"] = server_version(on.http_url)
        answers["triton"] = triton_answers(on.grpc_url, pool)
        for w in args.workloads:
            points[w]["triton"] = sweep(Target("triton", on.grpc_url, repo, on.http_url), w, args, work)
        if "perf-analyzer" not in skip:
            from hybridrec.loadtests.perf_analyzer import (
                PerfAnalyzerError,
                PerfAnalyzerUnavailableError,
                find_perf_analyzer,
            )

            log(f"(b) Triton, {on.config_set} set, under perf_analyzer")
            try:
                pa = find_perf_analyzer()
                pa_info["executable"] = str(pa.executable)
                for w in args.workloads:
                    points[w]["perf_analyzer"] = perf_analyzer_sweep(
                        pa, on.grpc_url, on.http_url, w, pool.get(w), args, work / "perf_analyzer"
                    )
            except (PerfAnalyzerUnavailableError, PerfAnalyzerError) as e:
                pa_info["error"] = str(e).splitlines()[0]
                log(f"perf_analyzer left out: {e}")
        on.stop()

        log("(a) in-process limit")
        limits: dict[str, Limit] = {}
        for w in args.workloads:
            formed: dict[str, set[int]] = {}
            for p in points[w]["triton"]:
                for model, sizes in executions_of(p).items():
                    formed.setdefault(model, set()).update(sizes)
            requests = [p.arrays for p in pool.get(w)]
            limits[w] = measure_limit(
                repo, w, requests, batches=args.limit_batches, extra=formed, min_time_s=args.limit_time
            )
            peak, at = limits[w].peak_rps()
            log(f"limit {w}: peak {peak:.1f} req/s at batch {at}")

        if cpu is not None:
            log("(b2) Triton, cpu set (python backend)")
            cpu.wait_ready()
            for w in args.workloads:
                points[w]["triton_cpu"] = sweep(Target("triton_cpu", cpu.grpc_url, repo, cpu.http_url), w, args, work)
            cpu.stop()

        if off is not None:
            log(f"(d) Triton, {off.config_set} set, without dynamic batching")
            off.wait_ready()
            for w in args.workloads:
                target = Target("triton_no_batching", off.grpc_url, off.model_repository, off.http_url)
                points[w]["triton_no_batching"] = sweep(target, w, args, work)
            off.stop()

        if peer is not None:
            log("(c) naive peer")
            peer.wait_ready()
            answers["peer"] = peer_answers(peer, pool)
            for w in args.workloads:
                points[w]["naive_peer"] = sweep(
                    Target("naive_peer", peer.url, repo, None, PEER_LOCUSTFILE), w, args, work
                )
            peer.stop()

    info["load_after"] = load_average()
    summary = {w: summarise(w, budgets[w], points[w], limits.get(w)) for w in args.workloads}
    return {
        "command": command,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": info,
        "config_sets": config_sets,
        "perf_analyzer": pa_info or None,
        "settings": {
            "duration_s": args.run_time,
            "users": args.users,
            "candidates": args.candidates,
            "rank_slots": spec.rank_slots(args.candidates),
            "k": spec.DEFAULT_K,
            "payloads": args.payloads,
            "budgets_ms": budgets,
            "protocol": "grpc (Triton), HTTP/JSON (naive peer)",
            "load_generator": "Locust (closed loop, no think time, one process) and perf_analyzer (closed loop, "
            "synchronous gRPC), on the same machine",
        },
        "workloads": summary,
        "targets": targets(summary, args.candidates),
        "answers": compare_answers(answers["triton"], answers["peer"]) if "peer" in answers else None,
    }


def main(argv: list[str] | None = None, *, printer: Callable[[str], None] = print) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not args.run.joinpath("model.pt").exists():
        print(f"no trained model in {args.run}: run `hybridrec train --run {args.run}` first", file=sys.stderr)
        return 2
    command = " ".join(["python -m hybridrec.loadtests.bench.run", *argv])
    results = run(args, command)
    paths = write(results, args.out)
    m, cs = results["machine"], results["config_sets"]["triton"]
    printer(f"{m['cpu']}, {m['cores']} cores, load average {m['load_before']} before, {m['load_after']} after")
    printer(main_table(results["workloads"], cs))
    printer("")
    printer(targets_table(results["targets"]))
    printer("")
    printer(overhead_table(results["workloads"], cs))
    printer("")
    printer(sweep_table(results["workloads"], cs))
    printer(f"\nwritten: {', '.join(str(p) for p in paths.values())} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
