"""Score one trained run on `hybridrec evaluate`'s protocol (every catalog movie ranked, every user counted, the
served `recommend` pipeline), so a single `hybridrec train` run compares with docs/results.md without a full
evaluation.

    .venv/bin/python tools/score_run.py runs/demo [--data DIR]

Prints validation and test NDCG@10 / HR@10, the cold slice's HR@10 (test targets with <= 5 training
interactions) and NDCG@10 where the target was rated in the same second as the history's last item, or later.
With ``--drop-last`` it also scores each stage with the history's last item left out of the model's input (still
masked as seen): what the last item adds, on validation (a training target of that user, unless the run had
``data.train_gap``) and on test (the validation item, never a target). Choose settings on the validation numbers only.
``--save-ranks FILE.npz`` keeps each user's target ranks for tools/paired_runs.py. ``--depth N`` reranks the
retrieval's top N instead of the served ``spec.RETRIEVAL_DEPTH`` (a diagnostic: the exported graphs bake in the served
depth).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hybridrec import spec
from hybridrec.data import load_movielens, resolve_data_dir
from hybridrec.training.evaluation.hybrid import HybridScorer
from hybridrec.training.evaluation.metrics import cold_item_users, evaluate_ranking
from hybridrec.training.evaluation.run import SAME_SECOND, same_second_slices
from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split
from hybridrec.training.train import load_run_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder of `hybridrec train`")
    parser.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    parser.add_argument("--cold-threshold", type=int, default=5)
    parser.add_argument("--drop-last", action="store_true", help="also score without the history's last item")
    parser.add_argument("--save-ranks", metavar="NPZ", help="save per-user valid/test ranks (tools/paired_runs.py)")
    parser.add_argument(
        "--depth",
        type=int,
        default=spec.RETRIEVAL_DEPTH,
        help=f"movies retrieved and reranked by the fusion head (served: {spec.RETRIEVAL_DEPTH})",
    )
    args = parser.parse_args()
    if args.depth < 1:
        parser.error("--depth must be >= 1")
    data = load_movielens(resolve_data_dir(args.data))
    split = leave_one_out_split(data)
    ix = split.indexed(ItemIndex.from_data(data))
    scorer = HybridScorer(load_run_config(args.run), args.run, data, depth=args.depth).load()
    valid_all = evaluate_ranking(scorer.score, *ix.stage("valid"))
    valid = valid_all.summary()
    test = evaluate_ranking(scorer.score, *ix.stage("test"))
    cold = cold_item_users(ix.train, ix.test, ix.num_items, args.cold_threshold)
    out: dict[str, object] = {
        "depth": args.depth,
        "valid_ndcg@10": valid["ndcg@10"],
        "valid_hr@10": valid["hr@10"],
        "test_ndcg@10": test.summary()["ndcg@10"],
        "test_hr@10": test.summary()["hr@10"],
        "cold_users": len(cold),
        "cold_hr@10": test.subset(cold).summary()["hr@10"],
    }
    # where the target shares its second with the history's last item (docs/results.md, "by when the test item was
    # rated"), on both stages
    for stage, result in (("valid", valid_all), ("test", test)):
        for label, users in same_second_slices(split, result.users.tolist(), stage).items():
            key = "same_second" if label == SAME_SECOND else "later"
            out[f"{stage}_{key}_users"] = len(users)
            out[f"{stage}_{key}_ndcg@10"] = result.subset(users).summary()["ndcg@10"]
    if args.save_ranks:
        np.savez(
            args.save_ranks,
            valid_users=valid_all.users,
            valid_ranks=valid_all.ranks,
            test_users=test.users,
            test_ranks=test.ranks,
            cold_users=cold,
        )
    if args.drop_last:
        for stage in ("valid", "test"):
            users, hist, targets = ix.stage(stage)
            short = {u: h[:-1] for u, h in hist.items()}
            out[f"{stage}_ndcg@10_without_last"] = evaluate_ranking(
                scorer.score, users, short, targets, seen=hist
            ).summary()["ndcg@10"]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
