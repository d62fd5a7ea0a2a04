"""GPU config sets and TensorRT profiles, checked on CPU (the GPU itself is exercised by export/gpu_checks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridrec import spec
from hybridrec.export.gpu_checks import main as gpu_checks
from hybridrec.export.tensorrt import TensorRTUnavailableError, build_plans, onnx_input_shapes, profiles
from hybridrec.export.triton_config import model_config

try:
    import tensorrt  # noqa: F401

    HAS_TRT = True
except ImportError:
    HAS_TRT = False


def test_gpu_config_sets() -> None:
    for m in (*spec.COMPOSING, *spec.CATALOG_MODELS):
        trt = model_config(m, "gpu-trt")
        acc = trt.optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.platform == "onnxruntime_onnx" and acc[0].name == "tensorrt"
        assert acc[0].parameters["precision_mode"] == "FP16"
    for name in spec.TRT_PLAN_MODELS:
        plan = model_config(spec.model_spec(name), "plan")
        assert plan.platform == "tensorrt_plan" and plan.default_model_filename == "model.plan"


def test_tensorrt_profiles_cover_what_the_configs_admit(exported_repo: Path) -> None:
    for name in spec.TRT_PLAN_MODELS:
        m = spec.model_spec(name)
        shapes = onnx_input_shapes(exported_repo / name / "1" / "model.onnx")
        for p in profiles(m, shapes):
            assert p.min[0] == 1 and p.max[0] == m.batch_limit
            assert all(lo <= opt <= hi for lo, opt, hi in zip(p.min, p.opt, p.max, strict=True))
            if p.input == "poster":
                assert p.max[1] == spec.MAX_ITEMS and p.max[2:] == (3, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH)
            if p.input == "history":  # the configs admit exactly the served length
                assert p.min[1] == p.opt[1] == p.max[1] == spec.HISTORY_LENGTH
            if p.input == "item_embedding":
                assert p.max[1] == spec.MAX_CANDIDATES


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_plans_are_skipped_clearly_without_tensorrt(exported_repo: Path) -> None:
    with pytest.raises(TensorRTUnavailableError, match="tensorrt is not installed"):
        build_plans(exported_repo)


def test_gpu_checks_run_and_skip_cleanly_on_cpu(exported_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if HAS_TRT:
        pytest.skip("a GPU machine: run export/gpu_checks.py there instead")
    assert gpu_checks(["--repo", str(exported_repo)]) == 0
    out = capsys.readouterr().out
    assert "SKIP" in out and "FAIL" not in out
