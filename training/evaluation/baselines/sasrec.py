"""SASRec-CE baseline: a causal self-attention sequence model (Kang & McAuley 2018; pre-LN transformer blocks, learned
positions, tied input/output item embeddings) trained with the full softmax cross-entropy over all catalog items,
Adam, by the shared loop of :mod:`.sequence_ce` (windows of <= ``max_len`` items, every prefix a target once per
epoch, early stopping on validation NDCG@10 with the best epoch's weights kept). Cost: ml-latest-small has ~99k
training targets per epoch, and the ``[targets x 9742]`` logits and their two backward products dominate (~3.7e11
FLOP per epoch); smaller ``batch_size`` means more Adam updates per epoch for the same compute. On a shared 2-core
machine ``threads=1`` is the setting to use (two threads were 2-4x slower than one under contention). torch is
imported inside the functions only, so importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hybridrec.training.evaluation.baselines.sequence_ce import SequenceCE, torch_threads

__all__ = ["SASRec", "SASRecConfig", "torch_threads"]


@dataclass(frozen=True)
class SASRecConfig:
    # Defaults: the converged setting on ml-latest-small (chronological leave-one-out, issue 11); the earlier
    # max_len 50 / dropout 0.2 / batch 16 run capped at 12 epochs was under-trained (test NDCG@10 0.045 +- 0.012).
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 200  # ml-latest-small users have long histories (median ~70 ratings, some thousands)
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 term
    batch_size: int = 4  # windows of <= max_len positions per step (~440 targets: ~225 Adam updates per epoch)
    epochs: int = 200  # upper bound; early stopping ends training first (best epochs 30-60 on ml-latest-small)
    patience: int = 8  # epochs without a validation NDCG@10 gain before stopping (needs `valid`)
    max_seconds: float | None = None  # wall-time budget: stop after the epoch that crosses it
    threads: int | None = None  # torch intra-op threads during fit/score (None: leave torch's setting)
    seed: int = 0


def _sasrec_network(num_items: int, cfg: SASRecConfig) -> Any:
    import torch
    from torch import Tensor, nn

    class SASRecNet(nn.Module):
        causal: Tensor

        def __init__(self) -> None:
            super().__init__()
            self.item = nn.Embedding(num_items + 1, cfg.dim, padding_idx=0)  # row 0 = padding, item i = row i + 1
            self.position = nn.Embedding(cfg.max_len, cfg.dim)
            self.dropout = nn.Dropout(cfg.dropout)
            layer = nn.TransformerEncoderLayer(
                cfg.dim,
                cfg.heads,
                dim_feedforward=cfg.dim,
                dropout=cfg.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.dim)
            causal = torch.triu(torch.full((cfg.max_len, cfg.max_len), float("-inf")), diagonal=1)
            self.register_buffer("causal", causal, persistent=False)
            nn.init.normal_(self.item.weight, std=0.02)
            nn.init.normal_(self.position.weight, std=0.02)
            with torch.no_grad():
                self.item.weight[0].zero_()

        def forward(self, seq: Tensor) -> Tensor:
            """[B, L] right-padded item rows (0 = pad) -> [B, L, D]; position t sees positions <= t only."""
            length = seq.shape[1]
            x = self.item(seq) + self.position.weight[:length]
            x = self.dropout(x) * (seq > 0).unsqueeze(-1)
            h = self.encoder(x, mask=self.causal[:length, :length], is_causal=True)
            return self.norm(h)

        def logits(self, hidden: Tensor) -> Tensor:
            """[N, D] -> [N, num_items] over every catalog item (tied embeddings, padding row excluded)."""
            return hidden @ self.item.weight[1:].T

    return SASRecNet()


class SASRec(SequenceCE):
    """SASRec trained with full-softmax cross-entropy (see the module docstring); ``SASRec(epochs=1, threads=2)``
    overrides :class:`SASRecConfig` fields. After ``fit``: ``history`` (per epoch: loss, validation NDCG@10,
    seconds), ``best_epoch`` and ``epochs_run``."""

    name = "SASRec-CE"

    def __init__(self, config: SASRecConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.cfg = replace(config or SASRecConfig(), **overrides)

    def _network(self, num_items: int) -> Any:
        return _sasrec_network(num_items, self.cfg)
