"""The ensembles' response cache, switched on at server start (`hybridrec serve --cache-size`)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np

from hybridrec.client import RecommenderClient
from hybridrec.preprocessing import encode_history
from hybridrec.serving import TritonServer


def test_repeated_recommend_is_answered_from_the_cache(exported_repo: Path, catalog) -> None:  # type: ignore[no-untyped-def]
    history = encode_history(catalog.data.histories()[1].tolist(), catalog.artifacts)
    with TritonServer(exported_repo, cache_config="local,size=50000000") as server:
        with RecommenderClient(server.grpc_url) as client:
            first = client.recommend_tensors(history, 10)
            second = client.recommend_tensors(history, 10)
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/recommend/stats") as r:
            stats = json.loads(r.read())["model_stats"][0]["inference_stats"]
    np.testing.assert_array_equal(first[0], second[0])
    assert int(stats["cache_hit"]["count"]) >= 1
    assert int(stats["cache_miss"]["count"]) >= 1
