"""Unit tests for hybridrec.training.evaluation.classification (the liked task) on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridrec import spec
from hybridrec.data import Movie, MovieLensData, Ratings, load_movielens
from hybridrec.training.config import OptimConfig, RunConfig
from hybridrec.training.evaluation.classification import (
    MODEL_NAMES,
    BiasClassifier,
    ItemMeanClassifier,
    check_split,
    liked_task,
    prepare_hybrid_inputs,
    train_hybrid_liked,
)
from hybridrec.training.evaluation.metrics import auc
from hybridrec.training.evaluation.splits import TemporalSplit, temporal_split
from hybridrec.training.objectives.liked import BLENDS

pytestmark = pytest.mark.unit

TINY = RunConfig(optim=OptimConfig(epochs=1, batch_size=8, threads=1))


def ratings_of(rows: list[tuple[int, int, float, int]]) -> Ratings:
    """(userId, movieId, rating, timestamp) rows, in the given order."""
    u, m, r, t = zip(*rows, strict=True)
    return Ratings(
        user_ids=np.array(u, dtype=np.int64),
        movie_ids=np.array(m, dtype=np.int64),
        ratings=np.array(r, dtype=np.float32),
        timestamps=np.array(t, dtype=np.int64),
    )


def dataset(rows: list[tuple[int, int, float, int]]) -> MovieLensData:
    ratings = ratings_of(rows)
    ids = sorted(set(ratings.movie_ids.tolist()))
    movies = {m: Movie(m, f"Movie {m} (2000)", ("Drama",) if m % 2 else ("Comedy",), 2000) for m in ids}
    return MovieLensData("ml-latest", Path("."), movies, ratings.chronological())


# 20 rows at timestamps 0..19, so the temporal split is rows 0-13 train, 14-16 valid, 17-19 test.
# Valid/test rate the cold movies 200-202 (no train row); user 3 appears only in test (empty history).
HISTORY_ROWS = [
    *[(1 + t % 2, 100 + t // 2, 5.0 if t % 3 else 1.0, t) for t in range(14)],
    (1, 200, 5.0, 14),
    (2, 201, 1.0, 15),
    (1, 100, 2.0, 16),
    (1, 202, 4.0, 17),
    (2, 200, 2.0, 18),
    (3, 100, 5.0, 19),
]


# ----------------------------------------------------------------------------------------------------------------------
# baselines


def _toy_bias_rows() -> list[tuple[int, int, float, int]]:
    """Items 10-14 are liked by everyone, 20-24 by nobody; user 7 likes everything (a user effect)."""
    rows: list[tuple[int, int, float, int]] = []
    for u in range(1, 8):
        for m in (*range(10, 15), *range(20, 25)):
            rows.append((u, m, 5.0 if m < 20 or u == 7 else 1.0, len(rows)))
    return rows


def test_bias_classifier_separates_good_and_bad_items() -> None:
    train = ratings_of(_toy_bias_rows())
    clf = BiasClassifier().fit(train)
    assert clf.mu == pytest.approx(40 / 70)
    # unseen pairs of known users and items: every good item above every bad one, for every user
    pairs = ratings_of([(u, m, 5.0 if m < 20 else 1.0, 0) for u in range(1, 7) for m in (10, 11, 20, 21)])
    s = clf.score(pairs)
    assert auc(s, pairs.ratings >= 4) == 1.0
    assert clf.score(ratings_of([(7, 20, 1.0, 0)]))[0] > clf.score(ratings_of([(1, 20, 1.0, 0)]))[0]
    # unknown user and item: bias 0
    unknown = clf.score(ratings_of([(99, 10, 1.0, 0), (1, 999, 1.0, 0), (99, 999, 1.0, 0)]))
    b_item10 = clf.score(ratings_of([(99, 10, 1.0, 0)]))[0] - clf.mu
    assert unknown[2] == pytest.approx(clf.mu)
    assert unknown[0] == pytest.approx(clf.mu + b_item10) and b_item10 > 0


def test_bias_classifier_converges_to_the_ridge_solution() -> None:
    rows = [(1, 10, 5.0, 0), (1, 11, 1.0, 1), (2, 10, 4.0, 2), (2, 12, 3.0, 3), (3, 11, 2.0, 4), (3, 12, 4.5, 5)]
    train = ratings_of(rows)
    reg = 2.0
    clf = BiasClassifier(reg=reg, iterations=500).fit(train)
    y = (train.ratings >= 4).astype(np.float64)
    users, items = [1, 2, 3], [10, 11, 12]
    a = np.zeros((len(rows), 6))
    for r, (u, m, _, _) in enumerate(rows):
        a[r, users.index(u)] = a[r, 3 + items.index(m)] = 1.0
    b = np.linalg.solve(a.T @ a + reg * np.eye(6), a.T @ (y - y.mean()))
    np.testing.assert_allclose(np.concatenate([clf.user_bias, clf.item_bias]), b, atol=1e-8)


def test_item_mean_classifier_by_hand() -> None:
    train = ratings_of([(1, 10, 5.0, 0), (2, 10, 4.0, 1), (3, 10, 1.0, 2), (1, 20, 1.0, 3)])
    clf = ItemMeanClassifier(prior=2.0).fit(train)
    mu = 0.5
    s = clf.score(ratings_of([(9, 10, 0.0, 0), (9, 20, 0.0, 0), (9, 30, 0.0, 0)]))
    np.testing.assert_allclose(s, [(2 + 2 * mu) / (3 + 2), (0 + 2 * mu) / (1 + 2), mu])


def test_bad_input_gives_clear_errors() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        BiasClassifier().score(ratings_of([(1, 10, 5.0, 0)]))
    with pytest.raises(ValueError, match="zero training rows"):
        ItemMeanClassifier().fit(ratings_of([(1, 10, 5.0, 0)]).take(np.zeros(0, dtype=np.int64)))
    with pytest.raises(ValueError, match="reg"):
        BiasClassifier(reg=-1.0)
    good = ratings_of([(1, 10, 5.0, 0), (1, 11, 1.0, 1)])
    all_liked = ratings_of([(1, 10, 5.0, 0), (1, 11, 4.0, 1)])
    none_liked = ratings_of([(1, 10, 1.0, 0), (1, 11, 3.5, 1)])
    with pytest.raises(ValueError, match=r"valid part .* no not-liked"):
        check_split(TemporalSplit(good, all_liked, good))
    with pytest.raises(ValueError, match=r"test part .* no liked"):
        check_split(TemporalSplit(good, good, none_liked))
    with pytest.raises(ValueError, match=r"train part .* empty"):
        check_split(TemporalSplit(good.take(np.zeros(0, dtype=np.int64)), good, good))
    with pytest.raises(ValueError, match="at least one seed"):
        liked_task(dataset(HISTORY_ROWS), TINY, [])


# ----------------------------------------------------------------------------------------------------------------------
# hybrid


def test_histories_follow_the_protocol() -> None:
    data = dataset(HISTORY_ROWS)
    split = temporal_split(data)
    assert (len(split.train), len(split.valid), len(split.test)) == (14, 3, 3)
    inputs = prepare_hybrid_inputs(data, split, history_length=4)
    art = inputs.artifacts
    assert art.item_ids == tuple(range(100, 107))  # vocabulary = the train rows' movies
    idx = art.item_index
    # train: user 1 rated 100, 101, ..., 106 at t = 0, 2, ..., 12; each row's history is the rows before it
    np.testing.assert_array_equal(inputs.train_seq[1], [idx(m) for m in range(100, 107)])
    assert inputs.train_pos[split.train.user_ids == 1].tolist() == list(range(7))
    # valid: all train items; test: train + valid items, the cold movie 200 as UNK
    np.testing.assert_array_equal(inputs.valid_hist[1], inputs.train_seq[1])
    np.testing.assert_array_equal(inputs.test_hist[1], [*inputs.train_seq[1], spec.UNK_ID, idx(100)])
    np.testing.assert_array_equal(inputs.test_hist[2], [*inputs.train_seq[2], spec.UNK_ID])
    assert len(inputs.test_hist[3]) == 0
    # scored items: cold movies get rows after the vocabulary, with content and the UNK id
    vocab = inputs.vocab_size
    assert len(inputs.cold) == 3 and vocab == spec.FIRST_ID + 7
    assert inputs.valid_item.tolist() == [vocab + 0, vocab + 1, idx(100)]
    assert inputs.test_item.tolist() == [vocab + 2, vocab + 0, idx(100)]
    assert inputs.cold.tensors["item_id"].tolist() == [spec.UNK_ID] * 3
    assert inputs.cold.tensors["meta"][:, : spec.GENRE_SLOTS].sum().item() == 3.0  # genres kept


def test_rating_features_read_only_earlier_train_rows() -> None:
    from hybridrec.training.objectives.liked import RATING_PRIOR, rating_features

    data = dataset(HISTORY_ROWS)
    split = temporal_split(data)
    inputs = prepare_hybrid_inputs(data, split, history_length=4)
    train = split.train
    g_liked, g_rating = float((train.ratings >= 4).mean()), float(train.ratings.mean())
    # user 1's train rows: t = 0, 2, ..., 12 with ratings 1, 5, 5, 1, 5, 5, 1 (t % 3 == 0 -> 1), movies 100..106
    rows = np.flatnonzero(train.user_ids == 1)
    feats = inputs.train_ratings[rows]
    assert feats.shape == (7, 6)
    np.testing.assert_allclose(feats[0], np.zeros(6), atol=1e-6)  # nothing rated before: the global means, centred
    r = train.ratings[rows].astype(np.float64)
    k = 3  # the 4th row sees the user's first 3 ratings only
    want = [
        ((r[:k] >= 4).sum() + RATING_PRIOR * g_liked) / (k + RATING_PRIOR) - g_liked,
        (r[:k].sum() + RATING_PRIOR * g_rating) / (k + RATING_PRIOR) - g_rating,
        np.log1p(k) / 7.0,
    ]
    np.testing.assert_allclose(feats[k, :3], want, rtol=1e-5)
    # the movie's side: movie 100 was rated 1 (user 1, t = 0) then 5 (user 2, t = 1)
    second = np.flatnonzero((train.movie_ids == 100) & (train.user_ids == 2))[0]
    one = rating_features(np.array([1]), np.array([0.0]), np.array([1.0]), train)[0]
    np.testing.assert_allclose(inputs.train_ratings[second, 3:], one, rtol=1e-5)
    # validation and test rows: all train rows, never a validation or test rating
    user1 = rating_features(np.array([7]), np.array([(r >= 4).sum()]), np.array([r.sum()]), train)[0]
    for part, feats_of in ((split.valid, inputs.valid_ratings), (split.test, inputs.test_ratings)):
        np.testing.assert_allclose(feats_of[part.user_ids == 1, :3], [user1] * int((part.user_ids == 1).sum()))
    movie100 = rating_features(np.array([2]), np.array([1.0]), np.array([6.0]), train)[0]
    user3 = split.test.user_ids == 3  # no train rows; rated movie 100
    np.testing.assert_allclose(inputs.test_ratings[user3], [[0.0, 0.0, 0.0, *movie100]], atol=1e-6)
    cold = np.isin(split.test.movie_ids, [200, 201, 202])
    np.testing.assert_allclose(inputs.test_ratings[cold, 3:], 0.0, atol=1e-6)  # no train rows: the global means


def test_the_wide_part_is_a_logistic_regression() -> None:
    from hybridrec.training.objectives.liked import fit_wide, wide_logits

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2)).astype(np.float32)
    y = rng.random(20000) < 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1] + 0.5)))
    w = fit_wide(x, y)
    np.testing.assert_allclose(w, [2.0, -1.0, 0.5], atol=0.1)
    np.testing.assert_allclose(wide_logits(w, x[:3]), x[:3] @ w[:2] + w[2], rtol=1e-6)


def test_hybrid_is_seeded_and_never_reads_the_scored_labels() -> None:
    torch.set_num_threads(1)
    data = dataset(HISTORY_ROWS)
    split = temporal_split(data)
    valid, test, info = train_hybrid_liked(data, split, TINY, seed=3)
    assert valid.shape == (3,) and test.shape == (3,) and np.isfinite(test).all()
    assert info["epochs"] == 1 and info["best_epoch"] == 1 and info["cold_items"] == 3
    assert info["blend"] in BLENDS and info["history"][0]["valid_auc"] >= info["history"][0]["valid_auc_wide"]
    # the test ratings flipped (liked <-> not liked): identical scores
    t = split.test
    flipped = TemporalSplit(split.train, split.valid, Ratings(t.user_ids, t.movie_ids, 6.0 - t.ratings, t.timestamps))
    _, test2, _ = train_hybrid_liked(data, flipped, TINY, seed=3)
    np.testing.assert_array_equal(test, test2)
    # the deep model alone: other scores
    _, ids_only, _ = train_hybrid_liked(data, split, TINY, seed=3, rating_stats=False)
    assert ids_only.shape == test.shape and not np.array_equal(ids_only, test)


def test_liked_task_on_a_tiny_real_subset(data_dir: Path) -> None:
    torch.set_num_threads(1)
    data = load_movielens(data_dir, max_users=12)
    cfg = RunConfig(optim=OptimConfig(epochs=1, batch_size=64, threads=1))
    out = liked_task(data, cfg, seeds=[0])
    json.dumps(out)  # JSON-able
    split = out["split"]
    assert split["users"] == 12
    assert split["train_rows"] + split["valid_rows"] + split["test_rows"] == len(data.ratings)
    assert tuple(out["models"]) == MODEL_NAMES
    metrics = {"threshold", "precision", "recall", "f1", "accuracy", "auc", "all_positive_f1", "positive_rate"}
    for name, model in out["models"].items():
        assert set(model["mean"]) == set(model["std"]) == metrics, name
        assert len(model["seeds"]) == 1
        assert 0.0 <= model["mean"]["auc"] <= 1.0
    p = split["test_positive_rate"]
    allpos = out["models"]["All-positive"]["mean"]
    assert allpos["precision"] == pytest.approx(p) and allpos["accuracy"] == pytest.approx(p)
    assert allpos["recall"] == 1.0 and allpos["auc"] == 0.5 and allpos["f1"] == pytest.approx(2 * p / (1 + p))
    info = out["models"]["Hybrid"]["seeds"][0]["info"]
    assert info["epochs"] == 1 and len(info["history"]) == 1
