"""The two config sets this machine can serve give the same answers: the DEFAULT set (Triton's official onnxruntime
backend, what the official container runs and what every other integration test talks to) and the python-backend
`cpu` fallback. Also a smoke of the `cpu` set itself: every model and ensemble loads and answers."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.client import RecommenderClient
from hybridrec.preprocessing import encode_history

USERS = (1, 7, 19)


def _config(server: Any, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/config") as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_live_server_serves_the_default_set_with_the_onnxruntime_backend(live_server: Any) -> None:
    if live_server.config_set != "default" and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"the onnxruntime backend is not installed here: {live_server.config_set_reason}")
    assert live_server.config_set == "default", live_server.config_set_reason
    for m in spec.MODELS.values():
        config = _config(live_server, m.name)
        if m.is_ensemble:
            assert config["platform"] == "ensemble", m.name
        else:
            assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime"), m.name


def test_cpu_set_smoke(cpu_server: Any) -> None:
    assert cpu_server.config_set == "cpu"
    with RecommenderClient(cpu_server.http_url, "http") as client:
        health = client.health()
    assert health["ready"] and all(health["models"].values()), health
    for m in spec.MODELS.values():
        if not m.is_ensemble:
            assert _config(cpu_server, m.name)["backend"] == "python", m.name


def _answers(url: str, catalog: Any, exported_repo: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with RecommenderClient(url, artifacts=exported_repo) as client:
        for user in USERS:
            hist = catalog.data.histories()[user].tolist()
            seen = set(hist)
            cands = [m for m in sorted(catalog.data.movies) if m not in seen][:24]
            encoded = encode_history(hist, catalog.artifacts)
            out[f"recommend/{user}"] = client.recommend_tensors(encoded, 20)
            out[f"rank/{user}"] = client.rank_tensors(encoded, np.array(cands))
            out[f"rank_content/{user}"] = client.rank_content_tensors(encoded, catalog.features(cands[:6]))
    return out


def test_default_and_cpu_sets_give_the_same_answers(
    live_server: Any, cpu_server: Any, catalog: Any, exported_repo: Any
) -> None:
    default = _answers(live_server.grpc_url, catalog, exported_repo)
    cpu = _answers(cpu_server.grpc_url, catalog, exported_repo)
    for key, got in default.items():
        if key.startswith("recommend"):
            assert got[0].tolist() == cpu[key][0].tolist(), key  # the same movies in the same order
            np.testing.assert_allclose(got[1], cpu[key][1], rtol=0, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_allclose(got, cpu[key], rtol=0, atol=1e-6, err_msg=key)
