"""The naive peer of the benchmark: the eager PyTorch model behind FastAPI + uvicorn, one forward pass per request.

What a first "just serve the model" service looks like: JSON in and out, one uvicorn worker, sync endpoints (FastAPI
runs them in its thread pool), no batching, no ONNX. It loads the trained model exactly like training does
(``load_model(run_dir)``) and the exported catalog embeddings (``catalog.npz``, ``CatalogEmbeddings.load(repo)``),
and does the same work as the Triton ensembles:

- ``POST /rank``: ``{"history": [L item indices], "movie_id": [N movieIds]}`` -> ``{"scores": [N floats]}`` (null
  for an id the catalog does not hold; Triton's -inf): the eager sequence encoder, the candidates' catalog
  embeddings looked up row by row (``CatalogEmbeddings.row_of``) and the eager fusion head, i.e. the `rank`
  ensemble's sequence_encoder -> item_lookup -> fusion_head -> score_mask;
- ``POST /recommend``: ``{"history": [L item indices], "k": 10}`` -> ``{"movie_ids": [...], "scores": [...]}``:
  the eager sequence encoder, dot-product retrieval over the catalog embeddings and the eager fusion head rerank,
  i.e. ``hybridrec.export.catalog.reference_recommend`` with eager modules;
- ``POST /rank_content``: the `rank_content` tensors (history [1, L], item_id/poster/meta/people/overview
  [1, N, ...]), each as ``{"dtype", "shape", "data": base64}``, -> ``{"scores": [[N floats]]}`` from
  ``HybridModel.score`` (eager CNN, GRU and fusion head on every request; not part of the benchmark's workloads).

Run it by hand with ``python -m hybridrec.loadtests.bench.naive_peer --run runs/demo --repo model_repository
--port 8080``; the benchmark starts it through :class:`PeerServer` (a subprocess on a free 127.0.0.1 port, killed at
the end). The process bounds itself too: it exits when its parent dies or after ``--max-lifetime-s``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec

LOCALHOST = "127.0.0.1"
DEFAULT_MAX_LIFETIME_S = 3600.0


# --- wire format (shared with the Locust users in locustfile.py) ----------------------------------------------------
def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A numpy array as JSON: dtype name, shape and the raw bytes in base64."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj: Any, name: str) -> np.ndarray:
    """Inverse of :func:`encode_array`; ValueError naming the input when it is malformed."""
    try:
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(s) for s in obj["shape"])
        raw = base64.b64decode(obj["data"], validate=True)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"input '{name}': expected {{dtype, shape, data}} with base64 data ({e})") from None
    if len(raw) != dtype.itemsize * math.prod(shape):
        raise ValueError(f"input '{name}': {len(raw)} bytes do not fill shape {shape} of {dtype.name}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()  # writable, so torch.from_numpy does not warn


def rank_body(history: np.ndarray, movie_ids: Sequence[int]) -> bytes:
    """The JSON body of a `/rank` request: one user's encoded history (item indices) and the candidates' movieIds
    (only the real ones: a naive client does not pad)."""
    return json.dumps(
        {"history": [int(x) for x in np.asarray(history).reshape(-1)], "movie_id": [int(m) for m in movie_ids]}
    ).encode()


def rank_content_body(arrays: dict[str, np.ndarray]) -> bytes:
    """The JSON body of a `/rank_content` request from the spec-named `rank_content` tensors."""
    return json.dumps({name: encode_array(arrays[name]) for name in spec.RANK_CONTENT.input_names}).encode()


def recommend_body(history: np.ndarray, k: int = spec.DEFAULT_K) -> bytes:
    """The JSON body of a `/recommend` request: one user's encoded history (item indices) and k."""
    return json.dumps({"history": [int(x) for x in np.asarray(history).reshape(-1)], "k": int(k)}).encode()


# --- the eager model --------------------------------------------------------------------------------------------------
class EagerRecommender:
    """The trained model in eager PyTorch (``load_model(run_dir)``) and the exported catalog embeddings."""

    def __init__(self, run_dir: str | Path, repo: str | Path) -> None:
        import torch

        from hybridrec.export.catalog import CatalogEmbeddings
        from hybridrec.training.train import load_model

        self.torch = torch
        self.model, self.artifacts = load_model(run_dir)
        self.catalog = CatalogEmbeddings.load(repo)

    def rank(self, history: np.ndarray, movie_ids: Sequence[int]) -> np.ndarray:
        """Scores [N] of catalog movieIds for one encoded history [L]; -inf for ids the catalog does not hold."""
        rows = [self.catalog.row_of(int(m)) if int(m) >= 0 else None for m in movie_ids]
        known = np.array([r is not None for r in rows], dtype=bool)
        items = self.catalog.embeddings[[spec.UNK_ID if r is None else r for r in rows]]
        torch = self.torch
        with torch.inference_mode():
            user = self.model.sequence_encoder(torch.from_numpy(np.asarray(history, np.int64)[None]))
            scores = self.model.fusion_head(user, torch.from_numpy(items[None]))[0].numpy().astype(np.float32)
        scores[~known] = -np.inf
        return scores

    def rank_content(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Scores [1, N] for one `rank_content` request (spec-named arrays with the batch axis)."""
        for t in spec.RANK_CONTENT.inputs:
            t.check(arrays[t.name])
        torch = self.torch
        with torch.inference_mode():
            tensors = {name: torch.from_numpy(a) for name, a in arrays.items()}
            return self.model.score(tensors["history"], tensors).numpy()

    def recommend(self, history: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(movie_ids [K], scores [K]) for one encoded history [L]: retrieval + eager rerank + top-K."""
        from hybridrec.export.catalog import reference_recommend

        torch = self.torch
        with torch.inference_mode():
            user = self.model.sequence_encoder(torch.from_numpy(history[None]))[0].numpy()

            def fusion(u: np.ndarray, items: np.ndarray) -> np.ndarray:
                out = self.model.fusion_head(torch.from_numpy(u[None]), torch.from_numpy(items[None]))
                return np.asarray(out[0].numpy())

            return reference_recommend(user, history, self.catalog, fusion, k)


def create_app(run_dir: str | Path, repo: str | Path, instance_id: str = "") -> Any:
    """The FastAPI app (``/health``, ``/rank``, ``/recommend``, ``/rank_content``) around an
    :class:`EagerRecommender`."""
    from fastapi import Body, FastAPI, HTTPException

    rec = EagerRecommender(run_dir, repo)
    app = FastAPI(title="hybridrec naive peer", description="eager PyTorch, one forward pass per request")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "id": instance_id}

    @app.post("/rank")
    def rank(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's way to take a raw body
        try:
            history = np.asarray(body["history"], dtype=np.int64).reshape(-1)
            movie_ids = [int(m) for m in body["movie_id"]]
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPException(
                status_code=400, detail=f"expected {{history: [ints], movie_id: [ints]}} ({e})"
            ) from None
        if not movie_ids:
            raise HTTPException(status_code=400, detail="movie_id: no candidates given")
        scores = rec.rank(history, movie_ids)
        return {"scores": [float(s) if np.isfinite(s) else None for s in scores]}  # JSON has no -inf

    @app.post("/rank_content")
    def rank_content(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        try:
            arrays = {name: decode_array(body.get(name), name) for name in spec.RANK_CONTENT.input_names}
            scores = rec.rank_content(arrays)
        except ValueError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        return {"scores": scores.tolist()}

    @app.post("/recommend")
    def recommend(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        try:
            history = np.asarray(body["history"], dtype=np.int64).reshape(-1)
            k = int(body.get("k", spec.DEFAULT_K))
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPException(status_code=400, detail=f"expected {{history: [ints], k: int}} ({e})") from None
        movie_ids, scores = rec.recommend(history, k)
        return {"movie_ids": movie_ids.tolist(), "scores": scores.tolist()}

    return app


# --- running it -----------------------------------------------------------------------------------------------------
def _watchdog(parent: int, max_lifetime_s: float) -> None:
    """Exit when the parent process is gone or the lifetime is over: a peer never outlives its benchmark."""
    deadline = time.monotonic() + max_lifetime_s
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def serve(
    run_dir: str | Path,
    repo: str | Path,
    port: int,
    *,
    instance_id: str = "",
    max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S,
) -> None:
    import uvicorn

    threading.Thread(target=_watchdog, args=(os.getppid(), max_lifetime_s), daemon=True).start()
    app = create_app(run_dir, repo, instance_id)
    uvicorn.run(app, host=LOCALHOST, port=port, log_level="warning", access_log=False, workers=1)


class PeerError(RuntimeError):
    """The naive peer did not start or did not answer; the message carries its log."""


class PeerServer:
    """The naive peer as a child process on a free 127.0.0.1 port, in its own process group: :meth:`start`, then
    :meth:`wait_ready`, and :meth:`stop` (idempotent) kills the group; or ``with peer.running(): ...``."""

    def __init__(
        self,
        run_dir: str | Path,
        repo: str | Path,
        *,
        port: int | None = None,
        log_file: Path | None = None,
        startup_timeout_s: float = 120.0,
        max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S,
    ) -> None:
        from hybridrec.serving import free_port

        self.run_dir, self.repo = Path(run_dir), Path(repo)
        self.port = port if port is not None else free_port()
        self.log_path = log_file
        self.startup_timeout_s = startup_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.instance_id = f"peer-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "hybridrec.loadtests.bench.naive_peer",
            f"--run={self.run_dir}",
            f"--repo={self.repo}",
            f"--port={self.port}",
            f"--instance-id={self.instance_id}",
            f"--max-lifetime-s={self.max_lifetime_s}",
        ]

    def start(self) -> PeerServer:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="naive-peer-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise PeerError(self._describe("the naive peer exited before answering"))
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2.0) as r,
            ):
                if json.loads(r.read()).get("id") == self.instance_id:
                    return
            if time.monotonic() > deadline:
                raise PeerError(self._describe(f"the naive peer did not answer within {self.startup_timeout_s:.0f} s"))
            time.sleep(0.2)

    def post(self, route: str, body: bytes, timeout_s: float = 60.0) -> dict[str, Any]:
        """One request (used for the answer check against Triton; the load comes from Locust)."""
        req = urllib.request.Request(
            f"{self.url}{route}", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                result: dict[str, Any] = json.loads(r.read())
                return result
        except urllib.error.HTTPError as e:
            raise PeerError(f"{route}: HTTP {e.code}: {e.read()[:500]!r}") from None

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue

    def _describe(self, headline: str) -> str:
        text = ""
        if self.log_path is not None and self.log_path.is_file():
            text = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        return f"{headline}\ncommand: {' '.join(self.command())}\n--- log {self.log_path} ---\n{text}"

    @contextlib.contextmanager
    def running(self) -> Iterator[PeerServer]:
        """Started and answering inside the block, stopped after it (also when it could not start)."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridrec.loadtests.bench.naive_peer", description=__doc__)
    p.add_argument("--run", required=True, type=Path, help="training run folder (model.pt, artifacts.json)")
    p.add_argument("--repo", required=True, type=Path, help="exported model repository (catalog.npz)")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1")
    p.add_argument("--instance-id", default="", help="echoed by /health, so a launcher knows it reached this process")
    p.add_argument("--max-lifetime-s", type=float, default=DEFAULT_MAX_LIFETIME_S, help="exit after this long")
    args = p.parse_args(argv)
    serve(args.run, args.repo, args.port, instance_id=args.instance_id, max_lifetime_s=args.max_lifetime_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
