"""Unit tests for hybridrec.training.evaluation on tiny synthetic data (values checked by hand)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from hybridrec.data import Movie, MovieLensData, Ratings
from hybridrec.training.evaluation import metrics as M
from hybridrec.training.evaluation.baselines import (
    EASE,
    LOWEST,
    ContentTFIDF,
    GRU4Rec,
    ItemKNN,
    Popularity,
    SASRec,
    Scorer,
)
from hybridrec.training.evaluation.recbole import export_recbole, read_recbole
from hybridrec.training.evaluation.splits import (
    TEST,
    TRAIN,
    VALID,
    ItemIndex,
    leave_one_out_split,
    temporal_split,
)

pytestmark = pytest.mark.unit


def ratings_of(rows: list[tuple[int, int, float, int]]) -> Ratings:
    """(userId, movieId, rating, timestamp) rows, in the given (unsorted) order."""
    u, m, r, t = zip(*rows, strict=True)
    return Ratings(
        user_ids=np.array(u, dtype=np.int64),
        movie_ids=np.array(m, dtype=np.int64),
        ratings=np.array(r, dtype=np.float32),
        timestamps=np.array(t, dtype=np.int64),
    )


def dataset(rows: list[tuple[int, int, float, int]], movies: dict[int, Movie] | None = None) -> MovieLensData:
    ratings = ratings_of(rows)
    if movies is None:
        ids = sorted(set(ratings.movie_ids.tolist()))
        movies = {m: Movie(m, f"Movie {m} (2000)", ("Drama",), 2000) for m in ids}
    return MovieLensData("ml-latest", Path("."), movies, ratings.chronological())


# user 1: movie 10 first, then 30 and 20 in the same second (tie -> ascending movieId: 20, 30), then 40
# user 2: two ratings (train only); user 3: three ratings
ROWS = [
    (1, 30, 4.0, 100),
    (2, 10, 3.0, 50),
    (1, 40, 5.0, 200),
    (3, 20, 1.0, 10),
    (1, 20, 2.5, 100),
    (1, 10, 4.5, 5),
    (3, 10, 4.0, 20),
    (2, 20, 5.0, 60),
    (3, 30, 3.5, 30),
]


# ----------------------------------------------------------------------------------------------------------------------
# splits


def test_leave_one_out_tie_break_roles_and_determinism() -> None:
    split = leave_one_out_split(dataset(ROWS))
    assert split.train[1].tolist() == [10, 20] and split.valid[1] == 30 and split.test[1] == 40
    assert split.train[2].tolist() == [10, 20] and 2 not in split.valid and 2 not in split.test
    assert split.train[3].tolist() == [20] and (split.valid[3], split.test[3]) == (10, 30)
    assert split.role.tolist().count(VALID) == split.role.tolist().count(TEST) == 2
    pairs = zip(split.ratings.user_ids.tolist(), split.ratings.movie_ids.tolist(), strict=True)
    roles = dict(zip(pairs, split.role.tolist(), strict=True))
    assert roles[(1, 30)] == VALID and roles[(1, 40)] == TEST and roles[(2, 20)] == TRAIN
    shuffled = leave_one_out_split(dataset([ROWS[i] for i in np.random.default_rng(3).permutation(len(ROWS))]))
    assert {u: s.tolist() for u, s in shuffled.train.items()} == {u: s.tolist() for u, s in split.train.items()}
    assert (shuffled.valid, shuffled.test) == (split.valid, split.test)


def test_indexed_split_stages_and_item_index() -> None:
    data = dataset(ROWS)
    items = ItemIndex.from_data(data)
    assert items.index([40, 10]).tolist() == [3, 0]
    with pytest.raises(KeyError, match="99"):
        items.index([10, 99])
    ix = leave_one_out_split(data).indexed(items)
    users, hist, targets = ix.stage("valid")
    assert users == [1, 3] and hist[1].tolist() == [0, 1] and targets == {1: 2, 3: 0}
    users, hist, targets = ix.stage("test")
    assert hist[1].tolist() == [0, 1, 2] and hist[3].tolist() == [1, 0] and targets == {1: 3, 3: 2}


def test_temporal_split_cut_tie_break_and_labels() -> None:
    # 20 ratings, all at timestamp 7: the order is then (userId, movieId)
    rows = [(u, m, 4.0 if (u + m) % 2 else 3.5, 7) for u in (2, 1) for m in range(10, 0, -1)]
    split = temporal_split(ratings_of(rows))
    assert (len(split.train), len(split.valid), len(split.test)) == (14, 3, 3)
    assert split.train.user_ids[:10].tolist() == [1] * 10 and split.train.movie_ids[:3].tolist() == [1, 2, 3]
    assert split.test.movie_ids.tolist() == [8, 9, 10] and split.test.user_ids.tolist() == [2, 2, 2]
    assert split.labels[2].tolist() == [False, True, False]  # (2, 8): 3.5, (2, 9): 4.0, (2, 10): 3.5
    again = temporal_split(ratings_of(rows[::-1]))
    assert np.array_equal(again.valid.movie_ids, split.valid.movie_ids)
    by_time = temporal_split(ratings_of([(1, 1, 5.0, 3), (1, 2, 1.0, 1), (2, 3, 4.0, 2)]), (1 / 3, 2 / 3))
    assert [len(p) for p in (by_time.train, by_time.valid, by_time.test)] == [1, 1, 1]
    assert (by_time.train.movie_ids[0], by_time.test.movie_ids[0]) == (2, 1)


# ----------------------------------------------------------------------------------------------------------------------
# ranking metrics


def test_ranks_and_metric_values_by_hand() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.1, 0.9, 0.5, 0.3]], dtype=np.float32)
    ranks = M.target_ranks(scores.copy(), [2, 2])
    assert ranks.tolist() == [1, 1]
    ranks = M.target_ranks(scores, [2, 0], [np.array([1]), np.array([1, 0])])  # row 2: target 0 is never masked
    assert ranks.tolist() == [0, 2]
    assert np.isneginf(scores[0, 1]) and scores[1, 0] == np.float32(0.1)
    v = M.ranking_values(np.array([0, 1, 9, 10]), k=10)
    assert v["hr@10"].tolist() == [1, 1, 1, 0]
    assert np.allclose(v["ndcg@10"], [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0])
    assert np.allclose(v["mrr@10"], [1.0, 0.5, 0.1, 0.0])


def test_ties_count_against_the_target() -> None:
    ranks = M.target_ranks(np.array([[1.0, 1.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0]]), [0, 3], [[], [0]])
    assert ranks.tolist() == [2, 2]  # row 2: the masked item 0 is not a competitor
    # a target the scorer cannot rank at all gets the worst rank among the unmasked items
    assert M.target_ranks(np.array([[-np.inf, 1.0, -np.inf, 0.0]]), [0], [[2]]).tolist() == [2]
    with pytest.raises(ValueError, match="NaN"):
        M.target_ranks(np.array([[np.nan, 1.0]]), [0])


def test_evaluate_ranking_chunks_masks_and_slices() -> None:
    rng = np.random.default_rng(0)
    table = rng.random((7, 12)).astype(np.float32)
    hist = {u: rng.choice(12, 4, replace=False) for u in range(7)}
    targets = {u: int(next(i for i in range(12) if i not in hist[u])) for u in range(7)}

    def score(users, histories):  # type: ignore[no-untyped-def]
        return table[list(users)].copy()

    one = M.evaluate_ranking(score, list(range(7)), hist, targets, chunk_size=1)
    many = M.evaluate_ranking(score, [6, 0, 3, 1, 2, 5, 4], hist, targets, chunk_size=256)
    assert np.array_equal(one.ranks, many.ranks) and many.users.tolist() == list(range(7))
    for u in range(7):
        masked = table[u].copy()
        masked[hist[u]] = -np.inf
        assert one.ranks[u] == int((masked > masked[targets[u]]).sum())
    assert set(one.summary()) == {"hr@10", "ndcg@10", "mrr@10", "users"}
    train = {0: np.array([1, 1, 2]), 1: np.array([1, 3])}
    cold = M.cold_item_users(train, {0: 3, 1: 2, 2: 1, 3: 0}, num_items=4, threshold=1)
    assert cold.tolist() == [0, 1, 3]  # item 1 has 2 training users
    assert one.subset(cold).users.tolist() == [0, 1, 3]


# ----------------------------------------------------------------------------------------------------------------------
# significance


def test_student_t_and_paired_t_test() -> None:
    assert M.student_t_two_sided(2.228138851986, 10) == pytest.approx(0.05, abs=1e-9)
    assert M.student_t_two_sided(1.0, 1) == pytest.approx(0.5, abs=1e-12)  # Cauchy
    assert M.student_t_two_sided(0.0, 7) == pytest.approx(1.0)
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    res = M.paired_test(a + np.array([1.0, 0.0, 2.0, 1.0, 1.0]), a)  # d = 1, 0, 2, 1, 1: mean 1, sd sqrt(.5)
    assert res.t_statistic == pytest.approx(1.0 / math.sqrt(0.5 / 5))
    same = M.paired_test(a, a)
    assert (same.t_pvalue, same.wilcoxon_pvalue) == (1.0, 1.0)
    rng = np.random.default_rng(1)
    x = rng.random(200)
    assert M.paired_test(x + 0.2 + rng.normal(0, 0.05, 200), x).t_pvalue < 1e-10
    assert M.paired_test(x + rng.normal(0, 0.05, 200), x).t_pvalue > 0.01


def test_wilcoxon_exact_and_normal_with_ties() -> None:
    assert M.paired_test([1.0, 2, 3, 4, 5], [0.0] * 5).wilcoxon_pvalue == pytest.approx(2 / 32)
    assert M.paired_test([1.0, 2, 3, 4, 5, 6], [0.0] * 6).wilcoxon_pvalue == pytest.approx(2 / 64)
    exact = M.paired_test([1.0, -2, 3, 4, 5], [0.0] * 5)  # W- = 2: P(W+ <= 2) = 3/32 (sums 0, 1, 2)
    assert (exact.wilcoxon_statistic, exact.wilcoxon_pvalue) == (2.0, pytest.approx(6 / 32))
    # 20 x (+1), 5 x (-1): all |d| tied at mid-rank 13, W- = 65, mean 162.5, var 1381.25 - 325 = 32.5**2, z = -3
    tied = M.paired_test([1.0] * 20 + [-1.0] * 5, [0.0] * 25)
    assert tied.wilcoxon_statistic == 65.0
    assert tied.wilcoxon_pvalue == pytest.approx(math.erfc(3 / math.sqrt(2)), rel=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# classification


def test_auc_with_ties_and_thresholds() -> None:
    assert M.auc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert M.auc([0.5, 0.5, 0.5], [1, 0, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.auc([0.1, 0.2], [1, 1])
    assert M.best_f1_threshold([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0]) == pytest.approx(0.8)
    assert M.best_f1_threshold([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 1]) == pytest.approx(0.2)  # 6/7 beats 4/5
    m = M.binary_metrics([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0], threshold=0.5)
    assert m == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5}
    assert M.all_positive_f1([1, 1, 0, 0]) == pytest.approx(2 / 3)
    rep = M.classification_report([0.9, 0.1], [1, 0], [0.95, 0.5, 0.05], [1, 1, 0])
    assert rep["threshold"] == pytest.approx(0.9) and rep["recall"] == 0.5 and rep["auc"] == 1.0
    assert rep["all_positive_f1"] == pytest.approx(0.8)


# ----------------------------------------------------------------------------------------------------------------------
# baselines


def test_popularity() -> None:
    pop = Popularity().fit({1: np.array([0, 1, 0]), 2: np.array([0]), 3: np.array([0, 2])}, 4)
    s = pop.score([1, 2], [np.array([0]), np.array([])])
    assert s.dtype == np.float32 and s.shape == (2, 4) and s[1].tolist() == [3.0, 1.0, 1.0, 0.0]


# users 1-3 consumed items 0 and 1; user 3 also item 2; user 4 items 2 and 3 (item 4: no training interaction)
TOY = {1: np.array([0, 1]), 2: np.array([1, 0]), 3: np.array([0, 1, 2]), 4: np.array([2, 3])}


def test_item_knn_cosine_and_neighbourhood() -> None:
    knn = ItemKNN(k=10).fit(TOY, 5)
    s = knn.score([9], [np.array([0])])[0]
    cos02 = 1 / (math.sqrt(3) * math.sqrt(2))
    assert s.dtype == np.float32 and np.allclose(s, [0.0, 1.0, cos02, 0.0, 0.0])
    two = knn.score([9], [np.array([0, 3])])[0]  # sum over the history: item 2 gets sim(0,2) + sim(3,2)
    assert two[2] == pytest.approx(cos02 + 1 / math.sqrt(2))
    # k = 1: item 2's only neighbour is item 3 (cosine 0.71 > 0.41), so history [0] no longer reaches item 2
    assert np.allclose(ItemKNN(k=1).fit(TOY, 5).score([9], [np.array([0])])[0], [0.0, 1.0, 0.0, 0.0, 0.0])
    tuned = ItemKNN(grid=(1, 2)).fit(TOY, 5, valid={4: 1}, movies=None)  # unknown side keys are ignored
    assert set(tuned.tuning) == {1, 2} and tuned.k in (1, 2)


def _ease_reference(train: dict[int, np.ndarray], num_items: int, lam: float, history: np.ndarray) -> np.ndarray:
    active = np.flatnonzero(np.bincount(np.concatenate(list(train.values())), minlength=num_items) > 0)
    x = np.zeros((len(train), len(active)))
    for r, s in enumerate(train.values()):
        x[r, np.searchsorted(active, np.unique(s))] = 1
    p = np.linalg.inv(x.T @ x + lam * np.eye(len(active)))
    b = np.eye(len(active)) - p / np.diag(p)[None, :]
    h = np.zeros(len(active))
    h[np.searchsorted(active, history)] = 1
    out = np.full(num_items, LOWEST)
    out[active] = h @ b
    return out


@pytest.mark.parametrize("n_items", [6, 40])  # 6 items < 12 users: primal; 40 items > 12 users: dual (Woodbury)
def test_ease_matches_the_closed_form(n_items: int) -> None:
    rng = np.random.default_rng(n_items)
    train = {u: rng.choice(n_items - 1, 4, replace=False) for u in range(12)}  # the last item is never trained
    ease = EASE(lam=3.0).fit(train, n_items)
    assert ease.dual == (n_items > 12)
    hist = np.array([0, 2])
    got = ease.score([0], [hist])[0]
    assert got.dtype == np.float32 and got[-1] == np.float32(LOWEST)
    assert np.allclose(got, _ease_reference(train, n_items, 3.0, hist), atol=1e-5)


def test_ease_known_answer_and_tuning() -> None:
    ease = EASE(lam=0.5).fit(TOY, 5)
    s = ease.score([9], [np.array([0])])[0]
    assert int(np.argmax(np.where(np.arange(5) == 0, -np.inf, s))) == 1  # item 1 always co-occurs with item 0
    tuned = EASE(grid=(1.0, 10.0)).fit(TOY, 5, valid={1: 1, 4: 3})
    assert set(tuned.tuning) == {1.0, 10.0} and tuned.lam in (1.0, 10.0)


def test_content_tfidf() -> None:
    movies: list[Movie | None] = [
        Movie(1, "A", ("Sci-Fi",), 2000, overview="A space ship crew.", cast=("Ann Lee",)),
        Movie(2, "B", ("Sci-Fi",), 2001, overview="Space ship battle.", directors=("Bo Yu",)),
        Movie(3, "C", ("Comedy",), 2002, overview="A wedding romance."),
        None,
    ]
    content = ContentTFIDF().fit({}, 4, movies=movies)
    s = content.score([1, 2], [np.array([0]), np.array([])])
    assert s.shape == (2, 4) and s.dtype == np.float32
    assert s[0, 0] == s[0].max() and s[0, 1] > s[0, 2] == 0.0 and s[0, 3] == 0.0
    assert not s[1].any()  # no history: no profile
    # a movie known by its genres alone never outranks one that also shares words and people with the history
    genre_only = [*movies[:3], Movie(4, "D", ("Sci-Fi",), 2003)]
    s = ContentTFIDF().fit({}, 4, movies=genre_only).score([1], [np.array([0])])
    assert s[0, 1] > s[0, 3] > 0.0
    tuned = ContentTFIDF(genre_grid=(0.1, 1.0)).fit({1: np.array([0])}, 4, movies=genre_only, valid={1: 1})
    assert set(tuned.tuning) == {0.1, 1.0} and tuned.genre_weight in (0.1, 1.0)
    with pytest.raises(ValueError, match="movies"):
        ContentTFIDF().fit({}, 4)


def test_one_driver_fits_every_scorer_with_the_same_side_information() -> None:
    movies = [Movie(i, f"M{i}", ("Drama",) if i % 2 else ("Comedy",), 2000) for i in range(5)]
    side = {"valid": {1: 2, 2: 2}, "movies": movies}
    scorers: list[Scorer] = [Popularity(), ItemKNN(grid=(1, 3)), EASE(grid=(1.0, 5.0)), ContentTFIDF()]
    for scorer in scorers:
        fitted = scorer.fit(TOY, 5, **side)
        res = M.evaluate_ranking(fitted.score, [1, 2], {1: TOY[1], 2: TOY[2]}, {1: 2, 2: 2})
        assert res.users.tolist() == [1, 2] and 0.0 <= res.summary()["ndcg@10"] <= 1.0, scorer.name


def _sequences(n_users: int, n_items: int, length: int) -> dict[int, np.ndarray]:
    # each user walks the item ring from a random start: next item = current + 1 (learnable)
    rng = np.random.default_rng(0)
    return {u: (int(rng.integers(n_items)) + np.arange(length)) % n_items for u in range(n_users)}


def test_sasrec_windows_cover_every_prefix_once() -> None:
    model = SASRec(max_len=4)
    train = {1: np.arange(11), 2: np.array([5]), 3: np.array([7, 8])}
    x, y = model._windows(train, np.random.default_rng(0))
    pairs = sorted((int(a) - 1, int(b) - 1) for a, b in zip(x.ravel(), y.ravel(), strict=True) if b > 0)
    assert pairs == sorted([(i, i + 1) for i in range(10)] + [(7, 8)])
    assert np.all((x > 0) == (y > 0))  # right-padded: inputs and targets end together


def test_sasrec_trains_one_epoch_and_scores_all_items() -> None:
    seqs = _sequences(24, 30, 12)
    train = {u: s[:-2] for u, s in seqs.items()}
    valid = {u: int(s[-2]) for u, s in seqs.items()}
    model = SASRec(epochs=1, threads=1, dim=16, batch_size=8).fit(train, 30, valid=valid)
    assert model.epochs_run == 1 and model.best_epoch == 1 and "val_ndcg@10" in model.history[0]
    s = model.score([0, 1, 2], [train[0], train[1][:3], np.array([], dtype=np.int64)])
    assert s.shape == (3, 30) and s.dtype == np.float32 and np.isfinite(s).all()
    hist = {u: np.append(train[u], valid[u]) for u in seqs}
    res = M.evaluate_ranking(model.score, sorted(seqs), hist, {u: int(s[-1]) for u, s in seqs.items()})
    assert res.summary()["users"] == 24


def test_gru4rec_trains_one_epoch_and_scores_all_items() -> None:
    seqs = _sequences(24, 30, 12)
    train = {u: s[:-2] for u, s in seqs.items()}
    valid = {u: int(s[-2]) for u, s in seqs.items()}
    model = GRU4Rec(epochs=1, threads=1, dim=16, hidden=16, batch_size=8).fit(train, 30, valid=valid)
    assert model.name == "GRU4Rec-CE" and model.epochs_run == 1 and "val_ndcg@10" in model.history[0]
    s = model.score([0, 1, 2], [train[0], train[1][:3], np.array([], dtype=np.int64)])
    assert s.shape == (3, 30) and s.dtype == np.float32 and np.isfinite(s).all()


def test_gru4rec_is_causal_and_ignores_padding() -> None:
    # the score after a history depends on that history only: a longer window's later items change nothing before
    seqs = _sequences(8, 20, 10)
    model = GRU4Rec(epochs=1, threads=1, dim=8, hidden=8, batch_size=4, max_len=6).fit(seqs, 20)
    h = seqs[0]
    short = model.score([0], [h[:4]])[0]
    import torch

    with torch.no_grad():
        full = model.net(torch.from_numpy(h[:6][None] + 1))[0, 3]
        also = model.net.logits(full[None])[0].numpy()
    assert np.allclose(short, also, atol=1e-5)
    assert np.allclose(model.score([0], [h])[0], model.score([0], [h[-6:]])[0])  # only the last max_len items count


def test_gru4rec_learns_a_next_item_rule_and_early_stops() -> None:
    seqs = _sequences(24, 30, 12)
    train = {u: s[:-2] for u, s in seqs.items()}
    valid = {u: int(s[-2]) for u, s in seqs.items()}
    model = GRU4Rec(epochs=30, patience=3, threads=1, dim=16, hidden=32, batch_size=4, dropout=0.0, lr=1e-2)
    model.fit(train, 30, valid=valid)
    best = max(r["val_ndcg@10"] for r in model.history)
    assert model.history[model.best_epoch - 1]["val_ndcg@10"] == best
    assert model.epochs_run < 30 or model.best_epoch == 30  # stopped by patience unless still improving
    hist = {u: np.append(train[u], valid[u]) for u in seqs}
    res = M.evaluate_ranking(model.score, sorted(seqs), hist, {u: int(s[-1]) for u, s in seqs.items()})
    assert res.summary()["mrr@10"] > 0.8


# ----------------------------------------------------------------------------------------------------------------------
# RecBole export


def test_sasrec_learns_a_next_item_rule() -> None:
    # next item = current + 1 on a ring: only a model reading the last position of its history ranks it first
    seqs = _sequences(24, 30, 12)
    train = {u: s[:-2] for u, s in seqs.items()}
    valid = {u: int(s[-2]) for u, s in seqs.items()}
    model = SASRec(epochs=8, threads=1, dim=16, batch_size=8, dropout=0.0, lr=1e-2).fit(train, 30, valid=valid)
    hist = {u: np.append(train[u], valid[u]) for u in seqs}
    res = M.evaluate_ranking(model.score, sorted(seqs), hist, {u: int(s[-1]) for u, s in seqs.items()})
    assert res.summary()["mrr@10"] > 0.8


def test_recbole_round_trip(tmp_path: Path) -> None:
    movies = {m: Movie(m, f"Title {m} (1999)", ("Science Fiction", "Drama"), 1999) for m in (10, 20, 30, 40, 50)}
    data = dataset(ROWS, movies)
    split = leave_one_out_split(data)
    folder = export_recbole(data, tmp_path, "toy")
    assert folder == tmp_path / "toy"
    header = (folder / "toy.train.inter").read_text().splitlines()[0]
    assert header == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    back = read_recbole(folder, "toy")
    train: dict[int, list[int]] = {}
    for row in back["train"]:
        train.setdefault(int(row["user_id"]), []).append(int(row["item_id"]))
    assert train == {u: s.tolist() for u, s in split.train.items()}
    assert {int(r["user_id"]): int(r["item_id"]) for r in back["valid"]} == split.valid
    assert {int(r["user_id"]): int(r["item_id"]) for r in back["test"]} == split.test
    row = next(r for r in back["test"] if r["user_id"] == "1")
    assert (float(row["rating"]), float(row["timestamp"])) == (5.0, 200.0)
    # RecBole concatenates the files and sorts stably by (user, timestamp): the order must stay ours
    rows = [
        (int(r["user_id"]), float(r["timestamp"]), int(r["item_id"]))
        for p in ("train", "valid", "test")
        for r in back[p]
    ]
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1]))
    assert [rows[i][2] for i in order if rows[i][0] == 1] == [10, 20, 30, 40]
    assert [r["item_id"] for r in back["item"]] == ["10", "20", "30", "40", "50"]
    assert back["item"][0]["genre"] == "Science_Fiction Drama" and back["item"][0]["title"] == "Title 10 (1999)"
    seq = read_recbole(export_recbole(data, tmp_path, "toyseq", sequential=True, max_len=2), "toyseq")
    assert [(r["item_id_list"], r["item_id"]) for r in seq["test"]] == [("20 30", "40"), ("20 10", "30")]
    assert [(r["user_id"], r["item_id_list"], r["item_id"]) for r in seq["train"]] == [
        ("1", "10", "20"),
        ("2", "10", "20"),
    ]
    assert seq["valid"][0]["item_id_list"] == "10 20"


def test_report_goals_are_judged_from_the_numbers() -> None:
    """Each of issue 11's goals reads met / not met from the metrics alone, with the numbers it used."""
    from hybridrec.training.evaluation.report import goals

    def row(ndcg: float, hr: float, cold_hr: float = 0.0, seeds: tuple = (0, 1, 2), info: list | None = None) -> dict:
        return {
            "seeds": list(seeds),
            "ndcg@10": (ndcg, 0.0),
            "hr@10": (hr, 0.0),
            "cold_hr@10": (cold_hr, 0.0),
            "info": info or [{} for _ in seeds],
        }

    kept = [
        {"best_epoch": 2, "history": [{"epoch": 1}, {"epoch": 2, "val_ndcg@10": 0.06, "val_dot_ndcg@10": r}]}
        for r in (0.05, 0.06, 0.07)
    ]
    metrics = {
        "models": {
            "Hybrid": row(0.07, 0.13, cold_hr=0.06, info=kept),
            "SASRec-CE": row(0.06, 0.12),
            "Hybrid w/o CNN": row(0.05, 0.1),
        },
        "tests": {
            "vs_best_baseline": {
                "baseline": "SASRec-CE",
                "mean_diff": 0.01,
                "n": 610,
                "t_pvalue": 0.01,
                "wilcoxon_pvalue": 0.02,
            },
            "hybrid_vs_hybrid-w-o-cnn": {
                "baseline": "Hybrid w/o CNN",
                "mean_diff": 0.02,
                "n": 610,
                "t_pvalue": 0.2,
                "wilcoxon_pvalue": 0.3,
            },
        },
        "liked": {"models": {"Hybrid": {"mean": {"auc": 0.65}}, "User+item bias": {"mean": {"auc": 0.64}}}},
    }
    text = "\n".join(goals(metrics))
    assert "NDCG@10 >= 0.065 and HR@10 >= 0.12 (mean of 3 seeds): **met**" in text
    assert "above every baseline with p < 0.05: **met**" in text
    assert "Cold slice HR@10 >= 0.05: **met**" in text
    # seed 2's retrieval (0.07) beat its served pipeline (0.06)
    assert "every seed: **not met**" in text and "seed 2: 0.0600 vs 0.0700" in text
    assert "Hybrid w/o CNN costs NDCG@10 with p < 0.05: **no, it does not**" in text
    assert "AUC above the user+item bias baseline's: **met** (0.6500 vs 0.6400)" in text


def test_report_names_the_fits_missing_from_the_cache() -> None:
    """A run stopped part-way still writes a table; the page says which (model, seed) fits it lacks."""
    from hybridrec.training.evaluation.report import missing_fits

    metrics = {
        "config": {"models": ["EASE", "Item-kNN", "Hybrid", "SASRec-CE"], "seeds": [0, 1, 2]},
        "models": {"EASE": {"seeds": [None]}, "Hybrid": {"seeds": [0, 1]}, "SASRec-CE": {"seeds": [0, 1, 2]}},
    }
    assert missing_fits(metrics) == ["Item-kNN", "Hybrid (seed 2)"]
    metrics["models"] |= {"Item-kNN": {"seeds": [None]}, "Hybrid": {"seeds": [0, 1, 2]}}
    assert missing_fits(metrics) == []


def test_summary_keeps_the_kept_epoch_for_the_served_vs_retrieval_goal() -> None:
    """The summary drops each run's history but keeps its best epoch's entry, from which the report reads the served
    and retrieval validation NDCG@10."""
    import numpy as np

    from hybridrec.training.evaluation.metrics import RankingResult
    from hybridrec.training.evaluation.report import goals
    from hybridrec.training.evaluation.run import EvaluateConfig, SeedResult, summarize

    hist = [{"epoch": 1.0, "val_ndcg@10": 0.03}, {"epoch": 2.0, "val_ndcg@10": 0.06, "val_dot_ndcg@10": 0.05}]
    run = SeedResult(
        0, RankingResult(np.arange(3), np.array([0, 5, 20])), 0.06, 1.0, {"best_epoch": 2, "history": hist}
    )
    metrics = summarize({"Hybrid": [run]}, np.array([], dtype=np.int64), EvaluateConfig())
    info = metrics["models"]["Hybrid"]["info"][0]
    assert "history" not in info and info["kept_epoch"]["val_dot_ndcg@10"] == 0.05
    assert "every seed: **met** (seed 0: 0.0600 vs 0.0500)" in "\n".join(goals(metrics))


def test_schedule_minutes_takes_jobs_in_order_on_the_first_free_worker() -> None:
    """The from-scratch estimate on the results page: jobs in submission order, each on the first free worker, so the
    order changes the wall time of the same jobs."""
    from hybridrec.training.evaluation.run import schedule_minutes

    assert schedule_minutes([600.0, 600.0, 600.0], 1) == 30.0
    assert schedule_minutes([], 2) == 0.0
    # first: [1200] [300 + 300 + 300 + 600] -> 25 min; last: [300 + 300 + 1200] [300 + 600] -> 30 min
    assert schedule_minutes([1200.0, 300.0, 300.0, 300.0, 600.0], 2) == 25.0
    assert schedule_minutes([300.0, 300.0, 300.0, 600.0, 1200.0], 2) == 30.0


def test_history_slices_split_users_by_training_length() -> None:
    """Quantile groups of the test users by training-history length: every user in exactly one group, labelled with
    the group's length range; ties at an edge go to the group above it, the longest length to the last group."""
    from hybridrec.training.evaluation.run import history_slices

    train = {u: np.arange(n) for u, n in enumerate([2, 3, 4, 5, 6, 7, 8, 100])}
    slices = history_slices(train, list(train), parts=4)
    assert sorted(np.concatenate(list(slices.values())).tolist()) == list(train)
    # quantile edges 2, 3.75, 5.5, 7.25, 100, rounded to 2, 4, 6, 7, 100
    assert {k: v.tolist() for k, v in slices.items()} == {"2-3": [0, 1], "4-5": [2, 3], "6": [4], "7-100": [5, 6, 7]}
    assert history_slices(train, [], parts=4) == {}
    # every user with the same length: one group
    assert {k: v.tolist() for k, v in history_slices({0: np.arange(5), 1: np.arange(5)}, [0, 1]).items()} == {
        "5": [0, 1]
    }


def test_same_second_slices_split_users_by_the_test_ratings_timestamp() -> None:
    """Users whose test rating shares the validation rating's second, and the others; users without a test item
    (fewer than 3 ratings) are in neither group."""
    from hybridrec.data import Ratings
    from hybridrec.training.evaluation.run import LATER, SAME_SECOND, same_second_slices
    from hybridrec.training.evaluation.splits import leave_one_out_split

    rows = [  # (user, movie, timestamp)
        (1, 10, 1), (1, 11, 2), (1, 12, 5), (1, 13, 5),  # valid and test in the same second
        (2, 10, 1), (2, 11, 1), (2, 12, 1), (2, 13, 9),  # test later
        (3, 10, 1), (3, 11, 1),  # too short to evaluate
    ]
    u, m, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    split = leave_one_out_split(Ratings(u, m, np.full(len(u), 4.0, dtype=np.float32), t))
    slices = same_second_slices(split, [1, 2])
    assert {k: v.tolist() for k, v in slices.items()} == {SAME_SECOND: [1], LATER: [2]}
    assert list(same_second_slices(split, [2])) == [LATER]
    # validation: the validation item against the last training item (user 2's share a second, user 1's do not)
    slices = same_second_slices(split, [1, 2, 3], stage="valid")
    assert {k: v.tolist() for k, v in slices.items()} == {SAME_SECOND: [2], LATER: [1]}


def test_paired_runs_averages_seeds_per_user_and_pairs_the_settings(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """tools/paired_runs.py: seed-averaged per-user NDCG@10, B - A, with its standard error over users."""
    users = np.arange(1, 5)
    files = {}
    for name, valid, test in (
        ("a0", [0, 20, 20, 20], [0, 0, 20, 20]),
        ("a1", [20, 20, 20, 20], [0, 0, 20, 20]),
        ("b0", [0, 0, 20, 20], [0, 0, 0, 20]),
    ):
        files[name] = str(tmp_path / f"{name}.npz")
        np.savez(
            files[name],
            valid_users=users,
            valid_ranks=np.array(valid),
            test_users=users,
            test_ranks=np.array(test),
            cold_users=np.array([1, 2]),
        )
    monkeypatch.setattr(sys, "argv", ["paired_runs.py", "--a", files["a0"], files["a1"], "--b", files["b0"]])
    runpy.run_path(str(Path(__file__).parents[2] / "tools" / "paired_runs.py"), run_name="__main__")
    out = json.loads(capsys.readouterr().out)
    assert out["valid"]["a"] == 0.125 and out["valid"]["b"] == 0.5  # rank 0 scores 1: A = mean(0.5, 0, 0, 0)
    assert out["valid"]["b_minus_a"] == 0.375 and out["test"]["b_minus_a"] == 0.25
    assert out["test_cold"]["users"] == 2 and out["test_cold"]["b_minus_a"] == 0.0
    assert "valid_by_seed" not in out  # 2 fits against 1: nothing to pair by seed
    assert out["seeds"]["valid_a"] == [0.25, 0.0] and out["seeds"]["valid_b"] == [0.5]

    # as many fits on each side: they also pair by position (seed), and their NDCG@10 is tested over the pairs
    monkeypatch.setattr(
        sys, "argv", ["paired_runs.py", "--a", files["a0"], files["a1"], "--b", files["b0"], files["a0"]]
    )
    runpy.run_path(str(Path(__file__).parents[2] / "tools" / "paired_runs.py"), run_name="__main__")
    out = json.loads(capsys.readouterr().out)
    assert out["valid_by_seed"]["pairs"] == 2 and out["valid_by_seed"]["b_above"] == 2
    assert out["valid_by_seed"]["b_minus_a"] == 0.25  # (0.5 - 0.25) and (0.25 - 0): one difference, p 0
    assert out["valid_by_seed"]["t_p"] == 0.0
    assert "test_cold_by_seed" not in out


def test_release_age_prior_is_a_rate_per_catalog_movie_of_each_age_at_the_users_last_history_item() -> None:
    """tools/ease_headroom.py --other release_age: log((rated at age a + 1) / (catalog movies of age a, summed over
    the training rows + 1)), fitted on the gapped training rows; each stage is scored at the year of its history's
    last item (validation: the last training row; test: the validation row)."""
    tool = runpy.run_path(str(Path(__file__).parents[2] / "tools" / "ease_headroom.py"))
    prior = tool["ReleaseAge"](np.array([0, 2000, 2000, 1990]))  # item 0's year is unknown
    prior.fit(np.array([2001, 2001, 2001]), np.array([1, 1, 3]))
    age = {a + prior.MIN_AGE: v for a, v in enumerate(prior.rate[:-1])}
    # 3 rows in 2001: 2 movies were 1 year old then, 1 movie 11 years, 1 without a year
    assert age[1] == pytest.approx(math.log(3 / 7)) and age[11] == pytest.approx(math.log(2 / 4))
    assert age[0] == pytest.approx(0.0) and prior.rate[-1] == pytest.approx(math.log(1 / 4))
    scores = prior.score(np.array([2001, 1991]))
    assert scores[0].tolist() == pytest.approx([prior.rate[-1], age[1], age[1], age[11]])
    assert scores[1, 1] == pytest.approx(age[prior.MIN_AGE])  # released 9 years after the rating: clipped to -2

    year = 86400 * 365  # 1970 and 1971 have 365 days
    stamps = {10: 0, 11: year, 12: 2 * year + 10, 13: 2 * year + 20}  # in 1970, 1971, 1972 and 1972
    rows = [(1, m, t) for m, t in stamps.items()] + [(2, 10, 0), (2, 11, 0), (2, 12, year)]
    u, m, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    movies = {i: Movie(i, f"m{i}", (), 1970) for i in stamps}
    data = MovieLensData("ml-latest", Path("."), movies, Ratings(u, m, np.full(len(u), 4.0, dtype=np.float32), t))
    split = leave_one_out_split(data)
    fitted, now = tool["_release_age"](split, ItemIndex.from_data(data), data)
    assert now == {"valid": {1: year, 2: 0}, "test": {1: 2 * year + 10, 2: 0}}
    # the gapped rows: user 1's first (user 2's only training row is its last, left out): one row at age 0
    assert fitted.rate[0 - prior.MIN_AGE] == pytest.approx(math.log(2 / 5))
    assert tool["_years"](np.array([0, year - 1, year])).tolist() == [1970, 1970, 1971]


def test_row_ranks_rank_each_rows_columns_by_descending_score_ties_in_column_order() -> None:
    ranks = M.row_ranks(np.array([[0.1, 0.9, 0.5], [2.0, 2.0, 1.0]]))
    assert ranks.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_ensemble_runs_fuses_rankings_by_reciprocal_rank() -> None:
    """tools/ensemble_runs.py: 1 / (60 + rank) summed over runs, and per-row z-scores summed."""
    tool = runpy.run_path(str(Path(__file__).parents[2] / "tools" / "ensemble_runs.py"))
    a, b = np.array([[3.0, 2.0, 1.0]]), np.array([[1.0, 3.0, 2.0]])
    fused = tool["rrf"]([a, b])
    assert fused[0].tolist() == pytest.approx([1 / 60 + 1 / 62, 1 / 61 + 1 / 60, 1 / 62 + 1 / 61])
    assert np.argmax(fused[0]) == 1  # ranked 2nd and 1st beats 1st and 3rd
    z = tool["zsum"]([a, 10 * a])
    assert z[0].tolist() == pytest.approx((2 * (a - a.mean()) / a.std())[0].tolist())


def test_throughput_revisions_imports_the_chosen_checkout(tmp_path: Path) -> None:
    """tools/throughput_revisions.py: its package folder makes `hybridrec` and its mapped subpackages (setuptools'
    package-dir) import from the given checkout, ahead of the editable install's working tree."""
    import subprocess

    root = Path(__file__).parents[2]
    tool = runpy.run_path(str(root / "tools" / "throughput_revisions.py"))
    checkout = tmp_path / "checkout"
    for part in ("hybridrec", *tool["SUBPACKAGES"]):
        (checkout / part).mkdir(parents=True)
        (checkout / part / "__init__.py").write_text(f"WHERE = {part!r}\n")
    pkg = tool["_package_root"](checkout, tmp_path / "pkg")
    code = "import hybridrec, hybridrec.training as t; print(hybridrec.WHERE, t.WHERE, t.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(pkg)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    where, training, path = out.stdout.split()
    assert (where, training) == ("hybridrec", "training")
    assert Path(path).resolve().parent == (checkout / "training").resolve()


def test_history_features_are_each_users_first_ratings_aligned_with_the_padded_history() -> None:
    from hybridrec.training.features import HistoryFeatures, pad_histories

    ratings = Ratings(
        user_ids=np.array([1, 1, 1, 2]),
        movie_ids=np.array([10, 11, 12, 10]),
        ratings=np.array([4.0, 2.5, 5.0, 3.0], np.float32),
        timestamps=np.array([100, 200, 300, 50]),
    )
    data = MovieLensData("ml-latest", Path("."), {}, ratings.chronological())
    feats = HistoryFeatures(data)
    rating, time = feats.pad([1, 2, 3], [3, 1, 0], 2, movies=[np.array([10, 11, 12]), np.array([10]), np.array([])])
    assert rating.tolist() == [[2.5, 5.0], [3.0, 0.0], [0.0, 0.0]]  # the last 2, padded at the end
    assert time.tolist() == [[200, 300], [50, 0], [0, 0]]
    assert pad_histories([np.array([10, 11, 12])], 2).tolist() == [[11, 12]]  # the same alignment as the ids
    with pytest.raises(ValueError, match="not the first 2"):
        feats.pad([1], [2], 4, movies=[np.array([11, 12])])
    with pytest.raises(ValueError, match="not the first 4"):
        feats.pad([1], [4], 4)


_PARENT_SCRIPT = """
import multiprocessing, os, sys, time

from hybridrec.training.evaluation.run import exit_with_parent


def child(parent):
    exit_with_parent(parent, period_s=0.05)
    print(os.getpid(), flush=True)
    time.sleep(120)


if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(),)).start()
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_evaluation_worker_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    """`hybridrec evaluate` stopped by SIGKILL/SIGTERM: its fit workers must not go on writing the cache beside a
    resumed run."""
    import subprocess
    import time

    script = tmp_path / "parent.py"
    script.write_text(_PARENT_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()

    def alive() -> bool:  # a zombie (exited, not yet reaped by init) counts as ended
        try:
            state = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()
