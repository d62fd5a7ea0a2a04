"""Compare two settings' fits user by user, on validation and on test, with the resolution 610 users allow.

    .venv/bin/python tools/paired_runs.py --a runs/exp/preset/ranks-s*.npz --b runs/exp/variant/ranks-s*.npz

Each file is one fit's ranks from ``tools/score_run.py RUN --save-ranks FILE``. Fits of a setting are averaged per
user (seeds), then the two settings are paired over the same users. Printed per stage (and on test's cold slice): both
means, the mean difference, its standard error over users, a paired t-test and a Wilcoxon signed-rank p-value.

Why: every seed of a setting is scored on the same 610 validation (and test) targets, so agreement between seeds says
nothing about those targets' own sampling noise. The standard error printed here does: a validation difference
smaller than about twice it cannot be expected to carry over to test, however many seeds agree.

The fits' own noise comes on top of it: two sets of four seeds of the same settings differed by 0.0066 on validation
(docs/training.md, the A/A check). So where both settings have the same number of fits, given in seed order, each
stage's ``*_by_seed`` entry pairs the fits by position and tests their NDCG@10 over those pairs (a paired t-test with
as many degrees of freedom as seeds, less one), and ``seeds`` lists every fit's NDCG@10.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hybridrec.training.evaluation.metrics import paired_test, ranking_values


def _per_user(files: list[str], stage: str) -> tuple[np.ndarray, np.ndarray]:
    """(users, per-user NDCG@10 of each fit: [fits, users]) of one stage; every fit must score the same users."""
    users: np.ndarray | None = None
    rows = []
    for f in files:
        z = np.load(f)
        if users is None:
            users = z[f"{stage}_users"]
        elif not np.array_equal(users, z[f"{stage}_users"]):
            raise SystemExit(f"{f}: scores other {stage} users than {files[0]}")
        rows.append(ranking_values(z[f"{stage}_ranks"], 10)["ndcg@10"])
    assert users is not None
    return users, np.asarray(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="+", required=True, help="rank files of setting A (one per seed)")
    parser.add_argument("--b", nargs="+", required=True, help="rank files of setting B (one per seed)")
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    seeds: dict[str, list[float]] = {}
    cold = np.load(args.a[0])["cold_users"]
    for stage, only in (("valid", None), ("test", None), ("test_cold", cold)):
        base = stage.split("_")[0]
        users_a, fits_a = _per_user(args.a, base)
        users_b, fits_b = _per_user(args.b, base)
        if not np.array_equal(users_a, users_b):
            raise SystemExit(f"the two settings score different {base} users")
        if only is not None:
            keep = np.isin(users_a, only)
            fits_a, fits_b = fits_a[:, keep], fits_b[:, keep]
        a, b = fits_a.mean(axis=0), fits_b.mean(axis=0)
        if only is None:
            seed_a, seed_b = fits_a.mean(axis=1), fits_b.mean(axis=1)
            seeds[f"{stage}_a"], seeds[f"{stage}_b"] = seed_a.tolist(), seed_b.tolist()
            if len(seed_a) == len(seed_b) >= 2:
                st = paired_test(seed_b, seed_a)
                out[f"{stage}_by_seed"] = {
                    "pairs": len(seed_a),
                    "b_minus_a": st.mean_diff,
                    "se": float(np.std(seed_b - seed_a, ddof=1) / np.sqrt(len(seed_a))),
                    "t_p": st.t_pvalue,
                    "b_above": int((seed_b > seed_a).sum()),
                }
        t = paired_test(b, a)
        se = float(np.std(b - a, ddof=1) / np.sqrt(len(a)))  # paired_test has checked for >= 2 users
        out[stage] = {
            "users": len(a),
            "a": float(a.mean()),
            "b": float(b.mean()),
            "b_minus_a": t.mean_diff,
            "se": se,
            "t_p": t.t_pvalue,
            "wilcoxon_p": t.wilcoxon_pvalue,
        }
    report: dict[str, object] = {s: {k: round(v, 4) for k, v in m.items()} for s, m in out.items()}
    report["seeds"] = {k: [round(v, 4) for v in vs] for k, vs in seeds.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
