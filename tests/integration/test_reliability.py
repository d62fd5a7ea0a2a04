"""What no client may do and what no failure may lose, on a live server: model control needs the admin key,
catalog updates under load fail no request and mix no catalog versions, a dead python-backend instance is noticed
and reloaded, and `hybridrec serve` fails loudly (and cleans /dev/shm) when its tritonserver dies."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridrec import admin, spec
from hybridrec.client import AdminKeyError, RecommenderClient, RecommenderError
from hybridrec.export.catalog import add_items, prune_catalog_versions
from hybridrec.preprocessing import ItemMetadata, encode_history
from hybridrec.serving import TritonServer

KEY = "test-admin-key-123"


@pytest.fixture(scope="module", params=[None, "cpu"], ids=["default", "cpu"])
def guarded(request: pytest.FixtureRequest, exported_repo: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private repository copy served with explicit model control behind the admin key, on each config set."""
    repo = tmp_path_factory.mktemp("guarded") / "repo"
    shutil.copytree(exported_repo, repo)
    if request.param is None and not _has_default_set():
        pytest.skip("the onnxruntime backend is not installed here")
    with TritonServer(
        repo,
        model_config_name=request.param,
        model_control_mode="explicit",
        extra_args=["--load-model=*"],
        admin_key=KEY,
    ) as server:
        yield server, repo


def _has_default_set() -> bool:
    from hybridrec.serving import choose_config_set, find_tritonserver

    return choose_config_set(find_tritonserver())[0] is None or os.environ.get("CI", "").lower() == "true"


def _post(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST", headers=admin.headers(key))
    try:
        with urllib.request.urlopen(req) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_model_control_needs_the_key_and_inference_does_not(guarded, catalog, protocol: str) -> None:  # type: ignore[no-untyped-def]
    server, _ = guarded
    url = server.grpc_url if protocol == "grpc" else server.http_url
    history = encode_history(catalog.data.histories()[1].tolist(), catalog.artifacts)
    with RecommenderClient(url, protocol, admin_key="") as anyone:  # "" = send no key (not even the key file's)
        for call in (anyone.unload_model, anyone.load_model):
            with pytest.raises(AdminKeyError, match="restricted"):
                call("score_mask")
        with RecommenderClient(url, protocol, admin_key="wrong") as wrong, pytest.raises(AdminKeyError):
            wrong.unload_model("score_mask")
        assert len(anyone.recommend_tensors(history, 5)[0]) == 5  # inference needs no key
    with RecommenderClient(url, protocol, admin_key=KEY) as operator:
        operator.unload_model("score_mask")
        with pytest.raises(RecommenderError):
            operator.rank_tensors(history, np.array([1, 2]))
        operator.load_model("score_mask")
        assert operator.rank_tensors(history, np.array([1, 2])).shape == (2,)


def test_model_repository_api_is_closed_over_plain_http(guarded) -> None:  # type: ignore[no-untyped-def]
    server, _ = guarded
    base = f"http://{server.http_url}/v2/repository"
    # the code-injection path: a load request that carries its own model.py
    override = {
        "parameters": {
            "config": json.dumps({"backend": "python"}),
            "file:1/model.py": base64.b64encode(b"raise SystemExit").decode(),
        }
    }
    assert _post(f"{base}/models/score_mask/load", override) == 403
    assert _post(f"{base}/models/recommend/unload") == 403
    assert _post(f"{base}/index") == 403
    assert _post(f"{base}/index", key=KEY) == 200
    assert "--http-address=127.0.0.1" in server.command()  # and nobody else can reach it by default


def test_catalog_updates_under_load_lose_nothing(guarded, catalog) -> None:  # type: ignore[no-untyped-def]
    """Three catalog adds while 4 threads send `recommend` and `rank`: no request fails, and every answer is one
    that some catalog version gives (checked against each version's answer taken at rest)."""
    server, repo = guarded
    users = [catalog.data.histories()[u].tolist() for u in (1, 7)]
    histories = [encode_history(h, catalog.artifacts) for h in users]
    twins = [int(m) for m in sorted(catalog.data.movies)[:3]]  # their content comes back under new movieIds

    def snapshot(client: RecommenderClient) -> list[tuple[tuple[int, ...], np.ndarray]]:
        return [
            (tuple(sorted(ids.tolist())), np.sort(scores))
            for ids, scores in (client.recommend_tensors(h, 20) for h in histories)
        ]

    errors: list[str] = []
    answers: list[tuple[int, tuple[int, ...], np.ndarray]] = []
    stop = threading.Event()

    def load(i: int) -> None:
        with RecommenderClient(server.grpc_url, retries=0) as client:
            while not stop.is_set():
                u = i % len(histories)
                try:
                    ids, scores = client.recommend_tensors(histories[u], 20)
                    answers.append((u, tuple(sorted(ids.tolist())), np.sort(scores)))
                    client.rank_tensors(histories[u], np.array(twins))
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")

    with RecommenderClient(server.grpc_url, admin_key=KEY) as operator:
        versions = [snapshot(operator)]
        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for n, source in enumerate(twins):
                movie = (20_000_000 + n, ItemMetadata.of(catalog.data.movies[source]), catalog.poster(source))
                _, version = add_items(repo, [movie], prune=False)
                for m in spec.CATALOG_STATE_MODELS:
                    operator.load_model(m.name)
                prune_catalog_versions(repo, keep=version)
                versions.append(snapshot(operator))
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert not errors, errors[:5]
    assert len(answers) > 20
    for u, ids, scores in answers:
        assert any(ids == v[u][0] and np.allclose(scores, v[u][1], atol=1e-5) for v in versions), (
            f"user {u}: an answer that no catalog version gives: {ids}"
        )


def _pid_of(cmd_part: str, parent: int | None = None) -> int:
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = stat.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((stat.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if cmd_part in cmd and (parent is None or ppid == parent):
            return int(stat.parent.name)
    raise LookupError(cmd_part)


def test_a_dead_python_backend_instance_is_noticed_and_reloaded(guarded, catalog) -> None:  # type: ignore[no-untyped-def]
    server, _ = guarded
    if server.config_set != "cpu":
        pytest.skip("onnxruntime-backend instances run inside tritonserver: there is no stub to die")
    history = encode_history(catalog.data.histories()[1].tolist(), catalog.artifacts)
    stub = _pid_of("sequence_encoder", parent=server.pid)
    os.kill(stub, signal.SIGKILL)
    time.sleep(1.0)
    with RecommenderClient(server.grpc_url, retries=0) as client:
        with pytest.raises(RecommenderError):
            client.recommend_tensors(history, 5)
        assert "sequence_encoder" in server.probe()
        assert "sequence_encoder" in server.heal()
        assert server.probe() == {}
        assert len(client.recommend_tensors(history, 5)[0]) == 5


def test_serve_fails_loudly_and_cleans_up_when_tritonserver_dies(exported_repo: Path, tmp_path: Path) -> None:
    from hybridrec.serving import free_port

    repo = tmp_path / "repo"
    shutil.copytree(exported_repo, repo)
    ports = [str(free_port()) for _ in range(3)]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop(admin.ENV, None)
    cmd = [
        sys.executable,
        "-m",
        "hybridrec.cli",
        "serve",
        "--repo",
        str(repo),
        "--config-set",
        "cpu",
        "--http-port",
        ports[0],
        "--grpc-port",
        ports[1],
        "--metrics-port",
        ports[2],
        "--probe-interval",
        "0",
    ]
    before = {p.name for p in Path("/dev/shm").glob("hybridrec_*")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "tritonserver ready" in line or time.monotonic() > deadline:
                break
        key_file = tmp_path / "config" / "hybridrec" / "admin-key"
        assert key_file.stat().st_mode & 0o777 == 0o600  # generated, private
        ours = {p.name for p in Path("/dev/shm").glob("hybridrec_*")} - before
        assert ours, "the python backend's shared memory should carry our prefix"
        os.kill(_pid_of("tritonserver", parent=proc.pid), signal.SIGKILL)
        code = proc.wait(timeout=60)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1 and "exited on its own" in stderr, stderr
    assert not ours & {p.name for p in Path("/dev/shm").glob("hybridrec_*")}
