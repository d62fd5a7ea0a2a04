"""The one I/O specification of every served model.

Each model's inputs and outputs (names, dtypes, dims, dynamic axes) are written here once and drive:
``torch.onnx.export`` (input/output names and dynamic axes), the generated ``config.pbtxt`` files
(``hybridrec.export.triton_config``), the python-backend models' ragged batching, and the client's request building.

Batch convention: the Triton batch axis is always *one request* (one user). Per-request variable axes carry a
symbolic name: ``N`` candidate items, ``L`` history length, ``D`` embedding width. A `rank` request is therefore
``history [1, L]`` plus ``poster [1, N, 3, H, W]`` etc., so requests from different users merge on the batch axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Feature geometry shared by preprocessing, the models and the configs. Changing one of these changes the served
# interface (and the committed configs), so they are constants here rather than training options.
IMAGE_CHANNELS = 3
IMAGE_HEIGHT = 192
IMAGE_WIDTH = 128
GENRE_SLOTS = 32  # multi-hot genre width; fitted genre vocabularies (<= 32 names) map into it
META_EXTRA = ("year_z", "year_present", "poster_present")  # dense columns after the genre slots
META_WIDTH = GENRE_SLOTS + len(META_EXTRA)
PEOPLE_SLOTS = 8  # cast + directors ids per item, 0-padded
OVERVIEW_TOKENS = 64  # overview token ids per item, 0-padded
HISTORY_LENGTH = 50  # every served history is exactly this long (0-padded); the exported graphs accept any length
EMBEDDING_DIM = 64  # D: the default embedding width; export writes each run's own width into its repository's configs

# Reserved ids in every id vocabulary (items, people, words).
PAD_ID = 0
UNK_ID = 1
FIRST_ID = 2

# numpy dtype name -> Triton wire name (the extra ones let tests send deliberately wrong dtypes).
_WIRE = {
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bool": "BOOL",
}


def wire_dtype(dtype: np.dtype | str) -> str:
    """Triton's wire name of a numpy dtype ("BYTES" for anything else)."""
    return _WIRE.get(np.dtype(dtype).name, "BYTES")


Dim = int | str  # an int is fixed; a str names a dynamic axis
FIXED_AT_EXPORT = frozenset({"D"})  # a dynamic name in the spec, but a constant of each exported graph


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    dims: tuple[Dim, ...]  # without the batch axis
    doc: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def wire_dtype(self) -> str:
        """Triton's wire name ("FP32"), used by tritonclient."""
        return wire_dtype(self.dtype)

    @property
    def config_dtype(self) -> str:
        """Triton's config enum name ("TYPE_FP32")."""
        return "TYPE_" + self.wire_dtype

    def config_dims(self, served: dict[str, int] | None = None) -> list[int]:
        """Dims as a config writes them: fixed where the spec, the exported graph or the served interface fixes
        them (``served``, default :data:`SERVED_SIZES`), -1 where requests may vary."""
        sizes = SERVED_SIZES if served is None else served
        return [d if isinstance(d, int) else sizes.get(d, -1) for d in self.dims]

    def axes(self, batched: bool = True) -> list[tuple[int, Dim]]:
        """(array axis, dim) pairs; a batched tensor's axis 0 is the implicit batch axis."""
        offset = 1 if batched else 0
        return [(i + offset, d) for i, d in enumerate(self.dims)]

    def dynamic_axes(self, batched: bool = True) -> dict[int, str]:
        """ONNX dynamic axes, batch axis included. The embedding width D is open in the configs (it is a training
        choice) but fixed in each exported graph."""
        axes = {0: "batch"} if batched else {}
        axes.update({i: d for i, d in self.axes(batched) if isinstance(d, str) and d not in FIXED_AT_EXPORT})
        return axes

    def check(self, array: np.ndarray, *, batched: bool = True, fixed: dict[str, int] | None = None) -> None:
        """Raise a ValueError naming this input when ``array`` does not fit the spec (with the named axes in
        ``fixed`` held to those sizes, e.g. the served history length)."""
        if array.dtype != self.np_dtype:
            raise ValueError(f"input '{self.name}': dtype {array.dtype} but {self.dtype} expected")
        if batched and array.ndim < 1:
            raise ValueError(f"input '{self.name}': missing batch axis")
        dims = array.shape[1:] if batched else array.shape
        want_dims = [d if isinstance(d, int) else (fixed or {}).get(d, d) for d in self.dims]
        if len(dims) != len(self.dims) or any(
            isinstance(want, int) and want != got for want, got in zip(want_dims, dims, strict=False)
        ):
            want_s = ", ".join(str(d) for d in want_dims)
            shape = f"[batch, {want_s}]" if batched else f"[{want_s}]"
            raise ValueError(f"input '{self.name}': shape {tuple(array.shape)} does not match {shape}")


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of one composing model. The numbers and why they were chosen live here only."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instances: int = 1
    why: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: Batching | None  # None for ensembles (they batch nothing themselves)
    doc: str = ""
    max_batch_size: int = 0  # ensembles only; composing models take it from batching
    steps: tuple[EnsembleStep, ...] = field(default=())
    # Per-request bounds of named axes ({"N": 1024}): every served model refuses 0 and anything above, so no single
    # request can hold a model for seconds or gigabytes. The python backend checks them in check_request; the
    # exported graphs carry a guard (hybridrec.export.guards); the configs list them as parameters.
    caps: tuple[tuple[str, int], ...] = ()

    @property
    def is_ensemble(self) -> bool:
        return bool(self.steps)

    @property
    def batch_limit(self) -> int:
        return self.batching.max_batch_size if self.batching else self.max_batch_size

    @property
    def batched(self) -> bool:
        """False for max_batch_size 0 models: their dims spell the batch axis out ("B")."""
        return self.batch_limit > 0

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no input '{name}'")

    def check_request(self, arrays: dict[str, np.ndarray], fixed: dict[str, int] | None = None) -> None:
        """Raise a ValueError naming the input when a request does not fit: every input present, each tensor as
        :meth:`TensorSpec.check`, and inputs that share a named axis (N across the item tensors) agree on it."""
        sizes: dict[str, tuple[str, int]] = {}
        caps = dict(self.caps)
        for t in self.inputs:
            if t.name not in arrays:
                raise ValueError(f"missing input '{t.name}'")
            a = arrays[t.name]
            t.check(a, batched=self.batched, fixed=fixed)
            for axis, d in t.axes(self.batched):
                if isinstance(d, str):
                    got = a.shape[axis]
                    if d in caps and not 1 <= got <= caps[d]:
                        raise ValueError(f"input '{t.name}' has {d}={got}: {self.name} takes 1..{caps[d]}")
                    if d in sizes and sizes[d][1] != got:
                        raise ValueError(f"input '{t.name}' has {d}={got} but '{sizes[d][0]}' has {d}={sizes[d][1]}")
                    sizes.setdefault(d, (t.name, got))
        batch = {arrays[t.name].shape[0] for t in self.inputs}
        if self.batched and len(batch) > 1:
            raise ValueError(f"inputs disagree on the batch size: {sorted(batch)}")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class EnsembleStep:
    model: str
    input_map: tuple[tuple[str, str], ...]  # (model input, ensemble tensor)
    output_map: tuple[tuple[str, str], ...]  # (model output, ensemble tensor)


# --- item tensors (shared by item_encoder, rank and the client) -------------------------------------------------
MAX_ITEMS = 256  # items by content (posters) per request: item_encoder, rank_content
MAX_CANDIDATES = 1024  # items by embedding or id per request: fusion_head, item_lookup, score_mask, rank
MAX_REQUEST_BATCH = 64  # users per request of the non-batching models (what their batching steps allow)

ITEM_ID = TensorSpec("item_id", "int64", ("N",), "catalog index per candidate; 0 pad, 1 unknown/cold item")
POSTER = TensorSpec(
    "poster", "uint8", ("N", IMAGE_CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH), "RGB pixels, CHW; normalised in-graph"
)
META = TensorSpec("meta", "float32", ("N", META_WIDTH), "genre multi-hot, year z-score, presence flags")
PEOPLE = TensorSpec("people", "int64", ("N", PEOPLE_SLOTS), "cast and director ids, 0-padded")
OVERVIEW = TensorSpec("overview", "int64", ("N", OVERVIEW_TOKENS), "overview word ids, 0-padded")
ITEM_INPUTS = (ITEM_ID, POSTER, META, PEOPLE, OVERVIEW)

HISTORY = TensorSpec("history", "int64", ("L",), "chronological item indices, oldest first, 0-padded at the end")
USER_EMBEDDING = TensorSpec("user_embedding", "float32", ("D",))
ITEM_EMBEDDING = TensorSpec("item_embedding", "float32", ("N", "D"))
SCORES = TensorSpec("scores", "float32", ("N",), "sigmoid relevance per candidate")

ITEM_ENCODER = ModelSpec(
    name="item_encoder",
    caps=(("N", MAX_ITEMS),),
    inputs=ITEM_INPUTS,
    outputs=(ITEM_EMBEDDING,),
    batching=Batching(
        max_batch_size=8,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_us=2000,
        why="one batch element already holds N posters (about 200 in `rank`), so a few requests saturate 2 CPU cores; "
        "waiting 2 ms costs little next to the ~100 ms CNN pass and lets concurrent ranks share one session.run",
    ),
    doc="CNN over posters with spatial attention, fused with embedded metadata by attention",
)
SEQUENCE_ENCODER = ModelSpec(
    name="sequence_encoder",
    inputs=(HISTORY,),
    outputs=(USER_EMBEDDING,),
    batching=Batching(
        max_batch_size=64,
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_us=100,
        why="a user is one short GRU pass (~0.1 ms): batching amortises the per-call overhead, but waiting longer "
        "than the pass itself only adds latency; under load requests queue behind the running batch anyway",
    ),
    doc="bidirectional GRU over the user's history, padding-invariant",
)
FUSION_HEAD = ModelSpec(
    name="fusion_head",
    caps=(("N", MAX_CANDIDATES),),
    inputs=(USER_EMBEDDING, ITEM_EMBEDDING),
    outputs=(SCORES,),
    batching=Batching(
        max_batch_size=64,
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_us=100,
        why="a few small matrix products per candidate: cheap, so merge what has queued, but never wait long for it",
    ),
    doc="autoencoder bottleneck + sigmoid fusion layer scoring each candidate for its user",
)
COMPOSING = (ITEM_ENCODER, SEQUENCE_ENCODER, FUSION_HEAD)

def _checked(t: TensorSpec) -> TensorSpec:
    return TensorSpec(f"{t.name}_checked", t.dtype, t.dims, f"'{t.name}', once its sizes are checked")


def _check_model(name: str, inputs: tuple[TensorSpec, ...], cap: int, max_batch: int) -> ModelSpec:
    """The first step of an ensemble whose other steps run in parallel: it refuses a request whose named axes are out
    of bounds or disagree, before any other step starts, and passes the inputs on unchanged. (Tritonserver 2.51 can
    crash when one of two parallel ensemble steps fails while the other is still running; a request that fails here
    fails alone.)"""
    return ModelSpec(
        name=name,
        caps=(("N", cap),),
        inputs=inputs,
        outputs=tuple(_checked(t) for t in inputs),
        batching=Batching(
            max_batch_size=max_batch,
            preferred_batch_sizes=(),
            max_queue_delay_us=100,
            why="a few shape comparisons and copies: merge what has queued, never wait long",
        ),
        doc="checks a request's sizes (N within 1..cap, equal across inputs) and passes it on unchanged",
    )


RANK_CONTENT_CHECK = _check_model("rank_content_check", (HISTORY, *ITEM_INPUTS), MAX_ITEMS, 8)


def _after_check(check: ModelSpec) -> EnsembleStep:
    return EnsembleStep(
        check.name,
        tuple((t.name, t.name) for t in check.inputs),
        tuple((o.name, o.name) for o in check.outputs),
    )


RANK_CONTENT = ModelSpec(
    name="rank_content",
    caps=(("N", MAX_ITEMS),),
    inputs=(HISTORY, *ITEM_INPUTS),
    outputs=(SCORES,),
    batching=None,
    # Bounded by the smallest composing model's max_batch_size (Triton refuses to start otherwise).
    max_batch_size=min(m.batching.max_batch_size for m in COMPOSING if m.batching),
    steps=(
        _after_check(RANK_CONTENT_CHECK),
        EnsembleStep("sequence_encoder", (("history", "history_checked"),), (("user_embedding", "user_embedding"),)),
        EnsembleStep(
            "item_encoder",
            tuple((t.name, f"{t.name}_checked") for t in ITEM_INPUTS),
            (("item_embedding", "item_embedding"),),
        ),
        EnsembleStep(
            "fusion_head",
            (("user_embedding", "user_embedding"), ("item_embedding", "item_embedding")),
            (("scores", "scores"),),
        ),
    ),
    doc="the cold-start path: score N movies given by poster + metadata (none need be in the catalog) for one user: "
    "sequence encoder + item encoder -> fusion head",
)

# --- the `recommend` path: whole-catalog retrieval inside Triton ----------------------------------------------------
RETRIEVAL_DEPTH = 100  # candidates retrieved per user and reranked by the fusion head (baked in at export)
DEFAULT_K = 10
CANDIDATE_MOVIE_ID = TensorSpec(
    "candidate_movie_id", "int64", ("C",), "movieIds of the retrieved candidates; -1 where fewer movies qualify"
)
CANDIDATE_EMBEDDING = TensorSpec("candidate_embedding", "float32", ("C", "D"))
K = TensorSpec("k", "int64", (1,), "how many movies to return (clamped to 1..retrieval depth)")
NO_MOVIE = -1  # pads `rank` candidate lists: never a movieId, so it scores -inf and is cut off by the client
MAX_RANK_CANDIDATES = MAX_CANDIDATES  # per `rank` request; the client splits longer lists


def rank_slots(n: int) -> int:
    """Candidates per `rank` request for ``n`` movies: a power of two >= 16, so that concurrent requests share a
    few shapes (the onnxruntime backend's batcher merges only requests of identical shape)."""
    if not 1 <= n <= MAX_RANK_CANDIDATES:
        raise ValueError(f"rank takes 1..{MAX_RANK_CANDIDATES} candidates per request, got {n}")
    return max(16, 1 << (n - 1).bit_length())


def served_history(history: np.ndarray) -> np.ndarray:
    """An encoded history [L] fitted to the served length: the most recent items, 0-padded at the end."""
    h = np.asarray(history, dtype=np.int64).reshape(-1)
    h = h[h != PAD_ID][-HISTORY_LENGTH:]
    out = np.full(HISTORY_LENGTH, PAD_ID, np.int64)
    out[: h.size] = h
    return out


def rank_candidates(movie_ids: np.ndarray) -> np.ndarray:
    """``movie_id`` [1, rank_slots(N)] of one `rank` request: the N movieIds, then NO_MOVIE."""
    ids = np.asarray(movie_ids, dtype=np.int64).reshape(-1)
    out = np.full((1, rank_slots(ids.size)), NO_MOVIE, np.int64)
    out[0, : ids.size] = ids
    return out


MOVIE_ID = TensorSpec("movie_id", "int64", ("N",), "MovieLens movieIds of catalog movies; unknown ids score as -inf")

# Sizes the served interface fixes although the exported graphs leave them open (or fix them per run), written into
# every config: the onnxruntime and TensorRT backends batch only requests of identical shape, and a fixed history
# length is also its cap (a zero-length or oversize history is refused by Triton before any model runs).
SERVED_SIZES: dict[str, int] = {"L": HISTORY_LENGTH, "D": EMBEDDING_DIM, "C": RETRIEVAL_DEPTH}
# What a client can hold every request to, whatever run is served (D is each run's own width).
REQUEST_SIZES: dict[str, int] = {"L": HISTORY_LENGTH}

RETRIEVAL = ModelSpec(
    name="retrieval",
    inputs=(USER_EMBEDDING, HISTORY),
    outputs=(CANDIDATE_MOVIE_ID, CANDIDATE_EMBEDDING),
    batching=Batching(
        max_batch_size=64,
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_us=100,
        why="one [B, D] x [D, catalog] product: larger batches use the cores better; a short wait since the "
        "`recommend` path chains three batching steps and each wait adds to its latency",
    ),
    doc="dot-product retrieval against the precomputed catalog item embeddings; seen items excluded",
)
TOPK = ModelSpec(
    name="topk",
    caps=(("B", MAX_REQUEST_BATCH),),
    inputs=(
        TensorSpec("candidate_scores", "float32", ("B", "C")),
        TensorSpec("candidate_movie_id", "int64", ("B", "C")),
        K,
    ),
    outputs=(TensorSpec("movie_ids", "int64", ("B", "K")), TensorSpec("scores", "float32", ("B", "K"))),
    batching=None,  # K differs per request, so each request is its own batch (a TopK and two gathers: trivial)
    doc="top-K of the reranked candidates (stateless: the movieIds come with the candidates)",
)
RECOMMEND = ModelSpec(
    name="recommend",
    caps=(("B", MAX_REQUEST_BATCH),),
    inputs=(TensorSpec("history", "int64", ("B", "L")), K),
    outputs=TOPK.outputs,
    batching=None,
    max_batch_size=0,  # the non-batching top-K step takes the batch axis explicitly
    steps=(
        EnsembleStep("sequence_encoder", (("history", "history"),), (("user_embedding", "user_embedding"),)),
        EnsembleStep(
            "retrieval",
            (("user_embedding", "user_embedding"), ("history", "history")),
            (("candidate_movie_id", "candidate_movie_id"), ("candidate_embedding", "candidate_embedding")),
        ),
        EnsembleStep(
            "fusion_head",
            (("user_embedding", "user_embedding"), ("item_embedding", "candidate_embedding")),
            (("scores", "candidate_scores"),),
        ),
        EnsembleStep(
            "topk",
            (("candidate_scores", "candidate_scores"), ("candidate_movie_id", "candidate_movie_id"), ("k", "k")),
            (("movie_ids", "movie_ids"), ("scores", "scores")),
        ),
    ),
    doc="top-K movies for one user over the whole catalog: encode history -> retrieve -> rerank -> top-K",
)
ITEM_LOOKUP = ModelSpec(
    name="item_lookup",
    caps=(("N", MAX_CANDIDATES),),
    inputs=(MOVIE_ID,),
    outputs=(ITEM_EMBEDDING, TensorSpec("item_mask", "float32", ("N",), "0 for catalog movies, -inf for unknown ids")),
    batching=Batching(
        max_batch_size=64,
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_us=100,
        why="a hash lookup and a gather per candidate: trivial, so merge what has queued without waiting for more",
    ),
    doc="catalog movieIds -> the catalog's precomputed item embeddings (the same table `retrieval` ranks)",
)
SCORE_MASK = ModelSpec(
    name="score_mask",
    caps=(("N", MAX_CANDIDATES),),
    inputs=(TensorSpec("raw_scores", "float32", ("N",)), TensorSpec("item_mask", "float32", ("N",))),
    outputs=(SCORES,),
    batching=Batching(
        max_batch_size=64,
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_us=100,
        why="one addition per candidate: merge what has queued, never wait",
    ),
    doc="unknown movieIds get -inf, so they can never outrank a real movie",
)
CATALOG_MODELS = (RETRIEVAL, TOPK, ITEM_LOOKUP, SCORE_MASK)
# The models that hold catalog state, each whole: `retrieval` returns movieIds with the embeddings it retrieved, so a
# `recommend` answer comes from one catalog version (topk keeps none), and `rank` reads `item_lookup` alone. A catalog
# update writes each as a new version folder and loads it; the old version serves until the new one is ready.
CATALOG_STATE_MODELS = (RETRIEVAL, ITEM_LOOKUP)

RANK_CHECK = _check_model("rank_check", (HISTORY, MOVIE_ID), MAX_CANDIDATES, 64)
CHECK_MODELS = (RANK_CHECK, RANK_CONTENT_CHECK)

RANK = ModelSpec(
    name="rank",
    caps=(("N", MAX_CANDIDATES),),
    inputs=(HISTORY, MOVIE_ID),
    outputs=(SCORES,),
    batching=None,
    max_batch_size=min(
        m.batching.max_batch_size for m in (RANK_CHECK, SEQUENCE_ENCODER, ITEM_LOOKUP, FUSION_HEAD) if m.batching
    ),
    steps=(
        _after_check(RANK_CHECK),
        EnsembleStep("sequence_encoder", (("history", "history_checked"),), (("user_embedding", "user_embedding"),)),
        EnsembleStep(
            "item_lookup",
            (("movie_id", "movie_id_checked"),),
            (("item_embedding", "item_embedding"), ("item_mask", "item_mask")),
        ),
        EnsembleStep(
            "fusion_head",
            (("user_embedding", "user_embedding"), ("item_embedding", "item_embedding")),
            (("scores", "raw_scores"),),
        ),
        EnsembleStep(
            "score_mask", (("raw_scores", "raw_scores"), ("item_mask", "item_mask")), (("scores", "scores"),)
        ),
    ),
    doc="score N catalog movies (by movieId) for one user: no posters travel, the catalog's embeddings are reused",
)

# Warm-up request shapes per model (zeros): the CNN and the GRU pay the most for a cold onnxruntime session.
WARMUP: dict[str, dict[str, int]] = {
    "item_encoder": {"N": 50},
    "sequence_encoder": {"L": HISTORY_LENGTH},
}  # built from catalog embeddings at export time (no torch module)

MODELS: dict[str, ModelSpec] = {
    m.name: m for m in (*COMPOSING, *CATALOG_MODELS, *CHECK_MODELS, RANK, RANK_CONTENT, RECOMMEND)
}
ENSEMBLES = tuple(m for m in MODELS.values() if m.is_ensemble)

# TensorRT optimisation profiles: (min, opt, max) per dynamic axis; "batch" is bounded by each model's max batch.
# They cover what the client sends (histories padded to HISTORY_LENGTH, up to 256 candidates per `rank` request).
TRT_RANGES: dict[str, tuple[int, int, int]] = {
    "N": (1, 50, MAX_ITEMS),
    "L": (1, HISTORY_LENGTH, 4 * HISTORY_LENGTH),
    "C": (RETRIEVAL_DEPTH, RETRIEVAL_DEPTH, RETRIEVAL_DEPTH),
}
# Models served as TensorRT plans in the `plan` config set. `topk` is not: its K is a request input, and TensorRT's
# TopK needs K at build time; it keeps the onnxruntime config in every set.
TRT_PLAN_MODELS = ("item_encoder", "sequence_encoder", "fusion_head", "retrieval")


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}'; known: {sorted(MODELS)}") from None


def example_batch(
    model: ModelSpec, batch: int = 2, sizes: dict[str, int] | None = None, *, id_high: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random, valid inputs for ``model`` (used for tracing, parity checks and tests). ``sizes`` fixes dynamic axes."""
    sizes = {"N": 3, **SERVED_SIZES, "K": 3, **(sizes or {}), "B": batch}
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for t in model.inputs:
        dims = tuple(d if isinstance(d, int) else sizes[d] for d in t.dims)
        shape = (batch, *dims) if model.batched else dims
        if t.name == "k":
            out[t.name] = np.array([sizes["K"]], dtype=np.int64)
            continue
        if t.dtype == "uint8":
            out[t.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif t.dtype == "int64":
            ids = rng.integers(FIRST_ID, id_high, shape, dtype=np.int64)
            if t.name == "history":  # realistic: right-padded histories of various lengths
                for row, n in zip(ids, rng.integers(0, shape[-1] + 1, batch), strict=True):
                    row[n:] = PAD_ID
            out[t.name] = ids
        elif t.name == "meta":
            meta = (rng.random(shape) < 0.15).astype(np.float32)
            meta[..., GENRE_SLOTS] = rng.normal(size=shape[:-1])
            meta[..., GENRE_SLOTS + 1 :] = 1.0
            out[t.name] = meta
        else:
            out[t.name] = rng.normal(size=shape).astype(t.np_dtype)
    return out
