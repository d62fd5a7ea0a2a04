"""Model repositories for the benchmark: a copy of an exported repository with dynamic batching switched off."""

from __future__ import annotations

import shutil
from pathlib import Path

from hybridrec import spec


def unbatched_copy(repo: Path, dest: Path) -> Path:
    """A copy of ``repo`` whose composing models' configs (every config set present: ``config.pbtxt`` and
    ``configs/*.pbtxt``) have ``dynamic_batching`` removed: each request is then executed on its own. The configs are
    parsed and re-rendered, so everything else (the run's embedding width included) stays as exported."""
    from hybridrec.export.triton_config import parse, render

    shutil.copytree(repo, dest)
    for m in spec.MODELS.values():
        if m.batching is None:
            continue
        folder = dest / m.name
        for path in [folder / "config.pbtxt", *sorted((folder / "configs").glob("*.pbtxt"))]:
            if path.exists():
                cfg = parse(path.read_text())
                cfg.ClearField("dynamic_batching")
                path.write_text(render(cfg))
    return dest
