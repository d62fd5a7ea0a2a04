"""The client library against a live tritonserver, over gRPC and HTTP, blocking and asyncio: results, item encoding,
retries, timeouts and the typed errors.

The asyncio client runs in a fresh interpreter (``async_results``): grpc.aio hangs in a process that gevent has
monkey-patched, and a pytest process that has collected a test module importing locust is one."""

from __future__ import annotations

import asyncio
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.client import (
    AsyncRecommenderClient,
    InvalidRequestError,
    ModelNotFoundError,
    RankResult,
    RecommenderClient,
    RecommenderError,
    RequestTimeoutError,
    RetryPolicy,
    ServerUnavailableError,
)
from hybridrec.preprocessing import (
    Artifacts,
    ItemCatalog,
    ItemMetadata,
    decode_poster,
    encode_history,
    item_features,
    stack_items,
)

RETRY = RetryPolicy(retries=3, backoff_s=0.05)
KNOWN = "recommend"  # a small, valid request of a spec'd model, and the same request with a float history
REQUEST = spec.example_batch(spec.RECOMMEND, 1)
BAD_REQUEST = {**REQUEST, "history": REQUEST["history"].astype(np.float32)}


# --- shared inputs (also built by the asyncio interpreter) ------------------------------------------------------------
def _user(catalog: ItemCatalog) -> tuple[list[int], list[int]]:
    """A real user's chronological history and 40 unseen real candidate movies."""
    history = [int(m) for m in catalog.data.histories()[1]]
    seen = set(history)
    return history, [m for m in catalog.data.movies if m not in seen][:40]


def _content(catalog: ItemCatalog) -> tuple[list[Any], list[ItemMetadata]]:
    """Seven real movies given as content only, with every kind of poster source (path, bytes, pixels, missing)."""
    movies = [m for m in catalog.data.movies.values() if m.poster is not None][:7]
    paths = [m.poster for m in movies if m.poster is not None]
    posters = [
        paths[0],
        str(paths[1]),
        paths[2].read_bytes(),
        catalog.poster(movies[3].movie_id),
        None,
        paths[5].read_bytes(),
        paths[6],
    ]
    return posters, [ItemMetadata.of(m) for m in movies]


def _heavy_rank() -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """History, a 256-candidate item set (about 19 MB of poster pixels) and a 3-candidate one."""
    arrays = {k: v[0] for k, v in spec.example_batch(spec.RANK_CONTENT, 1, {"N": 256, "L": 50}, id_high=50).items()}
    history = arrays.pop("history")
    return history, arrays, {k: v[:3] for k, v in arrays.items()}


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class _Caught:
    """Catches the RecommenderError of a block and times it: (error or None, seconds)."""

    def __enter__(self) -> _Caught:
        self.t0, self.result = time.perf_counter(), (None, 0.0)
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        self.result = (error if isinstance(error, RecommenderError) else None, time.perf_counter() - self.t0)
        return isinstance(error, RecommenderError)


async def _raised(call: Awaitable[Any]) -> tuple[BaseException | None, float]:
    with _Caught() as caught:
        await call
    return caught.result


def _raised_sync(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    with _Caught() as caught:
        call()
    return caught.result


# --- the asyncio client, in a fresh interpreter --------------------------------------------------------------------
async def _async_session(url: str, protocol: str, catalog: ItemCatalog) -> dict[str, Any]:
    history, candidates = _user(catalog)
    posters, metadata = _content(catalog)
    encoded = encode_history(history, catalog.artifacts)
    heavy_history, heavy, small = _heavy_rank()
    out: dict[str, Any] = {}
    async with AsyncRecommenderClient(url, protocol, catalog=catalog) as client:
        out["rank"], out["recommend"], out["encode"], out["tensors"] = await asyncio.gather(  # in flight together
            client.rank(history, candidates),
            client.recommend(history, k=5),
            client.encode_items(posters, metadata, chunk_size=2),
            client.recommend_tensors(encoded, 3),
        )
        out["health"] = await client.health()
        items = {k: v[None] for k, v in catalog.features(candidates).items()}
        out["infer"] = await client.infer("rank_content", {"history": encoded[None], **items})
        out["errors"] = {
            "server_invalid": await _raised(client.infer(KNOWN, BAD_REQUEST, check=False)),
            "client_invalid": await _raised(client.infer(KNOWN, BAD_REQUEST)),
            "server_not_found": await _raised(client.model_metadata("no_such_model")),
            "client_not_found": await _raised(client.infer("no_such_model", REQUEST)),
            "bad_poster": await _raised(client.encode_items([*posters[:5], b"junk", posters[6]], metadata)),
        }
        out["still_serving"] = await client.infer(KNOWN, REQUEST)
        out["timeout"] = await _raised(client.rank_content_tensors(heavy_history, heavy, timeout_s=0.001))
        out["after_timeout"] = await client.rank_content_tensors(heavy_history, small)
    closed = _closed_port()
    unreachable = {}
    for case, retries, call in [("retried", RETRY.retries, "infer"), ("no_retries", 0, "infer"), ("load", 3, "load")]:
        async with AsyncRecommenderClient(closed, protocol, retries=retries, backoff_s=RETRY.backoff_s) as down:
            unreachable[case] = await _raised(down.load_model(KNOWN) if call == "load" else down.infer(KNOWN, REQUEST))
    out["unreachable"] = unreachable
    async with AsyncRecommenderClient(url, protocol) as bare:
        out["errors"]["no_artifacts"] = await _raised(bare.encode_items(posters, metadata))
    return out


def _async_main(url: str, protocol: str, repo: str, data_dir: str, out: str) -> None:
    """Entry point of the fresh interpreter: every asyncio scenario, pickled to ``out``."""
    from hybridrec.data import load_movielens

    catalog = ItemCatalog(load_movielens(data_dir), Artifacts.load(repo))
    Path(out).write_bytes(pickle.dumps(asyncio.run(_async_session(url, protocol, catalog))))


# --- fixtures -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _url(server: Any, protocol: str) -> str:
    return str(server.grpc_url if protocol == "grpc" else server.http_url)


@pytest.fixture(scope="module")
def user(catalog: ItemCatalog) -> tuple[list[int], list[int]]:
    return _user(catalog)


@pytest.fixture(scope="module")
def content(catalog: ItemCatalog) -> tuple[list[Any], list[ItemMetadata]]:
    return _content(catalog)


@pytest.fixture(scope="module")
def expected_embeddings(exported_repo: Path, catalog: ItemCatalog, content: Any) -> np.ndarray:
    """The exported item encoder in onnxruntime, in-process, on the same features (item id UNK: pure content)."""
    from hybridrec.export.catalog import ItemEncoder

    posters, metadata = content
    art = catalog.artifacts
    pixels = [p if isinstance(p, np.ndarray) or p is None else decode_poster(p, art.image) for p in posters]
    feats = stack_items([item_features(md, px, art, spec.UNK_ID) for md, px in zip(metadata, pixels, strict=True)])
    return ItemEncoder(exported_repo)(feats)


@pytest.fixture(scope="module")
def async_results(
    live_server: Any, exported_repo: Path, data_dir: Path, protocol: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("aio") / f"{protocol}.pkl"
    code = (
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('client_scenarios', sys.argv[1]); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m._async_main(*sys.argv[2:])"
    )
    args = [__file__, _url(live_server, protocol), protocol, str(exported_repo), str(data_dir), str(out)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return pickle.loads(out.read_bytes())  # type: ignore[no-any-return]


# --- results --------------------------------------------------------------------------------------------------------
def test_rank_and_recommend_results(live_server: Any, catalog: ItemCatalog, user: Any, protocol: str) -> None:
    history, candidates = user
    with RecommenderClient(_url(live_server, protocol), protocol, catalog=catalog) as client:
        ranked = client.rank(history, candidates)
        direct = client.rank_content_tensors(encode_history(history, catalog.artifacts), catalog.features(candidates))
        rec = client.recommend(history, k=7)
    assert isinstance(ranked, RankResult) and len(ranked) == len(candidates)
    assert ranked.movie_ids.dtype == np.int64 and ranked.scores.dtype == np.float32
    assert sorted(ranked.movie_ids.tolist()) == sorted(candidates)
    assert np.all(np.diff(ranked.scores) <= 0) and all(ranked.titles)
    by_id = dict(zip(ranked.movie_ids.tolist(), ranked.scores.tolist(), strict=True))
    # by id (catalog embeddings computed at export) == by content (the CNN run now): one model, two paths
    np.testing.assert_allclose([by_id[m] for m in candidates], direct, rtol=0, atol=1e-5)
    assert ranked.top(3) == ranked.items[:3] and ranked.latency_ms > 0
    assert len(rec) == 7 and np.all(np.diff(rec.scores) <= 0)
    assert not set(rec.movie_ids.tolist()) & set(history[-spec.HISTORY_LENGTH :])
    assert [it.movie_id for it in rec] == rec.movie_ids.tolist()


def test_encode_items_matches_the_exported_item_encoder(
    live_server: Any, exported_repo: Path, content: Any, expected_embeddings: np.ndarray, protocol: str
) -> None:
    posters, metadata = content
    with RecommenderClient(_url(live_server, protocol), protocol, artifacts=exported_repo) as client:
        whole = client.encode_items(posters, metadata)
        chunked = client.encode_items(posters, metadata, chunk_size=3)  # 3 requests: 3 + 3 + 1 items
    assert whole.shape == expected_embeddings.shape and whole.dtype == np.float32
    np.testing.assert_allclose(whole, expected_embeddings, rtol=0, atol=1e-4)
    np.testing.assert_allclose(chunked, expected_embeddings, rtol=0, atol=1e-4)


def test_encode_items_rejects_unusable_input(
    live_server: Any, exported_repo: Path, content: Any, tmp_path: Path
) -> None:
    posters, metadata = content
    with RecommenderClient(live_server.grpc_url, artifacts=exported_repo) as client:
        for i, bad in [
            (5, b"not an image"),
            (2, tmp_path / "missing.jpg"),
            (6, np.zeros((3, 100, 100), np.uint8)),
            (0, np.zeros((3, 192, 128), np.float32)),
        ]:
            with pytest.raises(InvalidRequestError, match=rf"encode_items: poster {i}\b"):
                client.encode_items([*posters[:i], bad, *posters[i + 1 :]], metadata, chunk_size=2)
        with pytest.raises(InvalidRequestError, match="7 posters but 6 metadata"):
            client.encode_items(posters, metadata[:6])
        with pytest.raises(InvalidRequestError, match="no items"):
            client.encode_items([], [])
        with pytest.raises(ValueError, match="chunk_size"):
            client.encode_items(posters, metadata, chunk_size=257)
    with RecommenderClient(live_server.grpc_url) as bare, pytest.raises(RecommenderError, match="artifacts"):
        bare.encode_items(posters, metadata)


def test_health_reports_every_model_ready(live_server: Any, protocol: str) -> None:
    with RecommenderClient(_url(live_server, protocol), protocol) as client:
        health = client.health()
    assert health["live"] and health["ready"]
    assert health["models"] == dict.fromkeys(spec.MODELS, True)


def test_async_client_matches_the_sync_client(
    live_server: Any,
    catalog: ItemCatalog,
    user: Any,
    expected_embeddings: np.ndarray,
    async_results: dict[str, Any],
    protocol: str,
) -> None:
    history, candidates = user
    got = async_results
    with RecommenderClient(_url(live_server, protocol), protocol, catalog=catalog) as client:
        ranked = client.rank(history, candidates)
        rec = client.recommend(history, k=5)
        tensors = client.recommend_tensors(encode_history(history, catalog.artifacts), 3)
        health = client.health()
    assert got["rank"].movie_ids.tolist() == ranked.movie_ids.tolist() and got["rank"].titles == ranked.titles
    np.testing.assert_allclose(got["rank"].scores, ranked.scores, rtol=0, atol=1e-5)
    assert sorted(got["infer"]["scores"][0].tolist(), reverse=True) == pytest.approx(ranked.scores.tolist(), abs=1e-5)
    assert got["recommend"].movie_ids.tolist() == rec.movie_ids.tolist() and got["recommend"].titles == rec.titles
    assert got["tensors"][0].tolist() == tensors[0].tolist()
    np.testing.assert_allclose(got["encode"], expected_embeddings, rtol=0, atol=1e-4)
    assert got["health"] == health


# --- typed errors, retries and timeouts -----------------------------------------------------------------------------
def _sync_errors(url: str, protocol: str, content: Any) -> dict[str, tuple[BaseException | None, float]]:
    posters, metadata = content
    with RecommenderClient(url, protocol, artifacts=None) as client:
        errors = {
            "server_invalid": _raised_sync(lambda: client.infer(KNOWN, BAD_REQUEST, check=False)),
            "client_invalid": _raised_sync(lambda: client.infer(KNOWN, BAD_REQUEST)),
            "server_not_found": _raised_sync(lambda: client.model_metadata("no_such_model")),
            "client_not_found": _raised_sync(lambda: client.infer("no_such_model", REQUEST)),
            "no_artifacts": _raised_sync(lambda: client.encode_items(posters, metadata)),
        }
        assert client.infer(KNOWN, REQUEST)["movie_ids"].shape == (1, 3)  # still serving
    return errors


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_bad_requests_and_unknown_models_raise_typed_errors(
    live_server: Any, content: Any, async_results: dict[str, Any], protocol: str, flavour: str
) -> None:
    if flavour == "sync":
        errors = _sync_errors(_url(live_server, protocol), protocol, content)
    else:
        errors = async_results["errors"]
        assert async_results["still_serving"]["movie_ids"].shape == (1, 3)
        assert isinstance(errors["bad_poster"][0], InvalidRequestError) and "poster 5" in str(errors["bad_poster"][0])
    want = {
        "server_invalid": (InvalidRequestError, "history"),  # rejected by the server
        "client_invalid": (InvalidRequestError, "'history'"),  # rejected by the client, from the spec
        "server_not_found": (ModelNotFoundError, "no_such_model"),  # the server does not know it
        "client_not_found": (ModelNotFoundError, "no_such_model"),  # not a model of the spec
        "no_artifacts": (RecommenderError, "artifacts"),
    }
    for case, (kind, text) in want.items():
        err, _ = errors[case]
        assert isinstance(err, kind) and text in str(err) and err.attempts == 1, (case, err)


def _sync_unreachable(protocol: str) -> dict[str, tuple[BaseException | None, float]]:
    closed = _closed_port()
    out = {}
    for case, retries, call in [("retried", RETRY.retries, "infer"), ("no_retries", 0, "infer"), ("load", 3, "load")]:
        with RecommenderClient(closed, protocol, retries=retries, backoff_s=RETRY.backoff_s) as down:
            out[case] = _raised_sync(
                lambda down=down, call=call: down.load_model(KNOWN) if call == "load" else down.infer(KNOWN, REQUEST)
            )
    return out


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_unreachable_server_is_retried_with_backoff_then_unavailable(
    live_server: Any, async_results: dict[str, Any], protocol: str, flavour: str
) -> None:
    results = _sync_unreachable(protocol) if flavour == "sync" else async_results["unreachable"]
    least = RETRY.total_backoff_s()  # 0.05 + 0.1 + 0.2
    err, elapsed = results["retried"]
    assert isinstance(err, ServerUnavailableError) and isinstance(err, ConnectionError)
    assert err.attempts == 4 and "after 4 attempts" in str(err)
    assert least <= elapsed < least * (1 + RETRY.jitter) + 2.0, elapsed
    err, elapsed = results["no_retries"]
    assert isinstance(err, ServerUnavailableError) and err.attempts == 1 and elapsed < least
    err, elapsed = results["load"]  # loading a model is not idempotent: never retried
    assert isinstance(err, ServerUnavailableError) and err.attempts == 1 and elapsed < least
    with RecommenderClient(_url(live_server, protocol), protocol, retries=3) as client:  # the same, server up
        assert client.infer(KNOWN, REQUEST)["movie_ids"].shape == (1, 3)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_tiny_timeout_on_a_heavy_rank_raises_request_timeout(
    live_server: Any, async_results: dict[str, Any], protocol: str, flavour: str
) -> None:
    if flavour == "sync":
        history, heavy, small = _heavy_rank()
        with RecommenderClient(_url(live_server, protocol), protocol) as client:
            (err, elapsed) = _raised_sync(lambda: client.rank_content_tensors(history, heavy, timeout_s=0.001))
            after = client.rank_content_tensors(history, small)  # the client's own timeout again: served
    else:
        (err, elapsed), after = async_results["timeout"], async_results["after_timeout"]
    assert isinstance(err, RequestTimeoutError) and isinstance(err, TimeoutError)
    assert err.attempts == 1 and "rank_content: no answer within 0.001 s" in str(err)  # timeouts are not retried
    assert after.shape == (3,) and elapsed < 10.0


def test_grpc_asyncio_in_a_gevent_patched_process_fails_fast(live_server: Any) -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import asyncio, sys\n"
        "from hybridrec.client import AsyncRecommenderClient, RecommenderError\n"
        "async def main():\n"
        "    async with AsyncRecommenderClient(sys.argv[1]) as c:\n"
        "        await c.health()\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except RecommenderError as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, live_server.grpc_url], capture_output=True, text=True, timeout=60
    )
    assert "refused: grpc.aio hangs" in proc.stdout, proc.stderr[-2000:]
