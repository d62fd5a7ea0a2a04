from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.configs import ConfigError, from_dict, load_yaml, save_yaml, to_dict
from hybridrec.training.config import RunConfig


def test_every_model_spec_is_consistent() -> None:
    for m in spec.MODELS.values():
        names = m.input_names + m.output_names
        assert len(names) == len(set(names)), m.name
        for t in (*m.inputs, *m.outputs):
            assert t.config_dtype.startswith("TYPE_")
            if m.batched:
                assert t.dynamic_axes(True)[0] == "batch"


def test_rank_ensemble_wires_every_step() -> None:
    produced = set(spec.RANK.input_names)
    for step in spec.RANK.steps:
        model = spec.model_spec(step.model)
        assert {k for k, _ in step.input_map} == set(model.input_names)
        assert {v for _, v in step.input_map} <= produced
        produced |= {v for _, v in step.output_map}
    assert set(spec.RANK.output_names) <= produced
    assert spec.RANK.max_batch_size <= min(m.batch_limit for m in spec.COMPOSING)


def test_tensor_check_names_the_input() -> None:
    t = spec.POSTER
    t.check(np.zeros((1, 2, 3, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH), np.uint8))
    with pytest.raises(ValueError, match=r"'poster'.*dtype"):
        t.check(np.zeros((1, 2, 3, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH), np.float32))
    with pytest.raises(ValueError, match=r"'poster'.*shape"):
        t.check(np.zeros((1, 2, 3, 10, 10), np.uint8))


def test_example_batch_matches_spec() -> None:
    for m in spec.MODELS.values():
        batch = spec.example_batch(m, 3, {"N": 4, "L": 5})
        for t in m.inputs:
            t.check(batch[t.name], batched=m.batched)


def test_run_config_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_yaml(RunConfig, None, {"optim.epochs": 2, "model.image.channels": [8, 16]})
    assert cfg.optim.epochs == 2 and cfg.model.image.channels == (8, 16)
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(RunConfig, tmp_path / "c.yaml") == cfg
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    assert dataclasses.is_dataclass(cfg) and cfg.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_unknown_or_mistyped_config_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown keys.*epochz"):
        from_dict(RunConfig, {"optim": {"epochz": 3}})
    with pytest.raises(ConfigError, match=r"optim.lr"):
        from_dict(RunConfig, {"optim": {"lr": "fast"}})
