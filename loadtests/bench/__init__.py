"""Throughput benchmark of the served models (not a timed test): ``python -m hybridrec.loadtests.bench.run``.

For each workload (`recommend`: one user's history, top-10 of the catalog; `rank`: N=50 real candidates by movieId)
it measures, on this machine:

- ``limit.py``: the in-process limit, the same ONNX files called with onnxruntime at the batch sizes Triton's
  dynamic batcher formed (model compute only);
- the Triton ensembles of the DEFAULT config set (Triton's onnxruntime backend) through the gRPC client under Locust
  (closed loop, a sweep of user counts) and under ``perf_analyzer`` (``loadtests/perf_analyzer.py``), cross-checked
  with Triton's statistics API, which also gives each ensemble's overhead over its composing models' compute;
- the same ensembles from the ``cpu`` config set (python backend);
- ``naive_peer.py``: a FastAPI + uvicorn service running the eager PyTorch model per request, driven by the same
  load generator (``peer_locustfile.py``);
- Triton with dynamic batching removed from the composing models (a generated copy of the repository).

``run.py`` ties them together and writes ``results.json``, ``results.md`` and ``latency_throughput.png`` (default
``runs/perf``); ``docs/performance.md`` explains the numbers. Its parts: ``triton_stats.py`` (Triton's statistics API
deltas and the ensemble overhead), ``repository.py`` (the repository copy without dynamic batching), ``answers.py``
(the peer's answers against Triton's), ``summary.py`` (throughput at the budget, ratios, targets), ``report.py``
(markdown tables, ``results.md`` and ``results.json``), ``plots.py`` (the latency/throughput plot), ``series.py``
(the variants and their labels) and ``common.py`` (helpers shared with ``loadtests/reliability.py``).
"""
