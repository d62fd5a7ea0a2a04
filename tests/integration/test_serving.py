"""Live tests of hybridrec.serving: a real tritonserver with a trivial python-backend model."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hybridrec.serving import ServerBinary, ServerError, TritonServer, find_tritonserver, free_port, group_members

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.integration

ADD_ONE_CONFIG = """
name: "add_one"
backend: "python"
max_batch_size: 8
dynamic_batching {}
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

ADD_ONE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        print("add_one: numpy", np.__version__, "from", np.__file__, flush=True)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + 1.0).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_NOT_A_TYPE dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


def _write_model(repo: Path, name: str, config: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.py").write_text(ADD_ONE_MODEL)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> ServerBinary:
    try:
        return find_tritonserver(workdir=tmp_path_factory.mktemp("triton-bin"))
    except ServerError as exc:
        pytest.skip(f"no tritonserver available: {exc}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    _write_model(root, "add_one", ADD_ONE_CONFIG)
    return root


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def test_bundled_copy_is_reused(binary: ServerBinary, tmp_path_factory: pytest.TempPathFactory) -> None:
    if not binary.bundled:
        pytest.skip("a system tritonserver is on PATH")
    assert binary.backend_dir is not None and binary.cache_dir is not None
    assert (binary.backend_dir / "python" / "triton_python_backend_stub").is_file()
    assert "nvidia_pytriton.libs" in binary.env["LD_LIBRARY_PATH"].split(os.pathsep)[0]
    assert binary.env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    workdir = binary.executable.parent.parent.parent
    mtime = binary.executable.stat().st_mtime_ns
    again = find_tritonserver(prefer_bundled=True, workdir=workdir)
    assert again.executable == binary.executable
    assert again.executable.stat().st_mtime_ns == mtime  # reused, not copied again
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no temporary copies left


def test_context_manager_infers_over_http_and_grpc(binary: ServerBinary, repo: Path) -> None:
    t0 = time.monotonic()
    with TritonServer(repo, binary=binary, startup_timeout_s=60) as server:
        startup_s = time.monotonic() - t0
        assert server.alive
        assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
        if binary.bundled:
            # "auto" -> --model-config-name=cpu; without add_one/configs/cpu.pbtxt the server falls back to config.pbtxt
            assert server.model_config_name == "cpu"
            assert "--model-config-name=cpu" in server.command()
        x = np.array([[0.0, 1.5, -2.0], [10.0, 20.0, 30.0]], dtype=np.float32)

        http = httpclient.InferenceServerClient(server.http_url)
        assert http.get_model_config("add_one")["max_batch_size"] == 8  # config.pbtxt was loaded
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = http.infer("add_one", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + 1)
        http.close()

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        ginp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        gresult = grpc.infer("add_one", [ginp])
        np.testing.assert_array_equal(gresult.as_numpy("OUTPUT0"), x + 1)
        grpc.close()

        assert "numpy" in server.log_tail(200)  # the stub imported numpy from this environment
        pid = server.pid
    print(f"tritonserver start-up (start + wait_ready): {startup_s:.2f} s")
    assert not server.alive
    assert pid is not None and group_members(pid) == []


def test_stop_leaves_nothing_and_frees_ports(binary: ServerBinary, repo: Path) -> None:
    server = TritonServer(repo, binary=binary, startup_timeout_s=60).start()
    try:
        server.wait_ready(["add_one"])
        pid = server.pid
        assert pid is not None
        members = group_members(pid)
        assert pid in members and len(members) >= 2  # the server and the python backend stub
        assert not _port_is_free(server.http_port)

        # A second server on the same HTTP port must not be mistaken for ready: it fails to bind and says so.
        clash = TritonServer(repo, binary=binary, http_port=server.http_port, startup_timeout_s=30)
        with pytest.raises(ServerError, match=r"already in use|another server"), clash:
            pass
        assert not clash.alive

        # A model that is not in the repository never gets ready: a bounded wait, then ServerError.
        with pytest.raises(ServerError, match="not ready after"):
            server.wait_ready(["no_such_model"], timeout_s=1.0)
    finally:
        code = server.stop()
    assert code == 0
    assert server.stop() == code  # idempotent
    assert not server.alive
    assert group_members(pid) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for port in (server.http_port, server.grpc_port, server.metrics_port):
        assert _port_is_free(port), port


def test_broken_model_raises_with_server_error_text(binary: ServerBinary, tmp_path: Path) -> None:
    repo = tmp_path / "broken_repo"
    _write_model(repo, "broken", BROKEN_CONFIG)
    server = TritonServer(repo, binary=binary, log_file=tmp_path / "server.log", startup_timeout_s=60)
    t0 = time.monotonic()
    with pytest.raises(ServerError) as info, server:
        pytest.fail("a broken model repository must not become ready")
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert elapsed < 30, elapsed
    assert "exited with code" in message
    assert "TYPE_NOT_A_TYPE" in message  # the server's own parse error
    assert "failed to load all models" in message
    assert not server.alive
    assert (tmp_path / "server.log").read_text()


def test_sigkill_fallback_when_sigint_is_ignored(binary: ServerBinary, repo: Path) -> None:
    server = TritonServer(repo, binary=binary, startup_timeout_s=60).start()
    server.wait_ready()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGINT
    code = server.stop(timeout_s=0.5)
    assert code == -signal.SIGKILL
    assert group_members(pid) == []


def test_ports_are_distinct_and_free() -> None:
    port = free_port()
    assert 0 < port < 65536
    with pytest.raises(ValueError, match="distinct"):
        TritonServer(Path("."), binary=ServerBinary(Path("/bin/true"), None, None, {}, False), http_port=1, grpc_port=1)
