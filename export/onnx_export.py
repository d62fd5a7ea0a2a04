"""Export the three trained models as separate ONNX files and check them against eager PyTorch.

Names, dtypes and dynamic axes come from hybridrec.spec. Parity is checked at batch sizes, candidate counts and
history lengths other than the traced ones, so a shape baked in by tracing is caught here, not in production.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hybridrec import spec
from hybridrec.data import MovieLensData, load_movielens, resolve_data_dir
from hybridrec.export.catalog import encode_catalog, write_catalog_models
from hybridrec.export.guards import add_size_guards, write_check_models
from hybridrec.export.triton_config import served_sizes, write_configs
from hybridrec.preprocessing import ARTIFACTS_FILE, ItemCatalog, save_titles
from hybridrec.training.train import load_model, load_run_config

log = logging.getLogger(__name__)

OPSET = 17
TOLERANCE = 1e-4
TRACE_SIZES = {"N": 3, "L": 7}
# Shapes other than the traced ones: (batch, sizes).
PARITY_SHAPES = ((1, {"N": 1, "L": 1}), (5, {"N": 11, "L": 50}), (3, {"N": 40, "L": 83}))


class ParityError(AssertionError):
    """An exported model disagrees with eager PyTorch beyond the tolerance."""

    def __init__(self, model: str, where: str, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(f"{model}: max |eager - {where}| = {max_abs_diff:.3g} > {tolerance:g}")
        self.model, self.where, self.max_abs_diff, self.tolerance = model, where, max_abs_diff, tolerance


@dataclass(frozen=True)
class ParityReport:
    model: str
    where: str
    shapes: list[dict[str, tuple[int, ...]]]
    max_abs_diff: float


def model_inputs(m: spec.ModelSpec, batch: int, sizes: dict[str, int], dim: int, num_items: int, seed: int = 0):
    """Valid random numpy inputs; embedding inputs are drawn at the model's width."""
    return spec.example_batch(m, batch, {**sizes, "D": dim}, id_high=max(num_items, spec.FIRST_ID + 1), seed=seed)


def export_model(module: nn.Module, m: spec.ModelSpec, path: Path, dim: int, num_items: int) -> Path:
    module.eval()
    example = model_inputs(m, 2, TRACE_SIZES, dim, num_items)
    args = tuple(torch.from_numpy(example[t.name]) for t in m.inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values are expected here
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=m.input_names,
            output_names=m.output_names,
            dynamic_axes={t.name: t.dynamic_axes(m.batched) for t in (*m.inputs, *m.outputs)},
            opset_version=OPSET,
            dynamo=False,
        )
    import onnx

    proto = add_size_guards(onnx.load(str(tmp)), m)  # per-request caps the backends cannot enforce from a config
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def check_onnx_parity(
    module: nn.Module, m: spec.ModelSpec, path: Path, dim: int, num_items: int, tolerance: float = TOLERANCE
) -> ParityReport:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, shapes = 0.0, []
    module.eval()
    for seed, (batch, sizes) in enumerate(PARITY_SHAPES, start=1):
        x = model_inputs(m, batch, sizes, dim, num_items, seed=seed)
        with torch.no_grad():
            want = module(*(torch.from_numpy(x[t.name]) for t in m.inputs))
        got = session.run(m.output_names, x)[0]
        if got.shape != tuple(want.shape):
            raise ParityError(m.name, f"onnxruntime shape {got.shape} vs {tuple(want.shape)}", float("inf"), tolerance)
        worst = max(worst, float(np.abs(got - want.numpy()).max()))
        shapes.append({k: v.shape for k, v in x.items()})
    if worst > tolerance:
        raise ParityError(m.name, "onnxruntime", worst, tolerance)
    return ParityReport(m.name, "onnxruntime", shapes, worst)


def export_run(
    run_dir: str | Path,
    repo: str | Path,
    *,
    check: bool = True,
    data: MovieLensData | None = None,
    depth: int = spec.RETRIEVAL_DEPTH,
) -> dict[str, ParityReport | None]:
    """Export a trained run into a Triton model repository: configs, the three models as separate model.onnx files,
    artifacts.json, and the catalog models (retrieval over every catalog movie's embedding, top-K)."""
    model, artifacts = load_model(run_dir)
    if model.cfg.sequence.history_features:
        # the served `history` input is ids only: this model would be served without the features it was trained on
        raise ValueError(
            f"{run_dir}: model.sequence.rating_feature / recency_buckets are a training-time probe; the served "
            "sequence_encoder takes item ids only, so this run cannot be exported"
        )
    repo = Path(repo)
    dim = model.cfg.embedding_dim
    if dim != spec.EMBEDDING_DIM:
        log.warning("embedding width %d: %s's configs now differ from the committed ones (D=%d)", dim, repo,
                    spec.EMBEDDING_DIM)
    write_configs(repo, served_sizes(dim))
    reports: dict[str, ParityReport | None] = {}
    for name, module in model.exported().items():
        m = spec.model_spec(name)
        path = export_model(module, m, repo / name / "1" / "model.onnx", dim, artifacts.num_items)
        report = check_onnx_parity(module, m, path, dim, artifacts.num_items) if check else None
        reports[name] = report
        log.info("exported %s -> %s%s", name, path, f" (max |eager - ort| {report.max_abs_diff:.2e})" if report else "")
    # The client needs the same fitted preprocessing as training: ship it with the models.
    shutil.copyfile(Path(run_dir) / ARTIFACTS_FILE, repo / ARTIFACTS_FILE)
    if data is None:
        data = load_movielens(resolve_data_dir(load_run_config(run_dir).data.path))
    catalog = encode_catalog(repo, ItemCatalog(data, artifacts))
    write_catalog_models(repo, catalog, depth)
    write_check_models(repo)
    save_titles(repo, {int(m): data.movies[int(m)].title for m in catalog.movie_ids if m >= 0})
    log.info("catalog models: %d rows, retrieval depth %d", len(catalog.movie_ids), depth)
    return reports
