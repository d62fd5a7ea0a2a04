"""The one fit loop: epochs of optimiser steps over an objective's batches, then validation, early stopping on the
objective's validation score, a wall-time budget, logging and per-epoch hooks (checkpoints, the best model).

An :class:`Objective` says what an epoch's batches are, what a batch's loss is and how validation scores; the next-item
ranking (training/train.py) and the liked classification (training/evaluation/classification.py) are two objectives
of the same loop. Under torchrun every rank runs the steps of its shard; rank 0 alone validates and decides to stop
(training/distributed.py). The device is the context's: CUDA when present, else the CPU.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from hybridrec.training import distributed
from hybridrec.training.config import OptimConfig

log = logging.getLogger(__name__)

GRAD_CLIP = 5.0  # max gradient norm of every step
CNN_PARAMETERS = ("item_encoder.cnn.", "item_encoder.spatial.")  # the poster CNN's parameters (optim.cnn_lr_scale)


class Objective(Protocol):
    def batches(self, epoch: int) -> Sequence[Any]:
        """This epoch's batches, in order (this rank's shard); also refreshes per-epoch caches."""
        ...

    def loss(self, batch: Any) -> Tensor:
        """The scalar training loss of one batch (the model in train mode)."""
        ...

    def validate(self) -> dict[str, float]:
        """Validation metrics (the model in eval mode, no gradients); ``score`` is the one early stopping maximises."""
        ...


@dataclass
class FitState:
    """Where a fit stands: what a checkpoint holds besides the weights, and what a resumed fit starts from."""

    next_epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""  # why the loop ended early ("patience", "budget"), empty when it ran every epoch
    # The weight average's tensors (optim.ema_decay), kept in the checkpoint: a resumed fit goes on averaging from
    # them, as an uninterrupted one would, instead of restarting the average at the raw weights.
    average: list[Tensor] | None = None


def fit(
    model: nn.Module,
    objective: Objective,
    opt: torch.optim.Optimizer,
    o: OptimConfig,
    *,
    state: FitState | None = None,
    ctx: distributed.DistContext | None = None,
    name: str = "",
    progress: bool = False,
    on_best: Callable[[dict[str, float]], None] | None = None,
    on_epoch: Callable[[FitState], None] | None = None,
) -> FitState:
    """Train ``model`` on ``objective`` for ``o.epochs`` epochs (from ``state.next_epoch``) with early stopping after
    ``o.patience`` epochs without a better validation ``score`` and after the epoch that crosses ``o.max_minutes``.

    ``on_best(metrics)`` runs on rank 0 when an epoch improves the score (e.g. to save the model), ``on_epoch(state)``
    on rank 0 after every epoch (e.g. to write a checkpoint). ``progress``: a bar on a terminal, ten lines per epoch
    in a log file; every epoch logs one line of its validation metrics."""
    ctx = ctx or distributed.DistContext()
    state = state or FitState()
    t0 = time.time() - (state.history[-1]["elapsed_s"] if state.history else 0.0)
    prefix = f"{name} " if name else ""
    ema = WeightAverage(model, o.ema_decay, state.average) if o.ema_decay else None
    state.average = ema.average if ema is not None else None
    schedule = lr_schedule(o)
    for epoch in range(state.next_epoch, o.epochs):
        batches = objective.batches(epoch)
        model.train()
        losses: list[float] = []
        desc = f"{prefix}epoch {epoch + 1}/{o.epochs}"
        for step in progress_bar(range(len(batches)), progress and ctx.is_main, desc):
            if schedule is not None:  # a function of (epoch, step) alone: a resumed fit continues the same schedule
                for group in opt.param_groups:
                    group["lr"] = o.lr * group.get("lr_scale", 1.0) * schedule(epoch + step / len(batches))
            loss = objective.loss(batches[step])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(model, o.clip_per_module)
            opt.step()
            if ema is not None:
                ema.update()
            losses.append(float(loss.detach()))
        model.eval()
        mean_loss = ctx.all_reduce_mean(float(np.mean(losses)) if losses else 0.0)
        state.next_epoch = epoch + 1
        stop = False
        if ema is not None:
            ema.swap()  # validate (and keep, through on_best) the averaged weights
        if ctx.is_main:  # validation, early stopping and the hooks are rank 0's; its decision is broadcast
            with torch.no_grad():
                metrics = objective.validate()
            row = {"epoch": float(epoch + 1), "loss": mean_loss, **metrics, "elapsed_s": time.time() - t0}
            state.history.append(row)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            log.info("%sepoch %d: loss %.4f, %s (%.0fs)", prefix, epoch + 1, mean_loss, shown, row["elapsed_s"])
            if metrics["score"] > state.best:
                state.best, state.best_epoch, state.bad_epochs = metrics["score"], epoch + 1, 0
                if on_best:
                    on_best(metrics)
            else:
                state.bad_epochs += 1
            if state.bad_epochs >= o.patience:
                log.info("%searly stop: no validation gain for %d epochs", prefix, state.bad_epochs)
                state.stopped, stop = "patience", True
            elif o.max_minutes is not None and time.time() - t0 > 60 * o.max_minutes:
                log.info("%swall-time budget of %.1f min reached", prefix, o.max_minutes)
                state.stopped, stop = "budget", True
        if ema is not None:
            ema.swap()  # back to the raw weights, which training continues from and the checkpoint keeps
        if ctx.is_main and on_epoch:
            on_epoch(state)
        if ctx.broadcast_flag(stop):
            break
    return state


LR_DECAYS = ("constant", "linear")


def clip_gradients(model: nn.Module, per_module: bool = False) -> None:
    """Clip the gradients' norm to GRAD_CLIP: the whole model's, or (``per_module``) each top-level module's and the
    root's own parameters' separately, so that one part's spike does not shrink every other part's step."""
    root = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    if not per_module:
        torch.nn.utils.clip_grad_norm_(root.parameters(), GRAD_CLIP)
        return
    for params in [list(root.parameters(recurse=False)), *(list(m.parameters()) for m in root.children())]:
        if params:
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)


def make_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Adam:
    """Adam over every parameter with ``o.lr`` and L2 ``o.weight_decay``; with ``o.cnn_lr_scale`` != 1 the poster CNN
    (``item_encoder.cnn`` and ``item_encoder.spatial``) is a second group at ``lr * cnn_lr_scale``. The group keeps
    its ``lr_scale``, which a learning-rate schedule multiplies."""
    if o.cnn_lr_scale == 1.0:  # one group: optimiser states of earlier runs load unchanged
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    cnn = {id(p) for name, p in model.named_parameters() if name.startswith(CNN_PARAMETERS)}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if (id(p) in cnn) is is_cnn], "lr_scale": scale, "lr": o.lr * scale}
        for is_cnn, scale in ((False, 1.0), (True, o.cnn_lr_scale))
    ]
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)


def lr_schedule(o: OptimConfig) -> Callable[[float], float] | None:
    """The learning rate's factor as a function of training progress in epochs (None: constant ``o.lr``)."""
    if o.lr_decay not in LR_DECAYS:
        raise ValueError(f"optim.lr_decay must be one of {', '.join(LR_DECAYS)}, got {o.lr_decay!r}")
    if o.lr_decay == "constant":
        return None
    total = max(1, o.epochs)
    return lambda progress: max(0.0, 1.0 - progress / total)


class WeightAverage:
    """An exponential moving average of a model's parameters, updated after every optimiser step; ``swap`` exchanges
    the model's parameters with the average (twice: back again)."""

    def __init__(self, model: nn.Module, decay: float, average: Sequence[Tensor] | None = None) -> None:
        """``average``: a saved average (a checkpoint's) to go on from; None starts it at the model's weights."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        if average is not None:
            shapes, saved = [tuple(p.shape) for p in self.params], [tuple(a.shape) for a in average]
            if shapes != saved:
                raise ValueError(f"the saved weight average does not fit the model: shapes {saved} != {shapes}")
        start = self.params if average is None else average
        self.average = [a.detach().to(p.device, p.dtype).clone() for a, p in zip(start, self.params, strict=True)]

    @torch.no_grad()
    def update(self) -> None:
        for p, a in zip(self.params, self.average, strict=True):
            a.lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        for p, a in zip(self.params, self.average, strict=True):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)


def progress_bar(it: range, enabled: bool, desc: str, lines: int = 10) -> Any:
    """A tqdm bar on a terminal; in a log file (stderr not a TTY) ``lines`` plain lines per pass instead of one line
    of carriage returns; nothing when not ``enabled``."""
    if not enabled:
        return it
    if not sys.stderr.isatty():
        return _logged(it, desc, max(1, len(it) // lines))
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return it
    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def _logged(it: range, desc: str, every: int) -> Any:
    t0 = time.monotonic()
    for i, x in enumerate(it, 1):
        yield x
        if i % every == 0 or i == len(it):
            log.info("%s: step %d/%d (%.0f s)", desc, i, len(it), time.monotonic() - t0)
