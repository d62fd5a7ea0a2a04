"""`hybridrec evaluate`: every model, ablation and seed on one split, written as metrics.json, a markdown table and
PNG plots.

Models (next-item task, full ranking, seen items masked; see :mod:`.splits` and :mod:`.metrics`):

* baselines: Popularity, item-kNN, EASE, content-based TF-IDF (deterministic: fitted once), SASRec-CE and
  GRU4Rec-CE (per seed);
* the hybrid and its variants, each trained from scratch per seed with the same budget
  (:func:`variant_config`): ablations ``w/o CNN`` (no image/metadata branch: items are id embeddings),
  ``w/o RNN`` (history pooled without recurrence) and ``w/o AE`` (F_ae = 0, no reconstruction); and the single-branch
  models, each the hybrid with the two other branches removed: ``CNN-only``, ``RNN-only``, ``AE-only``.

Every (model, seed) result is cached (in ``OUT/ranks/``, or ``--cache DIR``) as per-user test ranks with a fingerprint
of what produced it (the model's config, seed and data), so an interrupted evaluation resumes where it stopped, a
changed config refits only what it changes, and the table can be rebuilt without refitting. A code change that changes
what a model computes without changing its config must delete that model's cache files.

With ``workers > 1`` the fits run in that many processes at one torch/BLAS thread each: on 2 cores two single-threaded
fits finish sooner than one after the other at two threads each (small models scale poorly across threads).
Hyper-parameters are chosen on validation only; the test split is read once per fitted model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.data import MovieLensData
from hybridrec.dataclass_yaml import fingerprint_dict, save_yaml, to_dict
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
from hybridrec.training.evaluation.splits import VALID, ItemIndex, LeaveOneOutSplit, Stage, leave_one_out_split

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
    # the liked task's hybrid is wide & deep: its deep logit is a residual on a logistic regression over the user's
    # and the movie's train rating statistics (the "Rating statistics" row); False: the deep model alone
    liked_rating_stats: bool = True
    liked_max_minutes: float | None = None  # the liked task's wall-time guard per seed (None: the hybrid's own)
    workers: int = 1  # (model, seed) fits in parallel processes, one thread each (1: in this process)


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


def _save(path: Path, r: SeedResult, fingerprint: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    meta = json.dumps(
        {"seed": r.seed, "valid_ndcg": r.valid_ndcg, "fit_s": r.fit_s, "info": r.info, "fingerprint": fingerprint}
    )
    np.savez(tmp, users=r.test.users, ranks=r.test.ranks, meta=np.array(meta))
    tmp.replace(path)  # a half-written cache never counts as done


def _load(path: Path) -> SeedResult:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    return SeedResult(
        meta["seed"], RankingResult(z["users"], z["ranks"]), meta["valid_ndcg"], meta["fit_s"], meta["info"]
    )


def _cached_fingerprint(path: Path) -> str | None:
    try:
        with np.load(path) as z:
            return str(json.loads(str(z["meta"])).get("fingerprint", ""))
    except Exception:  # unreadable: refit
        return None


def fingerprint(name: str, seed: int, cfg: EvaluateConfig, data: MovieLensData) -> str:
    """What a (model, seed) result depends on: the model's own config (the hybrid variant's full run config, with
    its seed; not its thread count), the evaluated users and the data's size. A cache whose fingerprint differs is
    refitted."""
    own: Any = {}
    if name == "SASRec-CE":
        own = fingerprint_dict(replace(cfg.sasrec, threads=None))
    elif name == "GRU4Rec-CE":
        own = fingerprint_dict(replace(cfg.gru4rec, threads=None))
    elif name in HYBRIDS:
        run_cfg = _hybrid_run_config(name, seed, cfg)
        own = fingerprint_dict(replace(run_cfg, optim=replace(run_cfg.optim, threads=None)))
    payload = {
        "model": name,
        "seed": None if name in DETERMINISTIC else seed,
        "config": own,
        "max_users": cfg.max_users,
        "data": [data.layout, len(data.movies), len(data.ratings.user_ids)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hybrid_run_config(name: str, seed: int, cfg: EvaluateConfig) -> RunConfig:
    run_cfg = variant_config(name, cfg.hybrid)
    optim = replace(run_cfg.optim, seed=seed, threads=1 if cfg.workers > 1 else run_cfg.optim.threads)
    return replace(run_cfg, optim=optim, data=replace(run_cfg.data, max_users=None))


@dataclass
class _Context:
    """The split and its indexed stages, built once per process."""

    data: MovieLensData
    cfg: EvaluateConfig
    out: Path
    cache: Path  # the (model, seed) results and liked.json

    def __post_init__(self) -> None:
        split = leave_one_out_split(self.data)
        self.split = split
        items = ItemIndex.from_data(self.data)
        self.ix = split.indexed(items)
        self.valid = self.ix.stage("valid")
        self.test = self.ix.stage("test")
        self.movies = items.movies(self.data)


_WORKER: _Context | None = None


def exit_with_parent(parent: int, period_s: float = 1.0) -> None:
    """End this worker process once `parent` (the evaluation that started it) is gone. A SIGTERM or SIGKILL ends the
    parent without its pool's shutdown, and a worker left alone would finish its fit and write the cache beside the
    run that resumes the evaluation."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(data: MovieLensData, cfg: EvaluateConfig, out: Path, cache: Path, level: int, parent: int) -> None:
    global _WORKER
    import torch

    exit_with_parent(parent)
    torch.set_num_threads(1)
    logging.basicConfig(level=level, format=f"%(asctime)s [worker {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    _WORKER = _Context(data, cfg, out, cache)


def _fit_in_worker(name: str, seed: int, fp: str) -> str:
    assert _WORKER is not None, "worker not initialised"
    fit_and_cache(_WORKER, name, seed, fp)
    return name


def fit_and_cache(ctx: _Context, name: str, seed: int, fp: str) -> SeedResult:
    """Fit one (model, seed), score validation and test, cache the test ranks in ``ctx.cache``."""
    log.info("fitting %s (seed %d)", name, seed)
    scorer, info = _make(ctx, name, seed)
    t = time.time()
    scorer.fit(ctx.ix.train, ctx.ix.num_items, valid=ctx.ix.valid, movies=ctx.movies)
    fit_s = time.time() - t
    valid_ranks = evaluate_ranking(scorer.score, *ctx.valid)
    valid = valid_ranks.summary()["ndcg@10"]
    test = evaluate_ranking(scorer.score, *ctx.test)
    # the cold slice on validation too, so that cold-item levers are chosen without reading test
    cold = cold_item_users(ctx.ix.train, ctx.ix.valid, ctx.ix.num_items, ctx.cfg.cold_threshold)
    extra: dict[str, float] = {"valid_cold_users": len(cold)}
    if len(cold):
        extra["valid_cold_hr@10"] = valid_ranks.subset(cold).summary()["hr@10"]
    r = SeedResult(None if name in DETERMINISTIC else seed, test, valid, fit_s, {**info(), **extra})
    _save(_cache_path(ctx.cache, name, seed), r, fp)
    log.info("%s seed %d: valid NDCG@10 %.4f test %s (%.0fs)", name, seed, valid, test.summary(), fit_s)
    return r


def _cache_path(cache: Path, name: str, seed: int) -> Path:
    return cache / f"{slug(name)}-s{seed}.npz"


def _make(ctx: _Context, name: str, seed: int) -> tuple[Any, Callable[[], dict[str, Any]]]:
    cfg = ctx.cfg
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

    hs = HybridScorer(_hybrid_run_config(name, seed, cfg), ctx.out / "runs" / f"{slug(name)}-s{seed}", ctx.data, name)

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


def _liked_config(cfg: EvaluateConfig) -> RunConfig:
    run_cfg = cfg.hybrid
    optim = run_cfg.optim
    if cfg.liked_max_minutes is not None:
        optim = replace(optim, max_minutes=cfg.liked_max_minutes)
    if cfg.workers > 1:
        optim = replace(optim, threads=1)
    return replace(run_cfg, optim=optim)


def _liked_fingerprint(cfg: EvaluateConfig, data: MovieLensData) -> str:
    run_cfg = _liked_config(cfg)
    payload = {
        "config": fingerprint_dict(replace(run_cfg, optim=replace(run_cfg.optim, threads=None))),
        "seeds": list(cfg.seeds),
        **({"rating_stats": True} if cfg.liked_rating_stats else {}),
        "max_users": cfg.max_users,
        "data": [data.layout, len(data.movies), len(data.ratings.user_ids)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _liked(data: MovieLensData, cfg: EvaluateConfig) -> dict[str, Any]:
    from hybridrec.training.evaluation.classification import liked_task

    return liked_task(data, _liked_config(cfg), cfg.seeds, rating_stats=cfg.liked_rating_stats)


def _liked_in_worker() -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return _liked(_WORKER.data, _WORKER.cfg)


class _OneThreadEnv:
    """BLAS/OpenMP thread counts of 1 in the environment the worker processes start with (read at their import)."""

    KEYS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.KEYS}
        os.environ.update(dict.fromkeys(self.KEYS, "1"))

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def evaluate(
    data: MovieLensData,
    cfg: EvaluateConfig,
    out: str | Path,
    *,
    docs: str | Path | None = None,
    report_only: bool = False,
    cache: str | Path | None = None,
) -> dict:
    """Run (or resume) the whole evaluation into ``out``; returns the metrics dict also written to metrics.json.
    ``cache``: where the (model, seed) results and the liked task's result are kept, with their fingerprints (default
    ``out/ranks``; `make evaluate` keeps them beside docs/results.md, so that the committed table can be rebuilt and
    its paired tests checked without refitting). ``report_only``: fit nothing, build the table from the cache."""
    names = list(cfg.models) or [*BASELINES, *HYBRIDS]
    unknown = sorted(set(names) - set(BASELINES) - set(HYBRIDS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {[*BASELINES, *HYBRIDS]}")
    if not cfg.seeds:
        raise ValueError("seeds must name at least one seed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else out / "ranks"
    cache.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "evaluate.yaml")
    if cfg.max_users:
        data = data.subset(cfg.max_users)
    t0 = time.time()
    ctx = _Context(data, cfg, out, cache)
    test_users = ctx.test[0]
    cold = cold_item_users(ctx.ix.train, ctx.ix.test, ctx.ix.num_items, cfg.cold_threshold)

    # Seed-major: every model gets its first seed before any model gets a second, so a run cut short still has a
    # complete table (with fewer seeds) and resumes from there.
    plan = [(name, seed) for seed in cfg.seeds for name in names if seed == cfg.seeds[0] or name not in DETERMINISTIC]
    prints = {(name, seed): fingerprint(name, seed, cfg, data) for name, seed in plan}
    todo = []
    for name, seed in plan:
        path = _cache_path(cache, name, seed)
        if path.exists():
            found = _cached_fingerprint(path)
            if found == prints[name, seed] or report_only:
                continue
            log.warning("%s was fitted with another config or data (fingerprint %s); refitting", path, found)
        if not report_only:
            todo.append((name, seed))
    liked_path, liked_fp = cache / "liked.json", _liked_fingerprint(cfg, data)
    liked: dict[str, Any] | None = None
    if cfg.liked_task and liked_path.exists():
        liked = json.loads(liked_path.read_text())
        if liked.get("fingerprint") != liked_fp and not report_only:
            log.warning("%s was computed with another config or data; recomputing", liked_path)
            liked = None
    redo_liked = cfg.liked_task and liked is None and not report_only

    def save_liked(result: dict[str, Any]) -> dict[str, Any]:
        result = {**result, "fingerprint": liked_fp}
        liked_path.write_text(json.dumps(result, indent=2))
        return result

    if (todo or redo_liked) and cfg.workers > 1:
        log.info(
            "fitting %d (model, seed) pairs%s in %d processes",
            len(todo),
            " and the liked task" if redo_liked else "",
            cfg.workers,
        )
        with (
            _OneThreadEnv(),
            ProcessPoolExecutor(
                max_workers=min(cfg.workers, len(todo) + redo_liked),
                mp_context=multiprocessing.get_context("spawn"),  # torch and forked threads do not mix
                initializer=_init_worker,
                initargs=(data, cfg, out, cache, logging.getLogger().getEffectiveLevel() or logging.INFO, os.getpid()),
            ) as pool,
        ):
            jobs = [pool.submit(_fit_in_worker, name, seed, prints[name, seed]) for name, seed in todo]
            # The liked task goes last: submitted first, its single ~14-min job left the two workers unevenly loaded
            # at the end (about 5 min more wall time on the cached fit times, see `schedule_minutes`).
            liked_job = pool.submit(_liked_in_worker) if redo_liked else None
            # as each job ends: the liked task's result is written the moment it is there (an evaluation stopped
            # later keeps it, as the fits keep their caches); a failed fit raises here, the finished ones stay cached
            pending: list[Future[Any]] = [*jobs, *([liked_job] if liked_job is not None else [])]
            for job in as_completed(pending):
                if job is liked_job:
                    liked = save_liked(job.result())
                else:
                    job.result()
    else:
        for name, seed in todo:
            fit_and_cache(ctx, name, seed, prints[name, seed])
        if redo_liked:
            liked = save_liked(_liked(data, cfg))
    results: dict[str, list[SeedResult]] = {}
    for name, seed in plan:
        path = _cache_path(cache, name, seed)
        if path.exists():
            results.setdefault(name, []).append(_load(path))

    slices = history_slices(ctx.ix.train, test_users)
    same = same_second_slices(ctx.split, test_users)
    metrics = summarize(results, cold, cfg, slices, same)
    metrics["dataset"] = {
        "layout": data.layout,
        "users_evaluated": len(test_users),
        "items": ctx.ix.num_items,
        "cold_users": len(cold),
        "cold_threshold": cfg.cold_threshold,
        "history_slices": {label: len(users) for label, users in slices.items()},
        "same_second_slices": {label: len(users) for label, users in same.items()},
    }
    if liked is not None:
        metrics["liked"] = liked
    metrics["config"] = to_dict(cfg)
    metrics["cache"] = str(cache)
    metrics["wall_s"] = round(time.time() - t0, 1)
    # fitting time of every cached (model, seed) result, i.e. the cost of reproducing the table from scratch
    liked_s = sum(r.get("wall_s", 0.0) for m in metrics.get("liked", {}).get("models", {}).values() for r in m["seeds"])
    metrics["fit_s_total"] = round(sum(r.fit_s for runs in results.values() for r in runs) + liked_s, 1)
    # what a from-scratch run costs: these fit times, in the order evaluate submits them, on `workers` processes
    fit_s = {
        (name, r.seed if r.seed is not None else cfg.seeds[0]): r.fit_s for name, runs in results.items() for r in runs
    }
    durations = [fit_s[p] for p in plan if p in fit_s] + ([liked_s] if liked_s else [])
    metrics["from_scratch_min"] = round(schedule_minutes(durations, max(1, cfg.workers)), 1)
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


def schedule_minutes(durations: Sequence[float], workers: int) -> float:
    """Wall minutes for jobs of these durations (s), taken in order by the first free of `workers` processes, as
    the evaluation's process pool takes them (per-fit overhead outside the fit time is not counted)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free) / 60.0


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


def history_slices(train: Mapping[int, np.ndarray], users: Sequence[int], parts: int = 4) -> dict[str, np.ndarray]:
    """The test users split by the length of their training history into ``parts`` quantile groups, labelled with
    their length range ("18-33"): where in the history-length range each model wins or loses."""
    ids = np.asarray(users, dtype=np.int64)
    if not len(ids):
        return {}
    lengths = np.array([len(train[int(u)]) if int(u) in train else 0 for u in ids])
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, parts + 1)).round().astype(np.int64))
    if len(edges) == 1:  # every user has the same length
        return {str(edges[0]): ids}
    out: dict[str, np.ndarray] = {}
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        keep = (lengths >= lo) & ((lengths <= hi) if last else (lengths < hi))
        if keep.any():
            top = hi if last else hi - 1
            out[f"{lo}-{top}" if top > lo else f"{lo}"] = ids[keep]
    return out


SAME_SECOND, LATER = "same second as the last history item", "later"


def same_second_slices(split: LeaveOneOutSplit, users: Sequence[int], stage: Stage = "test") -> dict[str, np.ndarray]:
    """The users split by whether the stage's target was rated in the same second as the history's last item (test:
    the validation item; valid: the last training item).

    Ratings entered in one go share a second, and the split orders them by movieId (MovieLens's order of adding
    movies), so the target of the first group is the next movieId the user rated in that batch: an order of ids,
    which item-id embeddings can learn and content features cannot."""
    r = split.ratings
    ids = np.asarray(users, dtype=np.int64)
    valid_rows = np.flatnonzero(split.role == VALID)  # each evaluated user's TEST row follows, its last TRAIN precedes
    before, target = (valid_rows - 1, valid_rows) if stage == "valid" else (valid_rows, valid_rows + 1)
    same_at = dict(
        zip(r.user_ids[valid_rows].tolist(), (r.timestamps[before] == r.timestamps[target]).tolist(), strict=True)
    )
    at = [same_at.get(int(u)) for u in ids]  # None: a user without a held-out item
    same, later = (np.array([a is flag for a in at], dtype=bool) for flag in (True, False))
    groups = ((SAME_SECOND, ids[same]), (LATER, ids[later]))
    return {label: part for label, part in groups if len(part)}


def summarize(
    results: dict[str, list[SeedResult]],
    cold: np.ndarray,
    cfg: EvaluateConfig,
    slices: Mapping[str, np.ndarray] | None = None,
    same_second: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per model: every metric (mean, std over seeds) on all test users and the cold slice, NDCG@10 on each of
    ``slices`` (``by_history``) and of ``same_second`` (``by_same_second``), validation NDCG@10, fit seconds; then the
    paired tests of the hybrid."""
    models: dict[str, Any] = {}
    for name, runs in results.items():
        row: dict[str, Any] = {"seeds": [r.seed for r in runs], "deterministic": name in DETERMINISTIC}
        for metric in METRICS:
            row[metric] = _mean_std([r.test.summary()[metric] for r in runs])
            row[f"cold_{metric}"] = _mean_std([r.test.subset(cold).summary()[metric] for r in runs])
        for key, groups in (("by_history", slices), ("by_same_second", same_second)):
            if groups:
                row[key] = {
                    label: _mean_std([r.test.subset(users).summary()["ndcg@10"] for r in runs])
                    for label, users in groups.items()
                }
        row["valid_ndcg@10"] = _mean_std([r.valid_ndcg for r in runs])
        row["fit_s"] = _mean_std([r.fit_s for r in runs])
        # the per-epoch history stays in the cache; the kept epoch's entry (served vs retrieval) goes to the report
        row["info"] = [
            {k: v for k, v in r.info.items() if k != "history"}
            | ({"kept_epoch": e} if (e := kept_epoch(r.info)) else {})
            for r in runs
        ]
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


def kept_epoch(info: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The history entry of a trained run's kept (best) epoch: ``info["kept_epoch"]`` once :func:`summarize` has
    dropped the history, else looked up in it; None for a model without epochs."""
    if "kept_epoch" in info:
        return info["kept_epoch"]
    best = info.get("best_epoch")
    return next((h for h in info.get("history") or [] if h.get("epoch") == best), None)


def _test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    if len(a) < 2:
        return {"n": float(len(a))}
    t = paired_test(a, b)
    return {k: float(v) for k, v in dataclasses.asdict(t).items()}
