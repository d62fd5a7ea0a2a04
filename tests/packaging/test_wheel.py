"""The wheel users install: built from this checkout, its contents checked against the folders pyproject.toml maps
into the package, and a non-editable copy installed in a fresh virtual environment without torch."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]


def _run(*command: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _mapping() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def _expected_files() -> set[str]:
    """Every tracked source file below a mapped folder, at its path inside the wheel (hybridrec/training/...)."""
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    out = set()
    for name, folder in _mapping().items():
        children = {f for n, f in _mapping().items() if n != name and n.startswith(name + ".")}
        for path in tracked:
            inside = path.startswith(folder + "/") and not any(path.startswith(c + "/") for c in children)
            if not inside or not (ROOT / path).is_file():
                continue
            if path.endswith((".py", ".yaml")) or path.endswith("py.typed"):
                out.add(name.replace(".", "/") + path[len(folder) :])
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ROOT)
    (found,) = dist.glob("hybridrec-*.whl")
    return found


def test_wheel_holds_every_mapped_file_at_its_package_path(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files() - names)
    # a subpackage missing from pyproject.toml's `packages` list shows up here as its files
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages?): {missing}"
    for must in (
        "hybridrec/cli.py",
        "hybridrec/training/train.py",
        "hybridrec/training/presets/demo.yaml",
        "hybridrec/client/__init__.py",
        "hybridrec/export/onnx_export.py",
        "hybridrec/loadtests/locustfile.py",
        "hybridrec/py.typed",
    ):
        assert must in names, must
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"hybridrec", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hybridrec = hybridrec.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_the_cli_and_the_client_without_torch(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python, hybridrec = venv / "bin" / "python", venv / "bin" / "hybridrec"
    # the client extra only: numpy, pillow, pyyaml, tritonclient, grpcio (from the package index or pip's cache)
    _run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[client]", timeout=900)
    assert "usage: hybridrec" in _run(hybridrec, "--help", cwd=tmp_path)
    assert "--url" in _run(hybridrec, "query", "--help", cwd=tmp_path)
    probe = (
        "import importlib.util, sys, hybridrec, hybridrec.client as c\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
        "assert 'torch' not in sys.modules\n"
        "assert c.RecommenderClient and c.RankResult\n"
        "print(hybridrec.__file__, c.__file__)\n"
    )
    where = _run(python, "-c", probe, cwd=tmp_path).split()
    site = str(venv / "lib")
    assert all(p.startswith(site) for p in where), f"not the installed copy: {where}"
    assert not any(p.startswith(str(ROOT)) for p in where)
    # no command imports torch to report a missing server
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC")}
    done = subprocess.run(
        [str(hybridrec), "health", "--url", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr, done.stderr
