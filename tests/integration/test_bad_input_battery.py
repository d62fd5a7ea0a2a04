"""A bad-input battery generated from each served model's own metadata and config (GET /v2/models/<m> and
/config), run against both config sets: every input gets each dim at 0, 1, max, max+1 and huge, every other dtype,
NaN/inf or extreme integers, and each model a missing and an extra input. In-range sizes must be served, out-of-range
ones refused; after every case a valid request is served and the server and the model are still ready."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.client import RecommenderClient, RecommenderError

HUGE_BYTES = 48 << 20  # a "huge" dim is as large as fits in this many bytes (and at least max + 1)
DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
CATALOG_MOVIES = [1, 2, 3, 6]


def _get(server: Any, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{path}") as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _valid(model: spec.ModelSpec, sizes: dict[str, int] | None = None, batch: int = 1) -> dict[str, np.ndarray]:
    r = spec.example_batch(model, batch, {"N": 4, "K": 3, **(sizes or {})}, id_high=40, seed=11)
    if "movie_id" in r:
        r["movie_id"][:] = np.resize(np.array(CATALOG_MOVIES), r["movie_id"].shape)
    return r


class Battery:
    def __init__(self, server: Any, model: spec.ModelSpec) -> None:
        self.server, self.model = server, model
        self.meta = _get(server, model.name)
        self.config = _get(server, f"{model.name}/config")
        self.caps = {
            k.removeprefix("max_"): int(v["string_value"])
            for k, v in self.config.get("parameters", {}).items()
            if k.startswith("max_")
        }
        self.failures: list[str] = []

    def axes(self, t: spec.TensorSpec) -> list[tuple[int, str | int, int]]:
        """(array axis, axis name or fixed size, max) of every axis of input ``t``, the batch axis included."""
        shape = next(i["shape"] for i in self.meta["inputs"] if i["name"] == t.name)
        names: list[str | int] = (["batch"] if self.model.batched else []) + list(t.dims)
        out = []
        for axis, (size, name) in enumerate(zip(shape, names, strict=True)):
            if size != -1:
                out.append((axis, size, size))
            elif name == "batch":
                out.append((axis, "batch", int(self.config["max_batch_size"])))
            else:
                out.append((axis, name, self.caps.get(str(name), 64)))
        return out

    def send(self, client: RecommenderClient, arrays: dict[str, np.ndarray]) -> Any:
        return client.infer(self.model.name, arrays, check=False, timeout_s=120)

    def case(self, client: RecommenderClient, label: str, arrays: dict[str, np.ndarray], expect: str) -> None:
        """expect: "ok" (must be served), "error" (must be refused), "any" (either; it must not break anything)."""
        try:
            self.send(client, arrays)
            outcome = "ok"
        except RecommenderError as e:
            outcome = f"error: {type(e).__name__}: {str(e)[:160]}"
        if (expect == "ok" and outcome != "ok") or (expect == "error" and outcome == "ok"):
            self.failures.append(f"{label}: expected {expect}, got {outcome}")
        try:  # the invariant after every case: still serving, still ready
            self.send(client, _valid(self.model))
            health = client.health()
            if not (health["ready"] and health["models"][self.model.name]):
                self.failures.append(f"{label}: not ready afterwards: {health}")
        except RecommenderError as e:
            self.failures.append(f"{label}: the next valid request failed: {e}")

    def run(self, clients: list[RecommenderClient]) -> list[str]:
        n = 0

        def client() -> RecommenderClient:
            nonlocal n
            n += 1
            return clients[n % len(clients)]  # alternate gRPC and HTTP

        m = self.model
        for t in m.inputs:
            for axis, name, top in self.axes(t):
                per_unit = int(np.prod([s for a, s in enumerate(_valid(m)[t.name].shape) if a != axis])) * max(
                    t.np_dtype.itemsize, 1
                )
                huge = max(top + 1, min(10**6, HUGE_BYTES // max(per_unit, 1)))
                for size in sorted({0, 1, top, top + 1, huge}):
                    ok = 1 <= size <= top if isinstance(name, str) else size == name
                    if isinstance(name, str) and size <= top + 1:  # resize every input that shares the axis
                        batched = name in ("batch", "B")
                        arrays = _valid(m, {} if batched else {name: size}, batch=size if batched else 1)
                    else:  # a fixed dim, or huge: only this input (the server must refuse it whatever the rest)
                        arrays = self._resized(t, axis, size)
                    self.case(
                        client(), f"{m.name}.{t.name} axis {axis} ({name}) = {size}", arrays, "ok" if ok else "error"
                    )
            for wire, dtype in DTYPES.items():
                if wire == t.wire_dtype:
                    continue
                arrays = _valid(m)
                a = arrays[t.name]
                arrays[t.name] = np.full(a.shape, b"x", object) if dtype is np.object_ else a.astype(dtype)
                self.case(client(), f"{m.name}.{t.name} as {wire}", arrays, "error")
            if t.dtype == "float32":
                for bad in (np.nan, np.inf, -np.inf):
                    arrays = _valid(m)
                    arrays[t.name] = np.full_like(arrays[t.name], bad)
                    self.case(client(), f"{m.name}.{t.name} all {bad}", arrays, "any")
            elif t.dtype == "int64":
                for bad in (np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1):
                    arrays = _valid(m)
                    arrays[t.name] = np.full_like(arrays[t.name], bad)
                    self.case(client(), f"{m.name}.{t.name} all {bad}", arrays, "any")
            arrays = _valid(m)
            del arrays[t.name]
            self.case(client(), f"{m.name} without {t.name}", arrays, "error")
        arrays = _valid(m)
        arrays["not_an_input"] = np.zeros((1, 3), np.float32)
        self.case(client(), f"{m.name} with an extra input", arrays, "error")
        return self.failures

    def _resized(self, t: spec.TensorSpec, axis: int, size: int) -> dict[str, np.ndarray]:
        arrays = _valid(self.model)
        a = arrays[t.name]
        shape = list(a.shape)
        shape[axis] = size
        arrays[t.name] = np.resize(a, shape) if a.size else np.zeros(shape, a.dtype)
        return arrays


@pytest.mark.parametrize("server_fixture", ["live_server", "cpu_server"])
@pytest.mark.parametrize("model", list(spec.MODELS))
def test_bad_input_battery(request: pytest.FixtureRequest, server_fixture: str, model: str) -> None:
    server = request.getfixturevalue(server_fixture)
    with (
        RecommenderClient(server.grpc_url, "grpc", retries=0) as g,
        RecommenderClient(server.http_url, "http", retries=0) as h,
    ):
        failures = Battery(server, spec.model_spec(model)).run([g, h])
    assert not failures, "\n".join(failures)
