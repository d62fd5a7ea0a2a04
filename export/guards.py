"""Per-request size guards inside the exported graphs: what the python backend checks in `ModelSpec.check_request`,
the onnxruntime and TensorRT backends cannot (a config can fix a dim, not bound it). Each capped axis
(``ModelSpec.caps``) of an input gets a guard: its size indexes a table of ``cap + 1`` entries (0 is sent out of range
too), so onnxruntime fails that one request with an error that names the input, the axis and the bound, before any
real work; the input then flows on through a no-op Where that makes the guard a dependency of everything downstream.
Triton never merges requests of different shapes without ragged batching, so an oversize request fails alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hybridrec import spec


def guard_name(model: spec.ModelSpec, tensor: str, axis_name: str, cap: int) -> str:
    return f"{model.name}_{tensor}_{axis_name}_must_be_1_to_{cap}"


def add_size_guards(proto: onnx.ModelProto, model: spec.ModelSpec) -> onnx.ModelProto:
    """Guard every capped axis of ``model`` on every input that carries it (inputs that should agree on an axis may
    not, and the graph's broadcasting would not always say so)."""
    for axis_name, cap in model.caps:
        targets = [(t, axis) for t in model.inputs for axis, d in t.axes(model.batched) if d == axis_name]
        if not targets:
            raise ValueError(f"{model.name}: no input carries axis {axis_name}")
        for t, axis in targets:
            _guard(proto.graph, guard_name(model, t.name, axis_name, cap), t, axis, cap)
    return proto


def _guard(graph: onnx.GraphProto, name: str, t: spec.TensorSpec, axis: int, cap: int) -> None:
    """Fail the run unless axis ``axis`` of ``t`` is within 1..cap (0 is sent out of range too)."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(axis, np.int64), f"{name}__axis"),
            numpy_helper.from_array(np.array(cap + 1, np.int64), f"{name}__out"),
        ]
    )
    index = [
        helper.make_node("Shape", [t.name], [f"{name}__shape"]),
        helper.make_node("Gather", [f"{name}__shape", f"{name}__axis"], [f"{name}__size"], axis=0),
        helper.make_node("Equal", [f"{name}__size", f"{name}__zero"], [f"{name}__empty"]),
        helper.make_node("Where", [f"{name}__empty", f"{name}__out", f"{name}__size"], [f"{name}__index"]),
    ]
    _fail_unless_in_range(graph, name, t, index, cap + 1)


def _fail_unless_in_range(
    graph: onnx.GraphProto, name: str, t: spec.TensorSpec, index: list[onnx.NodeProto], table_len: int
) -> None:
    """The one guard mechanism: ``index`` computes ``<name>__index`` (an int64 scalar); a Gather named ``name`` into a
    table of ``table_len`` entries fails the run when it is out of range, and input ``t`` flows on through a no-op
    Where on the result, so every consumer of ``t`` waits for the check."""
    if any(out.name == t.name for out in graph.output):
        raise ValueError(f"input {t.name} is also an output; cannot guard it")
    guarded = f"{name}__input"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(table_len, np.int64), f"{name}__table"),
            numpy_helper.from_array(np.array(0, np.int64), f"{name}__zero"),
        ]
    )
    # Rewire every consumer of the input to the guarded copy before adding the guard's own nodes.
    for node in graph.node:
        node.input[:] = [guarded if i == t.name else i for i in node.input]
    nodes = [
        *index,
        helper.make_node("Gather", [f"{name}__table", f"{name}__index"], [f"{name}__ok"], axis=0, name=name),
        helper.make_node("Equal", [f"{name}__ok", f"{name}__zero"], [f"{name}__pass"]),
        helper.make_node("Where", [f"{name}__pass", t.name, t.name], [guarded]),
    ]
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)


_ONNX_TYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64, "uint8": onnx.TensorProto.UINT8}


def build_check(model: spec.ModelSpec, opset: int = 17) -> onnx.ModelProto:
    """The graph of a check model (``spec.CHECK_MODELS``): every output is its input, once the capped axes are within
    their bounds and every named axis agrees across the inputs that carry it."""
    batch = ["batch"] if model.batched else []
    # the served sizes (history 50) are fixed in the graph: Triton wants an output's dims exactly as the graph's
    dims = {t.name: [spec.SERVED_SIZES.get(d, d) if isinstance(d, str) else d for d in t.dims] for t in model.inputs}
    graph = helper.make_graph(
        [helper.make_node("Identity", [t.name], [o.name]) for t, o in zip(model.inputs, model.outputs, strict=True)],
        model.name,
        [helper.make_tensor_value_info(t.name, _ONNX_TYPES[t.dtype], [*batch, *dims[t.name]]) for t in model.inputs],
        [
            helper.make_tensor_value_info(o.name, _ONNX_TYPES[o.dtype], [*batch, *dims[t.name]])
            for t, o in zip(model.inputs, model.outputs, strict=True)
        ],
    )
    first: dict[str, tuple[spec.TensorSpec, int]] = {}
    for t in model.inputs:
        for axis, d in t.axes(model.batched):
            if not isinstance(d, str):
                continue
            if d not in first:
                first[d] = (t, axis)
                continue
            ref, ref_axis = first[d]
            _agree(graph, f"{model.name}_{t.name}_{d}_must_equal_{ref.name}_{d}", t, axis, ref, ref_axis)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hybridrec")
    proto.ir_version = 8  # readable by the onnxruntime of Triton 2.51's container and newer
    add_size_guards(proto, model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _agree(
    graph: onnx.GraphProto, name: str, t: spec.TensorSpec, axis: int, ref: spec.TensorSpec, ref_axis: int
) -> None:
    """Fail the run when axis ``axis`` of ``t`` differs from axis ``ref_axis`` of ``ref``."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(axis, np.int64), f"{name}__axis"),
            numpy_helper.from_array(np.array(ref_axis, np.int64), f"{name}__ref_axis"),
            numpy_helper.from_array(np.array(1, np.int64), f"{name}__one"),
        ]
    )
    index = [
        helper.make_node("Shape", [t.name], [f"{name}__shape"]),
        helper.make_node("Gather", [f"{name}__shape", f"{name}__axis"], [f"{name}__size"], axis=0),
        helper.make_node("Shape", [ref.name], [f"{name}__ref_shape"]),
        helper.make_node("Gather", [f"{name}__ref_shape", f"{name}__ref_axis"], [f"{name}__ref_size"], axis=0),
        helper.make_node("Equal", [f"{name}__size", f"{name}__ref_size"], [f"{name}__same"]),
        helper.make_node("Where", [f"{name}__same", f"{name}__zero", f"{name}__one"], [f"{name}__index"]),
    ]
    _fail_unless_in_range(graph, name, t, index, 1)


def write_check_models(repo: str | Path) -> list[Path]:
    """Write every check model's graph into ``repo`` (they hold no state: the same for every run)."""
    paths = []
    for m in spec.CHECK_MODELS:
        path = Path(repo) / m.name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".onnx.tmp")
        onnx.save(build_check(m), str(tmp))
        tmp.replace(path)
        paths.append(path)
    return paths
