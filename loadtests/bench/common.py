"""Helpers shared by the throughput benchmark (``run.py``) and ``loadtests/reliability.py``: a description of the
machine, the working folder, and the argparse types of their command lines."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("torch", "onnxruntime", "tritonclient", "nvidia-pytriton", "locust", "fastapi", "uvicorn"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "cpu": cpu or "unknown CPU",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "load_before": load_average(),
    }


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@contextlib.contextmanager
def workdir(path: Path | None, prefix: str = "hybridrec-bench-") -> Iterator[Path]:
    """``path`` (kept), or a temporary folder removed at the end (shared by the benchmarks)."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def csv_ints(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def skip_parser(allowed: Sequence[str]) -> Callable[[str], set[str]]:
    """An argparse type for ``--skip a,b``: a set of names out of ``allowed`` (shared by the benchmarks)."""

    def parse(text: str) -> set[str]:
        names = {s.strip() for s in text.split(",") if s.strip()}
        unknown = names - set(allowed)
        if unknown:
            raise argparse.ArgumentTypeError(f"--skip takes some of {','.join(allowed)}, got {sorted(unknown)}")
        return names

    return parse
