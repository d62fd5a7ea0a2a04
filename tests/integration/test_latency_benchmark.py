"""The latency benchmark runs end to end (its numbers are printed by `hybridrec latency`, never asserted)."""

from __future__ import annotations

from pathlib import Path

from hybridrec.loadtests.latency import measure


def test_latency_benchmark_measures_both_ensembles(live_server, exported_repo: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    out = measure(live_server.grpc_url, repo=exported_repo, data=data_dir, requests=5, candidates=8, warmup=1)
    for name in ("rank_n8", "recommend"):
        assert out[name]["requests"] == 5 and out[name]["p50_ms"] > 0
