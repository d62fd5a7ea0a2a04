"""The python-backend model's ragged merge/split, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from hybridrec import spec
from hybridrec.serving_python import RequestError, merge, request_sizes, split, validate


def test_merge_pads_ragged_requests_and_split_restores_them() -> None:
    m = spec.FUSION_HEAD
    reqs = [spec.example_batch(m, 1, {"N": n, "D": 4}, seed=n) for n in (2, 5, 1)]
    merged = merge(m, reqs)
    assert merged["item_embedding"].shape == (3, 5, 4)
    # a fake model: score = sum of the item embedding
    outputs = {"scores": merged["item_embedding"].sum(-1)}
    parts = split(m, outputs, [request_sizes(m, r) for r in reqs])
    for r, p in zip(reqs, parts, strict=True):
        np.testing.assert_allclose(p["scores"], r["item_embedding"].sum(-1))


def test_validate_names_missing_and_inconsistent_inputs() -> None:
    m = spec.ITEM_ENCODER
    good = spec.example_batch(m, 1, {"N": 3})
    validate(m, dict(good))
    with pytest.raises(RequestError, match="missing input 'poster'"):
        validate(m, {**good, "poster": None})
    bad = dict(good)
    bad["meta"] = good["meta"][:, :2]
    with pytest.raises(RequestError, match="'meta' has N=2"):
        validate(m, bad)
