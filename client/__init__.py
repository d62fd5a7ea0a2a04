"""Python client library of hybridrec's Triton models (tritonclient gRPC/HTTP, sync and asyncio); installs without
torch."""

from hybridrec.client.aio import AsyncRecommenderClient
from hybridrec.client.client import RecommenderClient
from hybridrec.client.errors import (
    AdminKeyError,
    InvalidRequestError,
    ModelNotFoundError,
    RecommenderError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from hybridrec.client.results import Health, RankResult, ScoredItem
from hybridrec.client.retries import RetryPolicy

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
