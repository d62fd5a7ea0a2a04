"""A training run of the hybrid: data, split, fitted artifacts, the fit loop on the next-item objective, checkpoints,
the servable model and its metrics.

Split: per user, chronological leave-one-out (last item = test, second-to-last = validation, the rest = train), the
evaluation's own :func:`~hybridrec.training.evaluation.splits.leave_one_out_split`. The objective (retrieval softmax,
fusion-head rerank, autoencoder reconstruction) is :mod:`hybridrec.training.objectives.next_item`; the loop (Adam
with L2, gradient clipping, early stopping on validation NDCG@10 of the served pipeline, a wall-time budget) is
:mod:`hybridrec.training.fit`. ``model.pt`` is the best epoch's model with the served blend of retrieval and rerank
folded into the fusion layer; ``checkpoint.pt`` the last epoch's state, for ``--resume``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridrec.data import LAYOUTS, DatasetTooSmallError, MovieLensData, load_movielens, resolve_data_dir
from hybridrec.dataclass_yaml import from_dict, load_yaml, save_yaml, to_dict
from hybridrec.preprocessing import Artifacts, fit_artifacts
from hybridrec.training import distributed
from hybridrec.training.config import ModelConfig, RunConfig
from hybridrec.training.evaluation.splits import item_counts, leave_one_out_split
from hybridrec.training.features import HistoryFeatures, ItemTable, item_embeddings, poster_cache
from hybridrec.training.fit import FitState, fit, make_optimizer
from hybridrec.training.modules import HybridModel, fold_blend
from hybridrec.training.objectives.next_item import NextItemObjective, full_ranking_metrics

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
PREV_CHECKPOINT_FILE = "checkpoint.prev.pt"  # the checkpoint before the last one: resume falls back to it
_CHECKPOINT_KEYS = ("model", "optim", "epoch", "best", "best_epoch", "bad", "history", "torch_rng", "np_rng")


def check_trainable(
    data: MovieLensData, train: dict[int, np.ndarray], val: dict[int, int], max_users: int | None = None, gap: int = 0
) -> int:
    """The number of training examples (prefixes) of a leave-one-out split; DatasetTooSmallError, saying what is
    missing, when there is nothing to train or validate on."""
    source = data.root / LAYOUTS[data.layout][0] if data.layout in LAYOUTS else data.root
    users = f"{len(train)} user(s)" + (
        f" (data.max_users={max_users})" if max_users and len(train) >= max_users else ""
    )
    if len(data.ratings) == 0:
        raise DatasetTooSmallError(
            f"{source}: no ratings to train on (no data rows, or only ratings of movies missing from the catalog)"
        )
    if not val:
        raise DatasetTooSmallError(
            f"{source}: too small to split: the leave-one-out split needs a user with 3+ ratings (train, validation, "
            f"test), but the {users} have at most {max(len(s) for s in train.values())}"
        )
    examples = sum(max(len(s) - 1 - gap, 0) for s in train.values())
    if examples == 0:
        need = "" if gap == 0 else f" beyond the data.train_gap={gap} held-out item(s)"
        raise DatasetTooSmallError(
            f"{source}: no training examples after the leave-one-out split: none of the {users} keeps 2+ ratings "
            f"for training{need} (a user needs 4+ ratings, or exactly 2)"
        )
    return examples


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    best_epoch: int
    metrics: dict[str, float]
    wall_s: float
    peak_rss_mb: float


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    data: MovieLensData | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the hybrid model and write model.pt, artifacts.json, config.yaml and metrics.json into run_dir.

    Under torchrun (WORLD_SIZE > 1) every process trains a DistributedDataParallel replica on its shard of each
    epoch; rank 0 alone validates, decides early stopping and writes the run's files (docs/distributed-training.md).
    """
    ctx = distributed.init_from_env()
    try:
        return _train(cfg, run_dir, ctx, data=data, resume=resume, progress=progress, on_epoch=on_epoch)
    finally:
        if ctx.enabled:
            distributed.cleanup()


def _train(
    cfg: RunConfig,
    run_dir: str | Path,
    ctx: distributed.DistContext,
    *,
    data: MovieLensData | None,
    resume: bool,
    progress: bool,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> TrainResult:
    t0 = time.time()
    reset_peak_rss()
    run = Path(run_dir)
    o = cfg.optim
    torch.set_num_threads(o.threads or max(1, (os.cpu_count() or 1) // ctx.local_world))
    set_seed(o.seed)
    if data is None:
        data = load_movielens(resolve_data_dir(cfg.data.path), max_users=cfg.data.max_users)
    elif cfg.data.max_users:
        data = data.subset(cfg.data.max_users)
    split = leave_one_out_split(data)  # the evaluation's split, row for row: one implementation
    train_ids, val_ids, test_ids = split.train, split.valid, split.test
    check_trainable(data, train_ids, val_ids, cfg.data.max_users, cfg.data.train_gap)
    run.mkdir(parents=True, exist_ok=True)
    artifacts = fit_artifacts(
        data, (m for seq in train_ids.values() for m in seq.tolist()), history_length=cfg.data.history_length
    )
    if ctx.is_main:  # the run's files are rank 0's to write
        _remove_stale_temp_files(run)
        artifacts.save(run)
        save_yaml(cfg, run / "config.yaml")
    log.info(
        "vocabulary: %d items, %d people, %d words", artifacts.num_items, artifacts.num_people, artifacts.num_words
    )
    to_index = np.vectorize(artifacts.item_index, otypes=[np.int64])
    train_seq = {u: to_index(s) if len(s) else s.astype(np.int64) for u, s in train_ids.items()}
    val = {u: artifacts.item_index(m) for u, m in val_ids.items()}
    test = {u: artifacts.item_index(m) for u, m in test_ids.items()}
    # Validation/test evaluate the model's use at serving time: history = everything before the held-out item.
    test_hist = {u: np.append(train_seq[u], val[u]) for u in test}

    table = ItemTable(data, artifacts)
    model = HybridModel(cfg.model, artifacts)
    model.item_encoder.set_id_counts(torch.from_numpy(item_counts(train_seq, artifacts.num_items)))
    if ctx.device.type == "cuda":  # CUDA when present (one GPU per process under torchrun), else the CPU
        model.to(ctx.device)
        table.tensors = {k: v.to(ctx.device) for k, v in table.tensors.items()}
    opt = make_optimizer(model, o)
    state = FitState()
    ckpt_path = run / CHECKPOINT_FILE
    # Every rank resumes from the same checkpoint: rank 0 picks it first (it may set a torn one aside), then the rest.
    ckpt = load_checkpoint(run) if resume and ctx.is_main else None
    ctx.barrier()
    if resume and not ctx.is_main:
        ckpt = load_checkpoint(run)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        state = FitState(ckpt["epoch"] + 1, ckpt["best"], ckpt["best_epoch"], ckpt["bad"], ckpt["history"])
        state.average = ckpt.get("average")
        if o.ema_decay and state.average is None:  # a checkpoint written before the average was kept
            log.warning("resume: %s has no weight average; the average restarts from the raw weights", ckpt["path"])
        torch.set_rng_state(ckpt["torch_rng"])
        np.random.set_state(ckpt["np_rng"])
        log.info("resumed from %s at epoch %d", ckpt["path"], state.next_epoch + 1)

    hist_len = cfg.data.history_length

    def save_best(metrics: dict[str, float]) -> None:
        save_model(model, run, blend=metrics["blend"], scale=metrics["scale"])

    def checkpoint(st: FitState) -> None:
        if on_epoch:
            on_epoch(st.history[-1])
        atomic_save(
            {
                "model": model.state_dict(),
                "optim": opt.state_dict(),
                "epoch": st.next_epoch - 1,
                "best": st.best,
                "best_epoch": st.best_epoch,
                "bad": st.bad_epochs,
                "history": st.history,
                "average": st.average,  # the weight average (optim.ema_decay), or None
                "torch_rng": torch.get_rng_state(),
                "np_rng": np.random.get_state(),
            },
            ckpt_path,
            keep_previous=run / PREV_CHECKPOINT_FILE,
        )

    # the histories' ratings and times, for a sequence encoder that reads them (a training-time probe)
    features = HistoryFeatures(data) if cfg.model.sequence.history_features else None
    objective = NextItemObjective(model, table, train_seq, val, cfg, ctx, features)
    state = fit(
        model, objective, opt, o, state=state, ctx=ctx, progress=progress, on_best=save_best, on_epoch=checkpoint
    )
    history, best, best_epoch, epochs_done = state.history, state.best, state.best_epoch, state.next_epoch

    if ctx.is_main and not (run / MODEL_FILE).exists():  # zero epochs run (e.g. epochs=0): a servable model
        save_model(model, run)
    ctx.barrier()
    if not ctx.is_main:  # the test metrics and metrics.json are rank 0's
        return TrainResult(run, epochs_done, best_epoch, {}, time.time() - t0, peak_rss_mb()[0])
    table.tensors = {k: v.cpu() for k, v in table.tensors.items()}  # load_model's model is on the CPU
    best_model, _ = load_model(run)
    with torch.no_grad():
        item_emb = item_embeddings(best_model, table, poster_cache(best_model, table))
    test_metrics = full_ranking_metrics(best_model, item_emb, test_hist, test, hist_len, features=features)
    peak, peak_scope = peak_rss_mb()
    wall = time.time() - t0
    summary = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_ndcg@10": best,
        "test_hr@10_vocab": test_metrics["hr@10"],
        "test_ndcg@10_vocab": test_metrics["ndcg@10"],
        "test_users_vocab": test_metrics["users"],
        "test_retrieval_ndcg@10_vocab": test_metrics["dot_ndcg@10"],
        "served_blend": history[best_epoch - 1]["blend"] if 0 < best_epoch <= len(history) else 1.0,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_scope": peak_scope,
        "history": history,
    }
    (run / "metrics.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(
        run, len(history), best_epoch, {k: v for k, v in summary.items() if isinstance(v, float)}, wall, peak
    )


_PEAK_RESET = False


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux >= 4.0), so that several runs in one process (`hybridrec evaluate`)
    each report their own peak. False where the kernel does not allow it."""
    global _PEAK_RESET
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _PEAK_RESET = True
    except OSError:
        _PEAK_RESET = False
    return _PEAK_RESET


def peak_rss_mb() -> tuple[float, str]:
    """(peak RSS in MB, "run" when measured since reset_peak_rss, else "process": the process's peak so far)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0, "run" if _PEAK_RESET else "process"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _remove_stale_temp_files(run: Path) -> None:
    """Temporary files of writes killed mid-way (the target files themselves are intact)."""
    for name in (MODEL_FILE, CHECKPOINT_FILE):
        for stale in run.glob(f".{name}.*.tmp"):
            log.debug("removing %s, left by an interrupted write", stale)
            stale.unlink(missing_ok=True)
    (run / "model.tmp").unlink(missing_ok=True)  # the temporary name of earlier versions


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (POSIX; skipped where a directory cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: object, path: Path, *, keep_previous: Path | None = None) -> Path:
    """torch.save `obj` to `path` so that a crash or kill at any moment leaves the old file or the new one, never a
    torn one: write a temporary file in the same folder, flush and fsync it, then os.replace it over `path`.
    With `keep_previous`, the file being replaced is first renamed there (the last good copy, see load_checkpoint)."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _read_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = torch.load(path, weights_only=False, map_location="cpu")
    if not isinstance(ckpt, dict):
        raise ValueError(f"not a training checkpoint (a {type(ckpt).__name__})")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"not a training checkpoint (no {', '.join(missing)})")
    return ckpt


def load_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest readable training checkpoint of a run (checkpoint.pt, else checkpoint.prev.pt) with its "path",
    or None (warned: training starts fresh). An unreadable one, e.g. torn by a crash of an earlier version during its
    write, is reported with the reason and renamed to <name>.corrupt, so that it never replaces a good copy."""
    run = Path(run_dir)
    current, previous = run / CHECKPOINT_FILE, run / PREV_CHECKPOINT_FILE
    found = [p for p in (current, previous) if p.exists()]
    if not found:
        log.warning(
            "resume: no checkpoint in %s (no %s or %s); starting fresh from epoch 1", run, current.name, previous.name
        )
        return None
    for path in found:
        try:
            ckpt = _read_checkpoint(path)
        except Exception as e:  # torn zip, truncated pickle, foreign file: never a traceback, never a resume from it
            first = (str(e).strip().splitlines() or [""])[0].split(". ")[0]  # torch's zip errors run on
            reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
            aside = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, aside)
                kept = f"; moved it to {aside.name}"
            except OSError:
                kept = ""
            log.warning("resume: checkpoint %s is unreadable (%s)%s", path, reason, kept)
            continue
        if path != current:
            log.warning("resume: falling back to the previous checkpoint %s (after epoch %d)", path, ckpt["epoch"] + 1)
        ckpt["path"] = path
        return ckpt
    log.warning("resume: no readable checkpoint in %s; starting fresh from epoch 1", run)
    return None


def save_model(model: HybridModel, run_dir: Path, blend: float = 1.0, scale: float = 1.0) -> Path:
    """The servable model: the served blend of retrieval and rerank folded into the fusion layer (training goes on
    with the unfolded weights, which the checkpoint keeps). Atomic: never a half-written model behind."""
    state = dict(model.state_dict())
    w, b = "fusion_head.fusion.weight", "fusion_head.fusion.bias"
    state[w], state[b] = fold_blend(state[w], state[b], model.cfg.embedding_dim, blend, scale)
    return atomic_save(
        {"model_config": to_dict(model.cfg), "state_dict": state, "served_blend": {"weight": blend, "scale": scale}},
        Path(run_dir) / MODEL_FILE,
    )


def load_run_config(run_dir: str | Path) -> RunConfig:
    return load_yaml(RunConfig, Path(run_dir) / "config.yaml")


def load_model(run_dir: str | Path) -> tuple[HybridModel, Artifacts]:
    """(eval-mode model, artifacts) from a run directory."""
    run = Path(run_dir)
    path = run / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no trained model at {path}: run `hybridrec train --run {run}` first")
    artifacts = Artifacts.load(run)
    ckpt = torch.load(path, weights_only=False, map_location="cpu")
    model_config, state = _renamed(ckpt["model_config"], ckpt["state_dict"])
    model = HybridModel(from_dict(ModelConfig, model_config), artifacts)
    model.load_state_dict(state)
    return model.eval(), artifacts


def _renamed(model_config: dict[str, Any], state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Models saved before the item encoder's rename (``image_encoder``, config key ``image``) still load."""
    model_config = {("item" if k == "image" else k): v for k, v in model_config.items()}
    old = "image_encoder."
    state = {("item_encoder." + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
    return model_config, state
