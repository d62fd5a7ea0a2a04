"""Build Triton's onnxruntime backend from the source mirror (one build, ~20 s) and serve an ONNX model with it.

The build goes into a temporary copy of the bundled server's ``backends`` folder, so the user's cache is untouched.
Skipped only where the mirror folder is absent and ``CI`` is not "true"; in CI anything missing fails the test.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridrec import backend_build as bb
from hybridrec.serving import ServerBinary, TritonServer, find_tritonserver

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() == "true"

ADD_CONFIG = """
name: "add"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "C" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def _need(module: str) -> Any:
    """Import ``module``; skip without it, except in CI where a missing dependency is a failure."""
    if IN_CI:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            pytest.fail(f"CI=true: {module} is needed: {exc}")
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def source() -> Path:
    source = bb.default_source()
    if source is None or not source.is_dir():
        message = "no source mirror folder (set HYBRIDREC_BACKEND_SOURCE or provide ../shared/vendor)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    assert bb.is_vendor_source(source), f"{source} is not a complete mirror; missing {bb._vendor_problems(source)}"
    return source


@pytest.fixture(scope="module")
def bundled() -> ServerBinary:
    binary = find_tritonserver(prefer_bundled=True)
    assert binary.bundled and binary.backend_dir is not None, "the bundled tritonserver (nvidia-pytriton) is needed"
    return binary


@pytest.fixture(scope="module")
def built(source: Path, bundled: ServerBinary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one build: into a temporary ``backends`` folder that also holds the bundled python backend."""
    missing = bb.build_prerequisites()
    assert not missing, f"build prerequisites missing: {missing} (apt-get install -y {' '.join(bb.APT_PACKAGES)})"
    assert bundled.backend_dir is not None
    backends = tmp_path_factory.mktemp("server") / "backends"
    shutil.copytree(bundled.backend_dir / "python", backends / "python", symlinks=True)
    work = tmp_path_factory.mktemp("build")
    folder = bb.build_onnxruntime_backend(backends, source, work_dir=work, jobs=2)
    assert folder == backends / "onnxruntime"
    return backends


def test_build_installs_a_patched_backend(built: Path, source: Path) -> None:
    folder = built / "onnxruntime"
    assert (folder / "libtriton_onnxruntime.so").is_file()
    assert bb.has_onnxruntime_backend(built)
    assert not list(built.glob(".onnxruntime*")), "staging folders left behind"
    server_lib = bb._tritonserver_library()
    assert server_lib is not None
    soname = subprocess.run(["patchelf", "--print-soname", server_lib], capture_output=True, text=True).stdout.strip()
    dynamic = subprocess.run(
        ["readelf", "-d", folder / "libtriton_onnxruntime.so"], capture_output=True, text=True, check=True
    ).stdout
    needed = [line.split("[", 1)[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert soname in needed and "libtritonserver.so" not in needed
    assert "libonnxruntime.so.1" in needed
    info = json.loads((folder / "hybridrec-build.json").read_text())
    assert info["source"] == str(source.resolve()) and set(info["commits"]) == set(bb.REPOS)
    assert info["tritonserver_soname"] == soname and info["wall_s"] > 0


def test_bundled_server_serves_an_onnxruntime_model(built: Path, bundled: ServerBinary, tmp_path: Path) -> None:
    onnx = _need("onnx")
    httpclient = _need("tritonclient.http")
    helper, fp32 = onnx.helper, onnx.TensorProto.FLOAT

    repo = tmp_path / "repo"
    (repo / "add" / "1").mkdir(parents=True)
    (repo / "add" / "config.pbtxt").write_text(ADD_CONFIG)
    inputs = [helper.make_tensor_value_info(n, fp32, ["batch", 4]) for n in ("A", "B")]
    output = helper.make_tensor_value_info("C", fp32, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Add", ["A", "B"], ["C"])], "add", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any ONNX Runtime of the last years
    onnx.save(model, str(repo / "add" / "1" / "model.onnx"))

    binary = ServerBinary(bundled.executable, built, bundled.cache_dir, env=bundled.env, bundled=True)
    with TritonServer(repo, model_config_name=None, binary=binary, log_file=tmp_path / "server.log") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.get_model_config("add")["backend"] == "onnxruntime"
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        b = np.full((3, 4), 0.5, dtype=np.float32)
        request = [httpclient.InferInput("A", list(a.shape), "FP32"), httpclient.InferInput("B", list(b.shape), "FP32")]
        request[0].set_data_from_numpy(a)
        request[1].set_data_from_numpy(b)
        result = client.infer("add", request).as_numpy("C")
        client.close()
    np.testing.assert_array_equal(result, a + b)
