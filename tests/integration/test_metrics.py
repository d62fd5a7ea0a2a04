"""The deployment's view of a live tritonserver 2.51: every Triton metric name the Grafana dashboard, the HPA's
Prometheus adapter rule and docs/deployment.md use is exposed, the ports and probe paths of the Kubernetes manifests
answer, deploy/entrypoint.sh starts a working server behind the admin key, and hybridrec.metrics_summary reads it.

Two servers: `live_server` (conftest: the launcher's default flags) and one started through deploy/entrypoint.sh
on a copy of the same export with the same binary, which turns on the latency summaries
(--metrics-config=summary_latencies=true) that the dashboard's p50/p99 panels need."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hybridrec import admin, metrics_summary, spec
from hybridrec.client import RecommenderClient
from hybridrec.preprocessing import load_titles

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def _deploy_helpers() -> Any:
    """tests/unit/test_deploy.py's helpers (the rendered manifests, the metric names the deploy files use)."""
    found = importlib.util.spec_from_file_location("hybridrec_deploy_test_helpers", ROOT / "tests/unit/test_deploy.py")
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules[found.name] = module
    found.loader.exec_module(module)
    return module


deploy_files = _deploy_helpers()

ADMIN_KEY = "metrics-test-key"
USED_BY_REQUESTS = ("recommend", "rank", "sequence_encoder", "retrieval", "fusion_head", "topk", "item_lookup")


def send_requests(grpc_url: str, repo: Path, n: int = 4) -> None:
    """A few real `recommend` and `rank` requests, so that every counter of their models moves."""
    movies = sorted(load_titles(repo))[:40]
    with RecommenderClient(grpc_url, "grpc", artifacts=repo, retries=0) as client:
        for i in range(n):
            history = movies[i : i + 10]
            assert len(client.recommend(history, k=5)) > 0
            assert len(client.rank(history, movies[20:36])) == 16


def get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{url}", headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class EntrypointServer:
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"


@pytest.fixture(scope="module")
def entrypoint_server(
    exported_repo: Path, live_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EntrypointServer]:
    """tritonserver started by deploy/entrypoint.sh, exactly as the `serve` image starts it, plus the arguments a
    machine without the container needs (the bundled server's backend directory, free ports, loopback)."""
    from hybridrec.serving import free_port

    binary = live_server.binary
    work = tmp_path_factory.mktemp("entrypoint")
    repo = work / "models"
    shutil.copytree(exported_repo, repo)  # other modules add catalog versions to the shared export
    ports = [free_port() for _ in range(3)]
    while len(set(ports)) < 3:
        ports = [free_port() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    env.update(binary.env)
    env.update(
        TRITONSERVER=str(binary.executable),
        HYBRIDREC_MODEL_REPOSITORY=str(repo),
        HYBRIDREC_ADMIN_KEY=ADMIN_KEY,
        HYBRIDREC_CONFIG_SET=live_server.model_config_name or "",  # the default set wherever live_server serves it
    )
    args = [
        f"--http-port={ports[0]}",
        f"--grpc-port={ports[1]}",
        f"--metrics-port={ports[2]}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--backend-config=python,shm-region-prefix-name=hybridrec_ep{os.getpid()}_",
    ]
    if binary.backend_dir is not None:
        args.append(f"--backend-directory={binary.backend_dir}")
    if binary.cache_dir is not None:
        args.append(f"--cache-directory={binary.cache_dir}")
    log = work / "tritonserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = EntrypointServer(proc, ports[0], ports[1], ports[2], log)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"entrypoint.sh exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(OSError):
                if get(f"{server.http_url}/v2/health/ready")[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the entrypoint's server was not ready in 180 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # python backend stubs, if a fallback set was served
        for path in Path("/dev/shm").glob(f"hybridrec_ep{os.getpid()}_*"):
            with contextlib.suppress(OSError):
                path.unlink()


@pytest.fixture(scope="module")
def live_metrics(live_server: Any, exported_repo: Path) -> str:
    send_requests(live_server.grpc_url, exported_repo)
    return metrics_summary.scrape(live_server.metrics_url)


@pytest.fixture(scope="module")
def entrypoint_metrics(entrypoint_server: EntrypointServer, exported_repo: Path) -> str:
    send_requests(entrypoint_server.grpc_url, exported_repo)
    return metrics_summary.scrape(entrypoint_server.metrics_url)


def test_live_server_exposes_every_counter_and_gauge(live_metrics: str) -> None:
    exposed = metrics_summary.names(live_metrics)
    missing = set(metrics_summary.COUNTERS + metrics_summary.GAUGES) - exposed
    assert not missing, f"tritonserver does not expose {sorted(missing)}"
    stats = metrics_summary.summarize(live_metrics)
    assert set(spec.MODELS) <= set(stats)
    for model in USED_BY_REQUESTS:
        assert stats[model].requests > 0 and stats[model].executions > 0, model


def test_entrypoint_server_exposes_the_latency_summaries(entrypoint_metrics: str) -> None:
    parsed = metrics_summary.parse(entrypoint_metrics)
    missing = set(metrics_summary.KNOWN_METRICS) - set(parsed)
    assert not missing, f"the server deploy/entrypoint.sh starts does not expose {sorted(missing)}"

    def quantiles(base: str, model: str) -> set[str | None]:
        return {dict(labels).get("quantile") for labels in parsed[base] if dict(labels).get("model") == model}

    for base in metrics_summary.SUMMARY_BASES:
        assert quantiles(base, "sequence_encoder") == set(metrics_summary.SUMMARY_QUANTILES), base
    # Triton 2.51 gives ensembles queue and compute summaries but no request summary (docs/deployment.md): their
    # end-to-end mean comes from the counters, their percentiles from the load tests
    for base in ("nv_inference_queue_summary_us", "nv_inference_compute_infer_summary_us"):
        assert quantiles(base, "rank") == set(metrics_summary.SUMMARY_QUANTILES), base


def test_every_metric_name_the_deploy_files_use_is_exposed(entrypoint_metrics: str, live_metrics: str) -> None:
    exposed = metrics_summary.names(entrypoint_metrics)
    for where, used in deploy_files.metric_names_used().items():
        assert used <= exposed, f"{where} uses metrics tritonserver 2.51 does not expose: {sorted(used - exposed)}"
    # without the summary flag only the summaries are missing: the counters and gauges need no flag
    assert exposed - metrics_summary.names(live_metrics) <= set(metrics_summary.SUMMARIES) | {
        "nv_cache_hit_summary_per_model",
        "nv_cache_hit_summary_per_model_count",
        "nv_cache_hit_summary_per_model_sum",
        "nv_cache_miss_summary_per_model",
        "nv_cache_miss_summary_per_model_count",
        "nv_cache_miss_summary_per_model_sum",
    }


@pytest.mark.parametrize("which", ["live_server", "entrypoint_server"])
def test_manifest_ports_and_probe_paths_answer(which: str, request: pytest.FixtureRequest) -> None:
    """The probes and Service ports of the rendered cpu overlay, mapped from 8000/8001/8002 to the test ports."""
    import tritonclient.grpc as grpcclient

    server = request.getfixturevalue(which)
    objects = deploy_files.rendered("cpu")
    triton = deploy_files.container(deploy_files.find(objects, "Deployment", "hybridrec-tritonserver"), "tritonserver")
    host_port = {8000: server.http_port, 8001: server.grpc_port, 8002: server.metrics_port}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = triton[kind]["httpGet"]
        port = host_port[deploy_files.container_port(triton, probe["port"])]
        assert get(f"127.0.0.1:{port}{probe['path']}")[0] == 200, kind
    service = deploy_files.find(objects, "Service", "hybridrec-tritonserver")
    by_name = {p["name"]: host_port[p["port"]] for p in service["spec"]["ports"]}
    status, body = get(f"127.0.0.1:{by_name['metrics']}/metrics")
    assert status == 200 and "nv_inference_request_success" in body
    status, body = get(f"127.0.0.1:{by_name['http']}/v2")
    assert status == 200 and json.loads(body)["name"]
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{by_name['grpc']}")
    try:
        assert grpc.is_server_live() and grpc.is_server_ready()
    finally:
        grpc.close()


def test_entrypoint_server_needs_the_admin_key(entrypoint_server: EntrypointServer) -> None:
    index = f"{entrypoint_server.http_url}/v2/repository/index"
    assert get(index, data=b"{}")[0] == 403
    status, body = get(index, headers=admin.headers(ADMIN_KEY), data=b"{}")
    assert status == 200
    states = {m["name"]: m.get("state") for m in json.loads(body)}
    assert all(states.get(name) == "READY" for name in spec.MODELS), states  # --load-model=* loaded every model
    # inference, health and metadata stay open
    assert get(f"{entrypoint_server.http_url}/v2/models/rank")[0] == 200


def test_metrics_summary_against_the_live_server(
    live_server: Any, exported_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = metrics_summary.summarize(metrics_summary.scrape(live_server.metrics_url))
    t0 = time.monotonic()
    send_requests(live_server.grpc_url, exported_repo, n=3)
    # Triton counts an ensemble's request once its response is on the way, which can be just after the client has
    # it: on a busy machine, wait (briefly) for the counters to catch up rather than race them.
    deadline = time.monotonic() + 10.0
    while True:
        after = metrics_summary.summarize(metrics_summary.scrape(f"http://{live_server.metrics_url}/metrics"))
        per_s = metrics_summary.rates(before, after, time.monotonic() - t0)
        if (per_s["recommend"]["requests"] >= 3 and per_s["rank"]["requests"] >= 3) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert per_s["recommend"]["requests"] == 3 and per_s["rank"]["requests"] == 3
    assert per_s["recommend"]["requests_per_s"] > 0 and per_s["recommend"]["failures"] == 0
    for model in USED_BY_REQUESTS:
        stats = per_s[model]
        assert stats["avg_request_ms"] > 0 and stats["avg_compute_ms"] > 0 and stats["avg_batch"] >= 1.0, model
        assert stats["avg_queue_ms"] >= 0 and stats["avg_request_ms"] >= stats["avg_queue_ms"], model

    assert metrics_summary.main(["--url", live_server.metrics_url, "--interval", "0.5"]) == 0
    table = capsys.readouterr().out
    assert "req/s" in table and all(f"\n{m} " in table for m in ("rank", "recommend", "fusion_head"))
    assert metrics_summary.main(["--url", live_server.metrics_url, "--interval", "0", "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["recommend"]["requests"] >= 3
    # a model that has served nothing yet (which one depends on the tests run before) has no average, not 0
    assert all(t["avg_request_ms"] is None for t in totals.values() if not t["requests"])
    with contextlib.redirect_stderr(io.StringIO()):
        assert metrics_summary.main(["--url", "127.0.0.1:1", "--interval", "0", "--timeout", "1"]) == 1
