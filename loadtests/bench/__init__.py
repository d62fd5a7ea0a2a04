"""Throughput benchmark of the served models (not a timed test): ``python -m hybridrec.loadtests.bench.run``.

For each workload (`recommend`: one user's history, top-10 of the catalog; `rank`: N real candidates with posters)
it measures, on this machine:

- ``limit.py``: the in-process limit, the same ONNX models called with onnxruntime at the batch sizes Triton's
  dynamic batcher formed (model compute only);
- the Triton ensembles through the gRPC client under Locust (closed loop, a sweep of user counts), cross-checked
  with Triton's statistics API;
- ``naive_peer.py``: a FastAPI + uvicorn service running the eager PyTorch model per request, driven by the same
  load generator (``locustfile.py``);
- Triton with dynamic batching removed from the composing models (a generated copy of the repository).

``run.py`` ties them together and writes ``results.json``, ``results.md`` and ``latency_throughput.png``;
``docs/performance.md`` explains the numbers.
"""
