"""Python client library of hybridrec's Triton ensembles (tritonclient gRPC/HTTP); installs without torch."""

from hybridrec.client.client import (
    InvalidRequestError,
    ModelNotFoundError,
    RankResult,
    RecommenderClient,
    RecommenderError,
    ScoredItem,
    ServerUnavailableError,
)

__all__ = [
    "InvalidRequestError",
    "ModelNotFoundError",
    "RankResult",
    "RecommenderClient",
    "RecommenderError",
    "ScoredItem",
    "ServerUnavailableError",
]
