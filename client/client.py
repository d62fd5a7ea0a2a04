"""RecommenderClient: a typed client of the served ensembles over tritonclient gRPC or HTTP (no torch needed).

Requests are built from hybridrec.spec and features from hybridrec.preprocessing, the same code that training used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hybridrec import spec
from hybridrec.preprocessing import Artifacts, ItemCatalog, ItemMetadata, encode_history, item_features, stack_items


class RecommenderError(RuntimeError):
    """A request the server did not serve."""


class InvalidRequestError(RecommenderError, ValueError):
    """The request was malformed (wrong shape/dtype, unknown id ...); rejected client- or server-side."""


class ModelNotFoundError(RecommenderError):
    pass


class ServerUnavailableError(RecommenderError, ConnectionError):
    pass


@dataclass(frozen=True)
class ScoredItem:
    movie_id: int
    score: float
    title: str | None = None


@dataclass(frozen=True)
class RankResult:
    items: tuple[ScoredItem, ...]  # best first
    latency_ms: float

    def top(self, k: int) -> tuple[ScoredItem, ...]:
        return self.items[:k]


def _module(protocol: str) -> ModuleType:
    if protocol == "grpc":
        import tritonclient.grpc as mod
    elif protocol == "http":
        import tritonclient.http as mod
    else:
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    return mod


def _error(e: Exception, model: str) -> RecommenderError:
    status = str(getattr(e, "status", lambda: "")() or "")
    text = getattr(e, "message", lambda: str(e))() or str(e)
    if "INVALID_ARG" in status or status == "400":
        return InvalidRequestError(f"{model}: {text}")
    if "NOT_FOUND" in status or status == "404" or "unknown model" in text.lower():
        return ModelNotFoundError(f"{model}: {text}")
    if "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower():
        return ServerUnavailableError(f"{model}: {text}")
    return RecommenderError(f"{model}: [{status}] {text}")


class RecommenderClient:
    """One reused connection to a Triton server serving hybridrec's model repository.

    ``artifacts`` (fitted preprocessing) and ``catalog`` (movie features) are needed by the movie-level calls
    (``rank``); the tensor-level ``infer`` needs neither."""

    def __init__(
        self,
        url: str,
        protocol: str = "grpc",
        *,
        artifacts: Artifacts | str | Path | None = None,
        catalog: ItemCatalog | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self._mod = _module(protocol)
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self._client = self._mod.InferenceServerClient(url)
        if isinstance(artifacts, str | Path):
            artifacts = Artifacts.load(artifacts)
        self.artifacts = artifacts if artifacts is not None else (catalog.artifacts if catalog else None)
        self.catalog = catalog

    # --- lifecycle ---
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        try:
            live, ready = self._client.is_server_live(), self._client.is_server_ready()
            models = {m.name: self._client.is_model_ready(m.name) for m in spec.MODELS.values()}
        except Exception as e:
            raise _error(e, "server") from e
        return {"live": live, "ready": ready, "models": models}

    def model_metadata(self, model_name: str) -> Any:
        """The server's metadata of one model (raises ModelNotFoundError for a model it does not serve)."""
        try:
            return self._client.get_model_metadata(model_name)
        except Exception as e:
            raise _error(e, model_name) from e

    # --- tensor level ---
    def build_inputs(self, model: spec.ModelSpec, arrays: dict[str, np.ndarray]) -> list[Any]:
        """InferInputs for ``model`` from numpy arrays (with batch axis), checked against the spec first."""
        missing = [n for n in model.input_names if n not in arrays]
        if missing:
            raise InvalidRequestError(f"{model.name}: missing inputs {missing}")
        inputs = []
        for t in model.inputs:
            a = np.ascontiguousarray(arrays[t.name])
            try:
                t.check(a, batched=model.batched)
            except ValueError as e:
                raise InvalidRequestError(f"{model.name}: {e}") from None
            x = self._mod.InferInput(t.name, list(a.shape), t.wire_dtype)
            x.set_data_from_numpy(a)
            inputs.append(x)
        return inputs

    def infer(self, model_name: str, arrays: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        """Run any served model on spec-named numpy arrays; returns its outputs by name."""
        m = spec.model_spec(model_name)
        if check:
            inputs = self.build_inputs(m, arrays)
        else:  # raw passthrough: lets tests send malformed requests to the server on purpose
            inputs = []
            for name, a in arrays.items():
                x = self._mod.InferInput(name, list(a.shape), _wire(a.dtype))
                x.set_data_from_numpy(np.ascontiguousarray(a))
                inputs.append(x)
        outputs = [self._mod.InferRequestedOutput(n) for n in m.output_names]
        try:
            if self.protocol == "grpc":
                res = self._client.infer(m.name, inputs, outputs=outputs, client_timeout=self.timeout_s)
            else:
                res = self._client.infer(m.name, inputs, outputs=outputs)
        except Exception as e:
            raise _error(e, m.name) from e
        return {n: res.as_numpy(n) for n in m.output_names}

    def rank_tensors(self, history: np.ndarray, items: dict[str, np.ndarray]) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against item tensors [N, ...]."""
        arrays = {"history": np.asarray(history, dtype=np.int64).reshape(1, -1)}
        arrays.update({k: v[None] for k, v in items.items()})
        return self.infer("rank", arrays)["scores"][0]

    def load_model(self, model_name: str) -> None:
        """(Re)load a model on a server started with --model-control-mode=explicit (e.g. after a catalog change)."""
        try:
            self._client.load_model(model_name)
        except Exception as e:
            raise _error(e, model_name) from e

    def recommend_tensors(self, history: np.ndarray, k: int = spec.DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids [K], scores [K]) from the `recommend` ensemble for one encoded history [L]."""
        out = self.infer(
            "recommend",
            {"history": np.asarray(history, dtype=np.int64).reshape(1, -1), "k": np.array([k], dtype=np.int64)},
        )
        return out["movie_ids"][0], out["scores"][0]

    # --- movie level ---
    def _encode_history(self, history: Sequence[int]) -> np.ndarray:
        if self.artifacts is None:
            raise RecommenderError("this call needs the fitted artifacts: RecommenderClient(..., artifacts=repo_dir)")
        return encode_history(history, self.artifacts)

    def recommend(self, history: Sequence[int], k: int = spec.DEFAULT_K) -> RankResult:
        """Top-k unseen catalog movies for a chronological history of movieIds (oldest first)."""
        if k < 1:
            raise InvalidRequestError(f"recommend: k must be >= 1, got {k}")
        t0 = time.perf_counter()
        ids, scores = self.recommend_tensors(self._encode_history(history), k)
        latency = (time.perf_counter() - t0) * 1000.0
        title = self.catalog.title if self.catalog else (lambda _m: None)
        items = tuple(ScoredItem(int(m), float(s), title(int(m))) for m, s in zip(ids, scores, strict=True) if m >= 0)
        return RankResult(items, latency)

    def rank_items(self, history: Sequence[int], items: Sequence[tuple[ItemMetadata, np.ndarray | None]]) -> np.ndarray:
        """Scores of items given by poster + metadata alone (e.g. brand-new movies), through `rank`."""
        if self.artifacts is None:
            raise RecommenderError("this call needs the fitted artifacts: RecommenderClient(..., artifacts=repo_dir)")
        art = self.artifacts
        feats = stack_items([item_features(md, poster, art) for md, poster in items])
        return self.rank_tensors(self._encode_history(history), feats)

    def _need_catalog(self) -> ItemCatalog:
        if self.catalog is None:
            raise RecommenderError("this call needs a catalog: RecommenderClient(..., catalog=ItemCatalog(data, art))")
        return self.catalog

    def rank(self, history: Sequence[int], candidates: Sequence[int]) -> RankResult:
        """Rank candidate movieIds for a user whose chronological history (movieIds, oldest first) is given."""
        catalog = self._need_catalog()
        if not candidates:
            raise InvalidRequestError("rank: no candidates given")
        try:
            items = catalog.features(candidates)
        except KeyError as e:
            raise InvalidRequestError(f"rank: {e.args[0]}") from None
        t0 = time.perf_counter()
        scores = self.rank_tensors(encode_history(history, catalog.artifacts), items)  # catalog's own artifacts
        latency = (time.perf_counter() - t0) * 1000.0
        order = np.argsort(-scores, kind="stable")
        ranked = tuple(
            ScoredItem(int(candidates[i]), float(scores[i]), catalog.title(int(candidates[i]))) for i in order
        )
        return RankResult(ranked, latency)


def _wire(dtype: np.dtype) -> str:
    names = {
        "uint8": "UINT8",
        "int64": "INT64",
        "float32": "FP32",
        "int32": "INT32",
        "float64": "FP64",
        "bool": "BOOL",
        "float16": "FP16",
        "int8": "INT8",
        "int16": "INT16",
    }
    return names.get(np.dtype(dtype).name, "BYTES")
