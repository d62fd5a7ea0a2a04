"""Model inputs shared by every objective: the vocabulary's item tensors, padded histories, and the item tower's
embeddings of the whole vocabulary from a per-epoch cache of pooled poster features (the CNN is the dearest part on a
CPU, so only a few posters per step run through it with gradients)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hybridrec import spec
from hybridrec.data import MovieLensData
from hybridrec.preprocessing import Artifacts, ItemCatalog
from hybridrec.training.modules import HybridModel


class ItemTable:
    """Model inputs of every vocabulary item, as tensors indexed by item index (rows PAD and UNK are empty)."""

    def __init__(self, data: MovieLensData, artifacts: Artifacts) -> None:
        catalog = ItemCatalog(data, artifacts)  # the same feature code as export and the client
        parts = [catalog.empty_features(spec.PAD_ID), catalog.empty_features(spec.UNK_ID)]
        parts += catalog.iter_features(list(artifacts.item_ids))
        self.tensors = {
            t.name: torch.from_numpy(np.concatenate([p[t.name] for p in parts]).astype(t.np_dtype, copy=False))
            for t in spec.ITEM_INPUTS
        }

    def gather(self, index: Tensor) -> list[Tensor]:
        """Flat item tensors in spec order for the given item indices."""
        return [self.tensors[t.name][index] for t in spec.ITEM_INPUTS]

    def __len__(self) -> int:
        return int(self.tensors["item_id"].shape[0])


def pad_histories(seqs: list[np.ndarray], length: int) -> Tensor:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        out[i, : len(s)] = s
    return torch.from_numpy(out)


class HistoryFeatures:
    """The rating and timestamp of every history item (model.sequence.rating_feature / recency_buckets), taken from
    the rating rows the history comes from: on the leave-one-out split every history (a training prefix, the
    validation and the test history) is the first n ratings of its user in chronological order, so (user, n) finds
    them, aligned with :func:`pad_histories` and ``encode_history`` (the most recent `length`, padded at the end)."""

    def __init__(self, data: MovieLensData) -> None:
        # the order of MovieLensData.histories, which the split follows
        self.rows = {
            u: (r.movie_ids, r.ratings.astype(np.float32), r.timestamps.astype(np.int64))
            for u, r in data.user_ratings().items()
        }

    def pad(
        self, users: list[int], lengths: list[int], length: int, movies: list[np.ndarray] | None = None
    ) -> tuple[Tensor, Tensor]:
        """(rating [B, length] float32, time [B, length] int64) of each user's first n ratings' last `length`, zero
        after them. With `movies`, each history's movie ids are checked to be that prefix (ValueError if not)."""
        rating = np.zeros((len(users), length), np.float32)
        time = np.zeros((len(users), length), np.int64)
        for i, (u, n) in enumerate(zip(users, lengths, strict=True)):
            m, s, t = self.rows.get(int(u), (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)))
            if n > len(m) or (movies is not None and not np.array_equal(m[:n], movies[i])):
                raise ValueError(f"user {u}: the history is not the first {n} of the user's ratings")
            lo = max(0, n - length)
            rating[i, : n - lo], time[i, : n - lo] = s[lo:n], t[lo:n]
        return torch.from_numpy(rating), torch.from_numpy(time)


def history_inputs(
    features: HistoryFeatures | None, users: list[int], seqs: list[np.ndarray], length: int, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """The sequence encoder's (rating, time) arguments for these users' histories (None, None without features)."""
    if features is None:
        return None, None
    rating, time = features.pad(users, [len(s) for s in seqs], length)
    return rating.to(device), time.to(device)


def poster_cache(model: HybridModel, table: ItemTable, batch: int = 512) -> Tensor | None:
    """Pooled CNN features [I, C] of every item (no gradients); None when the image branch is off."""
    enc = model.item_encoder
    if not enc.cfg.use_image:
        return None
    outs = []
    with torch.no_grad():
        for start in range(0, len(table), batch):
            outs.append(enc.poster_features(table.tensors["poster"][start : start + batch]))
    return torch.cat(outs)


def item_embeddings(model: HybridModel, table: ItemTable, pooled: Tensor | None) -> Tensor:
    """[I, D] embeddings of every vocabulary item from cached (or live-patched) poster features."""
    t = table.tensors
    return model.item_encoder.fuse(pooled, t["item_id"], t["meta"], t["people"], t["overview"])
