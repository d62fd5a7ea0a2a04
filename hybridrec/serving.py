"""Start and stop a real Triton Inference Server (``tritonserver``) from Python.

Two kinds of server binary are supported:

* a system install: ``tritonserver`` on ``PATH`` (for example inside the official NGC container), which carries
  every backend (onnxruntime, tensorrt, python, ...);
* the server bundled in the ``nvidia-pytriton`` wheel (``pip install 'hybridrec[serve]'``): tritonserver 2.51 with
  the python backend only, which runs on a CPU-only machine without Docker. Its ``pytriton/tritonserver/`` tree is
  copied once into a writable cache directory, the python backend stub that matches this interpreter is put into
  ``backends/python/``, ``LD_LIBRARY_PATH`` points at ``nvidia_pytriton.libs`` and the interpreter's ``bin/`` comes
  first on ``PATH``, so the stub embeds this Python and imports numpy/onnxruntime/hybridrec from this environment.

This module needs only the standard library, numpy and ``tritonclient`` (imported lazily, for readiness checks).

Example::

    with TritonServer(Path("model_repository")) as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hybridrec import admin

__all__ = [
    "ServerBinary",
    "ServerError",
    "TritonServer",
    "choose_config_set",
    "find_tritonserver",
    "free_port",
    "has_onnxruntime_backend",
    "port_in_use",
]

INSTALL_HINT = (
    "No Triton Inference Server found: install the bundled CPU server with `pip install 'hybridrec[serve]'` "
    "(the nvidia-pytriton wheel, Linux x86_64/aarch64) or run inside the official container "
    "(nvcr.io/nvidia/tritonserver:<yy.mm>-py3), where `tritonserver` is on PATH."
)
_MODEL_CONTROL_MODES = ("none", "poll", "explicit")
# Error lines that a CPU-only machine always prints; they are not the reason a start failed.
_HARMLESS_ERRORS = (
    "CudaDriverHelper has not been initialized",
    "Failed to initialize NVML",
    "DCGM unable to start",
    "CUDA driver version is insufficient",
    "Non-graceful termination detected",
)
_NP_DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_ERROR_LINE = re.compile(r"^(E\d{4} |\[libprotobuf (ERROR|FATAL)|error: |Error: |Traceback|\w*Error: )")


class ServerError(RuntimeError):
    """The server could not be found, started, or did not become ready. The message carries the server log."""


@dataclass(frozen=True)
class ServerBinary:
    """How to run one tritonserver executable."""

    executable: Path
    backend_dir: Path | None  # None when using a system install (tritonserver on PATH, e.g. the official container)
    cache_dir: Path | None
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the server process
    bundled: bool = False  # True = the pip-bundled server (python backend only)


# --------------------------------------------------------------------------------------------------------------------
# Finding a server binary
# --------------------------------------------------------------------------------------------------------------------


def _default_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "hybridrec"


def _prepend_path(value: str, existing: str | None, append: Sequence[str] = ()) -> str:
    parts = [value, *(existing.split(os.pathsep) if existing else []), *append]
    seen: set[str] = set()
    out: list[str] = []
    for part in parts:
        if part and part not in seen:
            seen.add(part)
            out.append(part)
    return os.pathsep.join(out)


def _bundled_copy_is_complete(root: Path) -> bool:
    exe = root / "bin" / "tritonserver"
    stub = root / "backends" / "python" / "triton_python_backend_stub"
    return (
        os.access(exe, os.X_OK)
        and os.access(stub, os.X_OK)
        and (root / "backends" / "python" / "libtriton_python.so").is_file()
    )


def _copy_bundled_tree(source: Path, stub: Path, target: Path) -> None:
    """Copy the wheel's server tree to ``target`` atomically (temporary copy, then rename); reuse a complete copy."""
    if _bundled_copy_is_complete(target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # an incomplete copy left by an older, interrupted layout: replace it
        shutil.rmtree(target, ignore_errors=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, tmp, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        dest_stub = tmp / "backends" / "python" / "triton_python_backend_stub"
        shutil.copy2(stub, dest_stub)
        dest_stub.chmod(dest_stub.stat().st_mode | 0o755)
        (tmp / "bin" / "tritonserver").chmod((tmp / "bin" / "tritonserver").stat().st_mode | 0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race; its copy is as good as ours.
            if not _bundled_copy_is_complete(target):
                raise
    except OSError as exc:
        raise ServerError(f"cannot copy the bundled tritonserver from {source} to {target}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _find_bundled(workdir: Path | None) -> ServerBinary | None:
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    source = package_dir / "tritonserver"
    if not (source / "bin" / "tritonserver").is_file():
        return None
    site_packages = package_dir.parent
    libs = site_packages / "nvidia_pytriton.libs"
    if not libs.is_dir():
        raise ServerError(f"nvidia-pytriton is installed but {libs} is missing; reinstall it. {INSTALL_HINT}")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in (source / "python_backend_stubs").glob("*") if p.is_dir())
        raise ServerError(
            f"the bundled tritonserver has no python backend stub for Python {py} (available: {available}); "
            "use one of those Python versions or a system tritonserver"
        )
    try:
        version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    # The stub is per Python version, so the copy is too (two venvs may share ~/.cache).
    name = f"tritonserver-{version}-py{py}"
    target = (workdir if workdir is not None else _default_cache_root()).expanduser().resolve() / name
    _copy_bundled_tree(source, stub, target)

    # The copied binaries lose their $ORIGIN-relative RPATH to nvidia_pytriton.libs: point the loader there.
    # The stub links libpython<X.Y>.so.1.0; append this interpreter's LIBDIR so that it embeds the same build of Python
    # as this process when that build is shared (pyenv, conda); the system libpython is the fallback.
    extra_libs: list[str] = []
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).exists():
        extra_libs.append(str(libdir))
    env = {
        "LD_LIBRARY_PATH": _prepend_path(str(libs), os.environ.get("LD_LIBRARY_PATH"), extra_libs),
        # The stub finds its Python home through `python3` on PATH: this venv's bin/ first -> this venv's packages.
        "PATH": _prepend_path(str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)),
    }
    return ServerBinary(
        executable=target / "bin" / "tritonserver",
        backend_dir=target / "backends",
        cache_dir=target / "caches",
        env=env,
        bundled=True,
    )


def find_tritonserver(prefer_bundled: bool = False, workdir: Path | None = None) -> ServerBinary:
    """Locate a tritonserver: the one on PATH unless ``prefer_bundled``, else the nvidia-pytriton wheel's.

    ``workdir`` is the directory under which the bundled server tree is copied (default
    ``$XDG_CACHE_HOME/hybridrec`` or ``~/.cache/hybridrec``); the copy is ``<workdir>/tritonserver-<version>-py<X.Y>``
    and is made once and reused. Raises :class:`ServerError` with an install hint when no server is available.
    """
    system = shutil.which("tritonserver")
    if system and not prefer_bundled:
        return ServerBinary(executable=Path(system), backend_dir=None, cache_dir=None, env={}, bundled=False)
    bundled = _find_bundled(workdir)
    if bundled is not None:
        return bundled
    if system:
        return ServerBinary(executable=Path(system), backend_dir=None, cache_dir=None, env={}, bundled=False)
    raise ServerError(INSTALL_HINT)


def has_onnxruntime_backend(binary: ServerBinary) -> bool:
    """Whether ``binary`` can serve ``platform: "onnxruntime_onnx"`` models. A system install (the official
    container) carries the backend; the bundled server has it once `hybridrec backend build` has installed it."""
    from hybridrec.backend_build import has_onnxruntime_backend as installed

    return binary.backend_dir is None or installed(binary.backend_dir)


def choose_config_set(binary: ServerBinary) -> tuple[str | None, str]:
    """(--model-config-name, why): the DEFAULT set (what the official container serves) wherever the onnxruntime
    backend exists, else the python-backend ``cpu`` set, which runs the same ONNX files in onnxruntime."""
    if binary.backend_dir is None:
        return None, "a system tritonserver: the official container's onnxruntime backend serves config.pbtxt"
    if has_onnxruntime_backend(binary):
        return None, f"the onnxruntime backend is installed in {binary.backend_dir}"
    return "cpu", (
        f"no onnxruntime backend in {binary.backend_dir}: the python-backend fallback "
        "(`hybridrec backend build` builds the official backend)"
    )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc (empty where there is no /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP ``port`` cannot be bound on ``host`` right now (another server holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A TCP port that is free on all interfaces right now (the server binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------------------------
# Running a server
# --------------------------------------------------------------------------------------------------------------------

_LIVE: set[TritonServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout_s=5.0)


atexit.register(_stop_all_at_exit)


def _arg_value(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``args`` (last one wins), else None."""
    value: str | None = None
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(args):
            value = args[i + 1]
    return value


def _is_false(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("false", "0", "no", "off")


class TritonServer:
    """A tritonserver child process. Use as a context manager (start + wait_ready on enter, stop on exit)."""

    def __init__(
        self,
        model_repository: Path,
        *,
        model_config_name: str | None = "auto",
        binary: ServerBinary | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_file: Path | None = None,
        extra_args: Sequence[str] = (),
        cache_config: str | None = None,
        model_control_mode: str = "none",
        startup_timeout_s: float = 120.0,
        host: str = "127.0.0.1",
        admin_key: str | None = None,
    ) -> None:
        """``host``: the address the three endpoints bind to (loopback unless told otherwise, e.g. "0.0.0.0" in a
        container). ``admin_key``: when set, the model-control, trace and logging APIs need it (hybridrec.admin)."""
        if model_control_mode not in _MODEL_CONTROL_MODES:
            raise ValueError(f"model_control_mode must be one of {_MODEL_CONTROL_MODES}, got {model_control_mode!r}")
        if model_config_name == "":
            raise ValueError("model_config_name must be a non-empty name, 'auto' or None (tritonserver rejects '')")
        self.model_repository = Path(model_repository).expanduser().resolve()
        self.binary = binary if binary is not None else find_tritonserver()
        if model_config_name == "auto":
            model_config_name, self.config_set_reason = choose_config_set(self.binary)
        else:
            self.config_set_reason = "asked for"
        self.model_config_name = model_config_name
        self.http_port, self.grpc_port, self.metrics_port = self._pick_ports(http_port, grpc_port, metrics_port)
        self._log_file_arg = Path(log_file) if log_file is not None else None
        self.log_path: Path | None = self._log_file_arg
        self.extra_args = tuple(extra_args)
        self.cache_config = cache_config
        self.model_control_mode = model_control_mode
        self.startup_timeout_s = float(startup_timeout_s)
        self.server_id = _arg_value(self.extra_args, "--id") or f"hybridrec-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.host = host
        self.admin_key = admin.check_key(admin_key) if admin_key is not None else None
        # The python backend's shared-memory regions carry this prefix, so that stop() can remove exactly ours.
        self.shm_prefix = f"hybridrec_{uuid.uuid4().hex[:12]}_"
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._stop_lock = threading.Lock()

    @staticmethod
    def _pick_ports(*requested: int | None) -> tuple[int, int, int]:
        fixed = [p for p in requested if p is not None]
        if len(set(fixed)) != len(fixed):
            raise ValueError(f"http, grpc and metrics ports must be distinct, got {requested}")
        taken = set(fixed)
        ports: list[int] = []
        for port in requested:
            if port is None:
                for _ in range(100):
                    port = free_port()
                    if port not in taken:
                        break
                else:  # pragma: no cover - the kernel hands out distinct ephemeral ports
                    raise ServerError("could not find three distinct free ports")
                taken.add(port)
            ports.append(port)
        return ports[0], ports[1], ports[2]

    # ---------------------------------------------------------------------------------------------------------------
    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def http_url(self) -> str:
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self._connect_host}:{self.metrics_port}"

    @property
    def config_set(self) -> str:
        """The config set served: "default" (config.pbtxt) or the --model-config-name."""
        return self.model_config_name or "default"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line that :meth:`start` runs."""
        b = self.binary
        args = [str(b.executable), f"--model-repository={self.model_repository}"]
        args += [
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.admin_key is not None:
            args += admin.server_args(self.admin_key)
        if b.backend_dir is not None:
            args.append(f"--backend-directory={b.backend_dir}")
        if b.cache_dir is not None:
            args.append(f"--cache-directory={b.cache_dir}")
        if self.model_config_name is not None:
            args.append(f"--model-config-name={self.model_config_name}")
        args += [
            f"--model-control-mode={self.model_control_mode}",
            "--log-verbose=0",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--allow-metrics=true",
            # p50/p99 per model on /metrics (the dashboard's quantiles), as the container's entrypoint does too
            "--metrics-config=summary_latencies=true",
        ]
        if _arg_value(self.extra_args, "--id") is None:
            args.append(f"--id={self.server_id}")
        if self.cache_config is not None:
            args.append(f"--cache-config={self.cache_config}")
        args += list(self.extra_args)
        return args

    def start(self) -> TritonServer:
        """Launch the server (does not wait for readiness; see :meth:`wait_ready`)."""
        if self.alive:
            raise ServerError(f"tritonserver already running (pid {self.pid})")
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} is not a directory")
        if not os.access(self.binary.executable, os.X_OK):
            raise ServerError(f"{self.binary.executable} is not an executable file. {INSTALL_HINT}")
        if self._log_file_arg is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        else:
            self.log_path = self._log_file_arg
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.binary.env}
        self._returncode = None
        with open(self.log_path, "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # own process group: stop() signals the python backend stubs too
                )
            except OSError as exc:
                raise ServerError(f"cannot run {self.binary.executable}: {exc}") from exc
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    # ---------------------------------------------------------------------------------------------------------------
    def wait_ready(self, models: Sequence[str] | None = None, timeout_s: float | None = None) -> None:
        """Block until the server is live and the models are ready; raise :class:`ServerError` otherwise.

        ``models=None`` waits for every model in the repository index (in explicit mode: those being loaded).
        The server that answers must be this one (its ``--id`` over HTTP and gRPC) and our process must be alive:
        another tritonserver may already hold a port.
        """
        if self._proc is None:
            raise ServerError("tritonserver was not started; call start() first")
        try:
            import tritonclient.grpc as grpcclient
            import tritonclient.http as httpclient
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ServerError(f"tritonclient is needed to check readiness: {exc}. {INSTALL_HINT}") from exc

        timeout = self.startup_timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + timeout
        check_grpc = not _is_false(_arg_value(self.extra_args, "--allow-grpc"))
        check_metrics = not _is_false(_arg_value(self.extra_args, "--allow-metrics"))
        pending = "server live"
        last_error = ""
        http = httpclient.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=5.0)
        grpc = grpcclient.InferenceServerClient(self.grpc_url) if check_grpc else None
        try:
            while True:
                self._raise_if_exited("before becoming ready")
                if time.monotonic() > deadline:
                    headline = f"tritonserver not ready after {timeout:.0f} s (waiting for {pending}{last_error})"
                    raise ServerError(self._describe(headline))
                try:
                    pending = self._check_ready(http, grpc, models, check_metrics)
                    last_error = ""
                except ServerError:
                    raise
                except Exception as exc:  # connection refused, reset, ... while it starts
                    last_error = f"; last error: {type(exc).__name__}: {exc}"
                if not pending:
                    self._raise_if_exited("right after answering ready (a port may be held by another server)")
                    return
                time.sleep(0.1)
        finally:
            with contextlib.suppress(Exception):
                http.close()
            if grpc is not None:
                with contextlib.suppress(Exception):
                    grpc.close()

    def _check_ready(self, http: Any, grpc: Any, models: Sequence[str] | None, check_metrics: bool) -> str:
        """Return what is still pending ('' when ready); raise ServerError when a model failed for good."""
        if not http.is_server_live():
            return "server live"
        if http.get_server_metadata().get("name") != self.server_id:
            return f"our server on HTTP port {self.http_port} (another server answers there)"
        if grpc is not None and grpc.get_server_metadata().name != self.server_id:
            return f"our server on gRPC port {self.grpc_port} (another server answers there)"
        index = http.get_model_repository_index(headers=admin.headers(self.admin_key))
        states = {m.get("name"): m for m in index}
        if models is None:
            if self.model_control_mode == "explicit":
                wanted = [n for n, m in states.items() if m.get("state") in ("READY", "LOADING")]
            else:
                wanted = list(states)
        else:
            wanted = list(models)
        for name in wanted:
            if http.is_model_ready(name):
                continue
            entry = states.get(name, {})
            reason = entry.get("reason") or ""
            if entry.get("state") == "UNAVAILABLE" and reason and reason != "unloaded":
                raise ServerError(self._describe(f"model {name!r} failed to load: {reason}"))
            return f"model {name!r}"
        if not wanted and not http.is_server_ready():
            return "server ready"
        if check_metrics and not self._metrics_answer():
            return "metrics endpoint"
        return ""

    def _metrics_answer(self) -> bool:
        with socket.create_connection((self._connect_host, self.metrics_port), timeout=2.0) as sock:
            sock.sendall(f"GET /metrics HTTP/1.0\r\nHost: {self.metrics_url}\r\n\r\n".encode())
            head = sock.recv(64)
        return head.startswith(b"HTTP/1.") and b" 200" in head

    def _raise_if_exited(self, when: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            self._returncode = code
            self._kill_group()
            self.remove_shared_memory()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            raise ServerError(self._describe(f"tritonserver exited with code {code} {when}"))

    # ---------------------------------------------------------------------------------------------------------------
    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGINT to the process group, wait up to ``timeout_s``, then SIGKILL. Idempotent; returns the exit code."""
        with self._stop_lock:
            proc = self._proc
            if proc is None:
                return 0 if self._returncode is None else self._returncode
            if proc.poll() is None:
                self._signal_group(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    proc.wait()
            self._returncode = proc.returncode
            self._kill_group()  # python backend stubs left behind by a crashed or killed server
            self.remove_shared_memory()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            return self._returncode

    def remove_shared_memory(self) -> list[Path]:
        """Delete the python backend's /dev/shm regions of this server (a killed server leaves them behind)."""
        removed = []
        for path in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
        return removed

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - the group is ours; fall back to the leader only
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def _kill_group(self, wait_s: float = 2.0) -> None:
        """SIGKILL whatever is left in the server's process group (the leader itself is already gone), and wait until
        the group is gone: a killed stub lives on for a moment, still holding its shared memory."""
        if self._proc is None:
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return
            if not group_members(self._proc.pid) or time.monotonic() > deadline:
                return
            time.sleep(0.02)

    # ---------------------------------------------------------------------------------------------------------------
    def probe(self, models: Sequence[str] | None = None, timeout_s: float = 10.0) -> dict[str, str]:
        """Send each model one zero-filled request shaped from its own metadata; returns {model: error} for the
        models that failed. Readiness alone does not tell: a python-backend instance whose stub died still reads
        READY, while every request to it fails."""
        import numpy as np
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=timeout_s)
        failed: dict[str, str] = {}
        try:
            index = client.get_model_repository_index(headers=admin.headers(self.admin_key))
            names = list(models) if models is not None else [m["name"] for m in index if m.get("state") == "READY"]
            for name in names:
                try:
                    meta = client.get_model_metadata(name)
                    if client.get_model_config(name).get("platform") == "ensemble":
                        continue  # its steps are probed themselves
                    inputs = []
                    for t in meta["inputs"]:
                        shape = [1 if d == -1 else d for d in t["shape"]]
                        x = httpclient.InferInput(t["name"], shape, t["datatype"])
                        dtype = np.object_ if t["datatype"] == "BYTES" else _NP_DTYPES[t["datatype"]]
                        x.set_data_from_numpy(np.zeros(shape, dtype))
                        inputs.append(x)
                    client.infer(name, inputs)
                except Exception as exc:  # an unhealthy stub, a crashed instance, a model that never loaded
                    failed[name] = str(exc)
        finally:
            client.close()
        return failed

    def heal(self) -> dict[str, str]:
        """Probe every loaded model and reload the ones that fail (explicit model control: unload, then load, so
        readiness reads false until the model serves again). Returns {model: why it was reloaded}."""
        if self.model_control_mode != "explicit":
            raise ServerError("heal() needs --model-control-mode=explicit")
        import tritonclient.http as httpclient

        failed = self.probe()
        if failed:
            client = httpclient.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=120.0)
            try:
                headers = admin.headers(self.admin_key)
                for name in failed:
                    with contextlib.suppress(Exception):
                        client.unload_model(name, headers=headers)
                    client.load_model(name, headers=headers)
            finally:
                client.close()
        return failed

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log (empty when there is none yet)."""
        return "\n".join(self._read_log_lines()[-lines:]) if lines > 0 else ""

    def _read_log_lines(self, max_bytes: int = 1 << 20) -> list[str]:
        if self.log_path is None or not self.log_path.is_file():
            return []
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
        return data.decode("utf-8", errors="replace").splitlines()

    def _describe(self, headline: str, lines: int = 40) -> str:
        all_lines = self._read_log_lines()
        errors = [
            ln.strip()
            for ln in all_lines
            if _ERROR_LINE.match(ln.strip()) and not any(h in ln for h in _HARMLESS_ERRORS)
        ]
        parts = [headline, f"command: {' '.join(self.command())}", f"log: {self.log_path}"]
        if errors:
            parts.append("errors in the server log:\n  " + "\n  ".join(errors[-15:]))
        tail = "\n".join(all_lines[-lines:])
        parts.append(f"--- last {lines} lines of the server log ---\n{tail}" if tail else "(the server log is empty)")
        return "\n".join(parts)

    # ---------------------------------------------------------------------------------------------------------------
    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(timeout_s=10.0)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"TritonServer(pid={self.pid}, {state}, http={self.http_url}, grpc={self.grpc_url})"
