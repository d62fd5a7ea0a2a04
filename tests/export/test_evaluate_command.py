"""`hybridrec evaluate` end to end on a few users: every model, the table, the plots, and resuming from its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridrec.cli import PRESETS, main
from hybridrec.configs import load_yaml
from hybridrec.training.evaluation.run import BASELINES, HYBRIDS, EvaluateConfig, variant_config

pytestmark = pytest.mark.export


def test_variants_switch_the_branches_off() -> None:
    from hybridrec.training.config import RunConfig

    base = RunConfig()
    assert variant_config("Hybrid", base) == base
    cnn_only = variant_config("CNN-only", base).model
    assert cnn_only.image.use_image and not cnn_only.sequence.use_rnn and not cnn_only.fusion.use_autoencoder
    rnn_only = variant_config("RNN-only", base).model
    assert not rnn_only.image.use_image and not rnn_only.image.use_metadata and rnn_only.sequence.use_rnn
    with pytest.raises(ValueError, match="unknown hybrid variant"):
        variant_config("Hybrid w/o everything", base)


def test_evaluate_every_model_then_resume(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, docs = tmp_path / "eval", tmp_path / "docs" / "results.md"
    args = ["evaluate", "--data", str(data_dir), "--preset", "evaluate-ci", "--out", str(out), "--docs", str(docs)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {*BASELINES, *HYBRIDS}
    assert {"vs_best_baseline", "cold_vs_best_collaborative"} <= set(metrics["tests"]) or metrics["dataset"][
        "cold_users"
    ] < 2
    assert set(metrics["liked"]["models"]) >= {"All-positive", "Hybrid"}
    table = docs.read_text()
    assert "| **Hybrid** |" in table and "SASRec-CE" in table and "all-positive F1" in table
    assert (docs.parent / "metrics.png").stat().st_size > 0 and (out / "training_curves.png").exists()
    cached = sorted(p.name for p in (out / "ranks").iterdir())
    assert len(cached) == 4 + 8  # deterministic baselines once, SASRec and 7 hybrid variants for one seed

    # Resume: nothing is refitted, the table is rebuilt from the cached ranks and is the same.
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["models"] == metrics["models"]
    assert "Hybrid" in capsys.readouterr().out


def test_evaluate_rejects_unknown_models_and_keys(tmp_path: Path) -> None:
    from hybridrec.configs import ConfigError

    with pytest.raises(ConfigError, match="unknown keys"):
        load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", {"hybrid.optim.epoch": 1})
    from hybridrec.training.evaluation.run import evaluate

    cfg = load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", {"models": ["Hybrid++"]})
    with pytest.raises(ValueError, match="unknown models"):
        evaluate(None, cfg, tmp_path)  # type: ignore[arg-type]
