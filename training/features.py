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
