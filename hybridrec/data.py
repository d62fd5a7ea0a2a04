"""MovieLens loading: ratings, movie catalog and optional side information (TMDB metadata, posters).

Supported layouts (detected from the files present in the dataset folder, see :func:`detect_layout`):

* ``ml-latest`` (e.g. ml-latest-small): ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
  (movieId,title,genres with ``|`` separators). Optional extras in the same folder: ``tmdb_metadata.csv``
  (overview, TMDB genres, cast, director, release_date) and ``posters/<movieId>.jpg``.
* ``ml-100k``: ``u.data`` (tab-separated user, item, rating, timestamp), ``u.item`` (pipe-separated, latin-1, 19 genre
  flags) and optionally ``u.genre``.
* ``ml-1m``: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat`` (``MovieID::Title::Genres``,
  latin-1).

``tmdb_metadata.csv`` and ``posters/`` are used for every layout when present (keyed by the layout's own movie ids);
both are optional.

Chronological order (the documented tie-break): each user's ratings are ordered by ``(timestamp, movieId)``, i.e.
ratings with equal timestamps are ordered by ascending movie id. :class:`Ratings` arrays produced by the loaders are
sorted by ``(userId, timestamp, movieId)``, and :meth:`MovieLensData.histories` returns movie ids in that order.

Ratings that reference a movie missing from the catalog file are dropped (a warning with their count is logged).
Corrupt rows in the ratings or catalog files (wrong number of fields, non-numeric ids/ratings/timestamps) raise
:class:`DataFormatError` naming the file and line number.

This module needs only the standard library and numpy (no torch).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "LAYOUTS",
    "DataFormatError",
    "DataNotFoundError",
    "DatasetTooSmallError",
    "Movie",
    "MovieLensData",
    "Ratings",
    "detect_layout",
    "fetch_movielens",
    "load_movielens",
    "resolve_data_dir",
    "summarize",
]

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
ENV_VAR = "HYBRIDREC_DATA"

# layout name -> files that must all exist in the dataset folder (checked in this order)
LAYOUTS: dict[str, tuple[str, str]] = {
    "ml-latest": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
}

ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_NO_GENRES = {"(no genres listed)", "unknown", ""}
_TITLE_YEAR = re.compile(r"\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")
_ISO_DATE = re.compile(r"(\d{4})(?:-\d{1,2}(?:-\d{1,2})?)?(?:[T ].*)?")
_US_DATE = re.compile(r"\d{1,2}/\d{1,2}/(\d{2}|\d{4})")
_ML100K_DATE = re.compile(r"\d{1,2}-[A-Za-z]{3}-(\d{4})")
_MIN_YEAR, _MAX_YEAR = 1870, 2100

_HOW_TO_GET = (
    "Get the data with `hybridrec data fetch` (downloads MovieLens ml-latest-small), or point the --data flag or the "
    f"{ENV_VAR} environment variable at a folder holding ratings.csv+movies.csv (ml-latest), u.data+u.item (ml-100k) "
    "or ratings.dat+movies.dat (ml-1m)."
)


class DataNotFoundError(FileNotFoundError):
    """No usable dataset where we looked (or the download failed). The message says where and how to get data."""


class DataFormatError(ValueError):
    """A data file is corrupt or cannot be parsed. The message names the file and, where known, the line."""


class DatasetTooSmallError(DataFormatError, DataNotFoundError):
    """The dataset parses but is too small to train on (no ratings, no user with enough ratings for the split, no
    training examples). The message says what is missing. A DataFormatError (the data is unusable as given) and,
    like DataNotFoundError, a FileNotFoundError (no usable dataset), so `hybridrec` reports it in one line."""


# ----------------------------------------------------------------------------------------------------------------------
# data classes


@dataclass(frozen=True)
class Movie:
    movie_id: int
    title: str  # display title incl. year as in MovieLens, e.g. "Toy Story (1995)"
    genres: tuple[str, ...]  # MovieLens genres, then TMDB genres not already present (order-stable)
    year: int | None  # tmdb release_date, else "(1995)" title suffix, else ml-100k release date
    overview: str = ""
    cast: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()
    poster: Path | None = None  # <root>/posters/<movieId>.jpg when that file exists


@dataclass(frozen=True)
class Ratings:
    """Parallel arrays, one row per rating. Loaders sort them by (userId, timestamp, movieId)."""

    user_ids: np.ndarray  # int64
    movie_ids: np.ndarray  # int64
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64, unix seconds

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if not (len(self.movie_ids) == len(self.ratings) == len(self.timestamps) == n):
            raise ValueError(
                "Ratings arrays must have equal lengths, got "
                f"{n}, {len(self.movie_ids)}, {len(self.ratings)}, {len(self.timestamps)}"
            )

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, index: np.ndarray) -> Ratings:
        """Rows selected by an integer index array or boolean mask (order as given)."""
        return Ratings(
            user_ids=self.user_ids[index],
            movie_ids=self.movie_ids[index],
            ratings=self.ratings[index],
            timestamps=self.timestamps[index],
        )

    def chronological(self) -> Ratings:
        """These ratings sorted by (userId, timestamp, movieId); returns self when already in that order."""
        order = np.lexsort((self.movie_ids, self.timestamps, self.user_ids))
        if np.array_equal(order, np.arange(len(order))):
            return self
        return self.take(order)


@dataclass(frozen=True)
class MovieLensData:
    layout: str  # "ml-latest" | "ml-100k" | "ml-1m"
    root: Path
    movies: dict[int, Movie]  # the full catalog, insertion-ordered by movie_id ascending
    ratings: Ratings

    def histories(self) -> dict[int, np.ndarray]:
        """userId -> int64 array of the user's movie ids in chronological order (ties: ascending movieId).

        Users ascending.
        """
        return {u: r.movie_ids.astype(np.int64, copy=True) for u, r in self.user_ratings().items()}

    def user_ratings(self) -> dict[int, Ratings]:
        """userId -> the user's ratings in the order of :meth:`histories` (their ratings and timestamps aligned).

        Users ascending.
        """
        r = self.ratings.chronological()
        if len(r) == 0:
            return {}
        boundaries = np.flatnonzero(np.diff(r.user_ids)) + 1
        starts = np.concatenate(([0], boundaries))
        ends = np.append(boundaries, len(r))
        return {  # views into one sorted copy: no per-user copies
            int(r.user_ids[a]): Ratings(r.user_ids[a:b], r.movie_ids[a:b], r.ratings[a:b], r.timestamps[a:b])
            for a, b in zip(starts, ends, strict=True)
        }

    def subset(self, max_users: int, seed: int = 0) -> MovieLensData:
        """The first ``max_users`` users by id with all their ratings (deterministic; ``seed`` is unused).

        The full movie catalog is kept.
        """
        del seed  # deterministic by construction
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        users = np.unique(self.ratings.user_ids)
        if len(users) <= max_users:
            return self
        keep = np.isin(self.ratings.user_ids, users[:max_users])
        return dataclasses.replace(self, ratings=self.ratings.take(keep))


# ----------------------------------------------------------------------------------------------------------------------
# layout detection and data-folder resolution


def detect_layout(root: Path) -> str:
    """'ml-latest', 'ml-100k' or 'ml-1m' from the files present in ``root``; DataNotFoundError otherwise."""
    root = Path(root)
    if root.is_dir():
        for layout, files in LAYOUTS.items():
            if all((root / f).is_file() for f in files):
                return layout
        where = f"{root} has none of ratings.csv+movies.csv, u.data+u.item, ratings.dat+movies.dat"
    elif root.exists():
        where = f"{root} is not a directory"
    else:
        where = f"{root} does not exist"
    raise DataNotFoundError(f"No MovieLens dataset found: {where}. {_HOW_TO_GET}")


def _check_dataset_dir(path: Path) -> str | None:
    """None when ``path`` holds a dataset, else the reason it does not."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is not a directory"
    try:
        detect_layout(path)
    except DataNotFoundError:
        return "no ratings.csv+movies.csv, u.data+u.item or ratings.dat+movies.dat there"
    return None


def _default_candidates() -> list[Path]:
    cands = [
        Path.cwd() / ".." / "shared" / "data" / "movielens-small",
        Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "movielens-small",
        Path.cwd() / "data" / "ml-latest-small",
    ]
    seen: set[Path] = set()
    out: list[Path] = []
    for c in cands:
        key = c.resolve()  # also normalises "..", so a missing intermediate folder does not hide the candidate
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The dataset folder to use: ``explicit`` (the --data flag), else $HYBRIDREC_DATA, else the first of
    ``../shared/data/movielens-small`` (relative to the CWD, then to the repository root) and ``./data/ml-latest-small``
    that holds a dataset. An explicit or environment path that holds no dataset is an error (no fall-through).

    Raises DataNotFoundError listing everything that was tried.
    """
    if explicit is not None and str(explicit) != "":
        p = Path(explicit).expanduser()
        reason = _check_dataset_dir(p)
        if reason is None:
            return p.resolve()
        raise DataNotFoundError(_not_found_message([f"--data {p}: {reason}"]))
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        p = Path(env).expanduser()
        reason = _check_dataset_dir(p)
        if reason is None:
            return p.resolve()
        raise DataNotFoundError(_not_found_message([f"${ENV_VAR}={env}: {reason}"]))
    tried = []
    for cand in _default_candidates():
        reason = _check_dataset_dir(cand)
        if reason is None:
            return cand
        tried.append(f"{cand}: {reason}")
    raise DataNotFoundError(_not_found_message([f"--data / ${ENV_VAR}: not set", *tried]))


def _not_found_message(tried: Sequence[str]) -> str:
    lines = "\n".join(f"  - {t}" for t in tried)
    return f"No MovieLens data found. Tried:\n{lines}\n{_HOW_TO_GET}"


# ----------------------------------------------------------------------------------------------------------------------
# low-level parsing helpers


def _read_text(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFormatError(f"{path}, line {line}: not valid {encoding} text ({e.reason})") from e
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _read_numeric_table(
    path: Path,
    *,
    sep: str,
    columns: Sequence[tuple[str, str]],
    has_header: bool,
    encoding: str = "utf-8",
) -> list[np.ndarray]:
    """Parse a delimiter-separated file of numbers without per-value Python overhead.

    ``columns`` are (name, kind) pairs, kind "i" (int64) or "f" (float64). With a header the columns are found by name
    (extra columns are allowed); without one they are the first ``len(columns)`` fields and the count must match.
    Blank lines are skipped. Any malformed row raises DataFormatError with its 1-based line number.
    """
    text = _read_text(path, encoding)
    lines = text.split("\n")
    first = 0
    if has_header:
        while first < len(lines) and not lines[first].strip():
            first += 1
        if first == len(lines):
            raise DataFormatError(f"{path}: empty file (expected a header line)")
        header = [h.strip() for h in lines[first].split(sep)]
        missing = [name for name, _ in columns if name not in header]
        if missing:
            raise DataFormatError(f"{path}, line {first + 1}: header {lines[first]!r} lacks column(s) {missing}")
        positions = [header.index(name) for name, _ in columns]
        ncols = len(header)
        first += 1
    else:
        positions = list(range(len(columns)))
        ncols = len(columns)
    rows = [ln for ln in lines[first:] if ln and not ln.isspace()]
    nsep = ncols - 1
    if not rows:
        return [np.zeros(0, dtype=np.int64 if kind == "i" else np.float64) for _, kind in columns]
    if any(ln.count(sep) != nsep for ln in rows):
        _raise_first_bad_row(path, lines, first, sep, ncols, columns, positions)
    body = ",".join(rows) if sep == "," else "\n".join(rows).replace(sep, ",")
    body = body.replace("\n", ",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fromstring warns (and stops) at unparseable data; we check the count
        values = np.fromstring(body, dtype=np.float64, sep=",")
    if values.size != len(rows) * ncols:
        _raise_first_bad_row(path, lines, first, sep, ncols, columns, positions)
    table = values.reshape(len(rows), ncols)
    out: list[np.ndarray] = []
    for (_, kind), pos in zip(columns, positions, strict=True):
        col = table[:, pos]
        if kind == "i":
            if not (np.all(np.isfinite(col)) and np.all(col == np.floor(col)) and np.all(np.abs(col) < 2.0**53)):
                _raise_first_bad_row(path, lines, first, sep, ncols, columns, positions)
            out.append(col.astype(np.int64))
        else:
            if not np.all(np.isfinite(col)):
                _raise_first_bad_row(path, lines, first, sep, ncols, columns, positions)
            out.append(np.ascontiguousarray(col))
    return out


def _raise_first_bad_row(
    path: Path,
    lines: Sequence[str],
    first: int,
    sep: str,
    ncols: int,
    columns: Sequence[tuple[str, str]],
    positions: Sequence[int],
) -> None:
    """Slow path: find the first malformed row and raise DataFormatError for it."""
    for idx in range(first, len(lines)):
        ln = lines[idx]
        if not ln or ln.isspace():
            continue
        lineno = idx + 1
        fields = ln.split(sep)
        if len(fields) != ncols:
            raise DataFormatError(f"{path}, line {lineno}: expected {ncols} fields, got {len(fields)}: {ln[:120]!r}")
        for (name, kind), pos in zip(columns, positions, strict=True):
            value = fields[pos].strip()
            try:
                if kind == "i":
                    int(value)
                elif not math.isfinite(float(value)):
                    raise ValueError(value)
            except ValueError:
                what = "an integer" if kind == "i" else "a finite number"
                raise DataFormatError(f"{path}, line {lineno}: field {name!r} is not {what}: {fields[pos]!r}") from None
    raise DataFormatError(f"{path}: could not parse the numeric table")


def _csv_rows(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, list[str]]]:
    """(first line number of the record, fields) for each non-blank CSV record, with decoding errors as
    DataFormatError."""
    try:
        with path.open("r", encoding=encoding, newline="") as fh:
            reader = csv.reader(fh)
            start = 1
            try:
                for row in reader:
                    if row:
                        yield start, row
                    start = reader.line_num + 1
            except csv.Error as e:
                raise DataFormatError(f"{path}, line {reader.line_num}: {e}") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not valid {encoding} text ({e.reason})") from e


def _parse_int(path: Path, lineno: int, name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise DataFormatError(f"{path}, line {lineno}: field {name!r} is not an integer: {value!r}") from None


def _split_list(value: str, sep: str = "|") -> tuple[str, ...]:
    return tuple(s for s in (p.strip() for p in value.split(sep)) if s)


def _merge_genres(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for g in (*first, *second):
        if g not in _NO_GENRES and g not in out:
            out.append(g)
    return tuple(out)


def _title_year(title: str) -> int | None:
    m = _TITLE_YEAR.search(title)
    return _plausible_year(int(m.group(1))) if m else None


def _plausible_year(year: int) -> int | None:
    return year if _MIN_YEAR <= year <= _MAX_YEAR else None


def _release_year(value: str, hint: int | None = None) -> int | None:
    """Year of a release date: ISO "YYYY-MM-DD" (or "YYYY"), US "M/D/YY" or "M/D/YYYY", ml-100k "01-Jan-1995".

    Two-digit years take the century closest to ``hint`` (the title year), else 20YY for YY <= 30, else 19YY.
    """
    value = value.strip()
    if not value:
        return None
    if m := _ISO_DATE.fullmatch(value):
        return _plausible_year(int(m.group(1)))
    if m := _US_DATE.fullmatch(value):
        digits = m.group(1)
        if len(digits) == 4:
            return _plausible_year(int(digits))
        yy = int(digits)
        if hint is not None:
            return min((1900 + yy, 2000 + yy), key=lambda y: abs(y - hint))
        return 2000 + yy if yy <= 30 else 1900 + yy
    if m := _ML100K_DATE.fullmatch(value):
        return _plausible_year(int(m.group(1)))
    return None


# ----------------------------------------------------------------------------------------------------------------------
# catalog readers: movie_id -> (title, genres, fallback release date)


@dataclass(frozen=True)
class _CatalogRow:
    title: str
    genres: tuple[str, ...]
    release_date: str = ""  # ml-100k only


@dataclass(frozen=True)
class _Tmdb:
    overview: str
    genres: tuple[str, ...]
    cast: tuple[str, ...]
    directors: tuple[str, ...]
    release_date: str


def _add_catalog_row(catalog: dict[int, _CatalogRow], path: Path, lineno: int, mid: int, row: _CatalogRow) -> None:
    if mid in catalog:
        raise DataFormatError(f"{path}, line {lineno}: duplicate movie id {mid}")
    catalog[mid] = row


def _read_movies_csv(path: Path) -> dict[int, _CatalogRow]:
    catalog: dict[int, _CatalogRow] = {}
    rows = _csv_rows(path)
    header = next(rows, None)
    if header is None:
        raise DataFormatError(f"{path}: empty file (expected header movieId,title,genres)")
    hline, names = header
    names = [n.strip() for n in names]
    missing = [c for c in ("movieId", "title", "genres") if c not in names]
    if missing:
        raise DataFormatError(f"{path}, line {hline}: header {names} lacks column(s) {missing}")
    i_id, i_title, i_genres = names.index("movieId"), names.index("title"), names.index("genres")
    for lineno, row in rows:
        if len(row) != len(names):
            raise DataFormatError(f"{path}, line {lineno}: expected {len(names)} fields, got {len(row)}: {row!r}")
        mid = _parse_int(path, lineno, "movieId", row[i_id])
        _add_catalog_row(catalog, path, lineno, mid, _CatalogRow(row[i_title].strip(), _split_list(row[i_genres])))
    return catalog


def _read_ml100k_genres(root: Path) -> tuple[str, ...]:
    path = root / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    pairs: list[tuple[int, str]] = []
    for idx, ln in enumerate(_read_text(path, "latin-1").split("\n")):
        if not ln.strip():
            continue
        fields = ln.split("|")
        if len(fields) != 2:
            raise DataFormatError(f"{path}, line {idx + 1}: expected 'name|index', got {ln!r}")
        pairs.append((_parse_int(path, idx + 1, "index", fields[1]), fields[0].strip()))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DataFormatError(f"{path}: genre indices are not 0..{len(pairs) - 1}")
    return tuple(name for _, name in pairs)


def _read_u_item(path: Path, genre_names: Sequence[str]) -> dict[int, _CatalogRow]:
    catalog: dict[int, _CatalogRow] = {}
    ncols = 5 + len(genre_names)
    for idx, ln in enumerate(_read_text(path, "latin-1").split("\n")):
        if not ln.strip():
            continue
        lineno = idx + 1
        fields = ln.split("|")
        if len(fields) != ncols:
            raise DataFormatError(f"{path}, line {lineno}: expected {ncols} fields, got {len(fields)}: {ln[:120]!r}")
        mid = _parse_int(path, lineno, "movie id", fields[0])
        flags = fields[5:]
        if any(f.strip() not in ("0", "1") for f in flags):
            raise DataFormatError(f"{path}, line {lineno}: genre flags must be 0 or 1: {flags}")
        genres = tuple(g for g, f in zip(genre_names, flags, strict=True) if f.strip() == "1" and g not in _NO_GENRES)
        _add_catalog_row(catalog, path, lineno, mid, _CatalogRow(fields[1].strip(), genres, fields[2].strip()))
    return catalog


def _read_movies_dat(path: Path) -> dict[int, _CatalogRow]:
    catalog: dict[int, _CatalogRow] = {}
    for idx, ln in enumerate(_read_text(path, "latin-1").split("\n")):
        if not ln.strip():
            continue
        lineno = idx + 1
        fields = ln.split("::")
        if len(fields) != 3:
            raise DataFormatError(f"{path}, line {lineno}: expected 3 '::'-separated fields, got {len(fields)}")
        mid = _parse_int(path, lineno, "MovieID", fields[0])
        _add_catalog_row(catalog, path, lineno, mid, _CatalogRow(fields[1].strip(), _split_list(fields[2])))
    return catalog


def _read_tmdb(path: Path, wanted: set[int] | dict[int, Any]) -> dict[int, _Tmdb]:
    """tmdb_metadata.csv rows for movie ids in ``wanted`` (others ignored). Missing columns read as empty."""
    out: dict[int, _Tmdb] = {}
    rows = _csv_rows(path)
    header = next(rows, None)
    if header is None:
        return out
    hline, names = header
    names = [n.strip() for n in names]
    if "movieId" not in names:
        raise DataFormatError(f"{path}, line {hline}: header lacks column 'movieId'")
    col = {n: i for i, n in enumerate(names)}
    i_id = col["movieId"]

    def get(row: list[str], name: str) -> str:
        i = col.get(name)
        return row[i].strip() if i is not None else ""

    for lineno, row in rows:
        if len(row) != len(names):
            raise DataFormatError(f"{path}, line {lineno}: expected {len(names)} fields, got {len(row)}")
        mid = _parse_int(path, lineno, "movieId", row[i_id])
        if mid not in wanted or mid in out:
            continue
        out[mid] = _Tmdb(
            overview=get(row, "overview"),
            genres=_split_list(get(row, "genres")),
            cast=_split_list(get(row, "cast")),
            directors=_split_list(get(row, "director")),
            release_date=get(row, "release_date"),
        )
    return out


def _poster_ids(root: Path) -> set[int]:
    posters = root / "posters"
    if not posters.is_dir():
        return set()
    ids: set[int] = set()
    with os.scandir(posters) as it:
        for entry in it:
            stem, dot, ext = entry.name.rpartition(".")
            if dot and ext == "jpg" and stem.isdigit() and entry.is_file():
                ids.add(int(stem))
    return ids


def _build_movies(root: Path, catalog: dict[int, _CatalogRow]) -> dict[int, Movie]:
    tmdb_path = root / "tmdb_metadata.csv"
    tmdb = _read_tmdb(tmdb_path, catalog) if tmdb_path.is_file() else {}
    posters = _poster_ids(root)
    poster_dir = root / "posters"
    empty = _Tmdb("", (), (), (), "")
    movies: dict[int, Movie] = {}
    for mid in sorted(catalog):
        row = catalog[mid]
        extra = tmdb.get(mid, empty)
        title_year = _title_year(row.title)
        year = _release_year(extra.release_date, hint=title_year)
        if year is None:
            year = title_year
        if year is None:
            year = _release_year(row.release_date)
        movies[mid] = Movie(
            movie_id=mid,
            title=row.title,
            genres=_merge_genres(row.genres, extra.genres),
            year=year,
            overview=extra.overview,
            cast=extra.cast,
            directors=extra.directors,
            poster=poster_dir / f"{mid}.jpg" if mid in posters else None,
        )
    return movies


# ----------------------------------------------------------------------------------------------------------------------
# loading


_RATING_COLUMNS = {
    "ml-latest": (("userId", "i"), ("movieId", "i"), ("rating", "f"), ("timestamp", "i")),
    "ml-100k": (("user id", "i"), ("item id", "i"), ("rating", "f"), ("timestamp", "i")),
    "ml-1m": (("UserID", "i"), ("MovieID", "i"), ("Rating", "f"), ("Timestamp", "i")),
}


def _read_ratings(root: Path, layout: str) -> Ratings:
    columns = _RATING_COLUMNS[layout]
    if layout == "ml-latest":
        arrays = _read_numeric_table(root / "ratings.csv", sep=",", columns=columns, has_header=True)
    elif layout == "ml-100k":
        arrays = _read_numeric_table(root / "u.data", sep="\t", columns=columns, has_header=False, encoding="latin-1")
    else:
        arrays = _read_numeric_table(
            root / "ratings.dat", sep="::", columns=columns, has_header=False, encoding="latin-1"
        )
    users, items, values, stamps = arrays
    return Ratings(
        user_ids=users.astype(np.int64, copy=False),
        movie_ids=items.astype(np.int64, copy=False),
        ratings=values.astype(np.float32),
        timestamps=stamps.astype(np.int64, copy=False),
    )


def load_movielens(root: str | Path, max_users: int | None = None) -> MovieLensData:
    """Load the dataset in ``root`` (any supported layout) with its optional TMDB metadata and posters.

    Ratings of movies missing from the catalog are dropped (logged). ``max_users`` keeps the first users by id.
    """
    root = Path(root).expanduser()
    layout = detect_layout(root)
    if layout == "ml-latest":
        catalog = _read_movies_csv(root / "movies.csv")
    elif layout == "ml-100k":
        catalog = _read_u_item(root / "u.item", _read_ml100k_genres(root))
    else:
        catalog = _read_movies_dat(root / "movies.dat")
    movies = _build_movies(root, catalog)
    ratings = _read_ratings(root, layout)
    known = np.isin(ratings.movie_ids, np.fromiter(movies.keys(), dtype=np.int64, count=len(movies)))
    n_unknown = int(len(known) - np.count_nonzero(known))
    if n_unknown:
        n_ids = len(np.unique(ratings.movie_ids[~known]))
        logger.warning(
            "%s: dropped %d of %d ratings that reference %d movie id(s) missing from the catalog",
            root,
            n_unknown,
            len(known),
            n_ids,
        )
        ratings = ratings.take(known)
    data = MovieLensData(layout=layout, root=root, movies=movies, ratings=ratings.chronological())
    if max_users is not None:
        data = data.subset(max_users)
    return data


def summarize(data: MovieLensData) -> dict[str, Any]:
    """Counts for display: users, movies, ratings, rated_movies, with_poster, with_overview, layout."""
    return {
        "layout": data.layout,
        "users": len(np.unique(data.ratings.user_ids)),
        "movies": len(data.movies),
        "ratings": len(data.ratings),
        "rated_movies": len(np.unique(data.ratings.movie_ids)),
        "with_poster": sum(1 for m in data.movies.values() if m.poster is not None),
        "with_overview": sum(1 for m in data.movies.values() if m.overview),
    }


# ----------------------------------------------------------------------------------------------------------------------
# download


def _archive_stem(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    stem = name[: -len(".zip")] if name.lower().endswith(".zip") else name
    return stem or "movielens"


def _find_dataset_dir(top: Path, prefer: str) -> Path | None:
    preferred = top / prefer
    if _check_dataset_dir(preferred) is None:
        return preferred
    if _check_dataset_dir(top) is None:
        return top
    for depth1 in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))):
        if _check_dataset_dir(depth1) is None:
            return depth1
    return None


def fetch_movielens(dest: str | Path, url: str = DEFAULT_URL, force: bool = False, timeout: float = 60.0) -> Path:
    """Download a MovieLens zip (any urllib URL, file:// included) and extract it into ``dest``.

    Returns the dataset folder (e.g. ``dest/ml-latest-small``). If it already holds a dataset, nothing is downloaded
    unless ``force``. The archive goes to a temporary file and is extracted into a temporary folder that is moved
    into place only when complete, so an interrupted fetch never leaves a half dataset behind.
    Network failures raise DataNotFoundError; a corrupt archive raises DataFormatError.
    """
    dest = Path(dest).expanduser()
    stem = _archive_stem(url)
    target = dest / stem
    if not force and _check_dataset_dir(target) is None:
        logger.info("%s already holds a MovieLens dataset; not downloading (use force to re-fetch)", target)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}-", suffix=".zip.part", dir=dest)
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        logger.info("downloading %s", url)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out, length=1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DataNotFoundError(
                f"Could not download {url}: {e}. Check the network (or the URL), or download and unzip the archive "
                f"by hand and point the --data flag or ${ENV_VAR} at the extracted folder."
            ) from e
        try:
            with zipfile.ZipFile(tmp_zip) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise DataFormatError(f"{url}: corrupt member {bad!r} in the zip archive")
                tmp_dir = Path(tempfile.mkdtemp(prefix=f".{stem}-", suffix=".extract", dir=dest))
                zf.extractall(tmp_dir)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
            raise DataFormatError(f"{url}: not a valid zip archive ({e})") from e
        found = _find_dataset_dir(tmp_dir, stem)
        if found is None:
            raise DataFormatError(f"{url}: the archive holds no MovieLens dataset (no ratings/movies files found)")
        final = dest / (found.name if found != tmp_dir else stem)
        if final.exists():
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink()
        os.replace(found, final)
        logger.info("MovieLens data extracted to %s", final)
        return final
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None and tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
