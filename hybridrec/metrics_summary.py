"""A per-model summary of Triton's Prometheus metrics: requests, failures, average request / queue / compute time
and batch size, and requests/s between two scrapes.

    python -m hybridrec.metrics_summary --url 127.0.0.1:8002 [--interval 5] [--json]

Triton 2.51 (the bundled server and the 24.10 container) exposes cumulative **counters** per model and version
(:data:`COUNTERS`; the duration counters are microseconds summed over requests), gauges (:data:`GAUGES`), and, only
when started with ``--metrics-config=summary_latencies=true``, **summaries** with quantiles (:data:`SUMMARIES`;
``deploy/entrypoint.sh`` turns them on). Averages here come from the counters, so they work without that flag:
request, queue and compute time per successful request, and inferences per execution (the batch size the dynamic
batcher formed). Every Triton metric the deployment files use (Grafana dashboard, HPA rule, docs) is listed in
:data:`KNOWN_METRICS`, and ``tests/integration/test_metrics.py`` checks each one on a live server.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# Cumulative counters, labels {model, version} (+ {reason} for failures), always exposed with --allow-metrics.
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    # per model with a response cache (the ensembles)
    "nv_cache_num_hits_per_model",
    "nv_cache_num_misses_per_model",
)
GAUGES = (
    "nv_inference_pending_request_count",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
    "nv_cpu_memory_total_bytes",
)
# Only with --metrics-config=summary_latencies=true; label quantile="0.5", "0.9", "0.99" (the quantiles set by
# --metrics-config=summary_quantiles=...), plus the _count and _sum series of every summary. Triton 2.51 exposes no
# nv_inference_request_summary_us for ensembles (queue and compute summaries it does).
SUMMARY_BASES = (
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
)
SUMMARIES = tuple(f"{b}{suffix}" for b in SUMMARY_BASES for suffix in ("", "_count", "_sum"))
SUMMARY_QUANTILES = ("0.5", "0.9", "0.99")
KNOWN_METRICS = frozenset((*COUNTERS, *GAUGES, *SUMMARIES))
METRIC_NAME = re.compile(r"\bnv_[a-z_]+\b")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """Prometheus text format -> {series name: {sorted (label, value) pairs: value}} (comments skipped)."""
    out: dict[str, dict[Labels, float]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        name, labels, value = m.groups()
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        out.setdefault(name, {})[pairs] = float(value)
    return out


def names(text: str) -> set[str]:
    """The series names a scrape holds."""
    return set(parse(text))


@dataclass(frozen=True)
class ModelStats:
    """One model's counters (summed over its versions) and the averages they give."""

    requests: float  # successful requests
    failures: float
    inferences: float  # batch elements (a request of batch 1 is one)
    executions: float  # model executions (one per batch the batcher formed)
    request_us: float
    queue_us: float
    compute_us: float  # input + infer + output

    @property
    def avg_request_ms(self) -> float:
        return _ratio(self.request_us, self.requests) / 1000.0

    @property
    def avg_queue_ms(self) -> float:
        return _ratio(self.queue_us, self.requests) / 1000.0

    @property
    def avg_compute_ms(self) -> float:
        return _ratio(self.compute_us, self.requests) / 1000.0

    @property
    def avg_batch(self) -> float:
        return _ratio(self.inferences, self.executions)

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(
            avg_request_ms=self.avg_request_ms,
            avg_queue_ms=self.avg_queue_ms,
            avg_compute_ms=self.avg_compute_ms,
            avg_batch=self.avg_batch,
        )
        return d

    def minus(self, earlier: ModelStats) -> ModelStats:
        """The counts between an earlier scrape and this one (a restarted server counts from zero again)."""
        if self.requests + self.failures < earlier.requests + earlier.failures:
            return self
        return ModelStats(*(a - b for a, b in zip(astuple(self), astuple(earlier), strict=True)))


def astuple(s: ModelStats) -> tuple[float, ...]:
    return (s.requests, s.failures, s.inferences, s.executions, s.request_us, s.queue_us, s.compute_us)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _per_model(series: dict[Labels, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in series.items():
        model = dict(labels).get("model")
        if model is not None:
            out[model] = out.get(model, 0.0) + value
    return out


def summarize(metrics_text: str) -> dict[str, ModelStats]:
    """Per model (versions and failure reasons summed): the cumulative counters of one scrape."""
    parsed = parse(metrics_text)
    col = {name: _per_model(parsed.get(name, {})) for name in COUNTERS}
    models = sorted(set(col["nv_inference_request_success"]) | set(col["nv_inference_request_failure"]))

    def get(name: str, model: str) -> float:
        return col[name].get(model, 0.0)

    return {
        m: ModelStats(
            requests=get("nv_inference_request_success", m),
            failures=get("nv_inference_request_failure", m),
            inferences=get("nv_inference_count", m),
            executions=get("nv_inference_exec_count", m),
            request_us=get("nv_inference_request_duration_us", m),
            queue_us=get("nv_inference_queue_duration_us", m),
            compute_us=sum(get(f"nv_inference_compute_{part}_duration_us", m) for part in ("input", "infer", "output")),
        )
        for m in models
    }


def rates(before: dict[str, ModelStats], after: dict[str, ModelStats], seconds: float) -> dict[str, dict[str, float]]:
    """Between two :func:`summarize` results ``seconds`` apart: requests/s, failures/s and the interval's
    averages per model."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    zero = ModelStats(0, 0, 0, 0, 0, 0, 0)
    out = {}
    for model, now in after.items():
        delta = now.minus(before.get(model, zero))
        out[model] = {
            **delta.as_dict(),
            "requests_per_s": delta.requests / seconds,
            "failures_per_s": delta.failures / seconds,
        }
    return out


def scrape(url: str, timeout_s: float = 5.0) -> str:
    """GET the metrics page; ``url`` is host:port (Triton's metrics port, 8002) or a full http(s) URL."""
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
    return body.decode("utf-8")


def format_table(stats: dict[str, dict[str, float]]) -> str:
    cols = [
        ("model", None, "{}"),
        ("requests", "requests", "{:.0f}"),
        ("req/s", "requests_per_s", "{:.2f}"),
        ("failures", "failures", "{:.0f}"),
        ("request ms", "avg_request_ms", "{:.2f}"),
        ("queue ms", "avg_queue_ms", "{:.2f}"),
        ("compute ms", "avg_compute_ms", "{:.2f}"),
        ("batch", "avg_batch", "{:.2f}"),
    ]
    present = [c for c in cols if c[1] is None or any(c[1] in s for s in stats.values())]
    rows = [[title for title, _, _ in present]]
    for model in sorted(stats):
        row = []
        for _, key, fmt in present:
            if key is None:
                row.append(model)
                continue
            value = stats[model].get(key, math.nan)
            row.append("-" if math.isnan(value) else fmt.format(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(present))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hybridrec-metrics", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="127.0.0.1:8002", help="Triton's metrics endpoint, host:port (default %(default)s)")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between the two scrapes for req/s; 0 = one scrape, totals"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per scrape")
    args = p.parse_args(argv)
    try:
        first = summarize(scrape(args.url, args.timeout))
        if args.interval > 0:
            t0 = time.monotonic()
            time.sleep(args.interval)
            second = summarize(scrape(args.url, args.timeout))
            stats = rates(first, second, time.monotonic() - t0)
            title = f"over {args.interval:g} s"
        else:
            stats = {m: s.as_dict() for m, s in first.items()}
            title = "since the server started"
    except OSError as e:
        print(f"cannot scrape {args.url}: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"{args.url} did not answer in the Prometheus text format: {e}", file=sys.stderr)
        return 1
    if args.json:
        clean = {m: {k: None if math.isnan(v) else v for k, v in s.items()} for m, s in stats.items()}
        print(json.dumps(clean, indent=2, sort_keys=True))
    else:
        print(f"Triton metrics at {args.url}, {title} (averages per successful request; batch = inferences/executions)")
        print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
