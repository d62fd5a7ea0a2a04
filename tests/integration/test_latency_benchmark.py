"""The latency benchmark runs end to end (its numbers are printed by `hybridrec latency`, never asserted)."""

from __future__ import annotations

from pathlib import Path

from hybridrec.loadtests.latency import measure


def test_latency_benchmark_measures_every_path(live_server, exported_repo: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # recommend, rank by movieId and rank_content (posters), through the client's tensor calls
    out = measure(live_server.grpc_url, repo=exported_repo, data=data_dir, requests=5, candidates=8, warmup=1)
    for name in ("recommend", "rank_n8", "rank_content_n8"):
        assert out[name]["requests"] == 5 and 0 < out[name]["p50_ms"] <= out[name]["p99_ms"], (name, out[name])
