"""The `rank` ensemble on a live tritonserver: parity with eager PyTorch, real dynamic batching, bad input."""

from __future__ import annotations

import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridrec import spec
from hybridrec.client import InvalidRequestError, ModelNotFoundError, RecommenderClient
from hybridrec.preprocessing import encode_history
from hybridrec.training.train import load_model

PROTOCOLS = ["grpc", "http"]


def _url(server, protocol: str) -> str:  # type: ignore[no-untyped-def]
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture(scope="module")
def eager(tiny_run: Path):  # type: ignore[no-untyped-def]
    return load_model(tiny_run)[0]


@pytest.fixture(scope="module")
def request_data(catalog):  # type: ignore[no-untyped-def]
    """A real user's history and 37 real candidate movies (posters and metadata from the data pack)."""
    hist = catalog.data.histories()[1].tolist()
    seen = set(hist)
    cands = [m for m in catalog.data.movies if m not in seen][:37]
    return encode_history(hist, catalog.artifacts), catalog.features(cands), hist, cands


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rank_matches_eager_pytorch(live_server, eager, request_data, protocol: str) -> None:  # type: ignore[no-untyped-def]
    history, items, _, _ = request_data
    with torch.no_grad():
        want = eager.score(torch.from_numpy(history[None]), {k: torch.from_numpy(v[None]) for k, v in items.items()})
    with RecommenderClient(_url(live_server, protocol), protocol) as client:
        got = client.rank_tensors(history, items)
    assert got.shape == (37,)
    np.testing.assert_allclose(got, want[0].numpy(), rtol=0, atol=1e-4)


def test_rank_by_movie_ids_returns_sorted_titles(live_server, catalog, request_data) -> None:  # type: ignore[no-untyped-def]
    _, _, hist, cands = request_data
    with RecommenderClient(live_server.grpc_url, catalog=catalog) as client:
        result = client.rank(hist, cands)
    scores = [it.score for it in result.items]
    assert scores == sorted(scores, reverse=True)
    assert {it.movie_id for it in result.items} == set(cands)
    assert all(it.title for it in result.top(10))


def _stats(server, model: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/stats") as r:
        return json.loads(r.read())["model_stats"][0]  # type: ignore[no-any-return]


def test_dynamic_batcher_merges_concurrent_requests(live_server, request_data) -> None:  # type: ignore[no-untyped-def]
    history, items, _, _ = request_data  # 37 real posters per request: each CNN pass takes long enough to queue others
    before = {m: _stats(live_server, m) for m in ("image_encoder", "sequence_encoder")}
    threads, per_thread = 16, 3
    barrier = threading.Barrier(threads)

    def worker(_: int) -> list[np.ndarray]:
        with RecommenderClient(live_server.grpc_url) as client:  # one connection per thread, opened before the start
            client.health()
            barrier.wait()
            return [client.rank_tensors(history, items) for _ in range(per_thread)]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = [r for rs in pool.map(worker, range(threads)) for r in rs]
    n_requests = threads * per_thread
    assert all(np.allclose(r, results[0], atol=1e-5) for r in results)
    for model, old in before.items():
        new = _stats(live_server, model)
        inferences = new["inference_count"] - old["inference_count"]
        executions = new["execution_count"] - old["execution_count"]
        assert inferences == n_requests, model
        assert executions < inferences, f"{model}: {executions} executions for {inferences} requests: no batching"
        assert max(int(b["batch_size"]) for b in new["batch_stats"]) > 1, model


def _good(request_data) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    history, items, _, _ = request_data
    return {"history": history[None], **{k: v[None, :4] for k, v in items.items()}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "case",
    ["wrong_dtype", "wrong_shape", "missing_input", "oversize_batch", "mismatched_n"],
)
def test_bad_requests_get_clear_errors_and_server_keeps_serving(
    live_server,
    request_data,
    protocol: str,
    case: str,  # type: ignore[no-untyped-def]
) -> None:
    good = _good(request_data)
    bad = dict(good)
    expect = {
        "wrong_dtype": "history",
        "wrong_shape": "poster",
        "missing_input": "meta",
        "oversize_batch": "batch",
        "mismatched_n": "",
    }[case]
    if case == "wrong_dtype":
        bad["history"] = good["history"].astype(np.float32)
    elif case == "wrong_shape":
        bad["poster"] = good["poster"][:, :, :, :100]
    elif case == "missing_input":
        del bad["meta"]
    elif case == "oversize_batch":
        bad = {k: np.repeat(v, spec.RANK.max_batch_size + 1, axis=0) for k, v in good.items()}
    elif case == "mismatched_n":
        bad["people"] = good["people"][:, :2]
    with RecommenderClient(_url(live_server, protocol), protocol) as client:
        with pytest.raises(InvalidRequestError) as e:
            client.infer("rank", bad, check=False)
        assert expect in str(e.value)
        # the server is still up and serving correct answers
        assert client.infer("rank", good)["scores"].shape == (1, 4)


def test_client_side_checks_name_the_input(live_server, request_data) -> None:  # type: ignore[no-untyped-def]
    bad = _good(request_data)
    bad["meta"] = bad["meta"].astype(np.float64)
    with RecommenderClient(live_server.grpc_url) as client, pytest.raises(InvalidRequestError, match="'meta'"):
        client.infer("rank", bad)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_not_found(live_server, protocol: str) -> None:  # type: ignore[no-untyped-def]
    with RecommenderClient(_url(live_server, protocol), protocol) as client:
        with pytest.raises(ModelNotFoundError, match="no_such_model"):
            client.model_metadata("no_such_model")
        assert client.model_metadata("rank")


def test_health_lists_all_models_ready(live_server) -> None:  # type: ignore[no-untyped-def]
    with RecommenderClient(live_server.grpc_url) as client:
        h = client.health()
    assert h["live"] and h["ready"] and all(h["models"].values())
