"""RecommenderClient: a typed client of the served models over tritonclient gRPC or HTTP (no torch needed).

Requests are built from hybridrec.spec and features from hybridrec.preprocessing, the same code that training used:
the request plans of :class:`hybridrec.client.plans.ClientCore`, run with blocking calls by
:class:`hybridrec.client.transport.BlockingTransport`. Errors: :mod:`hybridrec.client.errors`; retries:
:mod:`hybridrec.client.retries`; results: :mod:`hybridrec.client.results`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hybridrec import spec
from hybridrec.client.plans import MAX_ITEMS_PER_REQUEST, ClientCore, PosterSource
from hybridrec.client.results import Health, RankResult
from hybridrec.client.transport import BlockingTransport
from hybridrec.preprocessing import ItemMetadata


class RecommenderClient(BlockingTransport, ClientCore):
    """One reused connection to a Triton server serving hybridrec's model repository (blocking calls).

    ``artifacts`` (fitted preprocessing: pass the model repository folder, which also gives the titles) is needed by
    the movie-level calls (``recommend``, ``rank``, ``rank_items``, ``encode_items``); the tensor-level calls need
    nothing. No call needs the dataset: ``rank`` sends movieIds and the server looks them up in its catalog. Every call
    takes ``timeout_s`` (default: the client's); idempotent calls are retried on UNAVAILABLE (see RetryPolicy)."""

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- server ---
    def health(self, *, timeout_s: float | None = None) -> Health:
        """Liveness, readiness and every model's readiness; raises ServerUnavailableError if unreachable."""
        return self._run(self._plan_health(timeout_s))

    def model_metadata(self, model_name: str, *, timeout_s: float | None = None) -> Any:
        """The server's metadata of one model (raises ModelNotFoundError for a model it does not serve)."""
        return self._run(self._plan_model_metadata(model_name, timeout_s))

    def load_model(self, model_name: str, *, timeout_s: float | None = None) -> None:
        """(Re)load a model on a server started with --model-control-mode=explicit (never retried). Needs the
        server's admin key (``admin_key=``, else $HYBRIDREC_ADMIN_KEY or the key file): AdminKeyError otherwise."""
        self._run(self._plan_model_control("load_model", model_name, timeout_s))

    def unload_model(self, model_name: str, *, timeout_s: float | None = None) -> None:
        """Unload a model (explicit model control; needs the admin key like :meth:`load_model`)."""
        self._run(self._plan_model_control("unload_model", model_name, timeout_s))

    # --- tensors ---
    def infer(
        self, model_name: str, arrays: dict[str, np.ndarray], *, check: bool = True, timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run any served model on spec-named numpy arrays (with batch axis); returns its outputs by name."""
        return self._run(self._plan_infer(model_name, arrays, check, timeout_s))

    def rank_tensors(self, history: np.ndarray, movie_ids: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against catalog movieIds [N] (`rank`); -inf = not served."""
        return self._run(self._plan_rank_ids_tensors(history, movie_ids, timeout_s))

    def rank_content_tensors(
        self, history: np.ndarray, items: dict[str, np.ndarray], *, timeout_s: float | None = None
    ) -> np.ndarray:
        """Scores [N] of one user's encoded history [L] against item tensors [N, ...] (`rank_content`)."""
        return self._run(self._plan_rank_content_tensors(history, items, timeout_s))

    def recommend_tensors(
        self, history: np.ndarray, k: int = spec.DEFAULT_K, *, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids [K], scores [K]) from the `recommend` ensemble for one encoded history [L]."""
        return self._run(self._plan_recommend_tensors(history, k, timeout_s))

    # --- movies ---
    def recommend(
        self, history: Sequence[int], k: int = spec.DEFAULT_K, *, timeout_s: float | None = None
    ) -> RankResult:
        """Top-k unseen catalog movies for a chronological history of movieIds (oldest first)."""
        return self._run(self._plan_recommend(history, k, timeout_s))

    def rank(self, history: Sequence[int], candidates: Sequence[int], *, timeout_s: float | None = None) -> RankResult:
        """Rank catalog movieIds for a user whose chronological history (movieIds, oldest first) is given.

        Raises InvalidRequestError naming candidates the served catalog does not hold."""
        return self._run(self._plan_rank(history, candidates, timeout_s))

    def rank_items(
        self,
        history: Sequence[int],
        items: Sequence[tuple[ItemMetadata, PosterSource]],
        *,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Scores [N] of items given by metadata + poster alone (e.g. brand-new movies), through `rank_content`."""
        return self._run(self._plan_rank_items(history, items, timeout_s))

    def encode_items(
        self,
        posters: Sequence[PosterSource],
        metadata: Sequence[ItemMetadata],
        *,
        chunk_size: int = MAX_ITEMS_PER_REQUEST,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Item embeddings [M, D] from the served `item_encoder`, from content alone (item id UNK).

        ``posters[i]``: JPEG/PNG bytes, a file path, UINT8 [3, 192, 128] pixels, or None (no poster). An unreadable
        poster raises InvalidRequestError naming its position. At most ``chunk_size`` (<= 256) items per request."""
        return self._run(self._plan_encode_items(posters, metadata, chunk_size, timeout_s))
