"""The in-process limit of a workload: the same ONNX models, called with onnxruntime in this process.

No server, no client, no serialisation: only ``session.run`` of each composing model of the ensemble, read from the
repository's own ``<model>/1/model.onnx`` files (the files both config sets serve), fed with real requests merged
into batches (``hybridrec.serving_python.merge``: one concatenation; the served requests all have one shape, since
histories are ``spec.HISTORY_LENGTH`` long and `rank` candidates are padded to ``spec.rank_slots(N)``, so this is
also what the onnxruntime backend's batcher does). The steps run in the ensemble's order: `recommend` is
sequence_encoder -> retrieval -> fusion_head -> topk, `rank` (by movieId) sequence_encoder -> item_lookup ->
fusion_head -> score_mask (``spec.RECOMMEND.steps`` / ``spec.RANK.steps``), so every model gets exactly the tensors
the ensemble would hand it. A model without batching (`topk`) runs once per request, as Triton runs it.

Two numbers come out (requests/s of model compute only):

- :meth:`Limit.rps_for` the batches Triton's dynamic batcher formed in a run (per-model, per-batch-size execution
  counts from the statistics API): the time those same executions take in-process, per request;
- :meth:`Limit.peak_rps`: the best ``b / chain time(b)`` over the batch sizes measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec
from hybridrec.serving_python import merge

WORKLOADS: dict[str, spec.ModelSpec] = {"recommend": spec.RECOMMEND, "rank": spec.RANK}


def step_models(workload: str) -> list[spec.ModelSpec]:
    return [spec.model_spec(s.model) for s in WORKLOADS[workload].steps]


def max_batch(workload: str) -> int:
    """The largest batch every batching step of the workload accepts."""
    return min(m.batch_limit for m in step_models(workload) if m.batched)


def default_batches(workload: str) -> list[int]:
    """1, 2, 4, ... up to the workload's max batch (and the max batch itself)."""
    top = max_batch(workload)
    sizes = [1 << i for i in range(top.bit_length()) if (1 << i) <= top]
    return sorted({*sizes, top})


def ensemble_inputs(
    workload: str, requests: Sequence[Mapping[str, np.ndarray]], k: int = spec.DEFAULT_K
) -> dict[str, np.ndarray]:
    """The ensemble's input tensors for ``len(requests)`` requests merged into one batch."""
    if workload == "rank":
        return merge(spec.RANK, [dict(r) for r in requests])
    merged = merge(spec.SEQUENCE_ENCODER, [{"history": r["history"]} for r in requests])
    return {**merged, "k": np.array([k], dtype=np.int64)}


def step_feeds(workload: str, sessions: Mapping[str, Any], inputs: dict[str, np.ndarray]) -> dict[str, dict]:
    """Run the ensemble's steps in order on ``inputs``; returns each step model's feed (what it was given)."""
    tensors = dict(inputs)
    feeds: dict[str, dict[str, np.ndarray]] = {}
    for step in WORKLOADS[workload].steps:
        feed = {model_in: tensors[name] for model_in, name in step.input_map}
        outs = sessions[step.model].run([model_out for model_out, _ in step.output_map], feed)
        for (_, name), value in zip(step.output_map, outs, strict=True):
            tensors[name] = value
        feeds[step.model] = feed
    return feeds


def one_request(model: spec.ModelSpec, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first request's part of a non-batching model's feed (inputs whose leading dim is the explicit "B")."""
    return {t.name: feed[t.name][:1] if t.dims[:1] == ("B",) else feed[t.name] for t in model.inputs}


def time_run(session: Any, feed: Mapping[str, np.ndarray], *, min_time_s: float, min_reps: int = 3) -> float:
    """Median milliseconds of ``session.run`` on ``feed`` (one warm-up run, then >= min_reps, >= min_time_s)."""
    session.run(None, dict(feed))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time_s and len(times) < 200):
        t0 = time.perf_counter()
        session.run(None, dict(feed))
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


@dataclass
class Limit:
    """Per model, per batch size: milliseconds of one ``session.run`` (non-batching models: at batch 1)."""

    workload: str
    ms: dict[str, dict[int, float]] = field(default_factory=dict)

    def step_ms(self, model: spec.ModelSpec, batch: int) -> float:
        if model.batched:
            return self.ms[model.name][batch]
        return batch * self.ms[model.name][1]  # Triton runs it once per request

    def chain_ms(self, batch: int) -> float:
        return sum(self.step_ms(m, batch) for m in step_models(self.workload))

    @property
    def chain_batches(self) -> list[int]:
        """Batch sizes measured for every batching step."""
        batched = [set(self.ms[m.name]) for m in step_models(self.workload) if m.batched]
        return sorted(set.intersection(*batched)) if batched else [1]

    def rps_at(self, batch: int) -> float:
        return batch / self.chain_ms(batch) * 1000.0

    def peak_rps(self) -> tuple[float, int]:
        """(best requests/s, its batch size) over the measured batch sizes."""
        return max((self.rps_at(b), b) for b in self.chain_batches)

    def rps_for(self, executions: Mapping[str, Mapping[int, int]], requests: int) -> float:
        """Requests/s if the same executions (model -> batch size -> count) ran back to back in-process."""
        total_ms = 0.0
        for m in step_models(self.workload):
            counts = executions.get(m.name) or {}
            if not m.batched:  # once per request, whatever the stats say
                total_ms += requests * self.ms[m.name][1]
                continue
            total_ms += sum(n * self.ms[m.name][b] for b, n in counts.items() if n)
        return requests / total_ms * 1000.0 if total_ms > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        peak, at = self.peak_rps()
        return {
            "ms_per_run": {m: {str(b): round(v, 3) for b, v in sorted(d.items())} for m, d in self.ms.items()},
            "chain": [
                {"batch": b, "chain_ms": round(self.chain_ms(b), 3), "rps": round(self.rps_at(b), 2)}
                for b in self.chain_batches
            ],
            "peak_rps": round(peak, 2),
            "peak_batch": at,
        }


def sessions_for(repo: str | Path, workload: str, threads: int = 0) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, as the served models (intra_op_threads "0")
    options.log_severity_level = 3
    return {
        m.name: ort.InferenceSession(
            str(Path(repo) / m.name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for m in step_models(workload)
    }


def measure_limit(
    repo: str | Path,
    workload: str,
    requests: Sequence[Mapping[str, np.ndarray]],
    *,
    batches: Iterable[int] | None = None,
    extra: Mapping[str, Iterable[int]] | None = None,
    k: int = spec.DEFAULT_K,
    min_time_s: float = 0.3,
    rounds: int = 2,
) -> Limit:
    """Time every step model of ``workload`` in-process at the ``batches`` (default 1, 2, 4 .. max batch) and, per
    model, at the ``extra`` batch sizes (e.g. those Triton's batcher formed). ``requests`` are real requests'
    ensemble inputs (spec-named arrays with batch axis 1), cycled to fill a batch. Each number is the faster of
    ``rounds`` medians of >= ``min_time_s`` of runs."""
    if not requests:
        raise ValueError("measure_limit needs at least one request")
    top = max_batch(workload)
    chain = sorted({b for b in (batches or default_batches(workload)) if 1 <= b <= top})
    wanted: dict[str, set[int]] = {m.name: set(chain) if m.batched else {1} for m in step_models(workload)}
    for name, sizes in (extra or {}).items():
        if name in wanted and spec.model_spec(name).batched:
            wanted[name] |= {int(b) for b in sizes if 1 <= int(b) <= top}
    sessions = sessions_for(repo, workload)
    limit = Limit(workload, {name: {} for name in wanted})
    # Two rounds over all sizes, keeping the faster median of each: a burst of other work on a shared machine
    # spoils one window, rarely the same one twice.
    for _ in range(max(1, rounds)):
        for b in sorted(set().union(*wanted.values())):
            batch = [requests[i % len(requests)] for i in range(b)]
            feeds = step_feeds(workload, sessions, ensemble_inputs(workload, batch, k))
            for m in step_models(workload):
                if b not in wanted[m.name]:
                    continue
                feed = feeds[m.name] if m.batched else one_request(m, feeds[m.name])
                ms = time_run(sessions[m.name], feed, min_time_s=min_time_s)
                limit.ms[m.name][b] = min(ms, limit.ms[m.name].get(b, ms))
    return limit
