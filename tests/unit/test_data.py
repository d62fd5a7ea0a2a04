"""Unit tests for hybridrec.data on tiny synthetic MovieLens folders (all three layouts)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hybridrec import data as data_mod
from hybridrec.data import (
    DataFormatError,
    DataNotFoundError,
    Movie,
    MovieLensData,
    detect_layout,
    fetch_movielens,
    load_movielens,
    resolve_data_dir,
    summarize,
)

pytestmark = pytest.mark.unit

TMDB_HEADER = (
    "movieId,tmdbId,imdbId,title,overview,genres,cast,director,release_date,poster_path,ml_title,overview_source\n"
)


def write_ml_latest(root: Path, *, tmdb: bool = True, posters: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "5,Hamlet (1948),Drama\n"
        "3,Untitled,(no genres listed)\n",
        encoding="utf-8",
    )
    # user 1 rates movies 3 and 2 at the same second (file order 3 before 2); movie 99 is not in the catalog.
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "2,2,3.5,100\n"
        "1,3,4.0,50\n"
        "1,2,5.0,50\n"
        "1,1,3.0,10\n"
        "1,99,2.0,5\n"
        "2,1,4.5,200\n"
        "3,5,1.0,300\n",
        encoding="utf-8",
    )
    if tmdb:
        (root / "tmdb_metadata.csv").write_text(
            TMDB_HEADER
            + '1,862,0114709,Toy Story,"Woody, a cowboy doll,\nmeets Buzz.",Animation|Family,Tom Hanks|Tim Allen,'
            "John Lasseter,1995-10-30,/a.jpg,Toy Story (1995),T5K\n"
            '2,9087,0112346,The American President,,,,"Rob Reiner",11/17/95,,"American President, The (1995)",\n'
            "3,1,1,Untitled,Something.,Drama,,A|B,2001-02-03,,Untitled,SAT\n"
            "777,2,2,Not In Catalog,Ignored.,Drama,,,1999-01-01,,X (1999),SAT\n",
            encoding="utf-8",
        )
    if posters:
        (root / "posters").mkdir()
        (root / "posters" / "1.jpg").write_bytes(b"\xff\xd8fake")
        (root / "posters" / "2.jpg").write_bytes(b"\xff\xd8fake")
        (root / "posters" / "notes.txt").write_text("not a poster")
    return root


def item_line(mid: int, title: str, date: str, genres: set[int]) -> str:
    flags = "|".join("1" if i in genres else "0" for i in range(19))
    return f"{mid}|{title}|{date}||http://example.invalid/{mid}|{flags}\n"


def write_ml_100k(root: Path, *, genre_file: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("1\t2\t4\t881250949\n1\t1\t5\t881250949\n2\t3\t1\t875747190\n2\t9\t3\t1\n")
    (root / "u.item").write_bytes(
        (
            item_line(1, "Toy Story (1995)", "01-Jan-1995", {3, 4, 5})
            + item_line(2, "unknown", "", {0})
            + item_line(3, "Café Noir", "12-Mar-1990", {10, 8})
        ).encode("latin-1")
    )
    if genre_file:
        names = data_mod.ML100K_GENRES
        (root / "u.genre").write_text("".join(f"{n}|{i}\n" for i, n in enumerate(names)) + "\n", encoding="latin-1")
    return root


def write_ml_1m(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978300760\n2::1193::4::978298413\n")
    (root / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Jöle (1996)::Animation|Children's|Musical\n".encode(
            "latin-1"
        )
    )
    return root


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    return write_ml_latest(tmp_path / "ml-latest-small")


# ----------------------------------------------------------------------------------------------------------------------


def test_detect_layout(tmp_path: Path) -> None:
    assert detect_layout(write_ml_latest(tmp_path / "a")) == "ml-latest"
    assert detect_layout(write_ml_100k(tmp_path / "b")) == "ml-100k"
    assert detect_layout(write_ml_1m(tmp_path / "c")) == "ml-1m"
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing", tmp_path / "a" / "movies.csv"):
        with pytest.raises(DataNotFoundError) as exc:
            detect_layout(bad)
        assert str(bad) in str(exc.value)
        assert "hybridrec data fetch" in str(exc.value)


def test_load_ml_latest(ml_latest: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hybridrec.data"):
        d = load_movielens(str(ml_latest))
    assert isinstance(d, MovieLensData)
    assert d.layout == "ml-latest"
    assert d.root == ml_latest
    assert list(d.movies) == [1, 2, 3, 5]  # whole catalog, ascending movie id (file order was 1, 2, 5, 3)
    assert "dropped 1" in caplog.text  # the rating of movie 99

    toy = d.movies[1]
    assert toy == Movie(
        movie_id=1,
        title="Toy Story (1995)",
        genres=("Adventure", "Animation", "Children", "Family"),
        year=1995,
        overview="Woody, a cowboy doll,\nmeets Buzz.",
        cast=("Tom Hanks", "Tim Allen"),
        directors=("John Lasseter",),
        poster=ml_latest / "posters" / "1.jpg",
    )
    pres = d.movies[2]
    assert pres.title == "American President, The (1995)"
    assert pres.overview == "" and pres.cast == () and pres.directors == ("Rob Reiner",)
    assert pres.year == 1995  # "11/17/95" with the title year as century hint
    assert pres.poster == ml_latest / "posters" / "2.jpg"
    untitled = d.movies[3]
    assert untitled.genres == ("Drama",)  # "(no genres listed)" dropped, TMDB genre added
    assert untitled.year == 2001  # no title year: from the tmdb release date
    assert untitled.directors == ("A", "B")
    assert untitled.poster is None
    hamlet = d.movies[5]  # no tmdb row, no poster
    assert (hamlet.overview, hamlet.cast, hamlet.directors, hamlet.poster, hamlet.year) == ("", (), (), None, 1948)
    assert 777 not in d.movies

    r = d.ratings
    assert len(r) == 6
    assert r.user_ids.dtype == np.int64 and r.movie_ids.dtype == np.int64
    assert r.ratings.dtype == np.float32 and r.timestamps.dtype == np.int64
    assert r.user_ids.tolist() == [1, 1, 1, 2, 2, 3]
    assert r.movie_ids.tolist() == [1, 2, 3, 2, 1, 5]
    assert r.timestamps.tolist() == [10, 50, 50, 100, 200, 300]
    assert r.ratings.tolist() == [3.0, 5.0, 4.0, 3.5, 4.5, 1.0]


def test_histories_tie_break_by_movie_id(ml_latest: Path) -> None:
    h = load_movielens(ml_latest).histories()
    assert list(h) == [1, 2, 3]
    assert h[1].tolist() == [1, 2, 3]  # movies 2 and 3 share timestamp 50 -> ascending movie id
    assert h[2].tolist() == [2, 1]
    assert h[3].tolist() == [5]
    assert all(v.dtype == np.int64 for v in h.values())


def test_optional_side_info_missing(tmp_path: Path) -> None:
    d = load_movielens(write_ml_latest(tmp_path / "bare", tmdb=False, posters=False))
    assert all(m.poster is None and m.overview == "" and m.cast == () for m in d.movies.values())
    assert d.movies[3].year is None and d.movies[3].genres == ()
    assert d.movies[1].genres == ("Adventure", "Animation", "Children")


def test_subset_and_max_users(ml_latest: Path) -> None:
    d = load_movielens(ml_latest)
    s = d.subset(2, seed=123)
    assert sorted(s.histories()) == [1, 2]
    assert s.movies == d.movies  # full catalog kept
    assert len(s.ratings) == 5
    assert d.subset(10) is d
    m = load_movielens(ml_latest, max_users=1)
    assert list(m.histories()) == [1] and len(m.movies) == 4
    with pytest.raises(ValueError):
        d.subset(0)


def test_summarize(ml_latest: Path) -> None:
    assert summarize(load_movielens(ml_latest)) == {
        "layout": "ml-latest",
        "users": 3,
        "movies": 4,
        "ratings": 6,
        "rated_movies": 4,
        "with_poster": 2,
        "with_overview": 2,
    }


@pytest.mark.parametrize("genre_file", [True, False])
def test_load_ml_100k(tmp_path: Path, genre_file: bool, caplog: pytest.LogCaptureFixture) -> None:
    root = write_ml_100k(tmp_path / "ml-100k", genre_file=genre_file)
    (root / "posters").mkdir()
    (root / "posters" / "3.jpg").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="hybridrec.data"):
        d = load_movielens(root)
    assert d.layout == "ml-100k"
    assert list(d.movies) == [1, 2, 3]
    assert d.movies[1].genres == ("Animation", "Children's", "Comedy") and d.movies[1].year == 1995
    assert d.movies[2].genres == () and d.movies[2].year is None  # "unknown" dropped
    assert d.movies[3].title == "Café Noir" and d.movies[3].year == 1990  # from the u.item release date
    assert d.movies[3].genres == ("Drama", "Film-Noir") and d.movies[3].poster == root / "posters" / "3.jpg"
    assert {u: h.tolist() for u, h in d.histories().items()} == {1: [1, 2], 2: [3]}  # equal timestamps: by movie id
    assert d.ratings.ratings.tolist() == [5.0, 4.0, 1.0]
    assert "dropped 1" in caplog.text


def test_load_ml_1m(tmp_path: Path) -> None:
    d = load_movielens(write_ml_1m(tmp_path / "ml-1m"))
    assert d.layout == "ml-1m"
    assert list(d.movies) == [661, 1193]
    assert d.movies[661].title == "Jöle (1996)"
    assert d.movies[661].genres == ("Animation", "Children's", "Musical")
    h = d.histories()
    assert h[1].tolist() == [661, 1193]  # equal timestamps -> ascending movie id
    assert h[2].tolist() == [1193]


@pytest.mark.parametrize(
    ("layout", "filename", "content", "line"),
    [
        ("ml-latest", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n1,abc,4.0,6\n", 3),
        ("ml-latest", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n\n1,2,4.0\n", 4),
        ("ml-latest", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n2,1.5,4.0,7\n", 3),
        ("ml-latest", "movies.csv", "movieId,title,genres\n1,A (1999),Drama\nx,B (2000),Drama\n", 3),
        ("ml-latest", "movies.csv", "movieId,title,genres\n1,A (1999),Drama\n2,B, (2000),Drama\n", 3),
        ("ml-100k", "u.data", "1\t1\t5\t10\n1\t2\t5\n", 2),
        ("ml-100k", "u.item", "1|A (1995)|01-Jan-1995||url|0|1\n", 1),
        ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::1193::five::978300760\n", 2),
        ("ml-1m", "movies.dat", "1193::Title (1975)\n", 1),
    ],
)
def test_corrupt_rows_raise_data_format_error(
    tmp_path: Path, layout: str, filename: str, content: str, line: int
) -> None:
    writer = {"ml-latest": write_ml_latest, "ml-100k": write_ml_100k, "ml-1m": write_ml_1m}[layout]
    root = writer(tmp_path / layout)
    (root / filename).write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_movielens(root)
    msg = str(exc.value)
    assert filename in msg and f"line {line}" in msg


def test_tmdb_bad_movie_id_raises(ml_latest: Path) -> None:
    (ml_latest / "tmdb_metadata.csv").write_text(TMDB_HEADER + "one,1,1,t,o,g,c,d,1999-01-01,,t,SAT\n")
    with pytest.raises(DataFormatError, match=r"tmdb_metadata\.csv, line 2"):
        load_movielens(ml_latest)


# ----------------------------------------------------------------------------------------------------------------------
# resolve_data_dir


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_ml_latest(tmp_path / "explicit", tmdb=False, posters=False)
    env = write_ml_1m(tmp_path / "env")
    shared = write_ml_100k(tmp_path / "shared" / "data" / "movielens-small")
    cwd = tmp_path / "proj"
    (cwd / "data" / "ml-latest-small").mkdir(parents=True)
    write_ml_latest(cwd / "data" / "ml-latest-small", tmdb=False, posters=False)
    monkeypatch.setattr(data_mod, "__file__", str(tmp_path / "elsewhere" / "hybridrec" / "data.py"))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HYBRIDREC_DATA", str(env))

    assert resolve_data_dir(explicit) == explicit.resolve()
    assert resolve_data_dir(str(explicit)) == explicit.resolve()
    assert resolve_data_dir() == env.resolve()
    monkeypatch.delenv("HYBRIDREC_DATA")
    assert resolve_data_dir() == shared.resolve()  # ../shared/data/movielens-small relative to the CWD
    monkeypatch.setenv("HYBRIDREC_DATA", "")  # empty counts as unset
    assert resolve_data_dir(None) == shared.resolve()

    # repo-root candidate: relative to the package's parent folder, not the CWD
    (tmp_path / "shared").rename(tmp_path / "moved")
    repo = tmp_path / "repo"
    write_ml_1m(tmp_path / "shared" / "data" / "movielens-small")
    monkeypatch.setattr(data_mod, "__file__", str(repo / "hybridrec" / "data.py"))
    monkeypatch.chdir(tmp_path / "moved" / "data")  # its ../shared does not exist
    assert resolve_data_dir() == (tmp_path / "shared" / "data" / "movielens-small").resolve()

    # ./data/ml-latest-small as the last resort
    monkeypatch.setattr(data_mod, "__file__", str(tmp_path / "elsewhere" / "hybridrec" / "data.py"))
    (tmp_path / "shared").rename(tmp_path / "gone")
    monkeypatch.chdir(cwd)
    assert resolve_data_dir() == (cwd / "data" / "ml-latest-small").resolve()


def test_resolve_data_dir_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_ml_1m(tmp_path / "good")
    monkeypatch.setattr(data_mod, "__file__", str(tmp_path / "pkgroot" / "hybridrec" / "data.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRIDREC_DATA", str(good))
    # an explicit path that holds no dataset is an error, even though the env var points at a good one
    with pytest.raises(DataNotFoundError, match="--data"):
        resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv("HYBRIDREC_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="HYBRIDREC_DATA"):
        resolve_data_dir()
    monkeypatch.delenv("HYBRIDREC_DATA")
    with pytest.raises(DataNotFoundError) as exc:
        resolve_data_dir()
    msg = str(exc.value)
    assert isinstance(exc.value, FileNotFoundError)
    assert "hybridrec data fetch" in msg and "--data" in msg and "HYBRIDREC_DATA" in msg
    assert str((tmp_path / "data" / "ml-latest-small").resolve()) in msg
    assert str((tmp_path.parent / "shared" / "data" / "movielens-small").resolve()) in msg


# ----------------------------------------------------------------------------------------------------------------------
# fetch_movielens


def make_zip(tmp_path: Path, name: str = "ml-latest-small") -> Path:
    src = write_ml_latest(tmp_path / "src" / name, tmdb=False, posters=False)
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"{name}/{f.name}")
    return archive


def test_fetch_from_file_url(tmp_path: Path) -> None:
    archive = make_zip(tmp_path)
    dest = tmp_path / "dest"
    out = fetch_movielens(dest, url=archive.as_uri())
    assert out == dest / "ml-latest-small"
    assert detect_layout(out) == "ml-latest"
    assert len(load_movielens(out).ratings) == 6
    assert sorted(p.name for p in dest.iterdir()) == ["ml-latest-small"]  # no temp files left behind

    # already present: no download (a dead URL would fail otherwise)
    missing_url = (tmp_path / "does-not-exist" / "ml-latest-small.zip").as_uri()
    marker = out / "marker"
    marker.write_text("kept")
    assert fetch_movielens(dest, url=missing_url) == out
    assert marker.exists()

    # force: downloads again and replaces the folder
    with pytest.raises(DataNotFoundError, match="Could not download"):
        fetch_movielens(dest, url=missing_url, force=True)
    assert marker.exists()  # a failed fetch leaves the existing data alone
    assert fetch_movielens(dest, url=archive.as_uri(), force=True) == out
    assert not marker.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["ml-latest-small"]


def test_fetch_bad_zip(tmp_path: Path) -> None:
    bad = tmp_path / "ml-latest-small.zip"
    bad.write_bytes(b"this is not a zip file")
    dest = tmp_path / "dest"
    with pytest.raises(DataFormatError, match="zip"):
        fetch_movielens(dest, url=bad.as_uri())
    assert list(dest.iterdir()) == []
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("README.txt", "nothing here")
    with pytest.raises(DataFormatError, match="no MovieLens dataset"):
        fetch_movielens(dest, url=empty.as_uri())
    assert list(dest.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------------
# the real data pack (skipped when it is not available)


def test_real_pack_loads() -> None:
    try:
        root = resolve_data_dir()
    except DataNotFoundError as e:
        pytest.skip(f"no MovieLens data: {e}")
    d = load_movielens(root)
    if d.layout != "ml-latest" or len(d.movies) != 9742:
        pytest.skip(f"{root} is not the ml-latest-small pack")
    s = summarize(d)
    assert (s["users"], s["ratings"], s["movies"]) == (610, 100_836, 9_742)
    toy = d.movies[1]
    assert toy.poster is not None and toy.poster.is_file()
    assert toy.overview
