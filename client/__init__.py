"""Python client library of hybridrec's Triton models (tritonclient gRPC/HTTP, sync and asyncio); installs without
torch."""

from hybridrec.client.aio import AsyncRecommenderClient
from hybridrec.client.client import (
    AdminKeyError,
    Health,
    InvalidRequestError,
    ModelNotFoundError,
    RankResult,
    RecommenderClient,
    RecommenderError,
    RequestTimeoutError,
    RetryPolicy,
    ScoredItem,
    ServerUnavailableError,
)

__all__ = [
    "AdminKeyError",
    "AsyncRecommenderClient",
    "Health",
    "InvalidRequestError",
    "ModelNotFoundError",
    "RankResult",
    "RecommenderClient",
    "RecommenderError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ScoredItem",
    "ServerUnavailableError",
]
