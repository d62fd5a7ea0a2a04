"""`hybridrec evaluate`: every model, ablation and seed on one split, written as metrics.json, a markdown table and
PNG plots.

Models (next-item task, full ranking, seen items masked; see :mod:`.splits` and :mod:`.metrics`):

* baselines: Popularity, item-kNN, EASE, content-based TF-IDF (deterministic: fitted once), SASRec-CE and
  GRU4Rec-CE (per seed);
* the hybrid and its variants, each trained from scratch per seed with the same budget
  (:func:`variant_config`): ablations ``w/o CNN`` (no image/metadata branch: items are id embeddings),
  ``w/o RNN`` (history pooled without recurrence) and ``w/o AE`` (F_ae = 0, no reconstruction); and the single-branch
  models, each the hybrid with the two other branches removed: ``CNN-only``, ``RNN-only``, ``AE-only``.

Every (model, seed) result is cached in ``OUT/ranks/`` as per-user ranks, so an interrupted evaluation resumes where
it stopped and the table can be rebuilt without refitting. Hyper-parameters are chosen on validation only; the test
split is read once per fitted model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.data import MovieLensData
from hybridrec.dataclass_yaml import save_yaml, to_dict
from hybridrec.training.config import RunConfig
from hybridrec.training.evaluation.baselines import (
    EASE,
    ContentTFIDF,
    GRU4Rec,
    GRU4RecConfig,
    ItemKNN,
    Popularity,
    SASRec,
    SASRecConfig,
)
from hybridrec.training.evaluation.metrics import RankingResult, cold_item_users, evaluate_ranking, paired_test
from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split

log = logging.getLogger(__name__)

BASELINES = ("Popularity", "Item-kNN", "EASE", "Content TF-IDF", "SASRec-CE", "GRU4Rec-CE")
DETERMINISTIC = ("Popularity", "Item-kNN", "EASE", "Content TF-IDF")
HYBRIDS = ("Hybrid", "Hybrid w/o CNN", "Hybrid w/o RNN", "Hybrid w/o AE", "CNN-only", "RNN-only", "AE-only")
SINGLE_BRANCH = ("CNN-only", "RNN-only", "AE-only")
# Scorers that use no item content: the cold-item goal compares the hybrid with the best of these.
PURE_COLLABORATIVE = ("Popularity", "Item-kNN", "EASE", "SASRec-CE", "GRU4Rec-CE", "RNN-only", "AE-only")
METRICS = ("ndcg@10", "hr@10", "mrr@10")


@dataclass(frozen=True)
class EvaluateConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ()  # empty: every baseline and hybrid variant, in the table's order
    max_users: int | None = None  # evaluate on the first N users only (CI); None: all
    cold_threshold: int = 5  # cold-item slice: test items with <= this many training interactions
    hybrid: RunConfig = field(default_factory=RunConfig)  # training config of every hybrid variant
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    gru4rec: GRU4RecConfig = field(default_factory=GRU4RecConfig)
    liked_task: bool = True  # also the temporal 70/15/15 "liked" classification table


def variant_config(name: str, base: RunConfig) -> RunConfig:
    """The hybrid's training config with the branches of ``name`` switched off."""
    m = base.model
    no_cnn = replace(m.item, use_image=False, use_metadata=False)
    no_cnn_seq = replace(m.sequence, use_content=False)  # without the item encoder there is no content to feed
    no_rnn = replace(m.sequence, use_rnn=False)
    no_ae = replace(m.fusion, use_autoencoder=False)
    changes: dict[str, dict[str, Any]] = {
        "Hybrid": {},
        "Hybrid w/o CNN": {"item": no_cnn, "sequence": no_cnn_seq},
        "Hybrid w/o RNN": {"sequence": no_rnn},
        "Hybrid w/o AE": {"fusion": no_ae},
        "CNN-only": {"sequence": no_rnn, "fusion": no_ae},
        "RNN-only": {"item": no_cnn, "sequence": no_cnn_seq, "fusion": no_ae},
        "AE-only": {"item": no_cnn, "sequence": replace(no_rnn, use_content=False)},
    }
    if name not in changes:
        raise ValueError(f"unknown hybrid variant {name!r}; known: {list(changes)}")
    return replace(base, model=replace(m, **changes[name]))


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass
class SeedResult:
    seed: int | None
    test: RankingResult
    valid_ndcg: float
    fit_s: float
    info: dict[str, Any]


def _save(path: Path, r: SeedResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    meta = json.dumps({"seed": r.seed, "valid_ndcg": r.valid_ndcg, "fit_s": r.fit_s, "info": r.info})
    np.savez(tmp, users=r.test.users, ranks=r.test.ranks, meta=np.array(meta))
    tmp.replace(path)  # a half-written cache never counts as done


def _load(path: Path) -> SeedResult:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    return SeedResult(
        meta["seed"], RankingResult(z["users"], z["ranks"]), meta["valid_ndcg"], meta["fit_s"], meta["info"]
    )


def evaluate(
    data: MovieLensData,
    cfg: EvaluateConfig,
    out: str | Path,
    *,
    docs: str | Path | None = None,
    report_only: bool = False,
) -> dict:
    """Run (or resume) the whole evaluation into ``out``; returns the metrics dict also written to metrics.json.
    ``report_only``: fit nothing, build the table from the (model, seed) results already cached in ``out``."""
    names = list(cfg.models) or [*BASELINES, *HYBRIDS]
    unknown = sorted(set(names) - set(BASELINES) - set(HYBRIDS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {[*BASELINES, *HYBRIDS]}")
    if not cfg.seeds:
        raise ValueError("seeds must name at least one seed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "evaluate.yaml")
    if cfg.max_users:
        data = data.subset(cfg.max_users)
    t0 = time.time()
    split = leave_one_out_split(data)
    items = ItemIndex.from_data(data)
    ix = split.indexed(items)
    n = ix.num_items
    valid_users, valid_hist, valid_tgt = ix.stage("valid")
    test_users, test_hist, test_tgt = ix.stage("test")
    cold = cold_item_users(ix.train, ix.test, n, cfg.cold_threshold)
    movies = items.movies(data)

    def make(name: str, seed: int) -> tuple[Any, Callable[[], dict[str, Any]]]:
        if name == "Popularity":
            return Popularity(), dict
        if name == "Item-kNN":
            s = ItemKNN()
            return s, lambda: {"k": s.k}
        if name == "EASE":
            e = EASE()
            return e, lambda: {"lambda": e.lam}
        if name == "Content TF-IDF":
            return ContentTFIDF(), dict
        if name == "SASRec-CE":
            sr = SASRec(replace(cfg.sasrec, seed=seed))
            return sr, lambda: {"epochs": sr.epochs_run, "best_epoch": sr.best_epoch, "history": sr.history}
        if name == "GRU4Rec-CE":
            gr = GRU4Rec(replace(cfg.gru4rec, seed=seed))
            return gr, lambda: {"epochs": gr.epochs_run, "best_epoch": gr.best_epoch, "history": gr.history}
        from hybridrec.training.evaluation.hybrid import HybridScorer

        run_cfg = variant_config(name, cfg.hybrid)
        run_cfg = replace(run_cfg, optim=replace(run_cfg.optim, seed=seed), data=replace(run_cfg.data, max_users=None))
        hs = HybridScorer(run_cfg, out / "runs" / f"{slug(name)}-s{seed}", data, name)

        def info() -> dict[str, Any]:
            r = hs.result
            metrics = json.loads((hs.run_dir / "metrics.json").read_text())
            return {
                "epochs": metrics["epochs_run"],
                "best_epoch": metrics["best_epoch"],
                "wall_s": metrics["wall_s"],
                "peak_rss_mb": metrics["peak_rss_mb"],
                "peak_rss_scope": metrics.get("peak_rss_scope", "process"),
                "history": metrics["history"],
                "run_dir": str(r.run_dir if r else hs.run_dir),
            }

        return hs, info

    results: dict[str, list[SeedResult]] = {}
    # Seed-major: every model gets its first seed before any model gets a second, so a run cut short still has a
    # complete table (with fewer seeds) and resumes from there.
    plan = [(name, seed) for seed in cfg.seeds for name in names if seed == cfg.seeds[0] or name not in DETERMINISTIC]
    for name, seed in plan:
        cache = out / "ranks" / f"{slug(name)}-s{seed}.npz"
        if cache.exists():
            results.setdefault(name, []).append(_load(cache))
            continue
        if report_only:
            continue
        log.info("fitting %s (seed %d)", name, seed)
        scorer, info = make(name, seed)
        t = time.time()
        scorer.fit(ix.train, n, valid=ix.valid, movies=movies)
        fit_s = time.time() - t
        valid = evaluate_ranking(scorer.score, valid_users, valid_hist, valid_tgt).summary()["ndcg@10"]
        test = evaluate_ranking(scorer.score, test_users, test_hist, test_tgt)
        r = SeedResult(None if name in DETERMINISTIC else seed, test, valid, fit_s, info())
        _save(cache, r)
        results.setdefault(name, []).append(r)
        log.info("%s seed %d: valid NDCG@10 %.4f test %s (%.0fs)", name, seed, valid, test.summary(), fit_s)

    metrics = summarize(results, cold, cfg)
    metrics["dataset"] = {
        "layout": data.layout,
        "users_evaluated": len(test_users),
        "items": n,
        "cold_users": len(cold),
        "cold_threshold": cfg.cold_threshold,
    }
    if cfg.liked_task and not (report_only and not (out / "liked.json").exists()):
        from hybridrec.training.evaluation.classification import liked_task

        liked_path = out / "liked.json"
        if liked_path.exists():
            metrics["liked"] = json.loads(liked_path.read_text())
        else:
            metrics["liked"] = liked_task(data, cfg.hybrid, cfg.seeds)
            liked_path.write_text(json.dumps(metrics["liked"], indent=2))
    metrics["config"] = to_dict(cfg)
    metrics["wall_s"] = round(time.time() - t0, 1)
    # fitting time of every cached (model, seed) result, i.e. the cost of reproducing the table from scratch
    liked_s = sum(r.get("wall_s", 0.0) for m in metrics.get("liked", {}).get("models", {}).values() for r in m["seeds"])
    metrics["fit_s_total"] = round(sum(r.fit_s for runs in results.values() for r in runs) + liked_s, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from hybridrec.training.evaluation.report import markdown, plots

    figures = plots(results, metrics, out)
    md = markdown(metrics, figures, out)
    (out / "results.md").write_text(md)
    if docs is not None:
        docs = Path(docs)
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(md)
        for f in figures:  # the table's plots sit beside the docs page
            (docs.parent / f.name).write_bytes(f.read_bytes())
    return metrics


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def per_user(results: Sequence[SeedResult], metric: str = "ndcg@10") -> tuple[np.ndarray, np.ndarray]:
    """(users, the metric per user averaged over seeds)."""
    users = results[0].test.users
    for r in results[1:]:
        if not np.array_equal(r.test.users, users):
            raise ValueError("seeds were evaluated on different users")
    return users, np.mean([r.test.values()[metric] for r in results], axis=0)


def summarize(results: dict[str, list[SeedResult]], cold: np.ndarray, cfg: EvaluateConfig) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, runs in results.items():
        row: dict[str, Any] = {"seeds": [r.seed for r in runs], "deterministic": name in DETERMINISTIC}
        for metric in METRICS:
            row[metric] = _mean_std([r.test.summary()[metric] for r in runs])
            row[f"cold_{metric}"] = _mean_std([r.test.subset(cold).summary()[metric] for r in runs])
        row["valid_ndcg@10"] = _mean_std([r.valid_ndcg for r in runs])
        row["fit_s"] = _mean_std([r.fit_s for r in runs])
        row["info"] = [{k: v for k, v in r.info.items() if k != "history"} for r in runs]
        models[name] = row
    out: dict[str, Any] = {"models": models, "tests": {}}
    if "Hybrid" not in results:
        return out
    _, hybrid = per_user(results["Hybrid"])
    baselines = [b for b in (*BASELINES, *SINGLE_BRANCH) if b in results]
    if baselines:
        best = max(baselines, key=lambda b: models[b]["ndcg@10"][0])
        out["tests"]["vs_best_baseline"] = {"baseline": best, **_test(hybrid, per_user(results[best])[1])}
    collaborative = [b for b in PURE_COLLABORATIVE if b in results]
    if collaborative and len(cold) >= 2:
        best_cf = max(collaborative, key=lambda b: models[b]["cold_ndcg@10"][0])
        users, h = per_user(results["Hybrid"])
        keep = np.isin(users, cold)
        out["tests"]["cold_vs_best_collaborative"] = {
            "baseline": best_cf,
            **_test(h[keep], per_user(results[best_cf])[1][keep]),
        }
    for name in ("Hybrid w/o CNN", "Hybrid w/o RNN", "Hybrid w/o AE"):
        if name in results:
            out["tests"][f"hybrid_vs_{slug(name)}"] = {"baseline": name, **_test(hybrid, per_user(results[name])[1])}
    return out


def _test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    if len(a) < 2:
        return {"n": float(len(a))}
    t = paired_test(a, b)
    return {k: float(v) for k, v in dataclasses.asdict(t).items()}
