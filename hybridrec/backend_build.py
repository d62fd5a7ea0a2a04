"""Build Triton's official onnxruntime backend (branch r24.10) from source for the pip-bundled tritonserver 2.51.

The ``nvidia-pytriton`` wheel bundles tritonserver 2.51 (release r24.10) with the python backend only. This module
compiles ``github.com/triton-inference-server/onnxruntime_backend`` at the same branch against the ONNX Runtime
library of the pip ``onnxruntime`` wheel, on a CPU machine, and installs it as ``<backends>/onnxruntime/`` so that the
bundled server serves ``platform: "onnxruntime_onnx"`` models, as the official container does.

Sources come from an offline mirror folder (the "vendor layout")::

    <source>/triton-r24.10/{onnxruntime_backend,backend,core,common}-r24.10.tar.gz  (+ optional <name>-r24.10.commit)
    <source>/onnxruntime-c-api-1.19.0/onnxruntime_c_api.h

or, without a mirror, from GitHub with ``git`` (the same trees). Build needs: cmake >= 3.18, a C++17 compiler, make,
patchelf and the rapidjson headers (Debian: ``apt-get install -y cmake g++ make patchelf rapidjson-dev``).

Only the standard library is imported here; :func:`bundled_backends_dir` imports :mod:`hybridrec.serving` lazily.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "APT_PACKAGES",
    "BackendBuildError",
    "MissingPrerequisitesError",
    "build_onnxruntime_backend",
    "build_prerequisites",
    "bundled_backends_dir",
    "default_source",
    "has_onnxruntime_backend",
    "is_vendor_source",
    "onnxruntime_backend_dir",
]

BRANCH = "r24.10"  # the release of the bundled tritonserver 2.51.0; the backend API must match the server's
REPOS = ("onnxruntime_backend", "backend", "core", "common")
UPSTREAM = "https://github.com/triton-inference-server"
# The C API header only grows, so an older header builds against the newer pip library; 1.19 is what r24.10 used.
ORT_HEADER_VERSION = "1.19.0"
ORT_HEADER_URL = (
    "https://raw.githubusercontent.com/microsoft/onnxruntime/v{version}/include/onnxruntime/core/session/"
    "onnxruntime_c_api.h"
)
APT_PACKAGES = ("cmake", "g++", "make", "patchelf", "rapidjson-dev")
RAPIDJSON_HEADER = Path("/usr/include/rapidjson/document.h")
BACKEND_LIB = "libtriton_onnxruntime.so"
ORT_SONAME = "libonnxruntime.so.1"
BUILD_INFO = "hybridrec-build.json"
MIN_CMAKE = (3, 18)  # core r24.10's cmake_minimum_required
_LOG_TAIL_LINES = 40


class BackendBuildError(RuntimeError):
    """The onnxruntime backend could not be built or installed; the message says why and what to do."""


class MissingPrerequisitesError(BackendBuildError):
    """Tools, headers or libraries needed for the build are missing (``missing`` lists them)."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            "cannot build the onnxruntime backend, missing: "
            + "; ".join(self.missing)
            + f" (Debian/Ubuntu: apt-get install -y {' '.join(APT_PACKAGES)}; pip install 'hybridrec[serve]')"
        )


# --------------------------------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------------------------------


def onnxruntime_backend_dir(backend_dir: Path) -> Path:
    """The folder of the onnxruntime backend inside a server's ``--backend-directory``."""
    return Path(backend_dir) / "onnxruntime"


def has_onnxruntime_backend(backend_dir: Path) -> bool:
    """True when ``<backend_dir>/onnxruntime/`` holds the backend library and the libonnxruntime.so.1 it loads."""
    folder = onnxruntime_backend_dir(backend_dir)
    # exists() follows symlinks: a dangling libonnxruntime.so.1 link counts as missing.
    return (folder / BACKEND_LIB).is_file() and (folder / ORT_SONAME).exists()


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (importing onnxruntime is slow)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _onnxruntime_library() -> Path | None:
    """The versioned ``libonnxruntime.so.1.X.Y`` of the pip onnxruntime wheel (the real file, not a link)."""
    pkg = _package_dir("onnxruntime")
    if pkg is None:
        return None
    found = sorted(p for p in (pkg / "capi").glob("libonnxruntime.so.1*") if p.is_file() and not p.is_symlink())
    return found[-1] if found else None


def _tritonserver_library() -> Path | None:
    """The wheel's ``nvidia_pytriton.libs/libtritonserver-<hash>.so`` (auditwheel renamed it)."""
    pkg = _package_dir("pytriton")
    if pkg is None:
        return None
    found = sorted((pkg.parent / "nvidia_pytriton.libs").glob("libtritonserver*.so*"))
    return found[0] if found else None


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX", ""), "c++", "g++", "clang++"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _cmake_version(cmake: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def build_prerequisites() -> list[str]:
    """What the build lacks, one readable item each (with the Debian package); empty when a build can run."""
    missing: list[str] = []
    cmake = shutil.which("cmake")
    if cmake is None:
        missing.append("cmake (Debian package cmake)")
    else:
        version = _cmake_version(cmake)
        if version is not None and version < MIN_CMAKE:
            have = ".".join(map(str, version))
            missing.append(f"cmake >= {'.'.join(map(str, MIN_CMAKE))} (found {have}; Debian package cmake)")
    if _cxx_compiler() is None:
        missing.append("a C++17 compiler (Debian package g++)")
    if shutil.which("make") is None:
        missing.append("make (Debian package make)")
    if shutil.which("patchelf") is None:
        missing.append("patchelf (Debian package patchelf)")
    if not RAPIDJSON_HEADER.is_file():
        missing.append(f"rapidjson headers, {RAPIDJSON_HEADER} (Debian package rapidjson-dev)")
    if _onnxruntime_library() is None:
        missing.append("the ONNX Runtime library of the pip onnxruntime wheel (pip install onnxruntime)")
    if _tritonserver_library() is None:
        missing.append("the nvidia_pytriton libs with libtritonserver (pip install 'hybridrec[serve]')")
    return missing


def is_vendor_source(source: Path) -> bool:
    """True when ``source`` is a mirror folder: the four r24.10 tarballs and the ONNX Runtime C API header."""
    return not _vendor_problems(Path(source))


def _vendor_problems(source: Path) -> list[str]:
    wanted = [source / f"triton-{BRANCH}" / f"{repo}-{BRANCH}.tar.gz" for repo in REPOS]
    wanted.append(source / f"onnxruntime-c-api-{ORT_HEADER_VERSION}" / "onnxruntime_c_api.h")
    return [str(p.relative_to(source)) for p in wanted if not p.is_file()]


def default_source() -> Path | None:
    """The mirror folder: ``$HYBRIDREC_BACKEND_SOURCE``, else ``../shared/vendor`` beside the repository or cwd."""
    env = os.environ.get("HYBRIDREC_BACKEND_SOURCE")
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parent.parent
    for base in (repo_root, Path.cwd()):
        candidate = (base / ".." / "shared" / "vendor").resolve()
        if candidate.is_dir():
            return candidate
    return None


def bundled_backends_dir() -> Path:
    """The ``backends`` folder of the bundled server's writable copy (made on first use, see hybridrec.serving)."""
    from hybridrec.serving import ServerError, find_tritonserver

    try:
        binary = find_tritonserver(prefer_bundled=True)
    except ServerError as exc:
        raise BackendBuildError(f"the bundled tritonserver is not usable: {exc}") from exc
    if not binary.bundled or binary.backend_dir is None:
        raise BackendBuildError(
            "the bundled tritonserver (nvidia-pytriton) is not installed: pip install 'hybridrec[serve]' "
            "(a system tritonserver, e.g. the official container, already has the onnxruntime backend)"
        )
    return binary.backend_dir


# --------------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------------


class _Runner:
    """Runs build steps with their output appended to one log file; a failure raises with the log's tail."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def __call__(self, step: str, cmd: Sequence[str | Path], cwd: Path | None = None) -> str:
        args = [str(c) for c in cmd]
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n===== {step}: {' '.join(args)}\n")
            log.flush()
            try:
                proc = subprocess.run(
                    args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
                )
            except OSError as exc:
                raise BackendBuildError(f"{step}: cannot run {args[0]}: {exc}") from exc
            log.write(proc.stdout)
        if proc.returncode != 0:
            raise BackendBuildError(f"{step} failed (exit {proc.returncode}); log: {self.log_path}\n{self.tail()}")
        return proc.stdout

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- last {lines} lines of the build log ---\n" + "\n".join(text[-lines:])


def _unpack_vendor(source: Path, src_dir: Path) -> tuple[dict[str, str], Path]:
    """Unpack the four tarballs into ``src_dir``; return the recorded commits and the C API header."""
    commits: dict[str, str] = {}
    for repo in REPOS:
        tarball = source / f"triton-{BRANCH}" / f"{repo}-{BRANCH}.tar.gz"
        try:
            with tarfile.open(tarball) as tar:
                # The "data" filter refuses links or paths that leave src_dir (Python >= 3.11.4 / 3.12).
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(src_dir, filter="data")
                else:  # pragma: no cover - older Pythons
                    tar.extractall(src_dir)
        except (OSError, tarfile.TarError) as exc:
            raise BackendBuildError(f"cannot unpack {tarball}: {exc}") from exc
        if not (src_dir / repo / "CMakeLists.txt").is_file():
            raise BackendBuildError(f"{tarball} does not hold a {repo}/ source tree")
        commit_file = tarball.with_name(f"{repo}-{BRANCH}.commit")
        commits[repo] = commit_file.read_text().strip() if commit_file.is_file() else "unknown"
    return commits, source / f"onnxruntime-c-api-{ORT_HEADER_VERSION}" / "onnxruntime_c_api.h"


def _clone_upstream(src_dir: Path, run: _Runner) -> tuple[dict[str, str], Path]:
    """Clone the four repositories at the release branch and download the C API header (needs internet)."""
    git = shutil.which("git")
    if git is None:
        raise BackendBuildError(
            "no source: no mirror folder found (pass --source DIR or set HYBRIDREC_BACKEND_SOURCE) and git is not "
            "installed to clone github.com/triton-inference-server (apt-get install -y git)"
        )
    commits: dict[str, str] = {}
    try:
        for repo in REPOS:
            url = f"{UPSTREAM}/{repo}.git"
            run(f"git clone {repo}", [git, "clone", "--depth", "1", "--branch", BRANCH, url, src_dir / repo])
            commits[repo] = run(f"git rev-parse {repo}", [git, "-C", src_dir / repo, "rev-parse", "HEAD"]).strip()
    except BackendBuildError as exc:
        raise BackendBuildError(
            f"cannot clone the sources from {UPSTREAM} (no internet? use a mirror folder: --source DIR): {exc}"
        ) from exc
    header = src_dir / "onnxruntime_c_api.h"
    url = ORT_HEADER_URL.format(version=ORT_HEADER_VERSION)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            header.write_bytes(response.read())
    except OSError as exc:
        raise BackendBuildError(f"cannot download the ONNX Runtime C API header from {url}: {exc}") from exc
    return commits, header


def _skip_common_tests(common: Path, log: Callable[[str], None]) -> None:
    # common r24.10 always adds its tests, whose FetchContent downloads googletest: impossible offline, not needed.
    cmakelists = common / "src" / "CMakeLists.txt"
    text = cmakelists.read_text()
    patched, count = re.subn(
        r"^(\s*)add_subdirectory\(\s*test\s*\)",
        r"\1# add_subdirectory(test)  # hybridrec: tests not built",
        text,
        flags=re.MULTILINE,
    )
    if count:
        cmakelists.write_text(patched)
    else:
        log(f"note: no add_subdirectory(test) in {cmakelists} (a newer layout?); building it unchanged")


def _ort_lib_dir(ort_lib: Path, lib_dir: Path) -> None:
    # find_library(NAMES onnxruntime) wants an unversioned libonnxruntime.so; the wheel has only the versioned file.
    lib_dir.mkdir(parents=True, exist_ok=True)
    (lib_dir / ort_lib.name).symlink_to(ort_lib)
    for name in (ORT_SONAME, "libonnxruntime.so"):
        if name != ort_lib.name:
            (lib_dir / name).symlink_to(ort_lib.name)


def _soname(run: _Runner, patchelf: str, library: Path) -> str:
    soname = run("read SONAME", [patchelf, "--print-soname", library]).strip()
    if not soname:
        raise BackendBuildError(f"{library} has no SONAME")
    return soname


def _onnxruntime_version(ort_lib: Path) -> str:
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ort_lib.name.removeprefix("libonnxruntime.so.")


def _stage(
    installed: Path,
    stage: Path,
    ort_lib: Path,
    server_soname: str,
    run: _Runner,
    patchelf: str,
    info: dict[str, object],
) -> None:
    """Make the complete backend folder at ``stage``: patched backend library, ONNX Runtime beside it, build info."""
    stage.mkdir(parents=True)
    backend = stage / BACKEND_LIB
    shutil.copy2(installed / BACKEND_LIB, backend)
    # The wheel renamed libtritonserver.so (auditwheel); unpatched, every model fails to load the backend.
    run("patchelf", [patchelf, "--replace-needed", "libtritonserver.so", server_soname, backend])
    needed = run("patchelf --print-needed", [patchelf, "--print-needed", backend]).split()
    if server_soname not in needed:
        raise BackendBuildError(f"{backend} does not need {server_soname} after patchelf (NEEDED: {needed})")
    # The backend's RUNPATH is $ORIGIN: the ONNX Runtime library must sit beside it.
    shutil.copy2(ort_lib, stage / ort_lib.name)
    if ort_lib.name != ORT_SONAME:
        (stage / ORT_SONAME).symlink_to(ort_lib.name)
    (stage / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _install_atomically(stage: Path, target: Path) -> None:
    """Rename the staged folder into place; an old folder is moved aside first and removed afterwards."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(stage, target)
    except OSError:
        # Renaming onto a non-empty folder fails: a concurrent build installed its copy, as good as ours.
        if not has_onnxruntime_backend(target.parent):
            if old is not None and not target.exists():
                os.rename(old, target)
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_onnxruntime_backend(
    backends_dir: Path,
    source: Path | None = None,
    *,
    work_dir: Path | None = None,
    jobs: int = 2,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the onnxruntime backend and install it as ``<backends_dir>/onnxruntime/``; return that folder.

    ``source`` is a mirror folder (see :func:`is_vendor_source`); None means :func:`default_source`, and without a
    mirror the sources are cloned from GitHub. ``work_dir`` keeps the sources, build tree and ``build.log``
    (default: a temporary folder, removed after a successful build). An installed backend is kept unless ``force``.
    Raises :class:`MissingPrerequisitesError` or :class:`BackendBuildError`.
    """
    started = time.monotonic()
    backends_dir = Path(backends_dir).expanduser().resolve()
    target = onnxruntime_backend_dir(backends_dir)
    if has_onnxruntime_backend(backends_dir) and not force:
        log(f"the onnxruntime backend is already installed in {target} (--force or force=True rebuilds it)")
        return target
    missing = build_prerequisites()
    if missing:
        raise MissingPrerequisitesError(missing)
    if jobs < 1:
        raise BackendBuildError(f"jobs must be >= 1, got {jobs}")

    if source is None:
        source = default_source()
    if source is not None:
        source = Path(source).expanduser().resolve()
        problems = _vendor_problems(source)
        if problems:
            raise BackendBuildError(f"{source} is not a source mirror folder; missing: {', '.join(problems)}")

    ort_lib = _onnxruntime_library()
    server_lib = _tritonserver_library()
    cmake = shutil.which("cmake")
    patchelf = shutil.which("patchelf")
    assert ort_lib is not None and server_lib is not None and cmake and patchelf  # checked by build_prerequisites

    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="hybridrec-onnxruntime-backend-")) if work_dir is None else Path(work_dir)
    work = work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("src", "build", "install", "ort"):  # stale trees from an earlier run would mix in
        shutil.rmtree(work / sub, ignore_errors=True)
    src_dir, build_dir, install_dir, ort_dir = (work / s for s in ("src", "build", "install", "ort"))
    src_dir.mkdir()
    log_path = work / "build.log"
    log_path.write_text(f"hybridrec: onnxruntime backend {BRANCH} build, source {source or UPSTREAM}\n")
    run = _Runner(log_path)

    if source is not None:
        log(f"unpacking the {BRANCH} sources from {source}")
        commits, header = _unpack_vendor(source, src_dir)
    else:
        log(f"no mirror folder: cloning {UPSTREAM}/{{{','.join(REPOS)}}} at {BRANCH}")
        commits, header = _clone_upstream(src_dir, run)
    _skip_common_tests(src_dir / "common", log)
    (ort_dir / "include").mkdir(parents=True)
    shutil.copy2(header, ort_dir / "include" / "onnxruntime_c_api.h")
    _ort_lib_dir(ort_lib, ort_dir / "lib")
    server_soname = _soname(run, patchelf, server_lib)

    configure: list[str | Path] = [
        cmake, "-S", src_dir / "onnxruntime_backend", "-B", build_dir,
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_INSTALL_PREFIX={install_dir}",
        "-DTRITON_ENABLE_GPU=OFF",
        "-DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF",
        "-DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF",
        f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={ort_dir / 'include'}",
        # A library path skips the backend's Docker build of ONNX Runtime.
        f"-DTRITON_ONNXRUNTIME_LIB_PATHS={ort_dir / 'lib'}",
        *(f"-DTRITON_{name}_REPO_TAG={BRANCH}" for name in ("BACKEND", "CORE", "COMMON")),
        # Everything is unpacked already: FetchContent must not reach the network.
        "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
        *(f"-DFETCHCONTENT_SOURCE_DIR_REPO-{repo.upper()}={src_dir / repo}" for repo in ("common", "core", "backend")),
    ]  # fmt: skip
    log(f"configuring with cmake (log: {log_path})")
    run("cmake configure", configure)
    log(f"compiling (-j{jobs})")
    run("cmake build", [cmake, "--build", build_dir, "--parallel", str(jobs)])
    run("cmake install", [cmake, "--install", build_dir])
    installed = install_dir / "backends" / "onnxruntime"
    if not (installed / BACKEND_LIB).is_file():
        raise BackendBuildError(f"cmake install gave no {installed / BACKEND_LIB}; log: {log_path}\n{run.tail()}")

    info: dict[str, object] = {
        "branch": BRANCH,
        "source": str(source) if source is not None else UPSTREAM,
        "commits": commits,
        "onnxruntime_version": _onnxruntime_version(ort_lib),
        "onnxruntime_library": ort_lib.name,
        "onnxruntime_c_api_header": ORT_HEADER_VERSION,
        "tritonserver_soname": server_soname,
        "wall_s": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    backends_dir.mkdir(parents=True, exist_ok=True)
    # Stage next to the target (same filesystem) so that the final rename is atomic.
    stage = backends_dir / f".onnxruntime.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _stage(installed, stage, ort_lib, server_soname, run, patchelf, info)
        _install_atomically(stage, target)
    except OSError as exc:
        raise BackendBuildError(f"cannot install the backend into {target}: {exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if temporary:
        shutil.rmtree(work, ignore_errors=True)
    log(f"installed the onnxruntime backend in {target} ({info['wall_s']} s)")
    return target
