"""mypy over the whole hybridrec package, exactly as it is installed.

setuptools maps the product's top-level folders (training/, export/, client/, loadtests/) into the hybridrec package
(`[tool.setuptools] package-dir` in pyproject.toml). mypy cannot follow that mapping (an editable install reaches
those folders through an import hook), so this script builds the package's view from links under .cache/typecheck,
runs mypy there with pyproject.toml's settings, and reports every path as the real file's path.

    python tools/typecheck.py [extra mypy arguments]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, str]:
    """{"hybridrec": "hybridrec", "hybridrec.training": "training", ...} from pyproject.toml."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return dict(setuptools["package-dir"])


def build_view(view: Path, mapping: dict[str, str]) -> None:
    """view/<package path> for every mapped package: the root package is a folder of links to its files, each
    mapped subpackage a link to its folder (so nested subpackages come with it)."""
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    children = {name.replace(".", "/") for name in mapping if "." in name}
    for name, folder in sorted(mapping.items()):
        target = view / name.replace(".", "/")
        if "." in name:
            target.symlink_to(ROOT / folder, target_is_directory=True)
            continue
        target.mkdir()
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__" and f"{name}/{entry.name}" not in children:
                (target / entry.name).symlink_to(entry)


def real_paths(text: str, mapping: dict[str, str]) -> str:
    """hybridrec/training/train.py -> training/train.py (longest package first)."""
    for name in sorted(mapping, key=len, reverse=True):
        prefix = name.replace(".", "/") + "/"
        folder = mapping[name].rstrip("/") + "/"
        if prefix != folder:
            text = re.sub(rf"(?m)^{re.escape(prefix)}", folder, text)
    return text


def main(argv: list[str]) -> int:
    mapping = package_dirs()
    view = ROOT / ".cache" / "typecheck"
    build_view(view, mapping)
    roots = sorted(name for name in mapping if "." not in name)
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["--cache-dir", str(ROOT / ".mypy_cache"), *(arg for r in roots for arg in ("-p", r)), *argv]
    done = subprocess.run(command, cwd=view, capture_output=True, text=True, env={**os.environ, "MYPYPATH": ""})
    sys.stdout.write(real_paths(done.stdout, mapping))
    sys.stderr.write(real_paths(done.stderr, mapping))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
