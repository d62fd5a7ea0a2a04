"""Request plans: building requests from hybridrec.spec, features from hybridrec.preprocessing and parsing the answers.

The request logic is written once, without I/O, as *plans* (generators in :class:`ClientCore`): a plan yields the
server calls it needs (a list of :class:`~hybridrec.client.retries.Call`; the calls of one list are independent) and
receives their raw tritonclient results. :class:`hybridrec.client.RecommenderClient` runs plans with blocking calls
(:class:`hybridrec.client.transport.BlockingTransport`); :class:`hybridrec.client.aio.AsyncRecommenderClient` awaits
them. Both share the error mapping (:mod:`hybridrec.client.errors`) and the retry policy
(:mod:`hybridrec.client.retries`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from hybridrec import admin, spec
from hybridrec.client.errors import InvalidRequestError, ModelNotFoundError, RecommenderError
from hybridrec.client.results import Health, RankResult, ScoredItem
from hybridrec.client.retries import Call, RetryPolicy
from hybridrec.client.transport import Plan, _module
from hybridrec.preprocessing import (
    Artifacts,
    ImageSpec,
    ItemCatalog,
    ItemMetadata,
    PosterError,
    decode_poster,
    encode_history,
    item_features,
    load_titles,
    stack_items,
)

PosterSource: TypeAlias = bytes | str | Path | np.ndarray | None  # JPEG/PNG bytes or file, UINT8 [3, H, W], missing
# Items per item_encoder request: what the TensorRT profiles accept (spec.TRT_RANGES) and a bounded payload.
MAX_ITEMS_PER_REQUEST = spec.MAX_ITEMS
# encode_items keeps this many requests in flight (the async client): the image encoder's preferred batch size.
_ENCODE_CONCURRENCY = spec.ITEM_ENCODER.batching.preferred_batch_sizes[0] if spec.ITEM_ENCODER.batching else 1


def poster_pixels(source: PosterSource, image: ImageSpec, position: int) -> np.ndarray | None:
    """UINT8 [C, H, W] pixels of one poster source; InvalidRequestError naming ``position`` if it is unusable."""
    if source is None:
        return None
    if isinstance(source, np.ndarray):
        want = (image.channels, image.height, image.width)
        if source.dtype != np.uint8 or source.shape != want:
            raise InvalidRequestError(
                f"poster {position}: {source.dtype} {source.shape} array, but UINT8 {want} (CHW) expected"
            )
        return source
    if not isinstance(source, bytes | bytearray | memoryview | str | Path):
        raise InvalidRequestError(f"poster {position}: {type(source).__name__} is not bytes, a path or an array")
    try:
        return decode_poster(bytes(source) if not isinstance(source, str | Path) else source, image)
    except PosterError as e:
        raise InvalidRequestError(f"poster {position}: {e}") from None


class ClientCore:
    """Everything the sync and async clients share: configuration, request building, plans and result parsing."""

    _aio = False

    def __init__(
        self,
        url: str,
        protocol: str = "grpc",
        *,
        artifacts: Artifacts | str | Path | None = None,
        catalog: ItemCatalog | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        admin_key: str | None = None,
    ) -> None:
        """``timeout_s`` bounds every call (each method takes its own ``timeout_s`` too); ``retries`` and
        ``backoff_s`` set the :class:`RetryPolicy` of idempotent calls that find the server UNAVAILABLE."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.admin_key = admin_key  # None: read from $HYBRIDREC_ADMIN_KEY or the key file when a call needs it
        self.retry = RetryPolicy(retries, backoff_s)
        self._mod = _module(protocol, self._aio)
        # movieId -> title: the served catalog's own map, shipped beside artifacts.json in the model repository
        self.titles: dict[int, str] = {}
        if isinstance(artifacts, str | Path):
            if Path(artifacts).is_dir():
                self.titles = load_titles(artifacts)
            artifacts = Artifacts.load(artifacts)
        self.artifacts = artifacts if artifacts is not None else (catalog.artifacts if catalog else None)
        self.catalog = catalog
        self._open()

    def _open(self) -> None:
        """Set up the connection state (the sync and async clients differ)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, {self.protocol!r}, timeout_s={self.timeout_s})"

    def _timeout(self, timeout_s: float | None) -> float:
        t = self.timeout_s if timeout_s is None else timeout_s
        if t <= 0:
            raise ValueError(f"timeout_s must be > 0, got {t}")
        return t

    def _need_artifacts(self, what: str) -> Artifacts:
        if self.artifacts is None:
            raise RecommenderError(
                f"{what} needs the fitted artifacts: {type(self).__name__}(..., artifacts=repo_dir or catalog=...)"
            )
        return self.artifacts

    def _need_catalog(self) -> ItemCatalog:
        if self.catalog is None:
            raise RecommenderError(
                f"this call needs a catalog: {type(self).__name__}(..., catalog=ItemCatalog(data, artifacts))"
            )
        return self.catalog

    # --- tensors ---
    def build_inputs(self, model: spec.ModelSpec, arrays: dict[str, np.ndarray]) -> list[Any]:
        """InferInputs for ``model`` from numpy arrays (with batch axis), checked against the spec first."""
        checked = {t.name: np.ascontiguousarray(arrays[t.name]) for t in model.inputs if t.name in arrays}
        try:
            model.check_request(checked, fixed=spec.REQUEST_SIZES)
        except ValueError as e:
            raise InvalidRequestError(f"{model.name}: {e}") from None
        return self._raw_inputs(checked)

    def _raw_inputs(self, arrays: dict[str, np.ndarray]) -> list[Any]:
        inputs = []
        for name, a in arrays.items():
            x = self._mod.InferInput(name, list(a.shape), spec.wire_dtype(a.dtype))
            x.set_data_from_numpy(np.ascontiguousarray(a))
            inputs.append(x)
        return inputs

    def _infer_call(self, model_name: str, arrays: dict[str, np.ndarray], check: bool, timeout_s: float | None) -> Call:
        try:
            m = spec.model_spec(model_name)
        except KeyError as e:
            raise ModelNotFoundError(f"{model_name}: {e.args[0]}") from None
        # check=False is a raw passthrough: it lets tests send malformed requests to the server on purpose
        inputs = self.build_inputs(m, arrays) if check else self._raw_inputs(arrays)
        outputs = [self._mod.InferRequestedOutput(n) for n in m.output_names]
        return Call("infer", m.name, (m.name, inputs), {"outputs": outputs}, self._timeout(timeout_s))

    @staticmethod
    def _outputs(call: Call, result: Any) -> dict[str, np.ndarray]:
        return {o.name(): result.as_numpy(o.name()) for o in call.kwargs["outputs"]}

    def _plan_infer(
        self, model_name: str, arrays: dict[str, np.ndarray], check: bool = True, timeout_s: float | None = None
    ) -> Plan[dict[str, np.ndarray]]:
        call = self._infer_call(model_name, arrays, check, timeout_s)
        (result,) = yield [call]
        return self._outputs(call, result)

    def _plan_rank_content_tensors(
        self, history: np.ndarray, items: dict[str, np.ndarray], timeout_s: float | None
    ) -> Plan[np.ndarray]:
        arrays = {"history": spec.served_history(history)[None]}
        arrays.update({k: np.asarray(v)[None] for k, v in items.items()})
        out = yield from self._plan_infer("rank_content", arrays, True, timeout_s)
        return out["scores"][0]

    def _plan_rank_ids_tensors(
        self, history: np.ndarray, movie_ids: np.ndarray, timeout_s: float | None
    ) -> Plan[np.ndarray]:
        """Scores [N] of catalog movieIds; -inf for ids the served catalog does not hold.

        Candidates are padded (with an id that is never a movie) to a power of two, and lists longer than
        spec.MAX_RANK_CANDIDATES are sent as several requests: requests of identical shape are what the
        onnxruntime backend's dynamic batcher merges."""
        ids = np.asarray(movie_ids, dtype=np.int64).reshape(-1)
        if not ids.size:
            raise InvalidRequestError("rank: no candidates given")
        hist = spec.served_history(history)[None]
        calls = []
        for lo in range(0, ids.size, spec.MAX_RANK_CANDIDATES):
            padded = spec.rank_candidates(ids[lo : lo + spec.MAX_RANK_CANDIDATES])
            calls.append(self._infer_call("rank", {"history": hist, "movie_id": padded}, True, timeout_s))
        results = yield calls
        parts = [self._outputs(c, r)["scores"][0] for c, r in zip(calls, results, strict=True)]
        return np.concatenate(parts)[: ids.size]

    def _plan_recommend_tensors(
        self, history: np.ndarray, k: int, timeout_s: float | None
    ) -> Plan[tuple[np.ndarray, np.ndarray]]:
        arrays = {"history": spec.served_history(history)[None], "k": np.array([k], dtype=np.int64)}
        out = yield from self._plan_infer("recommend", arrays, True, timeout_s)
        return out["movie_ids"][0], out["scores"][0]

    # --- movies ---
    def _encode_history(self, history: Sequence[int]) -> np.ndarray:
        return encode_history(history, self._need_artifacts("this call"))

    def _plan_recommend(self, history: Sequence[int], k: int, timeout_s: float | None) -> Plan[RankResult]:
        if k < 1:
            raise InvalidRequestError(f"recommend: k must be >= 1, got {k}")
        encoded = self._encode_history(history)
        t0 = time.perf_counter()
        ids, scores = yield from self._plan_recommend_tensors(encoded, k, timeout_s)
        latency = (time.perf_counter() - t0) * 1000.0
        items = tuple(
            ScoredItem(int(m), float(s), self._title(int(m))) for m, s in zip(ids, scores, strict=True) if m >= 0
        )
        return RankResult(items, latency)

    def _title(self, movie_id: int) -> str | None:
        if movie_id in self.titles:
            return self.titles[movie_id]
        return self.catalog.title(movie_id) if self.catalog else None

    def _plan_rank(
        self, history: Sequence[int], candidates: Sequence[int], timeout_s: float | None
    ) -> Plan[RankResult]:
        """Catalog movies by movieId: only ids travel; the server looks their embeddings up in its catalog."""
        if not len(candidates):
            raise InvalidRequestError("rank: no candidates given")
        encoded = self._encode_history(history)
        t0 = time.perf_counter()
        scores = yield from self._plan_rank_ids_tensors(encoded, np.asarray(candidates, np.int64), timeout_s)
        latency = (time.perf_counter() - t0) * 1000.0
        unknown = [int(candidates[i]) for i in np.flatnonzero(np.isneginf(scores))]
        if unknown:
            raise InvalidRequestError(
                f"rank: movie ids not in the served catalog: {unknown[:10]} (use rank_items for new movies)"
            )
        order = np.argsort(-scores, kind="stable")
        ranked = tuple(ScoredItem(int(candidates[i]), float(scores[i]), self._title(int(candidates[i]))) for i in order)
        return RankResult(ranked, latency)

    @staticmethod
    def _check_items(posters: Sequence[PosterSource], metadata: Sequence[ItemMetadata], what: str) -> None:
        if len(posters) != len(metadata):
            raise InvalidRequestError(f"{what}: {len(posters)} posters but {len(metadata)} metadata")
        if not len(metadata):
            raise InvalidRequestError(f"{what}: no items given")

    def item_tensors(
        self, posters: Sequence[PosterSource], metadata: Sequence[ItemMetadata], what: str = "items", offset: int = 0
    ) -> dict[str, np.ndarray]:
        """Item tensors [M, ...] of movies given by poster and metadata alone (item id UNK: pure content).

        Errors name positions counted from ``offset`` (the position of ``posters[0]`` in the caller's sequence)."""
        art = self._need_artifacts(what)
        self._check_items(posters, metadata, what)
        rows = []
        for i, (poster, md) in enumerate(zip(posters, metadata, strict=True), start=offset):
            if not isinstance(md, ItemMetadata):
                raise InvalidRequestError(f"{what}: metadata {i} is a {type(md).__name__}, not an ItemMetadata")
            try:
                pixels = poster_pixels(poster, art.image, i)
            except InvalidRequestError as e:
                raise InvalidRequestError(f"{what}: {e}") from None
            rows.append(item_features(md, pixels, art, spec.UNK_ID))
        return stack_items(rows)

    def _plan_rank_items(
        self, history: Sequence[int], items: Sequence[tuple[ItemMetadata, PosterSource]], timeout_s: float | None
    ) -> Plan[np.ndarray]:
        feats = self.item_tensors([p for _, p in items], [md for md, _ in items], "rank_items")
        scores = yield from self._plan_rank_content_tensors(self._encode_history(history), feats, timeout_s)
        return scores

    def _plan_encode_items(
        self,
        posters: Sequence[PosterSource],
        metadata: Sequence[ItemMetadata],
        chunk_size: int,
        timeout_s: float | None,
    ) -> Plan[np.ndarray]:
        if not 1 <= chunk_size <= MAX_ITEMS_PER_REQUEST:
            raise ValueError(f"chunk_size must be in 1..{MAX_ITEMS_PER_REQUEST}, got {chunk_size}")
        self._need_artifacts("encode_items")
        self._check_items(posters, metadata, "encode_items")  # before anything is decoded
        out: list[np.ndarray] = []
        group = chunk_size * _ENCODE_CONCURRENCY  # posters are decoded group by group: bounded memory
        for start in range(0, len(metadata), group):
            calls = []
            for lo in range(start, min(start + group, len(metadata)), chunk_size):
                hi = lo + chunk_size
                feats = self.item_tensors(posters[lo:hi], metadata[lo:hi], "encode_items", offset=lo)
                calls.append(self._infer_call("item_encoder", {k: v[None] for k, v in feats.items()}, True, timeout_s))
            results = yield calls
            out.extend(self._outputs(c, r)["item_embedding"][0] for c, r in zip(calls, results, strict=True))
        return np.concatenate(out).astype(np.float32, copy=False)

    # --- server ---
    def _plan_health(self, timeout_s: float | None) -> Plan[Health]:
        t = self._timeout(timeout_s)
        names = list(spec.MODELS)
        live, ready = yield [
            Call("is_server_live", "server", timeout_s=t),
            Call("is_server_ready", "server", timeout_s=t),
        ]
        models = yield [Call("is_model_ready", n, (n,), timeout_s=t) for n in names]
        return {"live": bool(live), "ready": bool(ready), "models": dict(zip(names, map(bool, models), strict=True))}

    def _plan_model_metadata(self, model_name: str, timeout_s: float | None) -> Plan[Any]:
        (meta,) = yield [Call("get_model_metadata", model_name, (model_name,), timeout_s=self._timeout(timeout_s))]
        return meta

    def _admin_headers(self) -> dict[str, str]:
        key = self.admin_key if self.admin_key is not None else admin.read_key()
        return admin.headers(key, self.protocol)

    def _plan_model_control(self, method: str, model_name: str, timeout_s: float | None) -> Plan[None]:
        kwargs = {"headers": self._admin_headers()}
        yield [Call(method, model_name, (model_name,), kwargs, timeout_s=self._timeout(timeout_s), idempotent=False)]
