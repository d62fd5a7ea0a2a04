"""The hybrid's full-ranking evaluation runs on an exported run (numbers are not asserted: a tiny CI model)."""

from __future__ import annotations

from pathlib import Path

from hybridrec.training.evaluation.hybrid import full_ranking


def test_full_ranking_of_the_exported_run(tiny_run: Path, exported_repo: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    results = full_ranking(tiny_run, exported_repo, dataset)
    for name in ("fusion", "dot"):
        summary = results[name].summary()
        assert summary["users"] > 500
        assert 0.0 <= summary["ndcg@10"] <= summary["hr@10"] <= 1.0
