from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.dataclass_yaml import ConfigError, fingerprint_dict, from_dict, load_yaml, save_yaml, to_dict
from hybridrec.training.config import RunConfig


def test_every_model_spec_is_consistent() -> None:
    for m in spec.MODELS.values():
        names = m.input_names + m.output_names
        assert len(names) == len(set(names)), m.name
        for t in (*m.inputs, *m.outputs):
            assert t.dtype in ("uint8", "int64", "float32"), (m.name, t.name)  # what the graphs and wire carry
            # a batched model's ONNX batch axis is dynamic; D and the served sizes never are named axes there
            axes = t.dynamic_axes(m.batched)
            assert (axes.get(0) == "batch") == m.batched, (m.name, t.name)
            assert "D" not in axes.values(), (m.name, t.name)


def test_served_sizes_fix_the_configs_dims() -> None:
    assert spec.HISTORY.config_dims() == [spec.HISTORY_LENGTH]
    assert spec.USER_EMBEDDING.config_dims() == [spec.EMBEDDING_DIM]
    assert spec.ITEM_EMBEDDING.config_dims({"D": 32}) == [-1, 32]
    assert spec.CANDIDATE_EMBEDDING.config_dims() == [spec.RETRIEVAL_DEPTH, spec.EMBEDDING_DIM]
    with pytest.raises(ValueError, match=r"'history'.*\[batch, 50\]"):
        spec.HISTORY.check(np.zeros((1, 7), np.int64), fixed=spec.REQUEST_SIZES)


def test_rank_slots_are_few_shapes() -> None:
    assert [spec.rank_slots(n) for n in (1, 16, 17, 50, 64, 65, 1024)] == [16, 16, 32, 64, 64, 128, 1024]
    for bad in (0, spec.MAX_RANK_CANDIDATES + 1):
        with pytest.raises(ValueError, match="candidates"):
            spec.rank_slots(bad)


@pytest.mark.parametrize("ensemble", spec.ENSEMBLES, ids=lambda m: m.name)
def test_ensembles_wire_every_step(ensemble: spec.ModelSpec) -> None:
    produced = set(ensemble.input_names)
    for step in ensemble.steps:
        model = spec.model_spec(step.model)
        assert {k for k, _ in step.input_map} == set(model.input_names)
        assert {v for _, v in step.input_map} <= produced
        produced |= {v for _, v in step.output_map}
    assert set(ensemble.output_names) <= produced
    composing = [spec.model_spec(s.model) for s in ensemble.steps]
    assert ensemble.max_batch_size <= min(m.batch_limit for m in composing if m.batched)


def test_tensor_check_names_the_input() -> None:
    t = spec.POSTER
    t.check(np.zeros((1, 2, 3, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH), np.uint8))
    with pytest.raises(ValueError, match=r"'poster'.*dtype"):
        t.check(np.zeros((1, 2, 3, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH), np.float32))
    with pytest.raises(ValueError, match=r"'poster'.*shape"):
        t.check(np.zeros((1, 2, 3, 10, 10), np.uint8))


def test_example_batch_matches_spec() -> None:
    for m in spec.MODELS.values():
        batch = spec.example_batch(m, 3, {"N": 4})
        for t in m.inputs:
            t.check(batch[t.name], batched=m.batched)


def test_run_config_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_yaml(RunConfig, None, {"optim.epochs": 2, "model.item.channels": [8, 16]})
    assert cfg.optim.epochs == 2 and cfg.model.item.channels == (8, 16)
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(RunConfig, tmp_path / "c.yaml") == cfg
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    assert dataclasses.is_dataclass(cfg) and cfg.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_a_switch_added_later_stays_out_of_the_fingerprint_at_its_default() -> None:
    """So adding a default-off switch keeps every cached result valid, and setting it refits."""
    cfg = RunConfig()
    full, fp = to_dict(cfg), fingerprint_dict(cfg)
    assert "output_norm" in full["model"]["item"] and "output_norm" not in fp["model"]["item"]
    assert "tie_item_ids" not in fp["model"]["sequence"] and "ema_decay" not in fp["optim"]
    full["model"]["item"].pop("output_norm"), full["model"]["sequence"].pop("tie_item_ids")
    full["optim"].pop("ema_decay"), full["model"]["item"].pop("content_dropout"), full["optim"].pop("lr_decay")
    full["model"]["item"].pop("id_residual"), full["data"].pop("train_gap")
    full["optim"].pop("cnn_lr_scale"), full["model"]["item"].pop("poster_for_cold")
    full["model"]["sequence"].pop("rnn_window"), full["optim"].pop("future_window")
    full["optim"].pop("mask_seen"), full["optim"].pop("mask_seen_skip_last")
    full["model"]["sequence"].pop("bag_dim"), full["model"]["sequence"].pop("bag_dropout")
    full["model"]["sequence"].pop("bag_recency"), full["optim"].pop("label_smoothing")
    full["model"]["item"].pop("id_min_count"), full["model"]["sequence"].pop("attention_pool")
    full["model"]["sequence"].pop("attention_blocks"), full["optim"].pop("clip_per_module")
    full["model"]["sequence"].pop("rating_feature"), full["model"]["sequence"].pop("recency_buckets")
    assert fp == full
    bag = load_yaml(RunConfig, None, {"optim.future_window": 10})
    assert fingerprint_dict(bag)["optim"]["future_window"] == 10
    slow_cnn = load_yaml(RunConfig, None, {"optim.cnn_lr_scale": 0.1, "model.item.poster_for_cold": True})
    assert fingerprint_dict(slow_cnn)["optim"]["cnn_lr_scale"] == 0.1
    assert fingerprint_dict(slow_cnn)["model"]["item"]["poster_for_cold"] is True
    windowed = load_yaml(RunConfig, None, {"model.sequence.rnn_window": 50})
    assert fingerprint_dict(windowed)["model"]["sequence"]["rnn_window"] == 50
    tied = load_yaml(RunConfig, None, {"model.sequence.tie_item_ids": True})
    assert fingerprint_dict(tied)["model"]["sequence"]["tie_item_ids"] is True
    averaged = load_yaml(RunConfig, None, {"optim.ema_decay": 0.995})
    assert fingerprint_dict(averaged)["optim"]["ema_decay"] == 0.995
    masked = load_yaml(RunConfig, None, {"model.item.content_dropout": 0.25})
    assert fingerprint_dict(masked)["model"]["item"]["content_dropout"] == 0.25
    decayed = load_yaml(RunConfig, None, {"optim.lr_decay": "linear"})
    assert fingerprint_dict(decayed)["optim"]["lr_decay"] == "linear"
    gapped = load_yaml(RunConfig, None, {"data.train_gap": 1})
    assert fingerprint_dict(gapped)["data"]["train_gap"] == 1


def test_unknown_or_mistyped_config_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown keys.*epochz"):
        from_dict(RunConfig, {"optim": {"epochz": 3}})
    with pytest.raises(ConfigError, match=r"optim.lr"):
        from_dict(RunConfig, {"optim": {"lr": "fast"}})
    # YAML 1.1 reads 3e-3 (no dot) as a string: a float field takes it as the number it spells
    assert from_dict(RunConfig, {"optim": {"lr": "3e-3", "weight_decay": "1E-6"}}).optim.lr == pytest.approx(3e-3)


@pytest.mark.unit
@pytest.mark.parametrize("preset", ["demo", "ci", "full"])
def test_every_training_preset_loads(preset: str) -> None:
    from hybridrec.cli import PRESETS

    cfg = load_yaml(RunConfig, PRESETS / f"{preset}.yaml")
    assert cfg.optim.epochs >= 1 and (cfg.optim.max_minutes is None or cfg.optim.max_minutes > 0)
    if preset in ("full", "demo"):  # every prefix, the whole catalog in the softmax
        assert cfg.data.targets_per_user is None and cfg.optim.softmax_negatives is None


@pytest.mark.unit
def test_the_full_and_demo_presets_train_the_model_that_evaluate_measures() -> None:
    from hybridrec.cli import PRESETS
    from hybridrec.training.evaluation.run import EvaluateConfig

    full = load_yaml(RunConfig, PRESETS / "full.yaml")
    measured = load_yaml(EvaluateConfig, PRESETS / "evaluate.yaml").hybrid
    assert full.model == measured.model and full.model.item.id_residual
    assert full.data == measured.data and full.optim.ema_decay == measured.optim.ema_decay
    # `make demo` serves the same model, trained for fewer epochs; its weight average and its id token (width, tie) were
    # chosen on the demo itself (3-epoch fits), so those may differ from the measured preset's (docs/training.md)
    demo = load_yaml(RunConfig, PRESETS / "demo.yaml")
    demo_like_full = dataclasses.replace(
        demo.model,
        item=dataclasses.replace(demo.model.item, id_dim=full.model.item.id_dim),
        sequence=dataclasses.replace(demo.model.sequence, tie_item_ids=full.model.sequence.tie_item_ids),
    )
    assert demo_like_full == full.model and demo.optim.ema_decay is not None
    assert demo.model.item.id_dim <= full.model.item.id_dim


def test_throughput_variants_change_optim_fields_and_dotted_paths() -> None:
    from hybridrec.training.throughput import VARIANTS, with_changes

    for changes in VARIANTS.values():  # every variant names fields that exist
        with_changes(changes)
    cfg = with_changes({"batch_size": 64, "model.sequence.attention_blocks": 2})
    assert cfg.optim.batch_size == 64 and cfg.model.sequence.attention_blocks == 2
    assert cfg.model.item == RunConfig().model.item  # nothing else moves
