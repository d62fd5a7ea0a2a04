"""The client library (and everything it imports) must work where torch is not installed."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
import hybridrec.client, hybridrec.preprocessing, hybridrec.spec, hybridrec.data, hybridrec.serving
import hybridrec.serving_python, hybridrec.cli, hybridrec.client.aio
from hybridrec.client.aio import AsyncRecommenderClient
from hybridrec.client import RecommenderClient
assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}
print('ok')
"""


def test_client_imports_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_test_process_is_not_gevent_patched() -> None:
    """Importing locust in pytest would gevent-patch every test (threads become greenlets): load tests must run
    locust in subprocesses only."""
    import sys

    monkey = sys.modules.get("gevent.monkey")
    assert monkey is None or not monkey.is_module_patched("socket")
