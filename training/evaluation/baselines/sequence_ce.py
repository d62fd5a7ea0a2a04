"""The training loop shared by the sequence baselines trained with full softmax cross-entropy (SASRec-CE, GRU4Rec-CE).

A subclass of :class:`SequenceCE` only builds its network (``forward(seq [B, L]) -> hidden [B, L, D]``, each position
seeing positions <= t only, and ``logits(hidden [N, D]) -> [N, num_items]``). An epoch cuts every training sequence
into windows of <= ``max_len`` consecutive items (cut points shifted at random each epoch) and trains every position
of every window at once against the next item, with the cross-entropy over every catalog item, so each training
prefix is a target exactly once per epoch. After each epoch the validation NDCG@10 (full ranking, training items
masked) is computed; training stops after ``patience`` epochs without a gain, after ``epochs`` epochs or after the
epoch that crosses the ``max_seconds`` wall-time budget, and the best validation epoch's weights are kept. The test
split is never read here. ``score`` runs the network over the last ``max_len`` history items and ranks every catalog
item by the last position's logits. torch is imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hybridrec.training.evaluation.baselines.scorer import validation_ndcg

__all__ = ["SequenceCE", "torch_threads"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (None or 0: leave the setting), then restore it."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SequenceCE:
    """Base of the cross-entropy sequence scorers. ``cfg`` needs ``max_len``, ``lr``, ``weight_decay``,
    ``batch_size``, ``epochs``, ``patience``, ``max_seconds``, ``threads`` and ``seed``. After ``fit``: ``history``
    (per epoch: loss, validation NDCG@10, seconds), ``best_epoch``, ``epochs_run`` and ``fit_seconds``."""

    name = "SequenceCE"
    cfg: Any

    def __init__(self) -> None:
        self.num_items = 0
        self.net: Any = None
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.epochs_run = 0
        self.fit_seconds = 0.0

    def _network(self, num_items: int) -> Any:
        raise NotImplementedError

    def _windows(self, train: Mapping[int, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) [W, max_len] item rows (index + 1, 0 = pad), right-padded: every training position >= 1
        is a target exactly once, its input the preceding items of its window."""
        length = self.cfg.max_len
        inputs, targets = [], []
        for seq in train.values():
            rows = np.asarray(seq, dtype=np.int64) + 1
            n = len(rows)
            if n < 2:
                continue
            # target positions 1 .. n-1, cut into blocks of <= length ending at a random shift from the end
            end = n - 1 - int(rng.integers(length))
            cuts = list(range(end, 0, -length))
            bounds = [(max(1, c - length + 1), c) for c in cuts]
            if end < n - 1:
                bounds.append((max(1, end + 1), n - 1))
            for lo, hi in bounds:
                if lo > hi:
                    continue
                w = hi - lo + 1
                x = np.zeros(length, dtype=np.int64)
                y = np.zeros(length, dtype=np.int64)
                x[:w] = rows[lo - 1 : hi]
                y[:w] = rows[lo : hi + 1]
                inputs.append(x)
                targets.append(y)
        if not inputs:
            return np.zeros((0, length), np.int64), np.zeros((0, length), np.int64)
        return np.stack(inputs), np.stack(targets)

    def fit(
        self, train: Mapping[int, np.ndarray], num_items: int, *, valid: Mapping[int, int] | None = None, **side: Any
    ) -> SequenceCE:
        import torch
        import torch.nn.functional as F

        cfg = self.cfg
        t0 = time.time()
        self.num_items = num_items
        with torch_threads(cfg.threads):
            torch.manual_seed(cfg.seed)
            self.net = self._network(num_items)
            opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            best, best_state, bad = -1.0, None, 0
            self.history, self.best_epoch, self.epochs_run = [], 0, 0
            for epoch in range(cfg.epochs):
                rng = np.random.default_rng(cfg.seed * 100_003 + epoch)
                inputs, targets = self._windows(train, rng)
                order = rng.permutation(len(inputs))
                self.net.train()
                losses = []
                for start in range(0, len(order), cfg.batch_size):
                    batch = order[start : start + cfg.batch_size]
                    x = torch.from_numpy(inputs[batch])
                    y = torch.from_numpy(targets[batch])
                    keep = y > 0
                    hidden = self.net(x)[keep]
                    loss = F.cross_entropy(self.net.logits(hidden), y[keep] - 1)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                self.epochs_run = epoch + 1
                row = {"epoch": float(epoch + 1), "loss": float(np.mean(losses)) if losses else 0.0}
                if valid:
                    row["val_ndcg@10"] = validation_ndcg(self.score, train, valid)
                row["seconds"] = time.time() - t0
                self.history.append(row)
                log.info("%s epoch %d: %s", self.name, epoch + 1, {k: round(v, 4) for k, v in row.items()})
                if valid:
                    if row["val_ndcg@10"] > best:
                        best, bad, self.best_epoch = row["val_ndcg@10"], 0, epoch + 1
                        best_state = copy.deepcopy(self.net.state_dict())
                    else:
                        bad += 1
                        if bad >= cfg.patience:
                            break
                else:
                    self.best_epoch = epoch + 1
                if cfg.max_seconds is not None and time.time() - t0 > cfg.max_seconds:
                    break
            if best_state is not None:
                self.net.load_state_dict(best_state)
            self.net.eval()
        self.fit_seconds = time.time() - t0
        return self

    def score(self, users: Sequence[int], histories: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
        import torch

        if self.net is None:
            raise RuntimeError(f"{type(self).__name__}.score before fit")
        length = self.cfg.max_len
        out = np.zeros((len(histories), self.num_items), dtype=np.float32)
        was_training = self.net.training
        self.net.eval()
        with torch_threads(self.cfg.threads), torch.no_grad():
            for start in range(0, len(histories), batch):
                chunk = histories[start : start + batch]
                seq = np.zeros((len(chunk), length), dtype=np.int64)
                last = np.zeros(len(chunk), dtype=np.int64)
                for r, h in enumerate(chunk):
                    recent = np.asarray(h, dtype=np.int64)[-length:] + 1
                    seq[r, : len(recent)] = recent
                    last[r] = max(len(recent) - 1, 0)
                hidden = self.net(torch.from_numpy(seq))[torch.arange(len(chunk)), torch.from_numpy(last)]
                out[start : start + len(chunk)] = self.net.logits(hidden).numpy()
        self.net.train(was_training)
        return out
