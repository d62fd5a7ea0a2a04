"""`hybridrec evaluate` end to end on a few users: every model, the table, the plots, and resuming from its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridrec.cli import PRESETS, main
from hybridrec.dataclass_yaml import load_yaml
from hybridrec.training.evaluation.run import BASELINES, HYBRIDS, EvaluateConfig, variant_config

pytestmark = pytest.mark.export


def test_variants_switch_the_branches_off() -> None:
    from hybridrec.training.config import RunConfig

    base = RunConfig()
    assert variant_config("Hybrid", base) == base
    cnn_only = variant_config("CNN-only", base).model
    assert cnn_only.item.use_image and not cnn_only.sequence.use_rnn and not cnn_only.fusion.use_autoencoder
    rnn_only = variant_config("RNN-only", base).model
    assert not rnn_only.item.use_image and not rnn_only.item.use_metadata and rnn_only.sequence.use_rnn
    with pytest.raises(ValueError, match="unknown hybrid variant"):
        variant_config("Hybrid w/o everything", base)


def test_evaluate_every_model_then_resume(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, docs, cache = tmp_path / "eval", tmp_path / "docs" / "results.md", tmp_path / "docs" / "results" / "cache"
    args = ["evaluate", "--data", str(data_dir), "--preset", "evaluate-ci", "--out", str(out), "--docs", str(docs)]
    args += ["--cache", str(cache)]
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
    cached = sorted(p.name for p in cache.glob("*.npz"))
    assert len(cached) == 4 + 9  # deterministic baselines once; SASRec, GRU4Rec and 7 hybrid variants for one seed
    assert (cache / "liked.json").exists() and not (out / "ranks").exists()
    assert f"`{cache}/`" in table

    # Resume: nothing is refitted, the table is rebuilt from the cached ranks and is the same.
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["models"] == metrics["models"]
    assert "Hybrid" in capsys.readouterr().out


def test_evaluate_rejects_unknown_models_and_keys(tmp_path: Path) -> None:
    from hybridrec.dataclass_yaml import ConfigError

    with pytest.raises(ConfigError, match="unknown keys"):
        load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", {"hybrid.optim.epoch": 1})
    from hybridrec.training.evaluation.run import evaluate

    cfg = load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", {"models": ["Hybrid++"]})
    with pytest.raises(ValueError, match="unknown models"):
        evaluate(None, cfg, tmp_path)  # type: ignore[arg-type]


def test_evaluate_on_a_movielens_1m_layout_without_posters_or_overviews(tmp_path: Path) -> None:
    """The 1M layout (ratings.dat / movies.dat, no links, posters or TMDB metadata): content is genres and year only."""
    import numpy as np

    from hybridrec.data import load_movielens
    from hybridrec.training.evaluation.run import evaluate

    rng = np.random.default_rng(0)
    root = tmp_path / "ml-1m"
    root.mkdir()
    genres = ["Action", "Comedy", "Drama", "Horror"]
    (root / "movies.dat").write_text(
        "".join(f"{m}::Movie {m} ({1980 + m})::{genres[m % 4]}|{genres[(m + 1) % 4]}\n" for m in range(1, 41)),
        encoding="latin-1",
    )
    rows = []
    for u in range(1, 31):
        for k, m in enumerate(rng.choice(np.arange(1, 41), size=12, replace=False)):
            rows.append(f"{u}::{m}::{int(rng.integers(1, 6))}::{1_000_000 + 1000 * u + k}\n")
    (root / "ratings.dat").write_text("".join(rows))
    data = load_movielens(root)
    assert data.layout == "ml-1m"
    cfg = load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", {"models": ["Popularity", "EASE", "Hybrid"]})
    metrics = evaluate(data, cfg, tmp_path / "eval")
    assert set(metrics["models"]) == {"Popularity", "EASE", "Hybrid"}
    assert metrics["dataset"]["layout"] == "ml-1m" and metrics["dataset"]["users_evaluated"] == 24
    assert 0.0 <= metrics["models"]["Hybrid"]["ndcg@10"][0] <= 1.0
    assert "Hybrid" in metrics["liked"]["models"]


def _synthetic_1m(root: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(1)
    root.mkdir()
    (root / "movies.dat").write_text(
        "".join(f"{m}::Movie {m} ({1980 + m})::{'Drama' if m % 2 else 'Comedy'}\n" for m in range(1, 31)),
        encoding="latin-1",
    )
    rows = [
        f"{u}::{m}::{int(rng.integers(1, 6))}::{1_000_000 + 1000 * u + k}\n"
        for u in range(1, 21)
        for k, m in enumerate(rng.choice(np.arange(1, 31), size=10, replace=False))
    ]
    (root / "ratings.dat").write_text("".join(rows))
    return root


def test_evaluate_in_two_processes_then_refits_only_what_a_config_change_touches(tmp_path: Path) -> None:
    """workers=2 fits in spawned processes and caches the same results; a changed hybrid config refits the hybrid
    alone (the cache's fingerprint), while the baselines' caches are reused untouched."""
    from hybridrec.data import load_movielens
    from hybridrec.training.evaluation.run import evaluate

    data = load_movielens(_synthetic_1m(tmp_path / "ml-1m"))
    overrides = {"models": ["Popularity", "EASE", "Hybrid"], "seeds": [0, 1], "liked_task": True, "workers": 2}
    cfg = load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", overrides)
    out = tmp_path / "eval"
    first = evaluate(data, cfg, out)
    ranks = out / "ranks"
    assert sorted(p.name for p in ranks.iterdir()) == [
        "ease-s0.npz",
        "hybrid-s0.npz",
        "hybrid-s1.npz",
        "liked.json",
        "popularity-s0.npz",
    ]
    assert first["models"]["Hybrid"]["seeds"] == [0, 1]
    assert len(first["liked"]["models"]["Hybrid"]["seeds"]) == 2  # the liked task ran in the pool too
    stamps = {p.name: p.stat().st_mtime_ns for p in ranks.iterdir()}

    # In this process, the same config: everything comes from the cache.
    again = evaluate(data, load_yaml(EvaluateConfig, PRESETS / "evaluate-ci.yaml", {**overrides, "workers": 1}), out)
    assert again["models"] == first["models"] and again["liked"] == first["liked"]
    assert {p.name: p.stat().st_mtime_ns for p in ranks.iterdir()} == stamps

    changed = load_yaml(
        EvaluateConfig,
        PRESETS / "evaluate-ci.yaml",
        {**overrides, "workers": 1, "liked_task": False, "hybrid.optim.lr": "2e-3"},
    )
    evaluate(data, changed, out)
    now = {p.name: p.stat().st_mtime_ns for p in ranks.iterdir()}
    assert now["popularity-s0.npz"] == stamps["popularity-s0.npz"] and now["ease-s0.npz"] == stamps["ease-s0.npz"]
    assert now["hybrid-s0.npz"] != stamps["hybrid-s0.npz"] and now["hybrid-s1.npz"] != stamps["hybrid-s1.npz"]
