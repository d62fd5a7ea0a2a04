"""GRU4Rec-CE baseline: a unidirectional GRU over the history (Hidasi et al. 2016, in the RecBole form: item embedding,
dropout, GRU layers, a linear map back to the embedding width, logits against the tied item embeddings) trained with
the full softmax cross-entropy over all catalog items by the same loop as SASRec-CE (:mod:`.sequence_ce`: windows of
<= ``max_len`` items with every prefix a target once per epoch, Adam, early stopping on validation NDCG@10 with the
best epoch's weights kept). The GRU is causal by construction, and windows are right-padded, so padding never reaches
a real position. torch is imported inside the functions only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hybridrec.training.evaluation.baselines.sequence_ce import SequenceCE

__all__ = ["GRU4Rec", "GRU4RecConfig"]


@dataclass(frozen=True)
class GRU4RecConfig:
    dim: int = 64  # item embedding width
    hidden: int = 128  # GRU state width
    layers: int = 1
    max_len: int = 200  # the same windows as SASRec-CE
    dropout: float = 0.3  # on the input embeddings and the GRU output
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 term
    batch_size: int = 4  # windows of <= max_len positions per step (as SASRec-CE)
    epochs: int = 200  # upper bound; early stopping ends training first
    patience: int = 8  # epochs without a validation NDCG@10 gain before stopping (needs `valid`)
    max_seconds: float | None = None  # wall-time budget: stop after the epoch that crosses it
    threads: int | None = None  # torch intra-op threads during fit/score (None: leave torch's setting)
    seed: int = 0


def _gru4rec_network(num_items: int, cfg: GRU4RecConfig) -> Any:
    import torch
    from torch import Tensor, nn

    class GRU4RecNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.item = nn.Embedding(num_items + 1, cfg.dim, padding_idx=0)  # row 0 = padding, item i = row i + 1
            self.dropout = nn.Dropout(cfg.dropout)
            self.gru = nn.GRU(cfg.dim, cfg.hidden, cfg.layers, batch_first=True, bias=True)
            self.out = nn.Linear(cfg.hidden, cfg.dim)
            nn.init.normal_(self.item.weight, std=0.02)
            with torch.no_grad():
                self.item.weight[0].zero_()

        def forward(self, seq: Tensor) -> Tensor:
            """[B, L] right-padded item rows (0 = pad) -> [B, L, D]; position t sees positions <= t only."""
            h, _ = self.gru(self.dropout(self.item(seq)))
            return self.out(self.dropout(h))

        def logits(self, hidden: Tensor) -> Tensor:
            """[N, D] -> [N, num_items] over every catalog item (tied embeddings, padding row excluded)."""
            return hidden @ self.item.weight[1:].T

    return GRU4RecNet()


class GRU4Rec(SequenceCE):
    """GRU4Rec trained with full-softmax cross-entropy (see the module docstring); ``GRU4Rec(epochs=1, threads=1)``
    overrides :class:`GRU4RecConfig` fields. After ``fit``: ``history`` (per epoch: loss, validation NDCG@10,
    seconds), ``best_epoch`` and ``epochs_run``."""

    name = "GRU4Rec-CE"

    def __init__(self, config: GRU4RecConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.cfg = replace(config or GRU4RecConfig(), **overrides)

    def _network(self, num_items: int) -> Any:
        return _gru4rec_network(num_items, self.cfg)
