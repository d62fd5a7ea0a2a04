"""Training throughput of two code revisions, measured alternately in one run (a code change's before and after).

    .venv/bin/python tools/throughput_revisions.py --before HEAD~1 [--preset full] [--rounds 2]

`python -m hybridrec.training.throughput` compares optimiser settings of one code version. This compares code: the
`--before` revision is checked out into a temporary git worktree, and each round times the same training steps
(`StepLoss`, backward and the Adam update on real ml-latest-small prefixes, one thread, the median of `--steps` after 3
warm-up steps) first under that revision's package, then under the working tree's. Alternating the two keeps a shared
machine's load changes out of their ratio.

Each measurement is `hybridrec.training.throughput.measure` of the preset under that revision's own code, so the
`--before` revision must have it (and `load_yaml` and the presets).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hybridrec.data import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
# hybridrec's setuptools package-dir mapping (pyproject.toml): subpackage -> folder of the checkout
SUBPACKAGES = ("training", "export", "client", "loadtests")

SNIPPET = r"""
import sys
import torch
from hybridrec.cli import PRESETS
from hybridrec.data import load_movielens, resolve_data_dir
from hybridrec.dataclass_yaml import load_yaml
from hybridrec.training.config import RunConfig
from hybridrec.training.throughput import measure

preset, steps, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
cfg = load_yaml(RunConfig, PRESETS / f"{preset}.yaml", {})
result = measure(cfg, load_movielens(resolve_data_dir(data_dir)), steps)
print(f"STEP_S {result['step_ms'] / 1000!r} BATCH {cfg.optim.batch_size}")
"""


def _package_root(checkout: Path, into: Path) -> Path:
    """A folder to put first on PYTHONPATH so that `import hybridrec...` resolves into `checkout`, as the editable
    install's package-dir mapping does for the working tree."""
    pkg = into / "hybridrec"
    shutil.copytree(checkout / "hybridrec", pkg)
    for sub in SUBPACKAGES:
        (pkg / sub).symlink_to(checkout / sub)
    return into


def _time(python: str, pythonpath: Path, preset: str, steps: int, data: str) -> tuple[float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(pythonpath)}
    # run from an empty folder: a checkout's own hybridrec/ in the working directory would shadow the one chosen
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(
            [python, "-c", SNIPPET, preset, str(steps), data], env=env, cwd=cwd, capture_output=True, text=True
        )
    found = re.search(r"STEP_S (\S+) BATCH (\d+)", out.stdout)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"timing failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return float(found.group(1)), int(found.group(2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="git revision measured as 'before'")
    p.add_argument("--preset", default="full", help="training preset both revisions load (training/presets)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per measurement (the median counts)")
    p.add_argument("--rounds", type=int, default=2, help="before/after pairs, alternated")
    p.add_argument("--data", default="", help="dataset folder (default: $HYBRIDREC_DATA, then the shared data)")
    args = p.parse_args(argv)
    # resolved here: the default lookup is relative to the checkout, and the timing runs in an empty folder
    data = str(resolve_data_dir(args.data or None))
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.before], check=True
        )
        try:
            before_path = _package_root(tree, Path(tmp) / "pkg-before")
            after_path = _package_root(ROOT, Path(tmp) / "pkg-after")
            rates: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(args.rounds):
                for name, path in (("before", before_path), ("after", after_path)):
                    step_s, batch = _time(sys.executable, path, args.preset, args.steps, data)
                    rates[name].append(batch / step_s)
                    print(f"round {r + 1} {name:6s} {batch / step_s:7.0f} examples/s  step {1000 * step_s:5.0f} ms")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    ratios = [a / b for a, b in zip(rates["after"], rates["before"], strict=True)]
    print(
        f"preset {args.preset}: before {statistics.median(rates['before']):.0f}, after "
        f"{statistics.median(rates['after']):.0f} examples/s; after/before per round "
        + ", ".join(f"x{x:.2f}" for x in ratios)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
