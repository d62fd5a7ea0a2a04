"""The hybrid model as a full-ranking scorer over the whole catalog, on the same protocol as the baselines.

``HybridScorer.fit`` trains a run (training/train.py, on the very leave-one-out split the baselines use) and
``score`` ranks every catalog movie the way the served `recommend` ensemble does: the dot-product retrieval's top 100
unseen items reranked by the fusion head, every other item below them in retrieval order
(:func:`hybridrec.training.objectives.next_item.pipeline_scores`). Movies outside the training vocabulary (never
rated in training) keep their content embedding with the UNK id, as a cold-start movie added with
``hybridrec catalog add`` would, so they remain candidates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridrec import spec
from hybridrec.data import MovieLensData
from hybridrec.preprocessing import ItemCatalog, encode_history
from hybridrec.training.config import RunConfig
from hybridrec.training.features import HistoryFeatures
from hybridrec.training.objectives.next_item import pipeline_scores
from hybridrec.training.train import TrainResult, load_model, train


class HybridScorer:
    """:class:`hybridrec.training.evaluation.baselines.Scorer` for a hybrid run (trained by ``fit`` or loaded)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        data: MovieLensData,
        name: str = "Hybrid",
        depth: int = spec.RETRIEVAL_DEPTH,
    ) -> None:
        if depth < 1:
            raise ValueError(f"retrieval depth must be >= 1, got {depth}")
        self.cfg, self.run_dir, self.data, self.name = cfg, Path(run_dir), data, name
        self.depth = depth  # movies retrieved and reranked: the served model's, unless a diagnostic varies it
        self.result: TrainResult | None = None
        self._model: Any = None
        self._artifacts: Any = None
        self._items: torch.Tensor | None = None
        self._movie_ids = np.array(sorted(data.movies), dtype=np.int64)  # = splits.ItemIndex order
        # the histories' ratings and times, for a run whose sequence encoder reads them
        self._features = HistoryFeatures(data) if cfg.model.sequence.history_features else None

    def fit(self, train_seq: Mapping[int, np.ndarray], num_items: int, **side: Any) -> HybridScorer:
        """Train on ``self.data`` (its leave-one-out split is the one ``train_seq`` comes from), then load."""
        del train_seq, side  # train() derives the identical split from the data (tested)
        if num_items != len(self._movie_ids):
            raise ValueError(f"catalog has {len(self._movie_ids)} movies, the split {num_items}")
        self.result = train(self.cfg, self.run_dir, data=self.data, progress=False)
        return self.load()

    def load(self) -> HybridScorer:
        self._model, self._artifacts = load_model(self.run_dir)
        with torch.no_grad():
            self._items = torch.cat([self._model.item_encoder.encode(*x) for x in self.item_inputs()])
        return self

    @property
    def model(self) -> Any:
        """The loaded :class:`~hybridrec.training.modules.HybridModel` (eval mode)."""
        if self._model is None:
            raise RuntimeError("HybridScorer.model before fit/load")
        return self._model

    def item_inputs(self, chunk: int = 512) -> Iterator[tuple[torch.Tensor, ...]]:
        """Every catalog movie's item-encoder inputs (``spec.ITEM_INPUTS`` order), ``chunk`` movies at a time, in the
        order of the scores' columns."""
        catalog = ItemCatalog(self.data, self._artifacts)
        for feats in catalog.iter_features([int(m) for m in self._movie_ids], chunk=chunk):
            yield tuple(torch.from_numpy(feats[t.name]) for t in spec.ITEM_INPUTS)

    def use_items(self, item_embedding: torch.Tensor) -> HybridScorer:
        """Score against these [catalog, D] item embeddings instead of the loaded model's (diagnostics)."""
        if self._items is not None and item_embedding.shape != self._items.shape:
            raise ValueError(f"item embeddings {tuple(item_embedding.shape)}, expected {tuple(self._items.shape)}")
        self._items = item_embedding
        return self

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        user, items = self._encode(histories, users)
        with torch.no_grad():
            return pipeline_scores(self._model, user, items, list(histories), depth=self.depth, reserved=0).numpy()

    def retrieval_scores(self, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
        """The retrieval's dot product user . item over every catalog movie [B, catalog], before its top-k
        (diagnostics: what the served rerank starts from)."""
        user, items = self._encode(histories, users)
        with torch.no_grad():
            return (user @ items.T).numpy()

    def _encode(self, histories: Sequence[np.ndarray], users: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(user embeddings [B, D], catalog item embeddings [catalog, D]) for histories of catalog indices."""
        if self._model is None or self._items is None:
            raise RuntimeError("HybridScorer: scoring before fit/load")
        hist = [self._movie_ids[np.asarray(h, dtype=np.int64)] for h in histories]
        extra: tuple[torch.Tensor | None, ...] = ()
        if self._features is not None:  # each history is its user's first ratings (checked)
            length = self._artifacts.history_length
            extra = self._features.pad([int(u) for u in users], [len(h) for h in hist], length, movies=hist)
        with torch.no_grad():
            user = self._model.sequence_encoder(
                torch.from_numpy(np.stack([encode_history(h.tolist(), self._artifacts) for h in hist])), *extra
            )
        return user, self._items
