"""README's quick start, run as written and in order, in a fresh copy of the repository.

The only change to the commands: `make demo` trains the small `ci` preset (a minute instead of a few), which the issue
that asked for this test allows. Everything else is README's text: a fresh `.venv` is created by `make demo`, the
server binds the default ports 8000/8001/8002, and each client command uses its defaults."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"


def quickstart() -> list[str]:
    """The commands between README's quickstart markers, one per entry (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    body = re.search(r"```bash\n(.*?)```", block, re.S)
    assert body, "README's quick start has no ```bash block"
    return [c.strip() for c in body.group(1).replace("\\\n", " ").splitlines() if c.strip()]


def fresh_copy(dest: Path) -> Path:
    """What a clone of this working tree holds: tracked and new files, none that git ignores (no .venv, runs, ...)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            (dest / name.decode()).write_bytes(src.read_bytes())
            (dest / name.decode()).chmod(src.stat().st_mode)
    return dest


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_commands_are_the_newcomer_path() -> None:
    commands = quickstart()
    verbs = [" ".join(c.split("#")[0].split()[:2]) for c in commands]
    assert verbs[0] == "make demo" and verbs[-1].startswith("kill"), verbs
    for needed in ("serve", "query", "catalog", "loadtest"):
        assert any(v.endswith(needed) for v in verbs), (needed, verbs)


def test_readme_quickstart_runs_as_written(tmp_path: Path, data_dir: Path) -> None:
    taken = [p for p in (8000, 8001, 8002) if _port_taken(p)]
    if taken:
        message = f"README's commands use the default ports, and {taken} are taken on this machine"
        if os.environ.get("CI", "").lower() == "true":  # CI runs every test: a taken port fails it there
            pytest.fail(message)
        pytest.skip(message)
    commands = quickstart()
    commands[0] = commands[0].replace("make demo", 'make demo ARGS="--preset ci"', 1)
    repo = fresh_copy(tmp_path / "hybridrec")
    # The harness adds one line: stop the background server whatever happens.
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(commands) + "\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_") and k != "VIRTUAL_ENV"}
    env["HYBRIDREC_DATA"] = str(data_dir)  # README: `make demo` reads $HYBRIDREC_DATA where ../shared is not beside
    log = tmp_path / "quickstart.log"
    with log.open("w") as out:
        done = subprocess.run(
            ["bash", "-c", script], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False
        )
    text = log.read_text()
    assert done.returncode == 0, f"README's quick start failed (exit {done.returncode}):\n{text[-6000:]}"
    assert text.count("Top 10 of 200 unseen candidates for user 1") >= 2, text[-4000:]  # demo and query
    assert "live and ready" in text
    assert re.search(r"loaded .* version \d+ on 127\.0\.0\.1:8001: the movie is served now", text), text[-4000:]
    assert (repo / "runs" / "loadtest").is_dir() and "reports in runs/loadtest" in text, text[-4000:]
