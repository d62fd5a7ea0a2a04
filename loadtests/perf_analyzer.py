"""Triton's ``perf_analyzer`` as a second load generator next to Locust: found (or installed) in a venv of its own,
fed with the load test's real requests, bounded in time, its CSV report parsed.

    python -m hybridrec.loadtests.perf_analyzer --url 127.0.0.1:8001 --repo REPO --workload rank \\
        --concurrency 1,4,8 --duration 10 [--out DIR]
    python -m hybridrec.loadtests.perf_analyzer --install      # only find or install it, print where

Where the binary comes from: ``pip install tritonclient[all]`` of recent releases carries a ``perf_analyzer``
placeholder (0.1.0) that measures nothing; the ``tritonclient==2.50.0`` wheel carries the real C++ binary. It is
installed with ``--no-deps`` into a **separate venv** (never the project's: that tritonclient stays as it is),
``$HYBRIDREC_PERF_ANALYZER_HOME`` or ``~/.cache/hybridrec/perf_analyzer-2.50.0``. The binary links two libraries
that the wheel does not ship: ``libcudart.so.12`` (the ``nvidia-cuda-runtime-cu12`` wheel, pip, into the same venv;
no GPU is needed, it is only loaded) and ``libb64.so.0d`` (Debian's ``libb64-0d``: the system's when installed,
else ``apt-get download`` + ``dpkg-deb -x`` into the venv, so nothing outside it changes). Both go on
``LD_LIBRARY_PATH`` of the perf_analyzer process only. ``$HYBRIDREC_PERF_ANALYZER`` names a binary to use instead.
When something cannot be had, :class:`PerfAnalyzerUnavailableError` says which package and how to get it.

How it measures: closed loop at a fixed concurrency (``--concurrency-range c:c``, synchronous gRPC calls, one thread
per request in flight), the requests taken in turn from an ``--input-data`` JSON file written from the payload pool
(:func:`export_input_data`: the same real requests the Locust users send). Each concurrency is one bounded process:
three ``time_windows`` of ``duration / 3`` each, and a stability threshold so wide that the three windows always
count (perf_analyzer otherwise keeps measuring, or gives up with no report, on a noisy shared machine); the report
covers all three windows. Latencies in its ``-f`` CSV are microseconds, client-side; :func:`parse_csv` turns them
into ms.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec

TRITONCLIENT_VERSION = "2.50.0"  # the last tritonclient wheel that carries the real perf_analyzer binary
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12"  # libcudart.so.12, which the binary links (no GPU needed)
LIBB64_DEB = "libb64-0d"  # libb64.so.0d, which the binary links (Debian package)
LIBB64 = "libb64.so.0d"
INSTALL_TIMEOUT_S = 600.0
# Extra seconds a perf_analyzer process gets beyond its measurement (start-up, warm-up, report), then it is killed.
MARGIN_S = 30.0
WINDOWS = 3
STABILITY_PERCENT = 1000  # max/min of the windows within 1000 %: the three windows always count as stable


class PerfAnalyzerUnavailableError(RuntimeError):
    """perf_analyzer could not be found or installed; ``package`` names what could not be had (None: not a package
    problem, e.g. the binary does not run)."""

    def __init__(self, message: str, package: str | None = None) -> None:
        super().__init__(message)
        self.package = package


class PerfAnalyzerError(RuntimeError):
    """A perf_analyzer run failed or wrote no report; the message carries the tail of its output."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """A runnable perf_analyzer: the binary and the library folders it needs on ``LD_LIBRARY_PATH``."""

    executable: Path
    library_dirs: tuple[Path, ...] = ()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        dirs = [str(d) for d in self.library_dirs]
        if env.get("LD_LIBRARY_PATH"):
            dirs.append(env["LD_LIBRARY_PATH"])
        if dirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs)
        return env

    def check(self) -> str:
        """``perf_analyzer --version``'s output; PerfAnalyzerUnavailableError when the binary does not run."""
        try:
            done = subprocess.run(
                [str(self.executable), "--version"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PerfAnalyzerUnavailableError(f"{self.executable} does not run: {e}") from None
        text = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or "Perf Analyzer" not in text:
            raise PerfAnalyzerUnavailableError(
                f"{self.executable} --version failed (exit {done.returncode}): {text[-800:]}"
            )
        return text


# --- finding and installing ------------------------------------------------------------------------------------------
def default_home() -> Path:
    """Where the separate venv lives: ``$HYBRIDREC_PERF_ANALYZER_HOME``, else beside the bundled tritonserver's copy
    in ``$XDG_CACHE_HOME/hybridrec`` (``~/.cache/hybridrec``)."""
    if os.environ.get("HYBRIDREC_PERF_ANALYZER_HOME"):
        return Path(os.environ["HYBRIDREC_PERF_ANALYZER_HOME"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hybridrec" / f"perf_analyzer-{TRITONCLIENT_VERSION}"


def _site_packages(venv: Path) -> list[Path]:
    return sorted(venv.glob("lib/python3*/site-packages"))


def _library_dirs(venv: Path) -> tuple[Path, ...]:
    dirs = [d / "nvidia" / "cuda_runtime" / "lib" for d in _site_packages(venv)]
    dirs.append(venv / "debian" / "usr" / "lib" / "x86_64-linux-gnu")
    dirs += list((venv / "debian" / "usr" / "lib").glob("*-linux-gnu"))
    return tuple(dict.fromkeys(d for d in dirs if d.is_dir()))


def _system_has(library: str) -> bool:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30, check=False).stdout
        return library in listing
    return False


def _run(cmd: list[str], what: str, package: str | None, timeout_s: float, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PerfAnalyzerUnavailableError(f"{what}: {' '.join(cmd)}: {e}", package) from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PerfAnalyzerUnavailableError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}", package)


def _install_libb64(venv: Path, timeout_s: float) -> None:
    """Debian's libb64-0d unpacked into ``<venv>/debian`` (no system change, no root needed)."""
    hint = f"`apt-get install -y {LIBB64_DEB}` (Debian/Ubuntu) provides {LIBB64} too"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PerfAnalyzerUnavailableError(
            f"perf_analyzer needs {LIBB64}: no apt-get/dpkg-deb here; {hint}", LIBB64_DEB
        )
    downloads = venv / "debs"
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir(parents=True)
    _run(["apt-get", "download", LIBB64_DEB], f"downloading {LIBB64_DEB} ({hint})", LIBB64_DEB, timeout_s, downloads)
    debs = sorted(downloads.glob(f"{LIBB64_DEB}_*.deb"))
    if not debs:
        raise PerfAnalyzerUnavailableError(
            f"apt-get download {LIBB64_DEB} left no .deb in {downloads}; {hint}", LIBB64_DEB
        )
    _run(["dpkg-deb", "-x", str(debs[-1]), str(venv / "debian")], f"unpacking {debs[-1].name}", LIBB64_DEB, timeout_s)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (concurrent test runs install once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install(home: Path | None = None, *, timeout_s: float = INSTALL_TIMEOUT_S) -> PerfAnalyzer:
    """Create the separate venv at ``home`` and install the real perf_analyzer and its libraries into it (a no-op
    when a previous install works). Raises :class:`PerfAnalyzerUnavailableError` naming the package that failed."""
    venv = Path(home) if home is not None else default_home()
    with _locked(venv.parent / f".{venv.name}.lock"):
        found = _installed(venv)
        if found is not None:
            return found
        python = venv / "bin" / "python"
        if not python.exists():
            base = getattr(sys, "_base_executable", None) or sys.executable
            _run([base, "-m", "venv", "--clear", str(venv)], "creating the perf_analyzer venv", None, timeout_s)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        _run([*pip, f"tritonclient=={TRITONCLIENT_VERSION}"], "pip install", "tritonclient", timeout_s)
        _run([*pip, CUDA_RUNTIME], "pip install", CUDA_RUNTIME, timeout_s)
        if not _system_has(LIBB64):
            _install_libb64(venv, timeout_s)
        pa = PerfAnalyzer(venv / "bin" / "perf_analyzer", _library_dirs(venv))
        if not pa.executable.is_file():
            raise PerfAnalyzerUnavailableError(
                f"tritonclient=={TRITONCLIENT_VERSION} installed no perf_analyzer binary in {venv / 'bin'}",
                "tritonclient",
            )
        pa.check()
        (venv / "hybridrec-perf-analyzer.json").write_text(
            json.dumps({"tritonclient": TRITONCLIENT_VERSION, "libraries": [str(d) for d in pa.library_dirs]}) + "\n"
        )
        return pa


def _installed(venv: Path) -> PerfAnalyzer | None:
    exe = venv / "bin" / "perf_analyzer"
    if not (venv / "hybridrec-perf-analyzer.json").is_file() or not exe.is_file():
        return None
    pa = PerfAnalyzer(exe, _library_dirs(venv))
    try:
        pa.check()
    except PerfAnalyzerUnavailableError:
        return None
    return pa


def find_perf_analyzer(home: Path | None = None, *, install_missing: bool = True) -> PerfAnalyzer:
    """A perf_analyzer that runs: ``$HYBRIDREC_PERF_ANALYZER``, else the separate venv's (installed there first
    when ``install_missing``). Raises :class:`PerfAnalyzerUnavailableError` with what is missing and how to get it."""
    explicit = os.environ.get("HYBRIDREC_PERF_ANALYZER")
    if explicit:
        venv = Path(explicit).resolve().parent.parent
        pa = PerfAnalyzer(Path(explicit), _library_dirs(venv))
        pa.check()
        return pa
    venv = Path(home) if home is not None else default_home()
    found = _installed(venv)
    if found is not None:
        return found
    if not install_missing:
        raise PerfAnalyzerUnavailableError(
            f"no perf_analyzer in {venv}: `python -m hybridrec.loadtests.perf_analyzer --install` installs it"
        )
    return install(venv)


# --- requests --------------------------------------------------------------------------------------------------------
def export_input_data(payloads: Sequence[Any], path: Path) -> Path:
    """perf_analyzer's ``--input-data`` JSON for a list of :class:`~hybridrec.loadtests.payloads.Payload` of one
    model: one step per request, sent in turn. Batching models get each tensor without its batch axis (perf_analyzer
    adds it, ``-b 1``); a model without batching (`recommend`) gets the full shape. Large tensors (posters) go as
    base64 of their raw bytes."""
    if not payloads:
        raise ValueError("export_input_data needs at least one payload")
    model = spec.model_spec(payloads[0].model)
    steps = []
    for p in payloads:
        if p.model != model.name:
            raise ValueError(f"payloads of several models: {model.name} and {p.model}")
        step: dict[str, Any] = {}
        for t in model.inputs:
            a = np.ascontiguousarray(p.arrays[t.name][0] if model.batched else p.arrays[t.name])
            if a.size > 4096:
                import base64

                step[t.name] = {"b64": base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}
            else:
                step[t.name] = {"content": a.reshape(-1).tolist(), "shape": list(a.shape)}
        steps.append(step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": steps}))
    return path


# --- running ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PerfPoint:
    """One perf_analyzer measurement at one concurrency (latencies client-side, ms)."""

    concurrency: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float | None  # not every version writes it
    server_queue_ms: float | None
    server_compute_ms: float | None  # compute input + infer + output, as perf_analyzer reports them
    requests: int | None = None  # from the console report, when found

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _us(row: dict[str, str], column: str) -> float | None:
    value = (row.get(column) or "").strip()
    try:
        return float(value) / 1000.0
    except ValueError:
        return None


def parse_csv(path: Path) -> list[PerfPoint]:
    """perf_analyzer's ``-f`` report: one row per concurrency, latencies in microseconds -> :class:`PerfPoint`."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PerfAnalyzerError(f"{path}: no measurement rows")
    points = []
    for row in rows:
        compute = [_us(row, f"Server Compute {part}") for part in ("Input", "Infer", "Output")]
        points.append(
            PerfPoint(
                concurrency=int(float(row["Concurrency"])),
                rps=float(row["Inferences/Second"]),
                p50_ms=_us(row, "p50 latency") or float("nan"),
                p90_ms=_us(row, "p90 latency") or float("nan"),
                p95_ms=_us(row, "p95 latency") or float("nan"),
                p99_ms=_us(row, "p99 latency") or float("nan"),
                avg_ms=_us(row, "Avg latency"),
                server_queue_ms=_us(row, "Server Queue"),
                server_compute_ms=sum(c for c in compute if c is not None)
                if any(c is not None for c in compute)
                else None,
            )
        )
    return points


def _request_count(text: str) -> int | None:
    for line in text.splitlines():  # the client section comes first: "    Request count: 2388"
        if line.strip().startswith("Request count:"):
            with contextlib.suppress(ValueError):
                return int(line.split(":", 1)[1])
    return None


def command(
    pa: PerfAnalyzer,
    url: str,
    model: str,
    input_data: Path,
    concurrency: int,
    csv_path: Path,
    *,
    duration_s: float,
    protocol: str = "grpc",
) -> list[str]:
    window_ms = max(200, int(duration_s * 1000 / WINDOWS))
    return [
        str(pa.executable),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(input_data),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-mode",
        "time_windows",
        "-p",
        str(window_ms),
        "-r",
        str(WINDOWS),
        "-s",
        str(STABILITY_PERCENT),
        "-f",
        str(csv_path),
    ]


def run_point(
    pa: PerfAnalyzer,
    url: str,
    model: str,
    input_data: Path,
    concurrency: int,
    out_dir: Path,
    *,
    duration_s: float = 10.0,
    protocol: str = "grpc",
    pids: list[int] | None = None,
) -> PerfPoint:
    """One perf_analyzer process at one concurrency, killed (its process group) if it outlives
    ``duration_s + MARGIN_S``; its output is kept in ``out_dir``."""
    if concurrency < 1 or duration_s <= 0:
        raise ValueError("concurrency and duration_s must be positive")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{model}-c{concurrency}.csv"
    csv_path.unlink(missing_ok=True)
    log_path = out_dir / f"{model}-c{concurrency}.log"
    cmd = command(pa, url, model, input_data, concurrency, csv_path, duration_s=duration_s, protocol=protocol)
    limit = duration_s + MARGIN_S
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=pa.env(), start_new_session=True
        )
    if pids is not None:
        pids.append(proc.pid)
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    text = log_path.read_text(errors="replace")
    tail = "\n".join(text.strip().splitlines()[-20:])
    if code is None:
        raise PerfAnalyzerError(f"perf_analyzer still running after {limit:.0f} s: killed\n{' '.join(cmd)}\n{tail}")
    if code != 0 or not csv_path.is_file():
        raise PerfAnalyzerError(f"perf_analyzer exited with code {code}\n{' '.join(cmd)}\n{tail}")
    (point,) = [p for p in parse_csv(csv_path) if p.concurrency == concurrency] or parse_csv(csv_path)[:1]
    count = _request_count(text)
    return PerfPoint(**{**asdict(point), "requests": count})


def measure(
    url: str,
    payloads: Sequence[Any],
    concurrency: Sequence[int],
    out_dir: Path,
    *,
    duration_s: float = 10.0,
    protocol: str = "grpc",
    pa: PerfAnalyzer | None = None,
    pids: list[int] | None = None,
) -> list[PerfPoint]:
    """perf_analyzer against a live server at every ``concurrency`` (ascending), sending ``payloads`` (one model's
    real requests) in turn; each point bounded by ``duration_s + MARGIN_S``."""
    pa = pa or find_perf_analyzer()
    model = payloads[0].model
    data = export_input_data(payloads, out_dir / f"{model}-input-data.json")
    return [
        run_point(pa, url, model, data, c, out_dir, duration_s=duration_s, protocol=protocol, pids=pids)
        for c in sorted(set(concurrency))
    ]


# --- command line ----------------------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hybridrec.loadtests.perf_analyzer",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--install", action="store_true", help="only find or install perf_analyzer and print where")
    p.add_argument("--url", help="Triton's gRPC address host:port")
    p.add_argument(
        "--repo",
        default=os.environ.get("HYBRIDREC_REPO", "model_repository"),
        help="model repository holding artifacts.json ($HYBRIDREC_REPO)",
    )
    p.add_argument("--data", help="MovieLens folder (default: resolve_data_dir())")
    p.add_argument("--workload", default="recommend", choices=("recommend", "rank", "rank_content", "encode_items"))
    p.add_argument("--concurrency", type=_ints, default=[1, 4, 8])
    p.add_argument(
        "--run-time", "--duration", dest="run_time", type=float, default=10.0, help="seconds of load per concurrency"
    )
    p.add_argument("--candidates", type=int, default=50)
    p.add_argument("--payloads", type=int, default=32)
    p.add_argument("--out", type=Path, help="reports folder (default runs/perf_analyzer/<timestamp>)")
    args = p.parse_args(argv)
    try:
        pa = find_perf_analyzer()
    except PerfAnalyzerUnavailableError as e:
        print(f"perf_analyzer unavailable: {e}", file=sys.stderr)
        return 2
    if args.install:
        print(
            f"{pa.executable} ({pa.check().splitlines()[0]}); LD_LIBRARY_PATH += {':'.join(map(str, pa.library_dirs))}"
        )
        return 0
    if not args.url:
        p.error("--url is required (or --install)")
    from hybridrec.loadtests.payloads import PayloadPool, PoolKey

    pool = PayloadPool(PoolKey(args.repo, args.data or "", candidates=args.candidates, payloads=args.payloads))
    out = args.out or Path("runs") / "perf_analyzer" / time.strftime("%Y%m%d-%H%M%S")
    try:
        points = measure(args.url, pool.get(args.workload), args.concurrency, out, duration_s=args.run_time, pa=pa)
    except PerfAnalyzerError as e:
        print(f"perf_analyzer failed: {e}", file=sys.stderr)
        return 1
    for pt in points:
        print(f"{args.workload} c={pt.concurrency}: {pt.rps:.1f} req/s, p50 {pt.p50_ms:.1f} ms, p99 {pt.p99_ms:.1f} ms")
    print(f"reports in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
