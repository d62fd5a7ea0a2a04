"""The `recommend` ensemble (whole-catalog retrieval -> rerank -> top-K) and cold-start items, on a live server."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridrec import spec
from hybridrec.client import InvalidRequestError, RecommenderClient
from hybridrec.export.catalog import CatalogEmbeddings, add_items, prune_catalog_versions, reference_recommend
from hybridrec.preprocessing import ItemMetadata, encode_history
from hybridrec.serving import TritonServer
from hybridrec.training.train import load_model


@pytest.fixture(scope="module")
def eager(tiny_run: Path):  # type: ignore[no-untyped-def]
    return load_model(tiny_run)[0]


def _fusion(model):  # type: ignore[no-untyped-def]
    def score(user: np.ndarray, cands: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.fusion_head(torch.from_numpy(user[None]), torch.from_numpy(cands[None]))[0].numpy()

    return score


def _eager_user(model, history: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.sequence_encoder(torch.from_numpy(history[None]))[0].numpy()  # type: ignore[no-any-return]


def test_catalog_embeddings_match_the_eager_item_encoder(exported_repo: Path, eager, catalog) -> None:  # type: ignore[no-untyped-def]
    cat = CatalogEmbeddings.load(exported_repo)
    rows = np.r_[2:34, len(cat.movie_ids) - 16 : len(cat.movie_ids)]  # vocabulary rows and cold rows
    feats = catalog.features([int(m) for m in cat.movie_ids[rows]])
    with torch.no_grad():
        want = eager.item_encoder.encode(*(torch.from_numpy(feats[t.name]) for t in spec.ITEM_INPUTS)).numpy()
    np.testing.assert_allclose(cat.embeddings[rows], want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_recommend_matches_eager_and_excludes_seen(live_server, exported_repo, eager, catalog, protocol) -> None:  # type: ignore[no-untyped-def]
    cat = CatalogEmbeddings.load(exported_repo)
    url = live_server.grpc_url if protocol == "grpc" else live_server.http_url
    with RecommenderClient(url, protocol, catalog=catalog) as client:
        for user in (1, 5, 17):
            movies = catalog.data.histories()[user].tolist()
            history = encode_history(movies, catalog.artifacts)
            ids, scores = client.recommend_tensors(history, 10)
            want_ids, want_scores = reference_recommend(_eager_user(eager, history), history, cat, _fusion(eager), 10)
            np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-4)
            # the same movies in the same order; a swap is allowed only between movies whose scores tie
            for i in np.flatnonzero(ids != want_ids):
                same = np.flatnonzero(want_ids == ids[i])
                tied = same.size and abs(want_scores[same[0]] - scores[i]) < 1e-5
                assert tied or abs(scores[i] - want_scores[-1]) < 1e-5, (user, i, ids, want_ids)
            assert len(ids) == 10 and not set(ids.tolist()) & set(movies[-spec.HISTORY_LENGTH :])
        result = client.recommend(catalog.data.histories()[1].tolist(), k=3)
        assert len(result.items) == 3 and all(it.title for it in result.items)


def test_recommend_k_is_clamped_and_validated(live_server, catalog) -> None:  # type: ignore[no-untyped-def]
    history = encode_history([1, 2, 3], catalog.artifacts)
    with RecommenderClient(live_server.grpc_url, catalog=catalog) as client:
        assert len(client.recommend_tensors(history, 0)[0]) == 1
        assert len(client.recommend_tensors(history, 10_000)[0]) == spec.RETRIEVAL_DEPTH
        with pytest.raises(InvalidRequestError):
            client.recommend([1, 2, 3], k=0)


@pytest.fixture(scope="module")
def cold_server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private copy of the repository, served with explicit model control so the catalog can be reloaded."""
    repo = tmp_path_factory.mktemp("cold") / "repo"
    shutil.copytree(exported_repo, repo)
    with TritonServer(repo, model_control_mode="explicit", extra_args=["--load-model=*"]) as server:
        yield server, repo


def test_cold_start_item_is_added_without_restart_and_recommended(cold_server, eager, catalog) -> None:  # type: ignore[no-untyped-def]
    server, repo = cold_server
    pid = server.pid
    cat = CatalogEmbeddings.load(repo)
    # A user whose history points at the new movie: one whose top-5 already holds a cold movie (no ratings in
    # training); the new movie gets that movie's poster and metadata under a brand-new id, so the model must rank it
    # next to it, from content alone.
    source, history_movies = None, None
    for movies in catalog.data.histories().values():
        history = encode_history(movies.tolist(), catalog.artifacts)
        ids, _ = reference_recommend(_eager_user(eager, history), history, cat, _fusion(eager), 5)
        cold = [int(m) for m in ids if catalog.artifacts.item_index(int(m)) == spec.UNK_ID]
        if cold:
            source, history_movies = cold[0], movies.tolist()
            break
    assert source is not None and history_movies is not None
    new_id = 10_000_000
    movie = (new_id, ItemMetadata.of(catalog.data.movies[source]), catalog.poster(source))
    history = encode_history(history_movies, catalog.artifacts)

    with RecommenderClient(server.grpc_url, catalog=catalog) as client:
        before, _ = client.recommend_tensors(history, 10)
        assert new_id not in before.tolist()
        # a new version of each catalog-state model, from the catalog + one new row
        rows, version = add_items(repo, [movie], prune=False)
        assert rows == [len(cat.movie_ids)] and version >= 2
        for m in spec.CATALOG_STATE_MODELS:
            client.load_model(m.name)
        prune_catalog_versions(repo, keep=version)
        after, scores = client.recommend_tensors(history, 10)
        # `rank` by id sees it too: the same item_lookup version
        by_id = client.rank_tensors(history, np.array([new_id, source]))
        np.testing.assert_allclose(by_id[0], by_id[1], rtol=0, atol=1e-5)  # a content twin scores like its source
        assert new_id in after.tolist(), (source, after)
        want_ids, want_scores = reference_recommend(
            _eager_user(eager, history), history, CatalogEmbeddings.load(repo), _fusion(eager), 10
        )
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-4)
        # same movies, but for a tie at the cut-off (the duplicate ties with its source; others can tie too)
        assert len(set(after.tolist()) ^ set(want_ids.tolist())) <= 2
        # the same new movie scored directly through `rank`, from its poster + metadata alone
        got = client.rank_items(history_movies, [(movie[1], movie[2])])
    with torch.no_grad():
        feats = {k: torch.from_numpy(v[None]) for k, v in catalog.features([source]).items()}
        want = eager.score(torch.from_numpy(history[None]), feats)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert server.pid == pid and server.alive  # served without a restart
