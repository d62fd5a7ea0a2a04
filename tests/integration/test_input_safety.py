"""Every model and ensemble, over HTTP and gRPC: malformed requests get a clear error naming the input, odd but valid
values get a correct (finite) answer, and the server keeps serving the next request."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.client import InvalidRequestError, RecommenderClient

Arrays = dict[str, np.ndarray]
MODELS = list(spec.MODELS)


def good_request(model: spec.ModelSpec, num_items: int) -> Arrays:
    """A valid request at the served sizes (history 50, C 100, D 64); movie ids are real catalog movies."""
    r = spec.example_batch(model, 1, {"N": 4, "K": 3}, id_high=num_items, seed=7)
    if "movie_id" in r:
        r["movie_id"][:] = CATALOG_MOVIES[: r["movie_id"].shape[-1]]
    return r


CATALOG_MOVIES = np.array([1, 2, 3, 6], np.int64)  # movieIds every MovieLens catalog of the tests holds


def _first(model: spec.ModelSpec, dtype: str | None = None) -> spec.TensorSpec:
    return next(t for t in model.inputs if dtype is None or t.dtype == dtype)


# --- malformed: (case, mutate) -> the expected error names `what` ---
def wrong_dtype(m: spec.ModelSpec, r: Arrays) -> str:
    t = _first(m)
    r[t.name] = r[t.name].astype(np.float64 if t.dtype != "float64" else np.int32)
    return t.name


def wrong_rank(m: spec.ModelSpec, r: Arrays) -> str:
    t = _first(m)
    r[t.name] = r[t.name][..., None]
    return t.name


def missing_input(m: spec.ModelSpec, r: Arrays) -> str:
    t = m.inputs[-1]
    del r[t.name]
    return t.name


def oversize_batch(m: spec.ModelSpec, r: Arrays) -> str:
    if m.batched:
        for k in list(r):
            r[k] = np.repeat(r[k], m.batch_limit + 1, axis=0)
        return "batch"
    big = spec.MAX_REQUEST_BATCH + 1  # non-batching models: their cap on B (an ensemble's: its batching steps')
    for t in m.inputs:
        if t.dims and t.dims[0] == "B":
            r[t.name] = np.repeat(r[t.name], big, axis=0)
    return "batch" if m.is_ensemble else str(spec.MAX_REQUEST_BATCH)  # "... B must be 1 to 64" / "takes 1..64"


def truncated_image(m: spec.ModelSpec, r: Arrays) -> str:
    r["poster"] = np.ascontiguousarray(r["poster"][..., : spec.IMAGE_HEIGHT // 2, :])
    return "poster"


MALFORMED: dict[str, Callable[[spec.ModelSpec, Arrays], str]] = {
    "wrong_dtype": wrong_dtype,
    "wrong_rank": wrong_rank,
    "missing_input": missing_input,
    "oversize_batch": oversize_batch,
    "truncated_image": truncated_image,
}


# --- odd but valid: the answer must be finite and well-shaped ---
def empty_history(m: spec.ModelSpec, r: Arrays) -> None:
    r["history"][:] = spec.PAD_ID


def unknown_and_negative_ids(m: spec.ModelSpec, r: Arrays) -> None:
    for t in m.inputs:
        if t.dtype == "int64" and t.name not in ("k", "candidate_movie_id"):
            flat = r[t.name].reshape(-1)
            flat[::2] = -7
            flat[1::2] = 10**12


def nan_metadata(m: spec.ModelSpec, r: Arrays) -> None:
    r["meta"][..., ::3] = np.nan
    r["meta"][..., 1::3] = np.inf


def zero_image(m: spec.ModelSpec, r: Arrays) -> None:
    r["poster"][:] = 0


ODD: dict[str, tuple[str, Callable[[spec.ModelSpec, Arrays], None]]] = {
    "empty_history": ("history", empty_history),
    "unknown_and_negative_ids": ("", unknown_and_negative_ids),
    "nan_metadata": ("meta", nan_metadata),
    "zero_image": ("poster", zero_image),
}


@pytest.fixture(scope="module", params=["grpc", "http"])
def client(request, live_server):  # type: ignore[no-untyped-def]
    url = live_server.grpc_url if request.param == "grpc" else live_server.http_url
    with RecommenderClient(url, request.param) as c:
        yield c


def _still_serving(client: RecommenderClient, model: spec.ModelSpec, num_items: int) -> None:
    out = client.infer(model.name, good_request(model, num_items))
    assert all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f")


def _applicable(cases: dict[str, str]) -> list[tuple[str, str]]:
    """(model, case) pairs whose case needs an input (case -> input name, '' = any model) the model has."""
    return [(m, c) for m in MODELS for c, needs in cases.items() if not needs or needs in spec.MODELS[m].input_names]


@pytest.mark.parametrize(
    ("name", "case"), _applicable({c: "poster" if c == "truncated_image" else "" for c in MALFORMED})
)
def test_malformed_requests_are_rejected_by_name(client, catalog, name: str, case: str) -> None:  # type: ignore[no-untyped-def]
    model = spec.model_spec(name)
    request = good_request(model, catalog.artifacts.num_items)
    what = MALFORMED[case](model, request)
    with pytest.raises(InvalidRequestError) as e:
        client.infer(name, request, check=False)
    assert what in str(e.value), str(e.value)
    _still_serving(client, model, catalog.artifacts.num_items)


@pytest.mark.parametrize(("name", "case"), _applicable({c: needs for c, (needs, _) in ODD.items()}))
def test_odd_but_valid_values_get_finite_answers(client, catalog, name: str, case: str) -> None:  # type: ignore[no-untyped-def]
    model = spec.model_spec(name)
    _, mutate = ODD[case]
    request = good_request(model, catalog.artifacts.num_items)
    mutate(model, request)
    out = client.infer(name, request)
    if model in spec.CHECK_MODELS:  # a check model passes its inputs on unchanged (NaN meta is the CNN's to zero)
        for t, o in zip(model.inputs, model.outputs, strict=True):
            np.testing.assert_array_equal(out[o.name], request[t.name])
        return
    for t in model.outputs:
        assert out[t.name].shape[0] == 1
        if out[t.name].dtype.kind == "f":
            if "movie_id" in model.input_names and case == "unknown_and_negative_ids":
                # movieIds outside the catalog score -inf by contract: never NaN, never above a real movie
                assert not np.isnan(out[t.name]).any() and (out[t.name] < np.inf).all(), (name, case, t.name)
            else:
                assert np.isfinite(out[t.name]).all(), (name, case, t.name)
    _still_serving(client, model, catalog.artifacts.num_items)


def test_wrong_embedding_width_names_the_input(client, catalog) -> None:  # type: ignore[no-untyped-def]
    request = good_request(spec.FUSION_HEAD, catalog.artifacts.num_items)
    request["user_embedding"] = request["user_embedding"][:, :7]
    with pytest.raises(InvalidRequestError, match="user_embedding"):
        client.infer("fusion_head", request)
    _still_serving(client, spec.FUSION_HEAD, catalog.artifacts.num_items)
