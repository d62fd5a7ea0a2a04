"""Joint training of the three models on chronological next-item prediction.

Split: per user, chronological leave-one-out (last item = test, second-to-last = validation, the rest = train).
Objective, per training prefix (every prefix of every user once per epoch):
* retrieval: full softmax cross-entropy of user . item over the whole vocabulary (what `recommend` retrieves by);
* reranking: softmax cross-entropy of the fusion head over the target, the retrieval's current hardest unseen
  negatives and a few uniform ones (what `recommend` reranks);
* the autoencoder's reconstruction MSE.
Adam with L2, dropout, Xavier init; early stopping on validation NDCG@10, full ranking of the served pipeline.
The poster CNN is the dearest part on a CPU, so the catalog's pooled CNN features are cached once per epoch and only
`live_posters` targets per step run through the CNN with gradients.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hybridrec import spec
from hybridrec.data import LAYOUTS, DatasetTooSmallError, MovieLensData, load_movielens, resolve_data_dir
from hybridrec.dataclass_yaml import from_dict, load_yaml, save_yaml, to_dict
from hybridrec.preprocessing import Artifacts, ItemCatalog, fit_artifacts
from hybridrec.training import distributed
from hybridrec.training.config import ModelConfig, RunConfig
from hybridrec.training.evaluation.metrics import ranking_values, target_ranks
from hybridrec.training.modules import NEG, HybridModel

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
PREV_CHECKPOINT_FILE = "checkpoint.prev.pt"  # the checkpoint before the last one: resume falls back to it
_CHECKPOINT_KEYS = ("model", "optim", "epoch", "best", "best_epoch", "bad", "history", "torch_rng", "np_rng")


@dataclass
class Split:
    """Per-user chronological item-index sequences (vocabulary indices, not movieIds)."""

    train: dict[int, np.ndarray]
    val: dict[int, int]
    test: dict[int, int]


def leave_one_out(histories: dict[int, np.ndarray]) -> tuple[dict[int, np.ndarray], dict[int, int], dict[int, int]]:
    """movieId histories -> (train prefix, validation movieId, test movieId); users with < 3 items only train."""
    train, val, test = {}, {}, {}
    for user, items in histories.items():
        if len(items) >= 3:
            train[user], val[user], test[user] = items[:-2], int(items[-2]), int(items[-1])
        else:
            train[user] = items
    return train, val, test


def check_trainable(
    data: MovieLensData, train: dict[int, np.ndarray], val: dict[int, int], max_users: int | None = None
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
    examples = sum(max(len(s) - 1, 0) for s in train.values())
    if examples == 0:
        raise DatasetTooSmallError(
            f"{source}: no training examples after the leave-one-out split: none of the {users} keeps 2+ ratings "
            "for training (a user needs 4+ ratings, or exactly 2)"
        )
    return examples


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


def pipeline_scores(
    model: HybridModel,
    user: Tensor,
    items: Tensor,
    seen: list[np.ndarray],
    depth: int = spec.RETRIEVAL_DEPTH,
    reserved: int = spec.FIRST_ID,
) -> Tensor:
    """What the `recommend` ensemble ranks by, as one score per item [B, I]: the dot-product retrieval's top `depth`
    unseen items reranked by the fusion head (scores in (0, 1)), every other item below them in dot-product order.

    Seen items and the `reserved` first rows (PAD/UNK in vocabulary order; 0 for catalog order) are left to the
    caller's metric to mask; they are excluded from retrieval here, as the served `retrieval` model does."""
    dot = user @ items.T  # [B, I]
    masked = dot.clone()
    masked[:, :reserved] = NEG
    for r, s in enumerate(seen):
        if len(s):
            masked[r, torch.from_numpy(np.asarray(s, dtype=np.int64)).to(masked.device)] = NEG
    top = masked.topk(min(depth, masked.shape[1]), dim=1).indices  # [B, K]
    fused = model.fusion_head(user, items[top])  # sigmoid, [B, K]
    out = dot - dot.max(dim=1, keepdim=True).values - 1.0  # every non-retrieved item below 0
    return out.scatter(1, top, fused)


def full_ranking_metrics(
    model: HybridModel,
    items: Tensor,
    histories: dict[int, np.ndarray],
    targets: dict[int, int],
    length: int,
    k: int = 10,
    chunk: int = 128,
) -> dict[str, float]:
    """NDCG@k / HR@k of each held-out vocabulary item against every vocabulary item, the history masked, for the
    served pipeline (`pipeline`) and for the dot product alone (`dot`). Targets outside the vocabulary are skipped
    here; the evaluation command ranks the whole catalog."""
    users = [u for u in sorted(targets) if targets[u] >= spec.FIRST_ID]
    out = {"users": float(len(users))}
    if not users:
        return out | {"ndcg@10": 0.0, "hr@10": 0.0, "dot_ndcg@10": 0.0, "dot_hr@10": 0.0}
    model.eval()
    ranks: dict[str, list[np.ndarray]] = {"": [], "dot_": []}
    with torch.no_grad():
        for start in range(0, len(users), chunk):
            part = users[start : start + chunk]
            seen = [histories[u] for u in part]
            user = model.sequence_encoder(pad_histories(seen, length).to(items.device))
            tgt = [targets[u] for u in part]
            for name, scores in (("", pipeline_scores(model, user, items, seen)), ("dot_", user @ items.T)):
                s = scores.cpu().numpy().copy()
                s[:, : spec.FIRST_ID] = -np.inf  # PAD and UNK are never candidates
                ranks[name].append(target_ranks(s, tgt, seen))
    for name, parts in ranks.items():
        values = ranking_values(np.concatenate(parts), k)
        out[f"{name}hr@{k}"] = float(values[f"hr@{k}"].mean())
        out[f"{name}ndcg@{k}"] = float(values[f"ndcg@{k}"].mean())
    return out


def _epoch_examples(
    train_seq: dict[int, np.ndarray], users: list[int], cap: int | None, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(user, target position) pairs: every training prefix once (or `cap` random ones per user), shuffled."""
    examples = []
    for u in users:
        positions = np.arange(1, len(train_seq[u]))
        if cap is not None and len(positions) > cap:
            positions = rng.choice(positions, cap, replace=False)
        examples += [(u, int(t)) for t in positions]
    rng.shuffle(examples)
    return examples


class StepLoss(nn.Module):
    """One training step's loss on a batch of (user, target position) examples, as a module so that
    DistributedDataParallel can wrap it (its gradient sync hooks need the step to run through a forward call); in a
    single process it is called directly, without any wrapper."""

    def __init__(self, model: HybridModel, table: ItemTable, train_seq: dict[int, np.ndarray], cfg: RunConfig) -> None:
        super().__init__()
        self.model = model
        self.table, self.train_seq, self.o = table, train_seq, cfg.optim
        self.hist_len, self.n_items = cfg.data.history_length, len(table)
        self.use_ae, self.recon_weight = cfg.model.fusion.use_autoencoder, cfg.model.fusion.reconstruction_weight
        self.dev = table.tensors["item_id"].device  # the CPU, or the rank's GPU under DDP; random draws stay on the CPU

    def forward(self, batch: list[tuple[int, int]], cache: Tensor | None) -> Tensor:
        o = self.o
        b = len(batch)
        seen = [self.train_seq[u][:t] for u, t in batch]
        hist = pad_histories([s[-self.hist_len :] for s in seen], self.hist_len).to(self.dev)
        targets = torch.tensor([int(self.train_seq[u][t]) for u, t in batch]).to(self.dev)
        # Candidate set: every item (full softmax) or the batch's targets plus `softmax_negatives` uniform items
        # (sampled softmax: uniform sampling needs no logQ correction, and far cheaper steps buy more updates).
        if o.softmax_negatives is None:
            cols = torch.arange(self.n_items).to(self.dev)
        else:
            negatives = torch.randint(spec.FIRST_ID, self.n_items, (o.softmax_negatives,))
            cols = torch.unique(torch.cat([targets, negatives.to(self.dev)]))
        label = torch.searchsorted(cols, targets)  # column of each row's target (cols is sorted and unique)
        pooled = None if cache is None else cache[cols]
        if pooled is not None and o.live_posters > 0:
            # The CNN learns through a few live posters per step; every other item uses this epoch's cache.
            live = torch.searchsorted(cols, torch.unique(targets))
            live = live[torch.randperm(len(live))[: o.live_posters].to(self.dev)]
            live_feat = self.model.item_encoder.poster_features(self.table.tensors["poster"][cols[live]])
            pooled = pooled.index_put((live,), live_feat)
        t = self.table.tensors
        items = self.model.item_encoder.fuse(
            pooled, t["item_id"][cols], t["meta"][cols], t["people"][cols], t["overview"][cols]
        )
        user = self.model.sequence_encoder(hist)  # [B, D]
        # Retrieval: softmax cross-entropy of user . item (SASRec-CE style), as `recommend` retrieves by it.
        dot = (user @ items.T).masked_fill(cols.unsqueeze(0) < spec.FIRST_ID, NEG)
        retrieval_loss = F.cross_entropy(dot, label)
        # Fusion head: rerank the retrieval's hardest current negatives (plus random ones) against the target,
        # i.e. exactly the candidates it sees when serving `recommend`. Its inputs are detached: the head learns
        # to rerank on top of the two towers without its noisier gradients moving the retrieval embeddings.
        with torch.no_grad():
            hard_scores = dot.detach().clone()
            hard_scores[torch.arange(b, device=self.dev), label] = NEG
            in_set = torch.zeros(self.n_items, dtype=torch.long, device=self.dev)
            in_set[cols] = torch.arange(len(cols), device=self.dev) + 1
            for r, (u, _) in enumerate(batch):
                # none of the user's items, past or future, is a negative: future ones are false negatives that
                # would teach the reranker to demote exactly what the user watches next
                pos = in_set[torch.from_numpy(self.train_seq[u]).to(self.dev)]
                hard_scores[r, pos[pos > 0] - 1] = NEG
            hard = hard_scores.topk(min(o.hard_negatives, len(cols) - 1), dim=1).indices
            rnd = torch.randint(0, len(cols), (b, o.random_negatives)).to(self.dev)
            cand = torch.cat([label.unsqueeze(1), hard, rnd], dim=1)  # [B, 1 + H + R] columns of `items`
        logits, x, z = self.model.fusion_head.logits(user.detach(), items.detach()[cand])
        collide = cand == label.unsqueeze(1)
        collide[:, 0] = False
        rank_loss = F.cross_entropy(logits.masked_fill(collide, NEG), torch.zeros(b, dtype=torch.long, device=self.dev))
        # The served score is sigma(logit): the pointwise BCE keeps the logits calibrated, so the scores of the top
        # candidates never saturate at 1.0 in float32 (ties there would make the reranked order arbitrary).
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        keep = ~collide
        rank_loss = rank_loss + F.binary_cross_entropy_with_logits(logits[keep], labels[keep])
        loss = retrieval_loss + rank_loss
        if self.use_ae:
            recon = F.mse_loss(self.model.fusion_head.decoder(z[:, 0]), x[:, 0].detach())
            loss = loss + self.recon_weight * recon
        return loss


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
    train_ids, val_ids, test_ids = leave_one_out(data.histories())
    check_trainable(data, train_ids, val_ids, cfg.data.max_users)
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
    val_hist = train_seq
    test_hist = {u: np.append(train_seq[u], val[u]) for u in test}

    table = ItemTable(data, artifacts)
    model = HybridModel(cfg.model, artifacts)
    opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    start_epoch, best, best_epoch, bad_epochs = 0, -1.0, -1, 0
    history: list[dict[str, float]] = []
    ckpt_path = run / CHECKPOINT_FILE
    # Every rank resumes from the same checkpoint: rank 0 picks it first (it may set a torn one aside), then the rest.
    ckpt = load_checkpoint(run) if resume and ctx.is_main else None
    ctx.barrier()
    if resume and not ctx.is_main:
        ckpt = load_checkpoint(run)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        start_epoch, best, best_epoch, bad_epochs = ckpt["epoch"] + 1, ckpt["best"], ckpt["best_epoch"], ckpt["bad"]
        history = ckpt["history"]
        torch.set_rng_state(ckpt["torch_rng"])
        np.random.set_state(ckpt["np_rng"])
        log.info("resumed from %s at epoch %d", ckpt["path"], start_epoch + 1)

    hist_len = cfg.data.history_length
    users = [u for u, s in train_seq.items() if len(s) >= 2]
    epochs_done = start_epoch
    step_loss: nn.Module = StepLoss(model, table, train_seq, cfg)
    batch_size = o.batch_size
    if ctx.enabled:
        if ctx.device.type == "cuda":  # one GPU per process; the CPU otherwise, as in a single process
            model.to(ctx.device)
            table.tensors = {k: v.to(ctx.device) for k, v in table.tensors.items()}
        # Ablations leave parameters without gradients, which DDP must then look for after every step.
        m, f = cfg.model, cfg.model.fusion
        unused = not (m.item.use_image and m.item.use_metadata and o.live_posters > 0 and f.use_autoencoder)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        step_loss = DistributedDataParallel(step_loss, device_ids=ids, find_unused_parameters=unused)
        batch_size = max(1, o.batch_size // ctx.world)  # the global batch stays o.batch_size (when divisible)
    for epoch in range(start_epoch, o.epochs):
        rng = np.random.default_rng(o.seed * 1000 + epoch)
        examples = ctx.shard(_epoch_examples(train_seq, users, cfg.data.targets_per_user, rng))
        cache = poster_cache(model, table)
        model.eval()
        with torch.no_grad():  # this epoch's content features of the history items (see SequenceEncoder)
            model.sequence_encoder.set_item_content(item_embeddings(model, table, cache))
        model.train()
        steps = math.ceil(len(examples) / batch_size)
        losses = []
        bar = progress_bar(range(steps), progress and ctx.is_main, f"epoch {epoch + 1}/{o.epochs}")
        for step in bar:
            batch = examples[step * batch_size : (step + 1) * batch_size]
            loss = step_loss(batch, cache)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(float(loss.detach()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        model.eval()
        mean_loss = ctx.all_reduce_mean(float(np.mean(losses)) if losses else 0.0)
        stop = False
        if ctx.is_main:  # validation, early stopping and checkpoints: rank 0's, its decision broadcast
            with torch.no_grad():
                item_emb = item_embeddings(model, table, poster_cache(model, table))
            metrics = full_ranking_metrics(model, item_emb, val_hist, val, hist_len)
            row = {
                "epoch": float(epoch + 1),
                "loss": mean_loss,
                "val_hr@10": metrics["hr@10"],
                "val_ndcg@10": metrics["ndcg@10"],
                "val_dot_ndcg@10": metrics["dot_ndcg@10"],
                "elapsed_s": time.time() - t0,
            }
            history.append(row)
            log.info(
                "epoch %d: loss %.4f val HR@10 %.4f NDCG@10 %.4f (dot %.4f) (%.0fs)",
                epoch + 1,
                row["loss"],
                row["val_hr@10"],
                row["val_ndcg@10"],
                row["val_dot_ndcg@10"],
                row["elapsed_s"],
            )
            if on_epoch:
                on_epoch(row)
            if metrics["ndcg@10"] > best:
                best, best_epoch, bad_epochs = metrics["ndcg@10"], epoch + 1, 0
                save_model(model, run)
            else:
                bad_epochs += 1
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "bad": bad_epochs,
                    "history": history,
                    "torch_rng": torch.get_rng_state(),
                    "np_rng": np.random.get_state(),
                },
                ckpt_path,
                keep_previous=run / PREV_CHECKPOINT_FILE,
            )
            if bad_epochs >= o.patience:
                log.info("early stop: no validation gain for %d epochs", bad_epochs)
                stop = True
            elif o.max_minutes is not None and time.time() - t0 > 60 * o.max_minutes:
                log.info("wall-time budget of %.1f min reached", o.max_minutes)
                stop = True
        epochs_done = epoch + 1
        if ctx.broadcast_flag(stop):
            break

    if ctx.is_main and not (run / MODEL_FILE).exists():  # zero epochs run (e.g. epochs=0): a servable model
        save_model(model, run)
    ctx.barrier()
    if not ctx.is_main:  # the test metrics and metrics.json are rank 0's
        return TrainResult(run, epochs_done, best_epoch, {}, time.time() - t0, peak_rss_mb()[0])
    table.tensors = {k: v.cpu() for k, v in table.tensors.items()}  # load_model's model is on the CPU
    best_model, _ = load_model(run)
    with torch.no_grad():
        item_emb = item_embeddings(best_model, table, poster_cache(best_model, table))
    test_metrics = full_ranking_metrics(best_model, item_emb, test_hist, test, hist_len)
    peak, peak_scope = peak_rss_mb()
    wall = time.time() - t0
    summary = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_ndcg@10": best,
        "test_hr@10_vocab": test_metrics["hr@10"],
        "test_ndcg@10_vocab": test_metrics["ndcg@10"],
        "test_users_vocab": test_metrics["users"],
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


def progress_bar(it: range, enabled: bool, desc: str, lines: int = 10) -> Any:
    """A tqdm bar on a terminal; in a log file (stderr not a TTY) ``lines`` plain lines per pass instead of one line
    of carriage returns."""
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


def save_model(model: HybridModel, run_dir: Path) -> Path:
    # atomic: never a half-written model behind
    return atomic_save(
        {"model_config": to_dict(model.cfg), "state_dict": model.state_dict()}, Path(run_dir) / MODEL_FILE
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
