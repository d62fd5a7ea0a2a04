"""ONNX export (three separate files), eager-vs-onnxruntime parity at untraced shapes, generated configs."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from hybridrec import spec
from hybridrec.export.onnx_export import ParityError, check_onnx_parity, export_model
from hybridrec.export.triton_config import drift, expected_files, model_config, parse
from hybridrec.preprocessing import Artifacts
from hybridrec.training.config import ItemEncoderConfig, ModelConfig, SequenceEncoderConfig
from hybridrec.training.modules import HybridModel

REPO = Path(__file__).resolve().parents[2] / "model_repository"
ART = Artifacts(
    item_ids=tuple(range(100, 160)),
    genres=("A", "B"),
    people=("p", "q"),
    words=("w", "v"),
    word_idf=(1.0, 2.0),
    year_mean=2000.0,
    year_std=10.0,
)


@pytest.fixture(scope="module")
def model() -> HybridModel:
    torch.manual_seed(0)
    return HybridModel(ModelConfig(), ART).eval()


@pytest.mark.parametrize("name", [m.name for m in spec.COMPOSING])
def test_export_matches_eager_at_untraced_shapes(model: HybridModel, name: str, tmp_path: Path) -> None:
    m = spec.model_spec(name)
    path = export_model(model.exported()[name], m, tmp_path / "model.onnx", 64, ART.num_items)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == m.input_names
    assert [o.name for o in graph.output] == m.output_names
    report = check_onnx_parity(model.exported()[name], m, path, 64, ART.num_items)
    assert report.max_abs_diff <= 1e-4
    assert len(report.shapes) >= 3


def test_a_windowed_sequence_encoder_exports_for_histories_shorter_and_longer_than_its_window(tmp_path: Path) -> None:
    """The window is traced at L=7 and checked at L=1, 50 and 83, around a window of 20 (with the bag beside it)."""
    torch.manual_seed(0)
    cfg = ModelConfig(sequence=SequenceEncoderConfig(rnn_window=20, bag_dim=16))
    encoder = HybridModel(cfg, ART).eval().sequence_encoder
    path = export_model(encoder, spec.SEQUENCE_ENCODER, tmp_path / "model.onnx", 64, ART.num_items)
    assert check_onnx_parity(encoder, spec.SEQUENCE_ENCODER, path, 64, ART.num_items).max_abs_diff <= 1e-4


def test_an_attention_pooled_sequence_encoder_exports_at_other_lengths(tmp_path: Path) -> None:
    """The masked softmax over steps keeps ONNX parity at history lengths other than the traced one."""
    torch.manual_seed(0)
    cfg = ModelConfig(sequence=SequenceEncoderConfig(attention_pool=True))
    encoder = HybridModel(cfg, ART).eval().sequence_encoder
    path = export_model(encoder, spec.SEQUENCE_ENCODER, tmp_path / "model.onnx", 64, ART.num_items)
    report = check_onnx_parity(encoder, spec.SEQUENCE_ENCODER, path, 64, ART.num_items)
    assert report.max_abs_diff <= 1e-4 and len(report.shapes) >= 3


def test_a_sequence_encoder_with_self_attention_exports_at_other_lengths(tmp_path: Path) -> None:
    """The masked self-attention, the distance embedding and the bag's weights by distance keep ONNX parity at lengths
    other than the traced one."""
    torch.manual_seed(0)
    cfg = ModelConfig(sequence=SequenceEncoderConfig(attention_blocks=2, bag_dim=16, bag_recency=True))
    encoder = HybridModel(cfg, ART).eval().sequence_encoder
    assert encoder.bag_recency is not None
    with torch.no_grad():
        encoder.bag_recency.normal_()  # trained weights, not the plain bag's zeros
    path = export_model(encoder, spec.SEQUENCE_ENCODER, tmp_path / "model.onnx", 64, ART.num_items)
    report = check_onnx_parity(encoder, spec.SEQUENCE_ENCODER, path, 64, ART.num_items)
    assert report.max_abs_diff <= 1e-4 and len(report.shapes) >= 3


def test_an_item_encoder_with_a_minimum_id_count_exports_its_gate(tmp_path: Path) -> None:
    """The id gate (which ids keep their token) is a constant of the exported graph, not an input."""
    torch.manual_seed(0)
    cfg = ModelConfig(item=ItemEncoderConfig(id_min_count=2))
    encoder = HybridModel(cfg, ART).eval().item_encoder
    encoder.set_id_counts(torch.arange(ART.num_items) % 3)  # a third of the ids lose their token
    path = export_model(encoder, spec.ITEM_ENCODER, tmp_path / "model.onnx", 64, ART.num_items)
    assert check_onnx_parity(encoder, spec.ITEM_ENCODER, path, 64, ART.num_items).max_abs_diff <= 1e-4


def test_parity_error_is_typed(model: HybridModel, tmp_path: Path) -> None:
    path = export_model(model.fusion_head, spec.FUSION_HEAD, tmp_path / "model.onnx", 64, ART.num_items)
    other = HybridModel(ModelConfig(), ART).eval()  # different random weights
    with torch.no_grad():  # the fusion layer's initialisation is deterministic (the dot product): move it
        other.fusion_head.fusion.weight.add_(0.5)
    with pytest.raises(ParityError, match="fusion_head") as e:
        check_onnx_parity(other.fusion_head, spec.FUSION_HEAD, path, 64, ART.num_items)
    assert e.value.max_abs_diff > 1e-4


def test_committed_configs_match_the_spec() -> None:
    assert drift(REPO) == [], "run `hybridrec triton-configs` and commit the result"


def test_every_config_parses_as_triton_model_config() -> None:
    files = sorted(REPO.rglob("*.pbtxt"))
    assert len(files) == sum(k.endswith(".pbtxt") for k in expected_files()) >= 7
    for f in files:
        cfg = parse(f.read_text())
        assert cfg.name == f.parent.name or cfg.name == f.parent.parent.name


def test_profiles() -> None:
    for m in spec.COMPOSING:
        gpu, cpu = model_config(m, "default"), model_config(m, "cpu")
        assert gpu.platform == "onnxruntime_onnx" and cpu.backend == "python"
        assert gpu.max_batch_size == cpu.max_batch_size == m.batch_limit
        assert gpu.dynamic_batching.max_queue_delay_microseconds > 0
    rank = model_config(spec.RANK)
    assert rank.platform == "ensemble" and len(rank.ensemble_scheduling.step) == len(spec.RANK.steps) == 5
    assert [s.model_name for s in rank.ensemble_scheduling.step][:3] == [
        "rank_check",
        "sequence_encoder",
        "item_lookup",
    ]
    assert "rank/1/.gitkeep" in expected_files() and "rank_content/1/.gitkeep" in expected_files()


def test_exported_run_has_three_models_and_artifacts(exported_repo: Path) -> None:
    for m in spec.COMPOSING:
        assert (exported_repo / m.name / "1" / "model.onnx").stat().st_size > 0
    assert Artifacts.load(exported_repo).num_items > spec.FIRST_ID
