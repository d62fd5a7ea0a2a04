"""A Locust process whose interpreter exit stalls still ends, with Locust's own exit code (the locustfile's
watchdog on the `quit` event)."""

from __future__ import annotations

import subprocess
import sys
import time

# an atexit handler that never returns stands in for whatever held the exit in CI
CODE = """
import atexit, sys
from gevent import monkey
from hybridrec.loadtests.locustfile import start_exit_watchdog
atexit.register(monkey.get_original("time", "sleep"), 3600)
start_exit_watchdog(3, 0.5)
sys.exit(0)
"""


def test_stalled_exit_ends_with_the_given_code() -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 60
