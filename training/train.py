"""Joint training of the three models on chronological next-item prediction.

Split: per user, chronological leave-one-out (last item = test, second-to-last = validation, the rest = train).
Objective: softmax cross-entropy of the fusion head's logits over the batch's targets (in-batch negatives) plus uniform
catalog negatives, plus the autoencoder's reconstruction MSE. Adam with L2, dropout, Xavier init, early stopping on
validation NDCG@10 (100 sampled negatives; full-catalog evaluation belongs to the evaluation command).
"""

from __future__ import annotations

import json
import logging
import math
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
import torch.nn.functional as F
from torch import Tensor

from hybridrec import spec
from hybridrec.configs import from_dict, load_yaml, save_yaml, to_dict
from hybridrec.data import MovieLensData, load_movielens, resolve_data_dir
from hybridrec.preprocessing import Artifacts, ItemCatalog, fit_artifacts
from hybridrec.training.config import ModelConfig, RunConfig
from hybridrec.training.modules import NEG, HybridModel

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"


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


def _encode_all(model: HybridModel, table: ItemTable, batch: int = 512) -> Tensor:
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(table), batch):
            idx = torch.arange(start, min(start + batch, len(table)))
            outs.append(model.image_encoder.encode(*table.gather(idx)))
    return torch.cat(outs)


def sampled_ranking_metrics(
    model: HybridModel,
    item_emb: Tensor,
    train: dict[int, np.ndarray],
    targets: dict[int, int],
    length: int,
    negatives: int,
    seed: int,
    k: int = 10,
) -> dict[str, float]:
    """HR@k / NDCG@k of each held-out item against `negatives` random unseen vocabulary items."""
    rng = np.random.default_rng(seed)
    users = [u for u in targets if targets[u] >= spec.FIRST_ID]
    if not users:
        return {"hr@10": 0.0, "ndcg@10": 0.0, "users": 0.0}
    n_items = item_emb.shape[0]
    hits, ndcg = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(users), 256):
            chunk = users[start : start + 256]
            cands = np.empty((len(chunk), negatives + 1), dtype=np.int64)
            for r, u in enumerate(chunk):
                seen = set(train[u].tolist()) | {targets[u]}
                neg: list[int] = []
                while len(neg) < negatives:
                    c = int(rng.integers(spec.FIRST_ID, n_items))
                    if c not in seen:
                        neg.append(c)
                cands[r] = [targets[u], *neg]
            user = model.sequence_encoder(pad_histories([train[u] for u in chunk], length))
            logits, _, _ = model.fusion_head.logits(user, item_emb[torch.from_numpy(cands)])
            rank = (logits[:, 1:] >= logits[:, :1]).sum(1)  # ties count against the target
            hits += (rank < k).float().tolist()
            ndcg += torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(logits[:, 0])).tolist()
    return {"hr@10": float(np.mean(hits)), "ndcg@10": float(np.mean(ndcg)), "users": float(len(users))}


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    data: MovieLensData | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the hybrid model and write model.pt, artifacts.json, config.yaml and metrics.json into run_dir."""
    t0 = time.time()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    o = cfg.optim
    torch.set_num_threads(o.threads or os.cpu_count() or 1)
    set_seed(o.seed)
    if data is None:
        data = load_movielens(resolve_data_dir(cfg.data.path), max_users=cfg.data.max_users)
    elif cfg.data.max_users:
        data = data.subset(cfg.data.max_users)
    train_ids, val_ids, test_ids = leave_one_out(data.histories())
    artifacts = fit_artifacts(
        data, (m for seq in train_ids.values() for m in seq.tolist()), history_length=cfg.data.history_length
    )
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
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        start_epoch, best, best_epoch, bad_epochs = ckpt["epoch"] + 1, ckpt["best"], ckpt["best_epoch"], ckpt["bad"]
        history = ckpt["history"]
        torch.set_rng_state(ckpt["torch_rng"])
        np.random.set_state(ckpt["np_rng"])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    hist_len = cfg.data.history_length
    users = [u for u, s in train_seq.items() if len(s) >= 2]
    n_items = len(table)
    for epoch in range(start_epoch, o.epochs):
        model.train()
        rng = np.random.default_rng(o.seed * 1000 + epoch)
        examples = []
        for u in users:
            seq = train_seq[u]
            positions = np.arange(1, len(seq))
            if len(positions) > cfg.data.targets_per_user:
                positions = rng.choice(positions, cfg.data.targets_per_user, replace=False)
            examples += [(u, int(t)) for t in positions]
        rng.shuffle(examples)
        steps = math.ceil(len(examples) / o.batch_size)
        losses = []
        bar = _progress(range(steps), progress, f"epoch {epoch + 1}/{o.epochs}")
        for step in bar:
            batch = examples[step * o.batch_size : (step + 1) * o.batch_size]
            hist = pad_histories([train_seq[u][max(0, t - hist_len) : t] for u, t in batch], hist_len)
            targets = torch.tensor([int(train_seq[u][t]) for u, t in batch])
            negs = torch.randint(spec.FIRST_ID, n_items, (o.random_negatives,))
            cand = torch.cat([targets, negs])
            items = model.image_encoder.encode(*table.gather(cand))  # [B + R, D]
            user = model.sequence_encoder(hist)  # [B, D]
            b = len(batch)
            logits, x, z = model.fusion_head.logits(user, items.unsqueeze(0).expand(b, -1, -1))
            same = cand.unsqueeze(0) == targets.unsqueeze(1)  # a batch item equal to my target is not a negative
            same[torch.arange(b), torch.arange(b)] = False
            logits = logits.masked_fill(same, NEG)
            rank_loss = F.cross_entropy(logits, torch.arange(b))
            # Two-tower term: the `recommend` ensemble retrieves candidates by user . item before the fusion head
            # reranks them, so the embeddings must also rank well by dot product.
            retrieval_logits = (user @ items.T).masked_fill(same, NEG)
            retrieval_loss = F.cross_entropy(retrieval_logits, torch.arange(b))
            diag = torch.arange(b)
            recon = F.mse_loss(model.fusion_head.decoder(z[diag, diag]), x[diag, diag].detach())
            loss = rank_loss + retrieval_loss + cfg.model.fusion.reconstruction_weight * recon
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(float(loss.detach()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        item_emb = _encode_all(model, table)
        metrics = sampled_ranking_metrics(model, item_emb, val_hist, val, hist_len, o.val_negatives, o.seed)
        row = {
            "epoch": float(epoch + 1),
            "loss": float(np.mean(losses)) if losses else 0.0,
            "val_hr@10": metrics["hr@10"],
            "val_ndcg@10": metrics["ndcg@10"],
            "elapsed_s": time.time() - t0,
        }
        history.append(row)
        log.info(
            "epoch %d: loss %.4f val HR@10 %.4f NDCG@10 %.4f (%.0fs)",
            epoch + 1,
            row["loss"],
            row["val_hr@10"],
            row["val_ndcg@10"],
            row["elapsed_s"],
        )
        if on_epoch:
            on_epoch(row)
        if metrics["ndcg@10"] > best:
            best, best_epoch, bad_epochs = metrics["ndcg@10"], epoch + 1, 0
            save_model(model, run)
        else:
            bad_epochs += 1
        torch.save(
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
        )
        if bad_epochs >= o.patience:
            log.info("early stop: no validation gain for %d epochs", bad_epochs)
            break
        if o.max_minutes is not None and time.time() - t0 > 60 * o.max_minutes:
            log.info("wall-time budget of %.1f min reached", o.max_minutes)
            break

    if not (run / MODEL_FILE).exists():  # zero epochs run (e.g. epochs=0): still leave a servable model
        save_model(model, run)
    best_model, _ = load_model(run)
    item_emb = _encode_all(best_model, table)
    test_metrics = sampled_ranking_metrics(best_model, item_emb, test_hist, test, hist_len, o.val_negatives, o.seed + 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    wall = time.time() - t0
    summary = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_ndcg@10": best,
        "test_hr@10_sampled": test_metrics["hr@10"],
        "test_ndcg@10_sampled": test_metrics["ndcg@10"],
        "test_users": test_metrics["users"],
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1),
        "history": history,
    }
    (run / "metrics.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(
        run, len(history), best_epoch, {k: v for k, v in summary.items() if isinstance(v, float)}, wall, peak
    )


def _progress(it: range, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return it
    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def save_model(model: HybridModel, run_dir: Path) -> Path:
    path = Path(run_dir) / MODEL_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"model_config": to_dict(model.cfg), "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)  # never leave a half-written model behind
    return path


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
    model = HybridModel(from_dict(ModelConfig, ckpt["model_config"]), artifacts)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), artifacts
