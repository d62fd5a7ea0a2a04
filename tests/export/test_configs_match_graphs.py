"""Every config set's tensors against the exported model.onnx files, as Triton's onnxruntime and TensorRT backends
check them at load time (names, dtypes, rank, batch axis, fixed dims). This is the check that would have caught the
default set's `[-1, -1]` for a graph's `[-1, 64]`, which the official container refuses to load."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridrec import spec
from hybridrec.export.triton_config import graph_mismatches, model_config, parse, served_sizes

REPO = Path(__file__).resolve().parents[2] / "model_repository"
SERVED = [m for m in spec.MODELS.values() if not m.is_ensemble]


def _config_files(root: Path, model: str) -> list[Path]:
    return [root / model / "config.pbtxt", *sorted((root / model / "configs").glob("*.pbtxt"))]


@pytest.mark.parametrize("model", [m.name for m in SERVED])
def test_every_config_set_matches_the_exported_graph(exported_repo: Path, model: str) -> None:
    graph = exported_repo / model / "1" / "model.onnx"
    files = _config_files(exported_repo, model)
    assert len(files) >= 3, files  # default, cpu, gpu-trt (+ plan)
    for f in files:
        assert graph_mismatches(parse(f.read_text()), graph) == [], f


@pytest.mark.parametrize("model", [m.name for m in SERVED])
def test_committed_configs_match_the_exported_graph(exported_repo: Path, model: str) -> None:
    """The committed repository is what the container image and users serve: its dims must fit an export at the
    default embedding width (the tests' run uses it)."""
    for f in _config_files(REPO, model):
        assert graph_mismatches(parse(f.read_text()), exported_repo / model / "1" / "model.onnx") == [], f


def test_the_check_catches_an_open_dim_the_graph_fixes(exported_repo: Path) -> None:
    wrong = model_config(spec.FUSION_HEAD, "default", {**served_sizes(), "D": -1})
    problems = graph_mismatches(wrong, exported_repo / "fusion_head" / "1" / "model.onnx")
    assert any("'user_embedding': axis 1 is 64 in the graph but -1" in p for p in problems), problems
    wrong = model_config(spec.RETRIEVAL, "default", {**served_sizes(), "C": -1})
    problems = graph_mismatches(wrong, exported_repo / "retrieval" / "1" / "model.onnx")
    assert any("candidate_movie_id" in p for p in problems), problems


def test_the_check_catches_names_dtypes_and_rank(exported_repo: Path) -> None:
    cfg = model_config(spec.SEQUENCE_ENCODER)
    cfg.input[0].name = "histories"
    cfg.output[0].data_type = cfg.input[0].data_type  # INT64 instead of FP32
    problems = graph_mismatches(cfg, exported_repo / "sequence_encoder" / "1" / "model.onnx")
    assert any("'history' is in the graph but not in the config" in p for p in problems)
    assert any("dtype TYPE_INT64, graph TYPE_FP32" in p for p in problems)
    cfg = model_config(spec.SEQUENCE_ENCODER)
    cfg.max_batch_size = 0  # the graph has a batch axis the config then does not count
    problems = graph_mismatches(cfg, exported_repo / "sequence_encoder" / "1" / "model.onnx")
    assert any("config rank 1" in p for p in problems)
