"""The naive peer does the same work as Triton: both answer the first few `recommend` and `rank` payloads, and the
answers are compared (same movies, largest score difference)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PARITY_REQUESTS = 3


def triton_answers(grpc_url: str, pool: Any) -> list[dict[str, np.ndarray]]:
    """Triton's answers to the first few `recommend` and `rank` payloads (`rank`: the real candidates' scores)."""
    from hybridrec.client import RecommenderClient

    answers: list[dict[str, np.ndarray]] = []
    with RecommenderClient(grpc_url, "grpc") as client:
        for rec, rank in zip(pool.recommend[:PARITY_REQUESTS], pool.rank[:PARITY_REQUESTS], strict=True):
            out = client.infer("recommend", rec.arrays)
            scores = client.infer("rank", rank.arrays)["scores"][0]
            rank.check({"scores": scores[None]})
            answers.append(
                {"movie_ids": out["movie_ids"][0], "scores": out["scores"][0], "rank": scores[: len(rank.movie_ids)]}
            )
    return answers


def peer_answers(peer: Any, pool: Any) -> list[dict[str, np.ndarray]]:
    """The naive peer's answers to the same payloads."""
    from hybridrec.loadtests.bench.naive_peer import rank_body, recommend_body

    answers: list[dict[str, np.ndarray]] = []
    for rec, rank in zip(pool.recommend[:PARITY_REQUESTS], pool.rank[:PARITY_REQUESTS], strict=True):
        r = peer.post("/recommend", recommend_body(rec.arrays["history"][0], int(rec.arrays["k"][0])))
        scores = peer.post("/rank", rank_body(rank.arrays["history"][0], rank.movie_ids))["scores"]
        answers.append(
            {
                "movie_ids": np.asarray(r["movie_ids"], np.int64),
                "scores": np.asarray(r["scores"], np.float32),
                "rank": np.array([-np.inf if s is None else s for s in scores], np.float32),
            }
        )
    return answers


def compare_answers(triton: Sequence[Mapping[str, np.ndarray]], peer: Sequence[Mapping[str, np.ndarray]]) -> dict:
    same_ids = all(np.array_equal(t["movie_ids"], p["movie_ids"]) for t, p in zip(triton, peer, strict=True))
    rec_diff = max(float(np.abs(t["scores"] - p["scores"]).max()) for t, p in zip(triton, peer, strict=True))
    rank_diff = max(float(np.abs(t["rank"] - p["rank"]).max()) for t, p in zip(triton, peer, strict=True))
    return {
        "requests": len(triton),
        "recommend_same_movies": same_ids,
        "recommend_max_abs_score_diff": rec_diff,
        "rank_max_abs_score_diff": rank_diff,
    }
