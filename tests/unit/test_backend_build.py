"""Fast tests of hybridrec.backend_build: detection logic on fake folders, no compiler run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hybridrec import backend_build as bb
from hybridrec.cli import main

pytestmark = pytest.mark.unit


def _fake_vendor(root: Path, skip: str | None = None) -> Path:
    (root / "triton-r24.10").mkdir(parents=True)
    for repo in bb.REPOS:
        if repo != skip:
            (root / "triton-r24.10" / f"{repo}-r24.10.tar.gz").write_bytes(b"")
    (root / "onnxruntime-c-api-1.19.0").mkdir()
    if skip != "header":
        (root / "onnxruntime-c-api-1.19.0" / "onnxruntime_c_api.h").write_text("#define ORT_API_VERSION 19\n")
    return root


def _fake_backend(backends: Path, *, ort: bool = True, dangling: bool = False) -> Path:
    folder = backends / "onnxruntime"
    folder.mkdir(parents=True)
    (folder / "libtriton_onnxruntime.so").write_bytes(b"\x7fELF")
    if ort:
        if not dangling:
            (folder / "libonnxruntime.so.1.32.0").write_bytes(b"\x7fELF")
        (folder / "libonnxruntime.so.1").symlink_to("libonnxruntime.so.1.32.0")
    return folder


# --------------------------------------------------------------------------------------------------------------------
def test_backend_dir_and_detection(tmp_path: Path) -> None:
    assert bb.onnxruntime_backend_dir(tmp_path) == tmp_path / "onnxruntime"
    assert not bb.has_onnxruntime_backend(tmp_path)
    _fake_backend(tmp_path / "complete")
    assert bb.has_onnxruntime_backend(tmp_path / "complete")
    _fake_backend(tmp_path / "no-ort", ort=False)
    assert not bb.has_onnxruntime_backend(tmp_path / "no-ort")
    _fake_backend(tmp_path / "dangling", dangling=True)  # the link's target is missing: not loadable
    assert not bb.has_onnxruntime_backend(tmp_path / "dangling")


@pytest.mark.parametrize("skip", [None, "core", "onnxruntime_backend", "header"])
def test_vendor_layout_detection(tmp_path: Path, skip: str | None) -> None:
    source = _fake_vendor(tmp_path / "vendor", skip)
    assert bb.is_vendor_source(source) is (skip is None)
    assert not bb.is_vendor_source(tmp_path / "nowhere")


def test_the_shared_mirror_has_the_vendor_layout() -> None:
    source = bb.default_source()
    if source is None or not source.is_dir():
        pytest.skip("no source mirror folder here")
    assert bb.is_vendor_source(source), f"{source} lacks: {bb._vendor_problems(source)}"


def test_default_source_prefers_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_BACKEND_SOURCE", str(tmp_path / "mirror"))
    assert bb.default_source() == tmp_path / "mirror"


def test_default_source_beside_the_repo_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDREC_BACKEND_SOURCE", raising=False)
    # The package "lives" in tmp/a/repo/hybridrec; the cwd is tmp/b/repo.
    (tmp_path / "a" / "repo" / "hybridrec").mkdir(parents=True)
    (tmp_path / "b" / "repo").mkdir(parents=True)
    monkeypatch.setattr(bb, "__file__", str(tmp_path / "a" / "repo" / "hybridrec" / "backend_build.py"))
    monkeypatch.chdir(tmp_path / "b" / "repo")
    assert bb.default_source() is None
    (tmp_path / "b" / "shared" / "vendor").mkdir(parents=True)
    assert bb.default_source() == (tmp_path / "b" / "shared" / "vendor").resolve()
    (tmp_path / "a" / "shared" / "vendor").mkdir(parents=True)  # beside the repository wins over the cwd
    assert bb.default_source() == (tmp_path / "a" / "shared" / "vendor").resolve()


def test_prerequisites_name_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(bb, "RAPIDJSON_HEADER", tmp_path / "document.h")
    monkeypatch.setattr(bb, "_package_dir", lambda name: None)
    missing = "\n".join(bb.build_prerequisites())
    for word in ("cmake", "g++", "make", "patchelf", "rapidjson-dev", "pip install onnxruntime", "nvidia_pytriton"):
        assert word in missing
    assert len(bb.build_prerequisites()) == 7


def test_prerequisites_find_the_pip_libraries_in_a_fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-packages"
    (site / "onnxruntime" / "capi").mkdir(parents=True)
    (site / "onnxruntime" / "capi" / "libonnxruntime.so.1.32.0").write_bytes(b"")
    (site / "pytriton").mkdir()
    (site / "nvidia_pytriton.libs").mkdir()
    (site / "nvidia_pytriton.libs" / "libtritonserver-717102f0.so").write_bytes(b"")
    monkeypatch.setattr(bb, "_package_dir", lambda name: site / name)
    assert bb._onnxruntime_library() == site / "onnxruntime" / "capi" / "libonnxruntime.so.1.32.0"
    assert bb._tritonserver_library() == site / "nvidia_pytriton.libs" / "libtritonserver-717102f0.so"
    assert not any("pip" in m for m in bb.build_prerequisites())


def test_old_cmake_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bb, "_cmake_version", lambda cmake: (3, 16))
    if shutil.which("cmake") is None:
        pytest.skip("no cmake here")
    assert any("cmake >= 3.18 (found 3.16" in m for m in bb.build_prerequisites())


def test_skip_common_tests_patches_only_that_line(tmp_path: Path) -> None:
    src = tmp_path / "common" / "src"
    src.mkdir(parents=True)
    (src / "CMakeLists.txt").write_text("add_library(x a.cc)\n\nadd_subdirectory(test)\nadd_subdirectory(tests2)\n")
    bb._skip_common_tests(tmp_path / "common", log=lambda _: None)
    text = (src / "CMakeLists.txt").read_text()
    assert "\n# add_subdirectory(test)" in text and "\nadd_subdirectory(tests2)" in text


def test_ort_lib_dir_has_the_unversioned_name(tmp_path: Path) -> None:
    lib = tmp_path / "capi" / "libonnxruntime.so.1.32.0"
    lib.parent.mkdir()
    lib.write_bytes(b"x")
    bb._ort_lib_dir(lib, tmp_path / "lib")
    for name in ("libonnxruntime.so", "libonnxruntime.so.1", "libonnxruntime.so.1.32.0"):
        assert (tmp_path / "lib" / name).read_bytes() == b"x"


# --------------------------------------------------------------------------------------------------------------------
def test_build_keeps_an_installed_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_backend(tmp_path / "backends")
    monkeypatch.setattr(bb, "build_prerequisites", lambda: ["everything"])  # not even looked at
    assert bb.build_onnxruntime_backend(tmp_path / "backends", log=lambda _: None) == folder.resolve()


def test_build_reports_missing_prerequisites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bb, "build_prerequisites", lambda: ["patchelf (Debian package patchelf)"])
    with pytest.raises(bb.MissingPrerequisitesError, match="apt-get install -y cmake g\\+\\+ make patchelf") as info:
        bb.build_onnxruntime_backend(tmp_path / "backends", force=True, log=lambda _: None)
    assert info.value.missing == ["patchelf (Debian package patchelf)"]


def test_build_rejects_a_folder_that_is_no_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bb, "build_prerequisites", lambda: [])
    with pytest.raises(bb.BackendBuildError, match=r"not a source mirror folder.*core-r24\.10\.tar\.gz"):
        bb.build_onnxruntime_backend(tmp_path / "backends", _fake_vendor(tmp_path / "v", "core"), log=lambda _: None)
    assert not (tmp_path / "backends").exists()


# --------------------------------------------------------------------------------------------------------------------
def test_cli_backend_build_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bb, "bundled_backends_dir", lambda: tmp_path / "backends")
    monkeypatch.setattr(bb, "build_prerequisites", lambda: [])
    assert main(["backend", "build", "--source", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a source mirror folder" in err and err.count("\n") == 1

    monkeypatch.setattr(bb, "build_prerequisites", lambda: ["make (Debian package make)"])
    assert main(["backend", "build", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "make (Debian package make)" in err and "apt-get install -y" in err

    _fake_backend(tmp_path / "backends")
    assert main(["backend", "build"]) == 0
    assert "installed in" in capsys.readouterr().out


def test_cli_backend_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bb, "bundled_backends_dir", lambda: tmp_path / "backends")
    monkeypatch.setattr(bb, "build_prerequisites", lambda: ["patchelf (Debian package patchelf)"])
    assert main(["backend", "status"]) == 0
    out = capsys.readouterr().out
    assert "not installed" in out and "missing:\n  patchelf" in out
    _fake_backend(tmp_path / "backends")
    monkeypatch.setattr(bb, "build_prerequisites", lambda: [])
    assert main(["backend", "status"]) == 0
    out = capsys.readouterr().out
    assert ": installed" in out and "all present" in out
