"""How far the poster CNN moves in one epoch, and what that does to the ranking: training scores every item but the
few live posters of a step against the poster cache taken at the epoch's start (``optim.live_posters``).

    .venv/bin/python tools/poster_drift.py runs/exp/idres/runs/hybrid-s0 [--data DIR]

Reads the run's last two checkpoints (``checkpoint.prev.pt``, ``checkpoint.pt``: the raw weights after the last two
epochs; with ``optim.ema_decay`` they are not the averaged weights that ``model.pt`` keeps) and prints:

- the pooled poster features' drift over the last epoch (cosine, and the change's norm relative to the features'),
  and the fused item embeddings' cosine when only the poster features are stale;
- validation and test NDCG@10 of the last weights, on `hybridrec evaluate`'s protocol, with fresh poster features
  (what validation and serving compute), with the epoch-start features (what training scored most items with) and
  with no image token at all. Choose settings on the validation numbers only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json

import torch

from hybridrec.data import load_movielens, resolve_data_dir
from hybridrec.training.evaluation.hybrid import HybridScorer
from hybridrec.training.evaluation.metrics import evaluate_ranking
from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split
from hybridrec.training.train import load_run_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder of `hybridrec train` with checkpoint.pt and checkpoint.prev.pt")
    parser.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    args = parser.parse_args()
    data = load_movielens(resolve_data_dir(args.data))
    ix = leave_one_out_split(data).indexed(ItemIndex.from_data(data))
    scorer = HybridScorer(load_run_config(args.run), args.run, data).load()
    model = scorer.model
    start = copy.deepcopy(model)
    for m, name in ((model, "checkpoint.pt"), (start, "checkpoint.prev.pt")):
        m.load_state_dict(torch.load(f"{args.run}/{name}", map_location="cpu", weights_only=False)["model"])
        m.eval()
    enc = model.item_encoder
    if not enc.cfg.use_image:
        raise SystemExit(f"{args.run}: the run has no image branch")
    no_image = copy.deepcopy(enc)
    no_image.cfg = dataclasses.replace(enc.cfg, use_image=False)
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for item_id, poster, meta, people, overview in scorer.item_inputs():
            rest = (item_id, meta, people, overview)
            pooled = {"fresh": enc.poster_features(poster), "epoch_start": start.item_encoder.poster_features(poster)}
            for key, value in (
                *pooled.items(),
                ("fresh_items", enc.fuse(pooled["fresh"], *rest)),
                ("epoch_start_items", enc.fuse(pooled["epoch_start"], *rest)),
                ("no_image_items", no_image.fuse(None, *rest)),
            ):
                parts.setdefault(key, []).append(value)
    x = {k: torch.cat(v) for k, v in parts.items()}
    fresh, stale = x["fresh"], x["epoch_start"]
    cos = torch.nn.functional.cosine_similarity
    out: dict[str, float] = {
        "pooled_cosine": float(cos(fresh, stale, dim=1).mean()),
        "pooled_relative_change": float(((fresh - stale).norm(dim=1) / fresh.norm(dim=1).clamp(min=1e-12)).mean()),
        "item_embedding_cosine": float(cos(x["fresh_items"], x["epoch_start_items"], dim=1).mean()),
    }
    for name in ("fresh", "epoch_start", "no_image"):
        scorer.use_items(x[f"{name}_items"])
        for stage in ("valid", "test"):
            out[f"{name}_{stage}_ndcg@10"] = evaluate_ranking(scorer.score, *ix.stage(stage)).summary()["ndcg@10"]
    print(json.dumps({k: round(v, 4) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
