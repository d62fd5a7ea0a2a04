"""TensorRT plans for the `plan` config set, built from the exported ONNX files with the tensorrt Python API.

Optimisation profiles come from hybridrec.spec (TRT_RANGES and each model's max batch), so a plan accepts every
request its config admits. Where tensorrt is not installed (CPU machines), building is skipped with a clear message.
Plans are specific to the GPU and TensorRT version they were built with: build them on the serving machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hybridrec import spec

log = logging.getLogger(__name__)


class TensorRTUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class Profile:
    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profiles(model: spec.ModelSpec, onnx_shapes: dict[str, list[int | str]]) -> list[Profile]:
    """(min, opt, max) shapes per input: fixed dims from the ONNX graph, dynamic ones from spec.TRT_RANGES."""
    batch = model.batch_limit
    ranges = {"batch": (1, max(1, batch // 2), batch), **spec.TRT_RANGES}
    # what the configs fix is one size; a model's own per-request cap is its range's top
    ranges.update({name: (size, size, size) for name, size in spec.SERVED_SIZES.items()})
    ranges.update({name: (1, min(ranges.get(name, (1, cap, cap))[1], cap), cap) for name, cap in model.caps})
    out = []
    for t in model.inputs:
        dims = onnx_shapes[t.name]
        lo, opt, hi = [], [], []
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                lo.append(d), opt.append(d), hi.append(d)  # type: ignore[func-returns-value]
                continue
            name = "batch" if axis == 0 and model.batched else (t.dims[axis - 1] if model.batched else t.dims[axis])
            r = ranges.get(str(name))
            if r is None:
                raise ValueError(f"{model.name}.{t.name}: no TensorRT range for dynamic axis {name!r}")
            lo.append(r[0]), opt.append(r[1]), hi.append(r[2])  # type: ignore[func-returns-value]
        out.append(Profile(t.name, tuple(lo), tuple(opt), tuple(hi)))
    return out


def onnx_input_shapes(path: Path) -> dict[str, list[int | str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        i.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }


def build_plan(
    onnx_path: Path, plan_path: Path, model: spec.ModelSpec, *, fp16: bool = True, workspace_gb: int = 4
) -> Path:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailableError(
            "tensorrt is not installed: build plans on the GPU machine (pip install tensorrt, or inside the "
            "official Triton container); the onnxruntime configs serve without them"
        ) from e
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = (
        0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gb << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for p in profiles(model, onnx_input_shapes(onnx_path)):
        profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build {model.name} (see the TensorRT log above)")
    plan_path.write_bytes(bytes(engine))
    return plan_path


def build_plans(repo: str | Path, *, fp16: bool = True) -> dict[str, Path]:
    """Build model.plan beside model.onnx for every model served as a plan; raises TensorRTUnavailableError on CPU."""
    repo = Path(repo)
    built = {}
    for name in spec.TRT_PLAN_MODELS:
        src = repo / name / "1" / "model.onnx"
        if not src.exists():
            raise FileNotFoundError(f"{src} not found: run `hybridrec export` first")
        built[name] = build_plan(src, src.with_name("model.plan"), spec.model_spec(name), fp16=fp16)
        log.info("built %s", built[name])
    return built
