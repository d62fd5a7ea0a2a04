"""All GPU checks in one go, for a GPU machine: `python -m hybridrec.export.gpu_checks --repo model_repository`.

1. onnxruntime CUDA (and TensorRT EP, FP16) vs CPU onnxruntime for every exported model at several shapes;
2. TensorRT plans built for the `plan` config set (skipped with a message where tensorrt is missing);
3. if `tritonserver` is on PATH (the official container): each config set (default, gpu-trt, plan) is served and the
   `rank` and `recommend` ensembles are compared with CPU onnxruntime.
Prints one line per check and a JSON summary; exits non-zero if any check failed. Tolerances: 1e-4 in FP32, 5e-2 in
FP16 (scores are sigmoids in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec import spec

SHAPES = ((1, {"N": 1, "L": 1}), (4, {"N": 50, "L": 50}), (8, {"N": 200, "L": 50}))


def _ort(path: Path, providers: list[Any]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=providers)


def _inputs(m: spec.ModelSpec, batch: int, sizes: dict[str, int], session: Any, seed: int) -> dict[str, np.ndarray]:
    dims = {i.name: i.shape for i in session.get_inputs()}
    d = next((s[-1] for n, s in dims.items() if n in ("user_embedding", "item_embedding")), 64)
    return spec.example_batch(m, min(batch, m.batch_limit or batch), {**sizes, "D": int(d)}, seed=seed)


def check_onnxruntime_gpu(repo: Path, results: list[dict[str, Any]]) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        results.append({"check": "ort-gpu", "ok": None, "skipped": f"no CUDA provider in onnxruntime ({available})"})
        return
    eps: list[tuple[str, list[Any], float]] = [("cuda", ["CUDAExecutionProvider"], 1e-4)]
    if "TensorrtExecutionProvider" in available:
        eps.append(
            ("tensorrt-fp16", [("TensorrtExecutionProvider", {"trt_fp16_enable": True}), "CUDAExecutionProvider"], 5e-2)
        )
    for name in (*[m.name for m in spec.COMPOSING], *[m.name for m in spec.CATALOG_MODELS]):
        path = repo / name / "1" / "model.onnx"
        cpu = _ort(path, ["CPUExecutionProvider"])
        m = spec.model_spec(name)
        for label, providers, tol in eps:
            t0 = time.time()
            try:
                gpu = _ort(path, providers)
                worst = 0.0
                for seed, (batch, sizes) in enumerate(SHAPES):
                    x = _inputs(m, batch, sizes, cpu, seed)
                    for a, b in zip(cpu.run(None, x), gpu.run(None, x), strict=True):
                        if a.dtype.kind == "f":
                            worst = max(worst, float(np.abs(a - b).max()))
                        elif name != "retrieval":  # retrieval indices may swap on near-ties
                            worst = max(worst, float((a != b).mean()))
                ok = worst <= tol
                results.append(
                    {
                        "check": f"ort-{label}",
                        "model": name,
                        "ok": ok,
                        "max_abs_diff": worst,
                        "providers": gpu.get_providers(),
                        "s": round(time.time() - t0, 1),
                    }
                )
            except Exception as e:
                results.append({"check": f"ort-{label}", "model": name, "ok": False, "error": str(e)[:500]})


def check_plans(repo: Path, results: list[dict[str, Any]]) -> bool:
    from hybridrec.export.tensorrt import TensorRTUnavailableError, build_plans

    t0 = time.time()
    try:
        built = build_plans(repo)
    except TensorRTUnavailableError as e:
        results.append({"check": "tensorrt-plans", "ok": None, "skipped": str(e)})
        return False
    except Exception as e:
        results.append({"check": "tensorrt-plans", "ok": False, "error": str(e)[:1000]})
        return False
    results.append({"check": "tensorrt-plans", "ok": True, "built": sorted(built), "s": round(time.time() - t0, 1)})
    return True


def check_triton(repo: Path, config_sets: list[str | None], results: list[dict[str, Any]]) -> None:
    from hybridrec.client import RecommenderClient
    from hybridrec.serving import TritonServer, find_tritonserver

    if shutil.which("tritonserver") is None:
        results.append({"check": "triton", "ok": None, "skipped": "no tritonserver on PATH (run in the container)"})
        return
    cpu = {
        n: _ort(repo / n / "1" / "model.onnx", ["CPUExecutionProvider"])
        for n in ("sequence_encoder", "item_encoder", "fusion_head")
    }
    rank_in = spec.example_batch(spec.RANK_CONTENT, 1, {"N": 50, "L": 50}, seed=3)
    user = cpu["sequence_encoder"].run(None, {"history": rank_in["history"]})[0]
    items = cpu["item_encoder"].run(None, {t.name: rank_in[t.name] for t in spec.ITEM_INPUTS})[0]
    want = cpu["fusion_head"].run(None, {"user_embedding": user, "item_embedding": items})[0]
    for name in config_sets:
        t0 = time.time()
        label = name or "default"
        try:
            server = TritonServer(repo, model_config_name=name, binary=find_tritonserver())
            with server, RecommenderClient(server.grpc_url) as client:
                got = client.infer("rank_content", rank_in)["scores"]
                rec = client.recommend_tensors(rank_in["history"][0], 10)
                t1 = time.perf_counter()
                for _ in range(50):
                    client.infer("rank_content", rank_in)
                rank_ms = (time.perf_counter() - t1) / 50 * 1000
            worst = float(np.abs(got - want).max())
            tol = 1e-4 if label == "default" else 5e-2
            results.append(
                {
                    "check": f"triton-{label}",
                    "ok": worst <= tol and len(rec[0]) == 10,
                    "rank_max_abs_diff": worst,
                    "rank_ms_n50": round(rank_ms, 2),
                    "s": round(time.time() - t0, 1),
                }
            )
        except Exception as e:
            results.append({"check": f"triton-{label}", "ok": False, "error": str(e)[:1000]})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repo", default="model_repository")
    p.add_argument("--out", help="write the JSON summary here too")
    args = p.parse_args(argv)
    repo = Path(args.repo)
    results: list[dict[str, Any]] = []
    check_onnxruntime_gpu(repo, results)
    plans = check_plans(repo, results)
    check_triton(repo, [None, "gpu-trt", *(["plan"] if plans else [])], results)
    for r in results:
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[r["ok"]]
        detail = {k: v for k, v in r.items() if k not in ("check", "model", "ok")}
        print(f"{status} {r['check']} {r.get('model', '')} {json.dumps(detail)}")
    summary = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(summary)
    return 1 if any(r["ok"] is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
