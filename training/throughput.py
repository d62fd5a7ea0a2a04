"""Training-throughput benchmark: examples (training prefixes) per second of the joint training step, for several
optimiser settings measured in one run on one machine, so that their ratios mean something on a noisy shared host.

    python -m hybridrec.training.throughput [--data DIR] [--steps 20] [--threads 2] [--out runs/throughput]

Each variant builds the model afresh (same seed), runs 3 warm-up steps and then times ``--steps`` steps of the real
``StepLoss`` + backward + Adam update on real training prefixes of ml-latest-small. The first variant is the previous
default (sampled softmax of 2,048 items, batch 128): every ratio is against it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridrec.data import load_movielens, resolve_data_dir
from hybridrec.dataclass_yaml import load_yaml
from hybridrec.preprocessing import fit_artifacts
from hybridrec.training.config import RunConfig
from hybridrec.training.evaluation.splits import leave_one_out_split
from hybridrec.training.features import ItemTable, poster_cache
from hybridrec.training.fit import make_optimizer
from hybridrec.training.modules import HybridModel
from hybridrec.training.objectives.next_item import StepLoss, epoch_examples
from hybridrec.training.train import set_seed

VARIANTS: dict[str, dict[str, Any]] = {
    "sampled 2048, batch 128 (before)": {"softmax_negatives": 2048, "batch_size": 128},
    "full softmax, batch 128": {"softmax_negatives": None, "batch_size": 128},
    "full softmax, batch 256": {"softmax_negatives": None, "batch_size": 256},
    "full softmax, batch 512": {"softmax_negatives": None, "batch_size": 512},
    "full softmax, batch 512, rerank 128 rows": {"softmax_negatives": None, "batch_size": 512, "rerank_rows": 128},
    "full softmax, batch 512, rerank 64 rows": {"softmax_negatives": None, "batch_size": 512, "rerank_rows": 64},
    "full softmax, batch 512, rerank 128 rows, future window 10": {
        "softmax_negatives": None,
        "batch_size": 512,
        "rerank_rows": 128,
        "future_window": 10,
    },
    "full softmax, batch 512, rerank 128 rows, seen masked": {
        "softmax_negatives": None,
        "batch_size": 512,
        "rerank_rows": 128,
        "mask_seen": True,
    },
    "full softmax, batch 512, rerank 128 rows, 2 self-attention blocks": {
        "softmax_negatives": None,
        "batch_size": 512,
        "rerank_rows": 128,
        "model.sequence.attention_blocks": 2,
    },
}


def with_changes(changes: dict[str, Any]) -> RunConfig:
    """The default run config with a variant's changes: a bare key names an optim field, a dotted one a path from the
    run config (``model.sequence.attention_blocks``), as ``--set`` takes it."""
    return load_yaml(RunConfig, None, {(k if "." in k else f"optim.{k}"): v for k, v in changes.items()})


def measure(cfg: RunConfig, data: Any, steps: int, warmup: int = 3) -> dict[str, float]:
    """Examples/s of ``steps`` optimiser steps (after ``warmup``) with ``cfg``."""
    set_seed(cfg.optim.seed)
    split = leave_one_out_split(data)
    artifacts = fit_artifacts(
        data, (m for s in split.train.values() for m in s.tolist()), history_length=cfg.data.history_length
    )
    to_index = np.vectorize(artifacts.item_index, otypes=[np.int64])
    train_seq = {u: to_index(s) if len(s) else s.astype(np.int64) for u, s in split.train.items()}
    table = ItemTable(data, artifacts)
    model = HybridModel(cfg.model, artifacts).train()
    opt = make_optimizer(model, cfg.optim)
    step_loss = StepLoss(model, table, train_seq, cfg)
    examples = epoch_examples(train_seq, sorted(train_seq), None, np.random.default_rng(0))
    t0 = time.perf_counter()
    cache = poster_cache(model, table)
    cache_s = time.perf_counter() - t0
    b = cfg.optim.batch_size
    times = []
    for step in range(warmup + steps):
        batch = examples[step * b : (step + 1) * b]
        t = time.perf_counter()
        loss = step_loss(batch, cache)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t)
    per_step = float(np.median(times))
    rate = b / per_step
    return {
        "examples_per_s": rate,
        "step_ms": 1000 * per_step,
        "epoch_all_prefixes_s": len(examples) / rate + cache_s,
        "prefixes": float(len(examples)),
        "poster_cache_s": cache_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hybridrec.training.throughput",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (the median step counts)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--out", default="runs/throughput", help="folder for results.json")
    p.add_argument("--only", help="comma-separated substrings: measure the variants whose name contains one")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_movielens(resolve_data_dir(args.data))
    results: dict[str, dict[str, float]] = {}
    wanted = [w.strip() for w in (args.only or "").split(",") if w.strip()]
    for name, changes in VARIANTS.items():
        if wanted and not any(w in name for w in wanted):
            continue
        cfg = with_changes(changes)
        results[name] = measure(cfg, data, args.steps)
        r = results[name]
        print(
            f"{name:34s} {r['examples_per_s']:7.0f} examples/s  step {r['step_ms']:6.0f} ms  "
            f"all-prefix epoch {r['epoch_all_prefixes_s'] / 60:5.1f} min",
            flush=True,
        )
    first = next(iter(results.values()))["examples_per_s"]
    for name, r in results.items():
        r["ratio_vs_before"] = r["examples_per_s"] / first
        print(f"{name:34s} x{r['ratio_vs_before']:.2f} vs before")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "steps": args.steps, "cpu_count": float(torch.get_num_threads())}
    (out / "results.json").write_text(json.dumps({"machine": meta, "variants": results}, indent=2))
    print(f"results in {out / 'results.json'}")
    return 0 if all(math.isfinite(r["examples_per_s"]) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
