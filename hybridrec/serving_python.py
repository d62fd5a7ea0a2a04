"""Triton python-backend model that serves one exported ONNX file with onnxruntime (the CPU profile).

Triton's dynamic batcher hands ``execute`` a list of requests without stacking them. We validate each request,
pad the ragged axes (N candidates, L history items) to the largest request, make ONE ``session.run`` for the whole
batch, and split the outputs back. Padding is safe by construction: items are scored independently and the sequence
encoder is invariant to appended padding. A bad request gets its own error response; the others are still served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request that cannot be served as sent; the message names the offending input."""


def validate(model: spec.ModelSpec, arrays: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    present = {k: a for k, a in arrays.items() if a is not None}
    try:
        model.check_request(present)
    except ValueError as e:
        raise RequestError(f"{model.name}: {e}") from None
    for t in model.inputs:
        if present[t.name].shape[0] == 0:
            raise RequestError(f"{model.name}: input '{t.name}' has an empty batch")
    return {t.name: present[t.name] for t in model.inputs}


def request_sizes(model: spec.ModelSpec, arrays: dict[str, np.ndarray]) -> dict[str, int]:
    sizes = {"batch": next(iter(arrays.values())).shape[0]}
    for t in model.inputs:
        for axis, d in t.axes(model.batched):
            if isinstance(d, str):
                sizes[d] = arrays[t.name].shape[axis]
    return sizes


def merge(model: spec.ModelSpec, requests: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pad every request's ragged axes to the batch maximum (with zeros = PAD) and concatenate on the batch axis."""
    if len(requests) == 1:
        return dict(requests[0])
    merged = {}
    for t in model.inputs:
        arrays = [r[t.name] for r in requests]
        target = [max(a.shape[k] for a in arrays) for k in range(arrays[0].ndim)]
        padded = []
        for a in arrays:
            pad = [(0, 0)] + [(0, target[k] - a.shape[k]) for k in range(1, a.ndim)]
            padded.append(np.pad(a, pad) if any(p[1] for p in pad) else a)
        merged[t.name] = np.concatenate(padded, axis=0) if len(padded) > 1 else padded[0]
    return merged


def split(model: spec.ModelSpec, outputs: dict[str, np.ndarray], sizes: Sequence[dict[str, int]]) -> list[dict]:
    """Inverse of merge: cut the batch axis per request and un-pad the axes named after request inputs."""
    if len(sizes) == 1:
        return [dict(outputs)]
    result: list[dict[str, np.ndarray]] = []
    start = 0
    for s in sizes:
        stop = start + s["batch"]
        per: dict[str, np.ndarray] = {}
        for t in model.outputs:
            a = outputs[t.name][start:stop]
            index = tuple(slice(0, s[d]) if isinstance(d, str) and d in s else slice(None) for d in t.dims)
            per[t.name] = a[(slice(None), *index)]
        result.append(per)
        start = stop
    return result


class OnnxModel:
    """The TritonPythonModel of every composing model's CPU profile (see the generated model.py files)."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.model = spec.model_spec(args["model_name"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if not path.exists():
            raise pb_utils.TritonModelException(f"{path} not found: run `hybridrec export` first")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0") or 0)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = self.model.output_names
        # Dims the spec leaves open but the exported graph fixes (e.g. the embedding width D): checked per request,
        # so a wrong width is that request's INVALID_ARGUMENT, not an onnxruntime failure of the whole batch.
        self.fixed = {
            i.name: [(axis, d) for axis, d in enumerate(i.shape) if isinstance(d, int) and axis > 0]
            for i in self.session.get_inputs()
        }

    def _check_fixed(self, arrays: dict[str, np.ndarray]) -> None:
        for name, dims in self.fixed.items():
            shape = arrays[name].shape
            for axis, size in dims:
                if axis < len(shape) and shape[axis] != size:
                    raise RequestError(
                        f"{self.model.name}: input '{name}' has size {shape[axis]} on axis {axis}, model expects {size}"
                    )

    def _run(self, arrays: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        outs = self.session.run(self.output_names, merge(self.model, arrays))
        sizes = [request_sizes(self.model, a) for a in arrays]
        return split(self.model, dict(zip(self.output_names, outs, strict=True)), sizes)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        good: list[tuple[int, dict[str, np.ndarray]]] = []
        for i, req in enumerate(requests):
            try:
                raw = {}
                for t in self.model.inputs:
                    tensor = pb.get_input_tensor_by_name(req, t.name)
                    raw[t.name] = None if tensor is None else tensor.as_numpy()
                arrays = validate(self.model, raw)
                self._check_fixed(arrays)
                good.append((i, arrays))
            except RequestError as e:  # the client's fault: INVALID_ARGUMENT / HTTP 400, like Triton's own checks
                responses[i] = pb.InferenceResponse(error=self._error(str(e), invalid=True))
        if good:
            try:
                results = self._run([a for _, a in good])
            except Exception:  # one poisoned request must not fail its neighbours: retry them one by one
                log.exception("%s: batched run failed; retrying requests one by one", self.model.name)
                results = []
                for _, a in good:
                    try:
                        results.extend(self._run([a]))
                    except Exception as e:
                        results.append({"__error__": str(e)})  # type: ignore[dict-item]
            for (i, _), res in zip(good, results, strict=True):
                if "__error__" in res:
                    responses[i] = pb.InferenceResponse(error=self._error(f"{self.model.name}: {res['__error__']}"))
                else:
                    tensors = [pb.Tensor(name, np.ascontiguousarray(arr)) for name, arr in res.items()]
                    responses[i] = pb.InferenceResponse(output_tensors=tensors)
        return responses

    def _error(self, message: str, invalid: bool = False) -> Any:
        code = getattr(self.pb.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
        return self.pb.TritonError(message) if code is None else self.pb.TritonError(message, code)

    def finalize(self) -> None:
        self.session = None
