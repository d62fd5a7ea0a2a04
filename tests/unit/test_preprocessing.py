from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hybridrec import spec
from hybridrec.preprocessing import (
    Artifacts,
    ItemMetadata,
    PosterError,
    decode_poster,
    encode_history,
    item_features,
    stack_items,
    tokenize,
)


@pytest.fixture
def artifacts() -> Artifacts:
    return Artifacts(
        item_ids=(10, 20, 30),
        genres=("Comedy", "Drama"),
        people=("Tom Hanks",),
        words=("toys", "room"),
        word_idf=(1.5, 2.0),
        year_mean=1990.0,
        year_std=10.0,
        history_length=4,
    )


def test_history_is_recent_first_padded_and_maps_unknowns(artifacts: Artifacts) -> None:
    assert encode_history([10, 20], artifacts).tolist() == [2, 3, 0, 0]
    assert encode_history([10, 20, 30, 99, 10], artifacts).tolist() == [3, 4, spec.UNK_ID, 2]
    assert encode_history([], artifacts).tolist() == [0, 0, 0, 0]


def test_item_features_shapes_and_masks(artifacts: Artifacts) -> None:
    md = ItemMetadata(
        title="T", genres=("Drama", "Western"), year=2000, overview="The toys in a room.", cast=("Tom Hanks", "Nobody")
    )
    f = item_features(md, None, artifacts, artifacts.item_index(20))
    assert int(f["item_id"]) == 3
    assert f["meta"][1] == 1.0 and f["meta"][0] == 0.0
    assert f["meta"][spec.GENRE_SLOTS] == pytest.approx(1.0)  # (2000 - 1990) / 10
    assert f["meta"][spec.GENRE_SLOTS + 2] == 0.0  # no poster: masked, not faked
    assert f["people"][:2].tolist() == [2, spec.UNK_ID]
    assert f["overview"][:2].tolist() == [2, 3]
    batch = stack_items([f, f])
    for t in spec.ITEM_INPUTS:
        t.check(batch[t.name][None])


def test_poster_decoding_resizes_and_rejects_garbage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    Image.new("RGB", (300, 450), (255, 0, 0)).save(buf, "JPEG")
    arr = decode_poster(buf.getvalue())
    assert arr.shape == (3, spec.IMAGE_HEIGHT, spec.IMAGE_WIDTH) and arr.dtype == np.uint8
    assert arr[0].mean() > 200 and arr[2].mean() < 50
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(PosterError, match=r"bad.jpg"):
        decode_poster(bad)
    with pytest.raises(PosterError):
        decode_poster(tmp_path / "missing.jpg")


def test_artifacts_roundtrip(tmp_path, artifacts: Artifacts) -> None:  # type: ignore[no-untyped-def]
    artifacts.save(tmp_path)
    again = Artifacts.load(tmp_path)
    assert again == artifacts
    assert again.item_index(30) == 4 and again.movie_id(4) == 30


def test_tokenize_drops_stopwords() -> None:
    assert tokenize("The Toys, in Andy's room!") == ["toys", "andy's", "room"]


_VOCAB_SCRIPT = """
from types import SimpleNamespace
from hybridrec.data import Movie
from hybridrec.preprocessing import fit_artifacts
overviews = ["alpha bravo charlie delta echo", "foxtrot golf hotel india juliet", "kilo lima mike november oscar"]
movies = {i: Movie(i, f"m{i}", ("Drama",), 1990, overviews[i % 3], ("Ann", "Bob", "Cy")) for i in range(6)}
a = fit_artifacts(SimpleNamespace(movies=movies), movies, max_words=7, max_people=2)  # type: ignore[arg-type]
print(a.words, a.people)
"""


def test_the_vocabulary_does_not_depend_on_the_processs_string_hashing() -> None:
    """Overview words come from sets, whose order follows PYTHONHASHSEED; ties at the same count used to keep that
    order, so every process fitted its own word table and one seed did not reproduce its fit."""
    import os
    import subprocess
    import sys

    out = {
        subprocess.run(
            [sys.executable, "-c", _VOCAB_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert out == {"('alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf') ('Ann', 'Bob')\n"}
