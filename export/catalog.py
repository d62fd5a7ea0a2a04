"""Catalog item embeddings and the catalog models: `retrieval` and `topk` (the `recommend` ensemble), `item_lookup`
and `score_mask` (the `rank` ensemble).

The embeddings come from running the exported item encoder (onnxruntime, no torch) over every catalog movie's
poster and metadata, so the same code path serves the export and the later addition of cold-start movies. The catalog
models are small ONNX graphs built directly with onnx.helper; the embedding table and the row <-> movieId maps are
their initializers. Rows 0..num_items-1 are the training vocabulary (row = item index, so a history's item indices
are catalog rows and seen items can be excluded in-graph); movies without training interactions follow.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hybridrec import spec
from hybridrec.export.guards import add_size_guards
from hybridrec.preprocessing import Artifacts, ItemCatalog, ItemMetadata, item_features, save_titles, stack_items

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.npz"
MASKED = -1.0e9  # score of excluded rows (seen, PAD, UNK); candidates at or below HALF_MASKED are dropped
HALF_MASKED = -5.0e8
OPSET = 17


@dataclass
class CatalogEmbeddings:
    embeddings: np.ndarray  # float32 [R, D]
    movie_ids: np.ndarray  # int64 [R]; -1 for rows that are never recommended (PAD, UNK)

    def __post_init__(self) -> None:
        if len(self.embeddings) != len(self.movie_ids):
            raise ValueError("embeddings and movie_ids must have one row per catalog entry")

    @property
    def valid(self) -> np.ndarray:
        return self.movie_ids >= 0

    def row_of(self, movie_id: int) -> int | None:
        hits = np.flatnonzero(self.movie_ids == movie_id)
        return int(hits[0]) if hits.size else None

    def save(self, repo: str | Path) -> Path:
        path = Path(repo) / CATALOG_FILE
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, embeddings=self.embeddings, movie_ids=self.movie_ids)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, repo: str | Path) -> CatalogEmbeddings:
        path = Path(repo) / CATALOG_FILE
        if not path.exists():
            raise FileNotFoundError(f"no catalog at {path}: run `hybridrec export` first")
        with np.load(path) as z:
            return cls(z["embeddings"].astype(np.float32), z["movie_ids"].astype(np.int64))


class ItemEncoder:
    """The exported item encoder in onnxruntime: item tensors [M, ...] -> embeddings [M, D]."""

    def __init__(self, repo: str | Path, batch: int = 256) -> None:
        import onnxruntime as ort

        path = Path(repo) / "item_encoder" / "1" / "model.onnx"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `hybridrec export` first")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.batch = batch

    def __call__(self, items: dict[str, np.ndarray]) -> np.ndarray:
        n = len(items["item_id"])
        out = []
        for start in range(0, n, self.batch):
            feed = {k: v[None, start : start + self.batch] for k, v in items.items()}
            out.append(self.session.run(["item_embedding"], feed)[0][0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def encode_catalog(repo: str | Path, catalog: ItemCatalog, batch: int = 256) -> CatalogEmbeddings:
    """Embed the vocabulary items (rows = item indices) and then every other catalog movie (cold items)."""
    art = catalog.artifacts
    encoder = ItemEncoder(repo, batch)
    vocab = list(art.item_ids)
    cold = [m for m in catalog.data.movies if art.item_index(m) == spec.UNK_ID]
    embedded = [encoder(feats) for feats in catalog.iter_features(vocab + cold)]
    emb = np.concatenate([np.zeros((2, embedded[0].shape[1]), np.float32), *embedded])  # PAD, UNK: never served
    movie_ids = np.array([-1, -1, *vocab, *cold], dtype=np.int64)
    log.info("catalog: %d vocabulary rows, %d cold movies, width %d", len(vocab), len(cold), emb.shape[1])
    return CatalogEmbeddings(emb, movie_ids)


def build_retrieval(cat: CatalogEmbeddings, depth: int = spec.RETRIEVAL_DEPTH) -> onnx.ModelProto:
    """user_embedding [B, D], history [B, L] -> candidate_movie_id [B, C], candidate_embedding [B, C, D].

    Scores are dot products with every catalog row; PAD/UNK rows and the user's history are excluded. Candidates
    that had to be taken from excluded rows (catalog smaller than the depth) come back with movie id -1, so the output
    is always ``depth`` candidates wide. The movieIds travel with the embeddings: the whole answer comes from this
    model's one catalog version."""
    emb, valid, movie_ids = cat.embeddings, cat.valid, cat.movie_ids
    if len(emb) < depth:  # a tiny catalog: masked filler rows keep the served shape [B, depth] fixed
        filler = depth - len(emb)
        emb = np.vstack([emb, np.zeros((filler, emb.shape[1]), np.float32)])
        valid = np.concatenate([valid, np.zeros(filler, bool)])
        movie_ids = np.concatenate([movie_ids, np.full(filler, -1, np.int64)])
    rows, dim = emb.shape
    c = depth
    bias = np.where(valid, 0.0, MASKED).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(emb.T), "catalog_t"),
        numpy_helper.from_array(emb, "catalog"),
        numpy_helper.from_array(bias, "row_bias"),
        numpy_helper.from_array(np.array([c], np.int64), "depth"),
        numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
        numpy_helper.from_array(np.array(rows - 1, np.int64), "last_row"),
        numpy_helper.from_array(np.array(MASKED, np.float32), "masked"),
        numpy_helper.from_array(np.array(HALF_MASKED, np.float32), "half_masked"),
        numpy_helper.from_array(np.array(-1, np.int64), "minus_one"),
        numpy_helper.from_array(movie_ids, "row_movie_id"),
    ]
    nodes = [
        helper.make_node("MatMul", ["user_embedding", "catalog_t"], ["dot"]),
        helper.make_node("Add", ["dot", "row_bias"], ["scored"]),
        # seen items: scatter MASKED onto the history's rows; out-of-range ids go to row 0 (PAD, masked anyway)
        helper.make_node("Less", ["history", "zero_i"], ["h_neg"]),
        helper.make_node("Greater", ["history", "last_row"], ["h_big"]),
        helper.make_node("Or", ["h_neg", "h_big"], ["h_oob"]),
        helper.make_node("Where", ["h_oob", "zero_i", "history"], ["h_rows"]),
        helper.make_node("Shape", ["h_rows"], ["h_shape"]),
        helper.make_node(
            "ConstantOfShape", ["h_shape"], ["h_pen"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [MASKED])
        ),
        helper.make_node("Shape", ["scored"], ["s_shape"]),
        helper.make_node(
            "ConstantOfShape", ["s_shape"], ["zeros"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("ScatterElements", ["zeros", "h_rows", "h_pen"], ["seen_pen"], axis=1),
        helper.make_node("Add", ["scored", "seen_pen"], ["masked_scores"]),
        helper.make_node("TopK", ["masked_scores", "depth"], ["top_scores", "top_rows"], axis=1),
        helper.make_node("Gather", ["catalog", "top_rows"], ["candidate_embedding"], axis=0),
        helper.make_node("Less", ["top_scores", "half_masked"], ["excluded"]),
        helper.make_node("Gather", ["row_movie_id", "top_rows"], ["top_movie_ids"], axis=0),
        helper.make_node("Where", ["excluded", "minus_one", "top_movie_ids"], ["candidate_movie_id"]),
    ]
    graph = helper.make_graph(
        nodes,
        "retrieval",
        [
            helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["batch", dim]),
            helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", "L"]),
        ],
        [
            helper.make_tensor_value_info("candidate_movie_id", TensorProto.INT64, ["batch", c]),
            helper.make_tensor_value_info("candidate_embedding", TensorProto.FLOAT, ["batch", c, dim]),
        ],
        inits,
    )
    return _model(graph)


def build_topk() -> onnx.ModelProto:
    """candidate_scores [B, C], candidate_movie_id [B, C], k [1] -> movie_ids [B, K], scores [B, K];
    K = clamp(k, 1, C). Stateless: excluded candidates (movie id -1) sink to the bottom and stay -1 if K reaches
    them."""
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1_start"),
        numpy_helper.from_array(np.array([2], np.int64), "axis1_end"),
        numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
        numpy_helper.from_array(np.array(MASKED, np.float32), "masked"),
    ]
    nodes = [
        helper.make_node("Shape", ["candidate_scores"], ["s_shape"]),
        helper.make_node("Slice", ["s_shape", "axis1_start", "axis1_end"], ["n_cand"]),
        helper.make_node("Max", ["k", "one"], ["k_lo"]),
        helper.make_node("Min", ["k_lo", "n_cand"], ["kk"]),
        helper.make_node("Less", ["candidate_movie_id", "zero_i"], ["excluded"]),
        helper.make_node("Where", ["excluded", "masked", "candidate_scores"], ["ranked_scores"]),
        helper.make_node("TopK", ["ranked_scores", "kk"], ["scores", "pos"], axis=1),
        helper.make_node("GatherElements", ["candidate_movie_id", "pos"], ["movie_ids"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "topk",
        [
            helper.make_tensor_value_info("candidate_scores", TensorProto.FLOAT, ["batch", "C"]),
            helper.make_tensor_value_info("candidate_movie_id", TensorProto.INT64, ["batch", "C"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("movie_ids", TensorProto.INT64, ["batch", "K"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "K"]),
        ],
        inits,
    )
    return _model(graph)


def build_item_lookup(cat: CatalogEmbeddings) -> onnx.ModelProto:
    """movie_id [B, N] -> item_embedding [B, N, D], item_mask [B, N] (0, or -inf for movieIds not in the catalog).

    A LabelEncoder (ai.onnx.ml) maps movieIds to catalog rows; unknown ids land on the UNK row."""
    valid = cat.valid
    inits = [
        numpy_helper.from_array(cat.embeddings, "catalog"),
        numpy_helper.from_array(np.array(spec.UNK_ID, np.int64), "unk_row"),
        numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
    ]
    nodes = [
        helper.make_node(
            "LabelEncoder",
            ["movie_id"],
            ["rows"],
            domain="ai.onnx.ml",
            keys_int64s=[int(m) for m in cat.movie_ids[valid]],
            values_int64s=[int(r) for r in np.flatnonzero(valid)],
            default_int64=spec.UNK_ID,
        ),
        helper.make_node("Gather", ["catalog", "rows"], ["item_embedding"], axis=0),
        helper.make_node("Equal", ["rows", "unk_row"], ["unknown"]),
        helper.make_node("Where", ["unknown", "minus_inf", "zero_f"], ["item_mask"]),
    ]
    dim = cat.embeddings.shape[1]
    graph = helper.make_graph(
        nodes,
        "item_lookup",
        [helper.make_tensor_value_info("movie_id", TensorProto.INT64, ["batch", "N"])],
        [
            helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["batch", "N", dim]),
            helper.make_tensor_value_info("item_mask", TensorProto.FLOAT, ["batch", "N"]),
        ],
        inits,
    )
    return _model(graph, ml=True)


def build_score_mask() -> onnx.ModelProto:
    """raw_scores [B, N] + item_mask [B, N] -> scores [B, N]: unknown movies end at -inf."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["raw_scores", "item_mask"], ["scores"])],
        "score_mask",
        [
            helper.make_tensor_value_info("raw_scores", TensorProto.FLOAT, ["batch", "N"]),
            helper.make_tensor_value_info("item_mask", TensorProto.FLOAT, ["batch", "N"]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "N"])],
    )
    return _model(graph)


def _model(graph: onnx.GraphProto, ml: bool = False) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("ai.onnx.ml", 2)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="hybridrec")
    served = spec.MODELS.get(graph.name)
    if served is not None and served.caps:
        add_size_guards(model, served)
    model.ir_version = 8  # readable by the onnxruntime of Triton 2.51's container and newer
    onnx.checker.check_model(model, full_check=True)
    return model


def _write(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)  # a model (re)load never sees a half-written file


def model_versions(repo: str | Path, model: str) -> list[int]:
    """The numeric version folders of ``model`` in ``repo``, ascending."""
    folder = Path(repo) / model
    return sorted(int(p.name) for p in folder.glob("[0-9]*") if p.is_dir() and p.name.isdigit())


def write_catalog_models(
    repo: str | Path, cat: CatalogEmbeddings, depth: int = spec.RETRIEVAL_DEPTH, *, new_version: bool = False
) -> int:
    """Write the catalog models; returns the version written.

    ``new_version=False`` (export): version 1, and stale versions of earlier catalog updates are removed.
    ``new_version=True`` (a catalog update): the models that hold catalog state go to a new version folder (latest + 1)
    beside the one being served, so a server keeps answering from the old version until it has loaded the new one;
    :func:`prune_catalog_versions` removes the old folders afterwards."""
    repo = Path(repo)
    cat.save(repo)
    stateful = [m.name for m in spec.CATALOG_STATE_MODELS]
    version = max((v for m in stateful for v in model_versions(repo, m)), default=0) + 1 if new_version else 1
    builders = {"retrieval": lambda: build_retrieval(cat, depth), "item_lookup": lambda: build_item_lookup(cat)}
    for name in stateful:
        folder = repo / name / str(version)
        current = repo / name / "1" / "model.py"  # the python backend's generated wrapper travels with each version
        older = [repo / name / str(v) / "model.py" for v in model_versions(repo, name)]
        wrapper = next((p for p in [current, *older] if p.exists()), None)
        _write(builders[name](), folder / "model.onnx")
        if wrapper is not None and wrapper.parent != folder:
            shutil.copyfile(wrapper, folder / "model.py")
    _write(build_topk(), repo / "topk" / "1" / "model.onnx")
    _write(build_score_mask(), repo / "score_mask" / "1" / "model.onnx")
    if not new_version:
        prune_catalog_versions(repo, keep=1)
    return version


def prune_catalog_versions(repo: str | Path, keep: int) -> None:
    """Remove the catalog models' version folders other than ``keep`` (version 1's generated files stay)."""
    for m in spec.CATALOG_STATE_MODELS:
        for v in model_versions(repo, m.name):
            if v == keep:
                continue
            folder = Path(repo) / m.name / str(v)
            if v == 1:  # keep the committed wrapper; drop only the stale graph
                (folder / "model.onnx").unlink(missing_ok=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)


def add_items(
    repo: str | Path,
    movies: Sequence[tuple[int, ItemMetadata, np.ndarray | None]],
    *,
    depth: int = spec.RETRIEVAL_DEPTH,
    prune: bool = True,
) -> tuple[list[int], int]:
    """Add (or replace) catalog movies from their poster + metadata alone; returns their catalog rows.

    New movies have no learned id row: they are embedded from content (item_id = UNK), exactly like any cold item.
    Writes the catalog-state models (spec.CATALOG_STATE_MODELS) as a new version; load them in the server to serve
    the new catalog, then prune the old versions (``prune=True`` does it at once: for a server that is not running).
    Returns (catalog rows, the new version)."""
    repo = Path(repo)
    art = Artifacts.load(repo)
    cat = CatalogEmbeddings.load(repo)
    feats = [item_features(md, poster, art, art.item_index(mid)) for mid, md, poster in movies]
    emb = ItemEncoder(repo)(stack_items(feats))
    rows = []
    for (mid, _, _), e in zip(movies, emb, strict=True):
        if mid < 0:
            raise ValueError(f"movie ids must be >= 0, got {mid}")
        row = cat.row_of(mid)
        if row is None:
            cat = CatalogEmbeddings(np.vstack([cat.embeddings, e[None]]), np.append(cat.movie_ids, mid))
            row = len(cat.movie_ids) - 1
        else:
            cat.embeddings[row] = e
        rows.append(row)
    version = write_catalog_models(repo, cat, depth, new_version=True)
    save_titles(repo, {mid: md.title for mid, md, _ in movies if md.title})
    if prune:
        prune_catalog_versions(repo, keep=version)
    return rows, version


def reference_recommend(
    user: np.ndarray,
    history: np.ndarray,
    cat: CatalogEmbeddings,
    fusion: Callable[[np.ndarray, np.ndarray], np.ndarray],
    k: int,
    depth: int = spec.RETRIEVAL_DEPTH,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of retrieval -> rerank -> top-K for one user (user [D], history [L]); `fusion` scores
    candidate embeddings [C, D] for that user. Used to check the served `recommend` ensemble."""
    scores = cat.embeddings @ user
    scores[~cat.valid] = -np.inf
    seen = history[(history >= 0) & (history < len(scores))]
    scores[seen] = -np.inf
    cand = np.argsort(-scores, kind="stable")[: min(depth, len(scores))]
    cand = cand[np.isfinite(scores[cand])]
    reranked = fusion(user, cat.embeddings[cand])
    order = np.argsort(-reranked, kind="stable")[: max(1, min(k, len(cand)))]
    return cat.movie_ids[cand[order]], reranked[order]
