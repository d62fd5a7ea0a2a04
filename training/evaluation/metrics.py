"""Ranking and classification metrics, and paired significance tests (numpy and the standard library only).

Full-ranking metrics (:func:`target_ranks`, :func:`evaluate_ranking`)
    A scorer fills a score matrix ``[U, I]`` for a chunk of users over **all** catalog items. Each user's seen items
    (for validation the training items; for test the training items and the validation item) are set to ``-inf`` in
    place, except the target itself, which is never masked. The target's 0-based rank is the number of unmasked items
    scoring strictly higher plus the number of other unmasked items scoring exactly the same: ties count against the
    target (pessimistic, as in ``training/train.py``), so a constant scorer gets no credit. A target scoring ``-inf``
    gets the worst rank. From the rank ``r`` (cut-off ``k = 10``):

    * HR@k = 1 if r < k;   NDCG@k = 1 / log2(r + 2) if r < k;   MRR@k = 1 / (r + 1) if r < k   (else 0).

    :func:`evaluate_ranking` calls the scorer on chunks of users (default 256: a ``256 x 9742`` float32 chunk is
    10 MB), so no ``[users x items]`` matrix of the whole evaluation is ever held. Per-user values are kept in the
    :class:`RankingResult` (aligned on ascending user ids) for paired tests and slices.

Paired significance (:func:`paired_test`)
    Two models' per-user values on the same users: the two-sided paired t-test (Student t distribution through the
    regularized incomplete beta function) and the two-sided Wilcoxon signed-rank test (zero differences dropped;
    exact null distribution when n <= 50 with no ties and no zeros, else the normal approximation with the tie
    correction and no continuity correction: the defaults of ``scipy.stats.wilcoxon``). scipy is not needed.

Cold-item slice (:func:`cold_item_users`)
    The users whose target has <= ``threshold`` training interactions; :meth:`RankingResult.subset` restricts a result
    (and so the paired test) to them.

Classification (:func:`classification_report` and its parts)
    For the temporal split's ``liked`` labels: the decision threshold maximises F1 on validation (predict liked when
    score >= threshold; among equal F1 the highest threshold), then precision, recall, F1 and accuracy on test at that
    threshold; AUC is the Mann-Whitney statistic with mid-ranks for tied scores (threshold-free); the reference is the
    trivial all-positive classifier's F1 on test, ``2p / (1 + p)`` for a positive share ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hybridrec.training.evaluation.splits import item_counts

__all__ = [
    "PairedTest",
    "RankingResult",
    "ScoreFn",
    "all_positive_f1",
    "auc",
    "best_f1_threshold",
    "binary_metrics",
    "classification_report",
    "cold_item_users",
    "evaluate_ranking",
    "paired_test",
    "ranking_values",
    "target_ranks",
]

# (users, their histories as item-index arrays) -> float scores [len(users), num_items]
ScoreFn = Callable[[Sequence[int], Sequence[np.ndarray]], np.ndarray]


# ----------------------------------------------------------------------------------------------------------------------
# full ranking


def target_ranks(
    scores: np.ndarray, targets: np.ndarray | Sequence[int], seen: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """0-based rank of each row's target among its unmasked items (ties count against the target).

    ``scores`` [U, I] float is modified in place: ``seen[u]``'s items other than ``targets[u]`` become -inf.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [users, items], got shape {scores.shape}")
    n_users, n_items = scores.shape
    tgt = np.asarray(targets, dtype=np.int64)
    if tgt.shape != (n_users,):
        raise ValueError(f"expected {n_users} targets, got shape {tgt.shape}")
    if n_users == 0:
        return np.zeros(0, dtype=np.int64)
    if np.any((tgt < 0) | (tgt >= n_items)):
        raise ValueError(f"target indices must be in [0, {n_items}), got {tgt[(tgt < 0) | (tgt >= n_items)][:5]}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    rows = np.arange(n_users)
    target_score = scores[rows, tgt].copy()
    masked = np.zeros(n_users, dtype=np.int64)  # masked items other than the target, per row
    if seen is not None:
        if len(seen) != n_users:
            raise ValueError(f"expected {n_users} seen arrays, got {len(seen)}")
        for r, items in enumerate(seen):
            idx = np.unique(np.asarray(items, dtype=np.int64))
            idx = idx[idx != tgt[r]]
            scores[r, idx] = -np.inf
            masked[r] = len(idx)
    col = target_score[:, None]
    greater = np.count_nonzero(scores > col, axis=1)
    ties = np.count_nonzero(scores == col, axis=1) - 1
    ranks = (greater + ties).astype(np.int64)
    worst = n_items - 1 - masked
    return np.where(np.isneginf(target_score), worst, ranks)


def row_ranks(scores: np.ndarray) -> np.ndarray:
    """Each row's 0-based rank of every column by descending score [B, I] (ties in column order): what
    reciprocal-rank fusion of several rankings reads (tools/ease_headroom.py, tools/ensemble_runs.py)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks


def ranking_values(ranks: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Per-user HR@k, NDCG@k, MRR@k (float64) from 0-based ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    hit = r < k
    return {
        f"hr@{k}": hit.astype(np.float64),
        f"ndcg@{k}": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0),
        f"mrr@{k}": np.where(hit, 1.0 / (r + 1.0), 0.0),
    }


@dataclass(frozen=True)
class RankingResult:
    """Per-user target ranks of one evaluation (users ascending) and the metrics derived from them."""

    users: np.ndarray  # int64, ascending
    ranks: np.ndarray  # int64, 0-based, aligned with users
    k: int = 10

    def values(self) -> dict[str, np.ndarray]:
        """Per-user metric arrays keyed ``hr@k``, ``ndcg@k``, ``mrr@k``."""
        return ranking_values(self.ranks, self.k)

    def summary(self) -> dict[str, float]:
        """Mean HR@k / NDCG@k / MRR@k and the user count."""
        out = {name: float(v.mean()) if len(v) else 0.0 for name, v in self.values().items()}
        out["users"] = float(len(self.users))
        return out

    def subset(self, users: Sequence[int] | np.ndarray) -> RankingResult:
        """This result restricted to ``users`` (those evaluated here; others are ignored)."""
        keep = np.isin(self.users, np.asarray(users, dtype=np.int64))
        return RankingResult(self.users[keep], self.ranks[keep], self.k)


def evaluate_ranking(
    score_fn: ScoreFn,
    users: Sequence[int],
    histories: Mapping[int, np.ndarray],
    targets: Mapping[int, int],
    *,
    seen: Mapping[int, np.ndarray] | None = None,
    k: int = 10,
    chunk_size: int = 256,
) -> RankingResult:
    """Full-ranking evaluation of ``score_fn`` for ``users``, ``chunk_size`` users per call.

    ``histories`` are the scorer's input and, unless ``seen`` is given, also the items masked.
    """
    order = sorted(int(u) for u in users)
    masks = histories if seen is None else seen
    ranks = np.zeros(len(order), dtype=np.int64)
    for start in range(0, len(order), chunk_size):
        chunk = order[start : start + chunk_size]
        scores = np.asarray(score_fn(chunk, [histories[u] for u in chunk]))
        if scores.ndim != 2 or scores.shape[0] != len(chunk):
            raise ValueError(f"scorer returned shape {scores.shape} for {len(chunk)} users")
        ranks[start : start + len(chunk)] = target_ranks(scores, [targets[u] for u in chunk], [masks[u] for u in chunk])
    return RankingResult(np.array(order, dtype=np.int64), ranks, k)


def cold_item_users(
    train: Mapping[int, np.ndarray], targets: Mapping[int, int], num_items: int, threshold: int = 5
) -> np.ndarray:
    """Users (ascending) whose target item has <= ``threshold`` training interactions."""
    counts = item_counts(train, num_items)
    return np.array(sorted(u for u, t in targets.items() if counts[t] <= threshold), dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------------
# paired significance tests


@dataclass(frozen=True)
class PairedTest:
    n: int  # pairs
    mean_diff: float  # mean of a - b
    t_statistic: float
    t_pvalue: float  # two-sided paired t-test
    wilcoxon_statistic: float  # min(W+, W-)
    wilcoxon_pvalue: float  # two-sided Wilcoxon signed-rank test


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``a`` vs ``b`` (same users, same order).

    All-zero differences give p = 1 for both; constant non-zero differences give t = +-inf and p = 0.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("a paired test needs at least 2 pairs")
    d = x - y
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        t, t_p = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
        t_p = student_t_two_sided(t, n - 1)
    w, w_p = _wilcoxon(d)
    return PairedTest(n=n, mean_diff=mean, t_statistic=t, t_pvalue=t_p, wilcoxon_statistic=w, wilcoxon_pvalue=w_p)


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return min(1.0, regularized_beta(df / 2.0, 0.5, df / (df + t * t)))


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1-based mid-ranks of x, sizes of the tie groups)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate(([0], boundaries))
    sizes = np.diff(np.append(starts, len(xs)))
    mid = starts + (sizes + 1) / 2.0  # mean of the 1-based ranks start+1 .. start+size
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mid, sizes)
    return ranks, sizes


def _wilcoxon(d: np.ndarray) -> tuple[float, float]:
    had_zeros = bool(np.any(d == 0))
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 0.0, 1.0
    ranks, ties = _average_ranks(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    r_minus = float(ranks[d < 0].sum())
    stat = min(r_plus, r_minus)
    if n <= 50 and not had_zeros and np.all(ties == 1):
        return stat, min(1.0, 2.0 * _signed_rank_cdf(round(stat), n))
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(ties.astype(np.float64) ** 3 - ties)) / 48.0
    if var <= 0:
        return stat, 1.0
    z = (stat - mean) / math.sqrt(var)
    return stat, min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def _signed_rank_cdf(w: int, n: int) -> float:
    """P(W+ <= w) under H0 for n untied ranks (exact: subset-sum counts of 1..n)."""
    total = n * (n + 1) // 2
    counts = np.zeros(total + 1, dtype=np.float64)  # exact: the largest count is < 2**50 for n <= 50
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r]
    return float(counts[: w + 1].sum() / 2.0**n)


# ----------------------------------------------------------------------------------------------------------------------
# classification


def _check_binary(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[bool]) -> tuple[np.ndarray, ...]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape} vs {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y


def auc(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[bool]) -> float:
    """ROC AUC as the Mann-Whitney statistic: P(score_pos > score_neg) + 0.5 P(equal). Needs both classes."""
    s, y = _check_binary(scores, labels)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    ranks, _ = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(
    scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[bool], threshold: float
) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of predicting positive when score >= threshold (0 where undefined)."""
    s, y = _check_binary(scores, labels)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    n_pred, n_pos = int(pred.sum()), int(y.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * tp / (n_pred + n_pos) if n_pred + n_pos else 0.0
    accuracy = float(np.count_nonzero(pred == y)) / len(y) if len(y) else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


def best_f1_threshold(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[bool]) -> float:
    """The score threshold (one of ``scores``) that maximises F1 of ``score >= threshold``; the highest among ties."""
    s, y = _check_binary(scores, labels)
    if len(s) == 0:
        raise ValueError("no scores to choose a threshold from")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_value = np.append(np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1)  # predict the top i+1 items
    tp = np.cumsum(y_sorted)[last_of_value]
    n_pred = last_of_value + 1
    f1 = 2.0 * tp / (n_pred + y.sum())
    return float(s_sorted[last_of_value[int(np.argmax(f1))]])


def all_positive_f1(labels: np.ndarray | Sequence[bool]) -> float:
    """F1 of the classifier that predicts every row positive: 2p / (1 + p) for a positive share p."""
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    return 2.0 * n_pos / (len(y) + n_pos) if len(y) else 0.0


def classification_report(
    valid_scores: np.ndarray | Sequence[float],
    valid_labels: np.ndarray | Sequence[bool],
    test_scores: np.ndarray | Sequence[float],
    test_labels: np.ndarray | Sequence[bool],
) -> dict[str, float]:
    """Threshold chosen on validation (max F1), then test precision/recall/F1/accuracy, test AUC and the test F1 of
    the all-positive classifier."""
    threshold = best_f1_threshold(valid_scores, valid_labels)
    out = {"threshold": threshold, **binary_metrics(test_scores, test_labels, threshold)}
    out["auc"] = auc(test_scores, test_labels)
    out["all_positive_f1"] = all_positive_f1(test_labels)
    out["positive_rate"] = float(np.mean(np.asarray(test_labels).astype(bool))) if len(test_labels) else 0.0
    return out
