"""The evaluation's markdown table and PNG plots (metric bars per model; validation curves per epoch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hybridrec.training.evaluation.run import BASELINES, DETERMINISTIC, HYBRIDS, SeedResult, kept_epoch

BARS_PNG = "metrics.png"
CURVES_PNG = "training_curves.png"
P_LEVEL = 0.05


def _ms(pair: Sequence[float], digits: int = 4) -> str:
    mean, std = pair
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _order(models: Mapping[str, Any]) -> list[str]:
    return [m for m in (*BASELINES, *HYBRIDS) if m in models]


def plots(results: Mapping[str, list[SeedResult]], metrics: Mapping[str, Any], out: Path) -> list[Path]:
    """metrics.png (NDCG@10 and HR@10 with seed std, all users and the cold slice) and training_curves.png
    (validation NDCG@10 per epoch of every trained model and seed). Returns the files written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = metrics["models"]
    names = _order(models)
    written = []
    fig = Figure(figsize=(12, 4.5), tight_layout=True)
    for i, (key, title) in enumerate(
        (("ndcg@10", "NDCG@10"), ("hr@10", "HR@10"), ("cold_ndcg@10", "cold-item NDCG@10"))
    ):
        ax = fig.add_subplot(1, 3, i + 1)
        means = [models[n][key][0] for n in names]
        stds = [models[n][key][1] for n in names]
        colors = ["tab:gray" if n in BASELINES else "tab:blue" if n == "Hybrid" else "tab:cyan" for n in names]
        ax.barh(range(len(names)), means, xerr=stds, color=colors)
        ax.set_yticks(range(len(names)), names if i == 0 else [""] * len(names))
        ax.invert_yaxis()
        ax.set_title(f"{title} (full ranking, test)")
        ax.grid(axis="x", alpha=0.3)
    path = out / BARS_PNG
    FigureCanvasAgg(fig).print_png(str(path))
    written.append(path)

    fig = Figure(figsize=(7, 4.5), tight_layout=True)
    ax = fig.add_subplot(1, 1, 1)
    cmap = {n: f"C{i}" for i, n in enumerate(names)}
    for name in names:
        for j, r in enumerate(results.get(name, [])):
            hist = r.info.get("history") or []
            xs = [h["epoch"] for h in hist if "val_ndcg@10" in h]
            ys = [h["val_ndcg@10"] for h in hist if "val_ndcg@10" in h]
            if xs:
                ax.plot(xs, ys, color=cmap[name], alpha=0.8, label=name if j == 0 else None, marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10 (full ranking)")
    ax.set_title("training curves (every seed)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    path = out / CURVES_PNG
    FigureCanvasAgg(fig).print_png(str(path))
    written.append(path)
    return written


def _p(test: Mapping[str, float]) -> str:
    if "t_pvalue" not in test:
        return "n/a (too few users)"
    return (
        f"mean NDCG@10 difference {test['mean_diff']:+.4f} over {int(test['n'])} users, paired t-test p = "
        f"{test['t_pvalue']:.3g}, Wilcoxon signed-rank p = {test['wilcoxon_pvalue']:.3g}"
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# Issue 11's goals (ml-latest-small, the pipeline as served, mean of the seeds)
GOAL_NDCG, GOAL_HR, GOAL_COLD_HR = 0.065, 0.12, 0.05
ABLATIONS = ("Hybrid w/o CNN", "Hybrid w/o RNN", "Hybrid w/o AE")


def goals(metrics: Mapping[str, Any]) -> list[str]:
    """The issue's goals, each judged from the numbers (never hand-written)."""
    models, tests = metrics["models"], metrics.get("tests", {})
    lines = []
    if "Hybrid" not in models:
        return ["The hybrid was not evaluated."]
    hyb = models["Hybrid"]
    h, hr = hyb["ndcg@10"][0], hyb["hr@10"][0]
    others = [n for n in (*BASELINES, "CNN-only", "RNN-only", "AE-only") if n in models]
    beaten = [n for n in others if h > models[n]["ndcg@10"][0]]
    lines.append(
        f"- Hybrid NDCG@10 >= {GOAL_NDCG} and HR@10 >= {GOAL_HR} (mean of {len(hyb['seeds'])} seeds): "
        f"{_met(h >= GOAL_NDCG and hr >= GOAL_HR)} (NDCG@10 {h:.4f}, HR@10 {hr:.4f})."
    )
    best = tests.get("vs_best_baseline")
    if best:
        sig = best.get("t_pvalue", 1.0) < P_LEVEL and best.get("mean_diff", 0.0) > 0
        lines.append(
            f"- Hybrid above every baseline with p < {P_LEVEL}: {_met(len(beaten) == len(others) and sig)}"
            f" (above {len(beaten)} of {len(others)}; vs the best, {best['baseline']}: {_p(best)})."
        )
    hc = hyb["cold_hr@10"][0]
    cold = tests.get("cold_vs_best_collaborative")
    vs = ""
    if cold:
        vs = (
            f"; the best collaborative model there, {cold['baseline']}: {models[cold['baseline']]['cold_hr@10'][0]:.4f}"
        )
    lines.append(f"- Cold slice HR@10 >= {GOAL_COLD_HR}: {_met(hc >= GOAL_COLD_HR)} (hybrid {hc:.4f}{vs}).")
    pairs = []
    for seed, info in zip(hyb["seeds"], hyb["info"], strict=True):
        e = kept_epoch(info)
        if e and "val_dot_ndcg@10" in e:
            pairs.append((seed, e["val_ndcg@10"], e["val_dot_ndcg@10"]))
    if pairs:
        lines.append(
            "- Served validation NDCG@10 >= the retrieval's alone, every seed: "
            f"{_met(all(s >= r for _, s, r in pairs))} ("
            + "; ".join(f"seed {seed}: {s:.4f} vs {r:.4f}" for seed, s, r in pairs)
            + ")."
        )
    for name in (n for n in ABLATIONS if n in models):
        t = tests.get(f"hybrid_vs_{_slug(name)}", {})
        costs = t.get("mean_diff", h - models[name]["ndcg@10"][0]) > 0 and t.get("t_pvalue", 1.0) < P_LEVEL
        lines.append(
            f"- {name} costs NDCG@10 with p < {P_LEVEL}: "
            + ("**yes**" if costs else "**no, it does not**")
            + f" ({name} {models[name]['ndcg@10'][0]:.4f} vs hybrid {h:.4f}; {_p(t) if t else 'no test'})."
        )
    liked = metrics.get("liked", {}).get("models", {})
    if "Hybrid" in liked and "User+item bias" in liked:
        a, b = (
            liked["Hybrid"]["mean"].get("auc", float("nan")),
            liked["User+item bias"]["mean"].get("auc", float("nan")),
        )
        lines.append(
            f"- Liked task, hybrid AUC above the user+item bias baseline's: {_met(a > b)} ({a:.4f} vs {b:.4f})."
        )
        if "Rating statistics" in liked:
            c = liked["Rating statistics"]["mean"].get("auc", float("nan"))
            lines.append(
                "- Liked task, the deep part adds to its wide part (hybrid AUC above the rating statistics' alone): "
                f"{'**yes**' if a > c else '**no**'} ({a:.4f} vs {c:.4f})."
            )
    return lines


def _slug(name: str) -> str:
    from hybridrec.training.evaluation.run import slug

    return slug(name)


def _budgets(cfg: Mapping[str, Any]) -> str:
    hyb = cfg.get("hybrid", {})
    o, d = hyb.get("optim", {}), hyb.get("data", {})
    prefixes = (
        "every training prefix" if d.get("targets_per_user") is None else f"{d['targets_per_user']} prefixes per user"
    )
    softmax = "full softmax" if o.get("softmax_negatives") is None else f"{o['softmax_negatives']}-item sampled softmax"
    ema = f", its weights' moving average (decay {o['ema_decay']}) validated and kept" if o.get("ema_decay") else ""
    sas, gru = cfg.get("sasrec", {}), cfg.get("gru4rec", {})
    return (
        f"Budgets: every hybrid variant trains on {prefixes} per epoch ({softmax}, batch {o.get('batch_size')}, "
        f"lr {o.get('lr')}{ema}) until validation NDCG@10 has not improved for {o.get('patience')} epochs (at most "
        f"{o.get('epochs')} epochs or {o.get('max_minutes')} min), the best validation epoch kept; SASRec-CE and "
        f"GRU4Rec-CE train until validation NDCG@10 has not improved for {sas.get('patience')} / "
        f"{gru.get('patience')} epochs (at most {sas.get('epochs')} / {gru.get('epochs')} epochs or "
        f"{sas.get('max_seconds')} / {gru.get('max_seconds')} s), the best validation epoch kept. A fit that hit its "
        "time limit shows it in the training-runs table (epochs below the limit without early stopping)."
    )


def _slice_table(models: Mapping[str, Any], sizes: Mapping[str, int], key: str, title: str, intro: str) -> list[str]:
    """A section of NDCG@10 per group of test users (``sizes``: label -> users), from each model's ``key`` entry;
    nothing when no model has one."""
    if not sizes or not any(key in r for r in models.values()):
        return []
    lines = [
        "",
        f"### {title}",
        "",
        intro,
        "",
        "| model | " + " | ".join(f"{label} ({n} users)" for label, n in sizes.items()) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name in _order(models):
        by = models[name].get(key, {})
        lines.append(f"| {name} | " + " | ".join(_ms(by[k]) if k in by else "-" for k in sizes) + " |")
    return lines


def missing_fits(metrics: Mapping[str, Any]) -> list[str]:
    """The (model, seed) fits the config asks for that are not in the cache (a run stopped before the end)."""
    cfg, models = metrics.get("config", {}), metrics["models"]
    names = cfg.get("models") or [*BASELINES, *HYBRIDS]
    seeds = cfg.get("seeds", [])
    out = []
    for name in names:
        done = models.get(name, {}).get("seeds", [])
        if name in DETERMINISTIC:
            out += [] if name in models else [name]
        else:
            out += [f"{name} (seed {s})" for s in seeds if s not in done]
    return out


def markdown(metrics: Mapping[str, Any], figures: Sequence[Path], out: Path) -> str:
    models = metrics["models"]
    ds = metrics.get("dataset", {})
    cfg = metrics.get("config", {})
    seeds = cfg.get("seeds", [])
    missing = missing_fits(metrics)
    if cfg.get("liked_task") and "liked" not in metrics:
        missing.append('the "liked" task (section 2)')
    incomplete = (
        [
            f"**Incomplete:** {len(missing)} of the fits this config asks for are not in the cache yet, so their rows "
            "have fewer seeds (or are absent) and the goals below are judged on what is there: "
            + ", ".join(missing)
            + ". `make evaluate` fits exactly these and rebuilds the page.",
            "",
        ]
        if missing
        else []
    )
    lines = [
        "# Results",
        "",
        "Reproduce (`make evaluate`, which trains every missing model and seed on 2 CPU cores):",
        "",
        "```bash",
        "make install && .venv/bin/hybridrec evaluate --out runs/evaluate --cache docs/results/cache "
        "--docs docs/results.md",
        "```",
        "",
        f"Generated by `hybridrec evaluate`: the fits in the cache took {metrics.get('fit_s_total', 0) / 60:.0f} min "
        f"in all on this machine ({cfg.get('workers', 1)} at a time, one thread each); taken in the order "
        f"`evaluate` submits them, they fill {cfg.get('workers', 1)} workers for "
        f"{metrics.get('from_scratch_min', 0):.0f} min, the estimate of a from-scratch run (each fit's scoring of "
        "validation and test adds about 20 s on top). Each (model, seed) result is "
        f"cached in `{metrics.get('cache', out / 'ranks')}/` with a fingerprint of its config, so an interrupted run "
        "resumes, a changed config refits only what it changes, and `--report-only` rebuilds this page and its "
        "paired tests without fitting anything. "
        f"Dataset: `{ds.get('layout')}`, "
        f"{ds.get('users_evaluated')} test users, {ds.get('items')} catalog items. Seeds: {seeds} for every trained "
        "model; Popularity, item-kNN, EASE and content TF-IDF are deterministic (fitted once, std 0).",
        "",
        *incomplete,
        "## 1. Next-item prediction (main task)",
        "",
        "Chronological leave-one-out (last interaction = test, second-to-last = validation); every catalog item is a "
        "candidate with the user's earlier items masked, ties count against the target. Mean ± std over seeds. "
        f"Cold slice: the {ds.get('cold_users')} test users whose test item has <= {ds.get('cold_threshold')} "
        "training interactions. The hybrid scores as the served `recommend` ensemble does (top-100 dot-product "
        "retrieval reranked by the fusion head).",
        "",
        _budgets(cfg),
        "",
        "| model | seeds | NDCG@10 | HR@10 | MRR@10 | cold NDCG@10 | cold HR@10 | valid NDCG@10 | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in _order(models):
        r = models[name]
        n_seeds = "det." if r["deterministic"] else str(len(r["seeds"]))
        bold = "**" if name == "Hybrid" else ""
        lines.append(
            f"| {bold}{name}{bold} | {n_seeds} | {_ms(r['ndcg@10'])} | {_ms(r['hr@10'])} | {_ms(r['mrr@10'])} | "
            f"{_ms(r['cold_ndcg@10'])} | {_ms(r['cold_hr@10'])} | {_ms(r['valid_ndcg@10'])} | {r['fit_s'][0]:.0f} |"
        )
    tests = metrics.get("tests", {})
    if tests:
        lines += ["", "Paired tests (per-user NDCG@10, averaged over seeds):", ""]
        for key, t in tests.items():
            what = {
                "vs_best_baseline": "the best baseline",
                "cold_vs_best_collaborative": "cold slice, the best pure-collaborative baseline",
            }.get(key, "ablation")
            lines.append(f"- Hybrid vs {t['baseline']} ({what}): {_p(t)}")
    lines += _slice_table(
        models,
        ds.get("history_slices") or {},
        "by_history",
        "NDCG@10 by the length of the user's training history",
        "The test users in four groups of about equal size by their number of training interactions (mean ± std "
        "over seeds):",
    )
    lines += _slice_table(
        models,
        ds.get("same_second_slices") or {},
        "by_same_second",
        "NDCG@10 by when the test item was rated",
        "Ratings entered in one go share a timestamp, and the split orders them by movieId (MovieLens's order of "
        "adding movies). Where the test item has its validation item's second, it is the next movieId that the "
        "user rated in that batch. An order of ids is something item-id embeddings can learn and content "
        "features cannot (mean ± std over seeds):",
    )
    g = goals(metrics)
    if g:
        lines += ["", "### Goals", "", *g]
    trained = [n for n in _order(models) if n in HYBRIDS]
    if trained:
        lines += [
            "",
            "### Training runs",
            "",
            f"Wall times were taken on a shared 2-core machine, {cfg.get('workers', 1)} fit(s) at a time. Peak RSS "
            "is per run where marked `run`; `process` is the fitting process's peak up to the end of that run. "
            "Validation NDCG@10 at the kept epoch: the served pipeline, and the dot-product retrieval alone.",
            "",
            "| model | seed | epochs (best) | valid served | valid retrieval | blend w | wall s | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in trained:
            for seed, info in zip(models[name]["seeds"], models[name]["info"], strict=True):
                e = kept_epoch(info) or {}

                def num(k: str, e: Mapping[str, Any] = e) -> str:
                    return f"{e[k]:.4f}" if k in e else "-"

                lines.append(
                    f"| {name} | {seed} | {info.get('epochs')} ({info.get('best_epoch')}) | {num('val_ndcg@10')} | "
                    f"{num('val_dot_ndcg@10')} | {e.get('blend', '-')} | {info.get('wall_s')} | "
                    f"{info.get('peak_rss_mb')} ({info.get('peak_rss_scope', 'process')}) |"
                )
    liked = metrics.get("liked")
    if liked:
        lines += [
            "",
            '## 2. "Liked" classification (the paper\'s table)',
            "",
            "Temporal 70/15/15 split of all ratings, liked = rating >= 4; threshold chosen on validation (max F1). "
            "F1 is shown next to the all-positive classifier's F1: the class prior alone gives a high F1 here.",
            "",
        ]
        blends = [s.get("info", {}).get("blend") for s in liked.get("models", {}).get("Hybrid", {}).get("seeds", [])]
        if "Rating statistics" in liked.get("models", {}) and None not in blends:
            lines += [
                "`Rating statistics` is a logistic regression over the user's and the movie's train rating statistics "
                "(liked rate and mean rating shrunk towards the global values, log count). The hybrid here is wide & "
                "deep: its deep logit is trained as a residual on that logistic regression's, and validation AUC picks "
                f"the deep logit's weight w (score = wide + w * deep); per seed, w = {blends}.",
                "",
            ]
        split = liked.get("split", {})
        if split:
            lines += [f"Split: {', '.join(f'{k} {v}' for k, v in split.items())}.", ""]
        lines += [
            "| model | seeds | precision | recall | F1 | accuracy | AUC | all-positive F1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in liked.get("models", {}).items():
            mean, std = r["mean"], r.get("std", {})

            def cell(k: str, mean: Mapping[str, float] = mean, std: Mapping[str, float] = std) -> str:
                return f"{mean[k]:.4f} ± {std.get(k, 0.0):.4f}" if k in mean else "-"

            lines.append(
                f"| {name} | {len(r.get('seeds', [])) or 1} | {cell('precision')} | {cell('recall')} | {cell('f1')} | "
                f"{cell('accuracy')} | {cell('auc')} | {cell('all_positive_f1')} |"
            )
    if figures:
        lines += ["", "## Plots", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    lines += [
        "",
        "## Definitions",
        "",
        "- Ablations switch one branch off and retrain: w/o CNN = no poster/metadata encoder (items are id "
        "embeddings); w/o RNN = the history's item embeddings pooled without recurrence; w/o AE = F_ae = 0 and no "
        "reconstruction loss. CNN-only / RNN-only / AE-only = the hybrid with the other two branches off.",
        "- Baselines: see `training/evaluation/baselines/` (hyper-parameters chosen on validation).",
        "- The RecBole atomic files of this exact split: `hybridrec data export-split --format recbole --out DIR`.",
        "",
    ]
    return "\n".join(lines)
