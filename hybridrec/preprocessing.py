"""The one preprocessing module: fitted artifacts and the feature code used by training, export, serving and the client.

Nothing here imports torch, so the client library can build exactly the tensors the models were trained on.
Fitted state (id maps, genre/people/word vocabularies, IDF weights, year scaling, image spec) lives in
:class:`Artifacts`, saved as ``artifacts.json`` beside every checkpoint and read back by everyone else.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hybridrec import spec

if TYPE_CHECKING:
    from hybridrec.data import Movie, MovieLensData

log = logging.getLogger(__name__)

ARTIFACTS_FILE = "artifacts.json"
ARTIFACTS_VERSION = 1

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Small English stop list: these carry no content signal in plot summaries and would dominate a short token budget.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "were",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "while",
        "into",
        "after",
        "before",
        "than",
        "then",
        "there",
        "these",
        "those",
        "been",
        "being",
        "not",
        "but",
        "all",
        "can",
        "one",
        "two",
        "out",
        "up",
        "so",
        "if",
        "what",
        "about",
        "over",
        "only",
    ]
)


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS and len(t) > 1]


@dataclass(frozen=True)
class ImageSpec:
    height: int = spec.IMAGE_HEIGHT
    width: int = spec.IMAGE_WIDTH
    channels: int = spec.IMAGE_CHANNELS
    # ImageNet statistics; applied inside the ONNX graph so clients send raw UINT8 pixels.
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Artifacts:
    """Everything fitted on the training data that turns raw movies and histories into model inputs."""

    item_ids: tuple[int, ...]  # movieIds with a learned id row; index = FIRST_ID + position
    genres: tuple[str, ...]  # <= GENRE_SLOTS names, slot = position
    people: tuple[str, ...]  # cast/director names; id = FIRST_ID + position
    words: tuple[str, ...]  # overview vocabulary; id = FIRST_ID + position
    word_idf: tuple[float, ...]  # IDF per word (same order), used as TF-IDF weights in-graph
    year_mean: float
    year_std: float
    image: ImageSpec = field(default_factory=ImageSpec)
    history_length: int = spec.HISTORY_LENGTH
    version: int = ARTIFACTS_VERSION

    # --- sizes the models need ---
    @property
    def num_items(self) -> int:
        return spec.FIRST_ID + len(self.item_ids)

    @property
    def num_people(self) -> int:
        return spec.FIRST_ID + len(self.people)

    @property
    def num_words(self) -> int:
        return spec.FIRST_ID + len(self.words)

    # --- lookups (cached per instance; the dataclass is frozen so they never go stale) ---
    def _map(self, attr: str) -> dict[Any, int]:
        cache: dict[str, dict[Any, int]] = self.__dict__.setdefault("_cache", {})
        if attr not in cache:
            cache[attr] = {v: spec.FIRST_ID + i for i, v in enumerate(getattr(self, attr))}
        return cache[attr]

    def item_index(self, movie_id: int) -> int:
        return self._map("item_ids").get(int(movie_id), spec.UNK_ID)

    def movie_id(self, index: int) -> int | None:
        i = int(index) - spec.FIRST_ID
        return self.item_ids[i] if 0 <= i < len(self.item_ids) else None

    def word_index(self, word: str) -> int:
        return self._map("words").get(word, spec.UNK_ID)

    def person_index(self, name: str) -> int:
        return self._map("people").get(name, spec.UNK_ID)

    # --- persistence ---
    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("_cache", None)
        return d

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ARTIFACTS_FILE
        path.write_text(json.dumps(self.to_json()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Artifacts:
        p = Path(path)
        if p.is_dir():
            p = p / ARTIFACTS_FILE
        if not p.exists():
            raise FileNotFoundError(f"no preprocessing artifacts at {p}: train a model first (`hybridrec train`)")
        raw = json.loads(p.read_text())
        if raw.get("version") != ARTIFACTS_VERSION:
            raise ValueError(f"{p}: artifacts version {raw.get('version')} but this code reads {ARTIFACTS_VERSION}")
        img = raw.pop("image")
        img["mean"], img["std"] = tuple(img["mean"]), tuple(img["std"])
        tuples = {k: tuple(v) for k, v in raw.items() if isinstance(v, list)}
        raw.update(tuples)
        return cls(image=ImageSpec(**img), **raw)


def _most_common(counts: Counter[str], n: int, min_count: int = 1) -> tuple[str, ...]:
    """The ``n`` most frequent keys with at least ``min_count``, ties broken by the key itself. Counter.most_common
    breaks ties by insertion order, which for keys gathered from sets follows PYTHONHASHSEED: the vocabulary, and so
    every fit, then changed from one process to the next under the same seed."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return tuple(k for k, c in ranked if c >= min_count)


def fit_artifacts(
    data: MovieLensData,
    train_movie_ids: Iterable[int],
    *,
    max_people: int = 4000,
    max_words: int = 8000,
    min_count: int = 2,
    history_length: int = spec.HISTORY_LENGTH,
) -> Artifacts:
    """Fit the vocabularies on the catalog and the id map on the items seen in training interactions.

    Items never seen in training get no id row (they map to UNK and are scored from content: cold-start)."""
    seen = sorted({int(m) for m in train_movie_ids})
    movies = list(data.movies.values())
    genre_counts = Counter(g for m in movies for g in m.genres)
    genres = tuple(sorted(_most_common(genre_counts, spec.GENRE_SLOTS)))
    people_counts = Counter(p for m in movies for p in (*m.cast, *m.directors))
    people = _most_common(people_counts, max_people, min_count)
    docs = [set(tokenize(m.overview)) for m in movies if m.overview]
    df = Counter(w for d in docs for w in d)
    words = _most_common(df, max_words, min_count)
    n_docs = max(len(docs), 1)
    idf = tuple(round(math.log((1 + n_docs) / (1 + df[w])) + 1.0, 6) for w in words)
    years = np.array([m.year for m in movies if m.year], dtype=np.float64)
    year_mean = float(years.mean()) if years.size else 2000.0
    year_std = float(years.std()) if years.size > 1 and years.std() > 0 else 1.0
    return Artifacts(
        item_ids=tuple(seen),
        genres=genres,
        people=people,
        words=words,
        word_idf=idf,
        year_mean=round(year_mean, 6),
        year_std=round(year_std, 6),
        history_length=history_length,
    )


# --- catalog titles ----------------------------------------------------------------------------------------------
TITLES_FILE = "titles.json"  # movieId -> title of every served catalog movie: what a client shows, without the dataset


def save_titles(repo: str | Path, titles: dict[int, str]) -> Path:
    """Merge ``titles`` into the repository's movieId -> title map (atomically)."""
    path = Path(repo) / TITLES_FILE
    merged = {**load_titles(repo), **{int(k): str(v) for k, v in titles.items()}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in sorted(merged.items())}))
    tmp.replace(path)
    return path


def load_titles(repo: str | Path) -> dict[int, str]:
    path = Path(repo) / TITLES_FILE
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


# --- histories ----------------------------------------------------------------------------------------------------
def encode_history(movie_ids: Sequence[int], artifacts: Artifacts, length: int | None = None) -> np.ndarray:
    """Most recent ``length`` items, oldest first, padded with PAD at the end; unknown movies map to UNK."""
    length = artifacts.history_length if length is None else length
    out = np.full(length, spec.PAD_ID, dtype=np.int64)
    recent = list(movie_ids)[-length:] if length > 0 else []
    for i, m in enumerate(recent):
        out[i] = artifacts.item_index(m)
    return out


# --- posters ------------------------------------------------------------------------------------------------------
class PosterError(ValueError):
    pass


def decode_poster(source: str | Path | bytes, image: ImageSpec | None = None) -> np.ndarray:
    """JPEG/PNG file or bytes -> UINT8 [C, H, W], center-fitted to the spec's size. Raises PosterError if unreadable."""
    image = image or ImageSpec()
    try:
        fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        with fh, Image.open(fh) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise PosterError(f"cannot decode poster {source if not isinstance(source, bytes) else '<bytes>'}: {e}") from e
    if rgb.size != (image.width, image.height):
        rgb = ImageOps.fit(rgb, (image.width, image.height), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


# --- items --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemMetadata:
    """Raw side information of one movie, as a client may supply it for a brand-new (cold) item."""

    title: str = ""
    genres: tuple[str, ...] = ()
    year: int | None = None
    overview: str = ""
    cast: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()

    @classmethod
    def of(cls, movie: Movie) -> ItemMetadata:
        return cls(movie.title, movie.genres, movie.year, movie.overview, movie.cast, movie.directors)


def item_features(
    metadata: ItemMetadata, poster: np.ndarray | None, artifacts: Artifacts, item_index: int = spec.UNK_ID
) -> dict[str, np.ndarray]:
    """One item's model inputs (no batch or item axis): the spec's ITEM_INPUTS names -> arrays."""
    meta = np.zeros(spec.META_WIDTH, dtype=np.float32)
    slots = {g: i for i, g in enumerate(artifacts.genres)}
    for g in metadata.genres:
        if g in slots:
            meta[slots[g]] = 1.0
    if metadata.year:
        meta[spec.GENRE_SLOTS] = (metadata.year - artifacts.year_mean) / artifacts.year_std
        meta[spec.GENRE_SLOTS + 1] = 1.0
    meta[spec.GENRE_SLOTS + 2] = 1.0 if poster is not None else 0.0
    people = np.zeros(spec.PEOPLE_SLOTS, dtype=np.int64)
    names = [*metadata.directors, *metadata.cast][: spec.PEOPLE_SLOTS]
    people[: len(names)] = [artifacts.person_index(n) for n in names]
    overview = np.zeros(spec.OVERVIEW_TOKENS, dtype=np.int64)
    ids = [i for i in (artifacts.word_index(w) for w in tokenize(metadata.overview)) if i != spec.UNK_ID]
    ids = ids[: spec.OVERVIEW_TOKENS]
    overview[: len(ids)] = ids
    img = poster if poster is not None else np.zeros(spec.POSTER.dims[1:], dtype=np.uint8)  # type: ignore[arg-type]
    return {
        "item_id": np.array(item_index, dtype=np.int64),
        "poster": img,
        "meta": meta,
        "people": people,
        "overview": overview,
    }


def stack_items(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-item feature dicts -> the spec's item tensors with an item axis [N, ...] (no batch axis)."""
    return {t.name: np.stack([it[t.name] for it in items]).astype(t.np_dtype, copy=False) for t in spec.ITEM_INPUTS}


class ItemCatalog:
    """Model-ready features of catalog movies, built once from a dataset folder and the fitted artifacts.

    Posters are decoded lazily and cached, so a client that ranks a few movies never decodes the whole catalog."""

    def __init__(self, data: MovieLensData, artifacts: Artifacts) -> None:
        self.data = data
        self.artifacts = artifacts
        self._posters: dict[int, np.ndarray | None] = {}

    def __contains__(self, movie_id: object) -> bool:
        return movie_id in self.data.movies

    def title(self, movie_id: int) -> str:
        m = self.data.movies.get(int(movie_id))
        return m.title if m else f"movie {movie_id}"

    def poster(self, movie_id: int) -> np.ndarray | None:
        if movie_id not in self._posters:
            movie = self.data.movies[movie_id]
            arr = None
            if movie.poster is not None:
                try:
                    arr = decode_poster(movie.poster, self.artifacts.image)
                except PosterError as e:  # a corrupt file is a missing poster, never a crash
                    log.warning("%s; treating movie %d as having no poster", e, movie_id)
            self._posters[movie_id] = arr
        return self._posters[movie_id]

    def iter_features(self, movie_ids: Sequence[int], chunk: int = 2048) -> Iterator[dict[str, np.ndarray]]:
        """features() of many movies, ``chunk`` at a time; decoded posters are dropped after each chunk, so a pass
        over the whole catalog never holds every poster in memory."""
        for start in range(0, len(movie_ids), chunk):
            yield self.features(movie_ids[start : start + chunk])
            self._posters.clear()

    def empty_features(self, item_index: int, count: int = 1) -> dict[str, np.ndarray]:
        """[count, ...] item tensors of an item with nothing known (the PAD and UNK rows)."""
        return stack_items([item_features(ItemMetadata(), None, self.artifacts, item_index)] * count)

    def features(self, movie_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """[N, ...] item tensors for catalog movies; raises KeyError naming unknown movie ids."""
        unknown = [m for m in movie_ids if int(m) not in self.data.movies]
        if unknown:
            raise KeyError(f"movie ids not in the catalog: {unknown[:10]}")
        rows = [
            item_features(
                ItemMetadata.of(self.data.movies[int(m)]),
                self.poster(int(m)),
                self.artifacts,
                self.artifacts.item_index(int(m)),
            )
            for m in movie_ids
        ]
        return stack_items(rows)
