"""The `hybridrec` command: data, train, evaluate, export, triton-configs, backend, serve, query, catalog, loadtest,
latency, metrics and the end-to-end demo.

Heavy imports (torch, onnx) happen inside the subcommands that need them, so `hybridrec query` and
`hybridrec loadtest` work from a client-only install.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("hybridrec")

# training/presets/*.yaml, shipped as package data of hybridrec.training (no torch import to find them)
PRESETS = Path(importlib.util.find_spec("hybridrec.training").origin or "").parent / "presets"  # type: ignore[union-attr]
DEFAULT_RUN = "runs/demo"
DEFAULT_REPO = os.environ.get("HYBRIDREC_REPO", "model_repository")  # every command that takes --repo
DEFAULT_URL = "127.0.0.1:8001"  # `hybridrec serve`'s gRPC port (tritonserver's own default); every client command


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value (e.g. optim.epochs=3), got {p!r}")
        out[key] = yaml.safe_load(value)
    return out


def _run_config(args: argparse.Namespace) -> Any:
    from hybridrec.dataclass_yaml import load_yaml
    from hybridrec.training.config import RunConfig

    path = args.config or (PRESETS / f"{args.preset}.yaml" if args.preset else None)
    overrides = _overrides(args.set or [])
    if args.data:
        overrides["data.path"] = str(args.data)
    return load_yaml(RunConfig, path, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from hybridrec.training.train import train

    cfg = _run_config(args)
    result = train(cfg, args.run, resume=args.resume, progress=not args.quiet)
    print(
        f"trained {result.epochs} epochs (best {result.best_epoch}) in {result.wall_s:.0f}s, "
        f"peak RSS {result.peak_rss_mb:.0f} MB -> {result.run_dir}"
    )
    print("metrics: " + ", ".join(f"{k}={_number(v)}" for k, v in result.metrics.items()))
    return 0


def _number(v: float) -> str:
    """Counts as integers, seconds and megabytes with one decimal, ranking metrics (in [0, 1]) with four."""
    if float(v).is_integer() and abs(v) >= 1:
        return str(int(v))
    return f"{v:.1f}" if abs(v) > 1 else f"{v:.4f}"


def cmd_export(args: argparse.Namespace) -> int:
    from hybridrec.export.onnx_export import export_run

    reports = export_run(args.run, args.repo, check=not args.no_check)
    for name, r in reports.items():
        print(
            f"{name}: {Path(args.repo) / name / '1' / 'model.onnx'}"
            + (f"  parity max |eager - onnxruntime| = {r.max_abs_diff:.2e}" if r else "")
        )
    return 0


def cmd_export_tensorrt(args: argparse.Namespace) -> int:
    from hybridrec.export.tensorrt import TensorRTUnavailableError, build_plans

    try:
        built = build_plans(args.repo, fp16=not args.fp32)
    except TensorRTUnavailableError as e:  # nothing was built: a failure for whoever asked for plans
        print(f"error: no plans built: {e}", file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


def cmd_triton_configs(args: argparse.Namespace) -> int:
    from hybridrec.export.triton_config import drift, write_configs

    if args.check:
        stale = drift(args.repo)
        if stale:
            stale_list = "\n  ".join(stale)
            print(f"generated files differ from hybridrec/spec.py (run `hybridrec triton-configs`):\n  {stale_list}")
            return 1
        print("model repository configs are up to date")
        return 0
    for p in write_configs(args.repo):
        print(p)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hybridrec import admin
    from hybridrec.serving import TritonServer, find_tritonserver, port_in_use

    for flag, port in (
        ("--http-port", args.http_port),
        ("--grpc-port", args.grpc_port),
        ("--metrics-port", args.metrics_port),
    ):
        if port_in_use(port, args.host):
            print(
                f"error: port {port} is in use on {args.host} (another tritonserver?): pick another with {flag}",
                file=sys.stderr,
            )
            return 2
    key_file = Path(args.admin_key_file).expanduser() if args.admin_key_file else admin.default_key_file()
    key = admin.ensure_key(key_file)
    binary = find_tritonserver(prefer_bundled=args.bundled)
    server = TritonServer(
        Path(args.repo),
        binary=binary,
        model_config_name={"auto": "auto", "default": None}.get(args.config_set, args.config_set),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        cache_config=f"local,size={args.cache_size}" if args.cache_size else None,
        # explicit control lets `hybridrec catalog add --url` reload the catalog models without a restart
        model_control_mode="explicit",
        extra_args=["--load-model=*"],
        host=args.host,
        admin_key=key,
    )
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    where = "$" + admin.ENV if os.environ.get(admin.ENV) else str(key_file)
    print(f"config set: {server.config_set} ({server.config_set_reason})", flush=True)
    with server:
        print(
            f"tritonserver ready ({'bundled' if binary.bundled else binary.executable}) on {args.host}: "
            f"HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}\n"
            f"model control (load/unload) needs the admin key in {where}; inference needs none",
            flush=True,
        )
        next_probe = time.monotonic() + args.probe_interval
        while not stop["now"] and server.alive:
            time.sleep(0.5)
            if args.probe_interval > 0 and time.monotonic() > next_probe and server.alive:
                try:  # an instance that died (a python-backend stub) reads READY but fails every request
                    for name, why in server.heal().items():
                        print(f"model {name} failed a probe and was reloaded: {why[:200]}", file=sys.stderr, flush=True)
                except Exception as e:  # the server is going down: the loop notices that next
                    log.debug("probe failed: %s", e)
                next_probe = time.monotonic() + args.probe_interval
        died = not stop["now"]
        code = server.stop()
    if died:  # killed or crashed: say so and fail, so that a supervisor restarts us
        print(f"error: tritonserver exited on its own with code {code}; log: {server.log_path}", file=sys.stderr)
        return 1
    print("tritonserver stopped")
    return 0


def _catalog(repo: str, data: str | None) -> Any:
    from hybridrec.data import load_movielens, resolve_data_dir
    from hybridrec.preprocessing import Artifacts, ItemCatalog

    return ItemCatalog(load_movielens(resolve_data_dir(data)), Artifacts.load(Path(repo)))


def candidates_for(catalog: Any, history: list[int], count: int) -> list[int]:
    """The `count` most-rated catalog movies the user has not seen: a simple, realistic candidate set."""
    import numpy as np

    ids, counts = np.unique(catalog.data.ratings.movie_ids, return_counts=True)
    seen = set(history)
    ordered = ids[np.argsort(-counts, kind="stable")]
    return [int(m) for m in ordered if int(m) not in seen][:count]


def query(
    url: str, protocol: str, catalog: Any, user: int | None, history: list[int] | None, candidates: int, top: int
) -> Any:
    from hybridrec.client import RecommenderClient

    history = _history(catalog, user, history)
    cands = candidates_for(catalog, history, candidates)
    with RecommenderClient(url, protocol, catalog=catalog) as client:
        result = client.rank(history, cands)
    who = f"user {user}" if user is not None else "the given history"
    print(
        f"Top {top} of {len(cands)} unseen candidates for {who} ({len(history)} rated movies; "
        f"rank ensemble over {protocol}, {result.latency_ms:.0f} ms):"
    )
    for i, item in enumerate(result.top(top), 1):
        print(f"{i:3d}. {item.score:.4f}  {item.title}")
    return result


def cmd_query(args: argparse.Namespace) -> int:
    catalog = _catalog(args.repo, args.data)
    history = [int(x) for x in args.history.split(",")] if args.history else None
    user = None if history is not None else args.user
    from hybridrec.client import RecommenderError

    try:
        if args.recommend:
            recommend(args.url, args.protocol, catalog, user, history, args.top)
        else:
            query(args.url, args.protocol, catalog, user, history, args.candidates, args.top)
    except RecommenderError as e:  # server down, model missing, timeout: one line, no traceback
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def _history(catalog: Any, user: int | None, history: list[int] | None) -> list[int]:
    if history is not None:
        return history
    hist = catalog.data.histories().get(user)
    if hist is None:
        raise SystemExit(f"user {user} is not in the dataset")
    return [int(m) for m in hist]


def recommend(url: str, protocol: str, catalog: Any, user: int | None, history: list[int] | None, top: int) -> Any:
    from hybridrec.client import RecommenderClient

    history = _history(catalog, user, history)
    with RecommenderClient(url, protocol, catalog=catalog) as client:
        result = client.recommend(history, top)
    print(
        f"Top {top} of the whole catalog for {'user ' + str(user) if user is not None else 'the history'} "
        f"(recommend ensemble over {protocol}, {result.latency_ms:.0f} ms):"
    )
    for i, item in enumerate(result.items, 1):
        print(f"{i:3d}. {item.score:.4f}  {item.title}")
    return result


def cmd_catalog_add(args: argparse.Namespace) -> int:
    """Add a cold-start movie (poster + metadata, no ratings) to the served catalog."""
    from hybridrec import spec
    from hybridrec.export.catalog import add_items, prune_catalog_versions
    from hybridrec.preprocessing import ItemMetadata, decode_poster

    split = lambda v: tuple(x.strip() for x in v.split("|") if x.strip()) if v else ()  # noqa: E731
    md = ItemMetadata(
        args.title, split(args.genres), args.year, args.overview or "", split(args.cast), split(args.directors)
    )
    poster = decode_poster(args.poster) if args.poster else None
    names = ", ".join(m.name for m in spec.CATALOG_STATE_MODELS)
    if args.offline:
        rows, version = add_items(args.repo, [(args.movie_id, md, poster)], prune=True)
        print(f"movie {args.movie_id} is catalog row {rows[0]}; {names} written as version {version} in {args.repo}")
        print("a server started on this repository serves it")
        return 0
    from hybridrec.client import RecommenderClient, ServerUnavailableError

    with RecommenderClient(args.url, args.protocol) as client:
        try:  # before anything is written: a missing server changes nothing
            client.health()
        except ServerUnavailableError as e:
            raise ServerUnavailableError(
                f"{e} -- start `hybridrec serve` first, or pass --offline to only write the repository"
            ) from e
        rows, version = add_items(args.repo, [(args.movie_id, md, poster)], prune=False)
        print(f"movie {args.movie_id} is catalog row {rows[0]}; {names} written as version {version} in {args.repo}")
        # Each model swaps to its new version once loaded; until then the old version answers: no request is lost.
        for m in spec.CATALOG_STATE_MODELS:
            client.load_model(m.name)
    prune_catalog_versions(args.repo, keep=version)
    print(f"loaded {names} version {version} on {args.url}: the movie is served now")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Whether the server is live and every model ready; with --wait, poll until it is (exit 1 if it never is)."""
    from hybridrec.client import RecommenderClient, RecommenderError

    deadline = time.monotonic() + args.wait
    while True:
        try:
            with RecommenderClient(args.url, args.protocol) as client:
                health = client.health(timeout_s=5.0)
            problem = "" if health["ready"] else "not ready: " + ", ".join(
                name for name, ready in health["models"].items() if not ready
            )
        except RecommenderError as e:
            problem = one_line(e)
        if not problem:
            print(f"{args.url}: live and ready ({len(health['models'])} models)")
            return 0
        if time.monotonic() >= deadline:
            print(f"{args.url}: {problem}", file=sys.stderr)
            return 1
        time.sleep(1.0)


def cmd_demo(args: argparse.Namespace) -> int:
    """train on the real data -> export -> serve -> query -> stop, with embedded defaults."""
    from hybridrec.data import resolve_data_dir

    t0 = time.time()
    data_dir = resolve_data_dir(args.data)  # fails early, with how to get the data
    print(f"[1/4] training on {data_dir} (preset {args.preset}) -> {args.run}", flush=True)
    args.data = str(data_dir)
    cmd_train(args)
    t1 = time.time()
    print(f"[2/4] exporting three ONNX models into {args.repo}", flush=True)
    cmd_export(args)
    t2 = time.time()
    from hybridrec.serving import TritonServer

    print("[3/4] starting tritonserver", flush=True)
    with TritonServer(Path(args.repo)) as server:
        t3 = time.time()
        print(
            f"      ready: HTTP {server.http_url}  gRPC {server.grpc_url}; config set {server.config_set} "
            f"({server.config_set_reason})"
        )
        print(f"[4/4] ranking for user {args.user} through the `rank` and `recommend` ensembles", flush=True)
        catalog = _catalog(args.repo, str(data_dir))
        query(server.grpc_url, "grpc", catalog, args.user, None, args.candidates, args.top)
        print()
        recommend(server.grpc_url, "grpc", catalog, args.user, None, args.top)
    t4 = time.time()
    print(
        f"done in {t4 - t0:.0f}s (train {t1 - t0:.0f}s, export {t2 - t1:.0f}s, server start {t3 - t2:.0f}s, "
        f"query+stop {t4 - t3:.0f}s)"
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from hybridrec.data import fetch_movielens, load_movielens, resolve_data_dir, summarize

    if args.data_cmd == "fetch":
        path = fetch_movielens(args.dest, url=args.url, force=args.force)
        print(f"dataset ready at {path} (posters are optional: put them in {path}/posters/<movieId>.jpg)")
        print(f"use it with --data {path} or HYBRIDREC_DATA={path}")
        return 0
    data = load_movielens(resolve_data_dir(args.data))
    if args.data_cmd == "export-split":
        from hybridrec.training.evaluation.recbole import export_recbole

        folder = export_recbole(data, args.out, args.name, sequential=args.sequential)
        print(f"RecBole atomic files of the leave-one-out split -> {folder}")
        print(
            f"use them with RecBole: dataset={args.name}, data_path={Path(args.out).resolve()}, "
            "benchmark_filename=['train', 'valid', 'test']"
        )
        return 0
    print(yaml.safe_dump(summarize(data), sort_keys=False))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hybridrec.data import load_movielens, resolve_data_dir
    from hybridrec.dataclass_yaml import load_yaml
    from hybridrec.training.evaluation.run import EvaluateConfig, evaluate

    path = args.config or PRESETS / f"{args.preset}.yaml"
    overrides = _overrides(args.set or [])
    if args.models:
        overrides["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.seeds:
        overrides["seeds"] = [int(s) for s in args.seeds.split(",")]
    cfg = load_yaml(EvaluateConfig, path, overrides)
    data = load_movielens(resolve_data_dir(args.data))
    metrics = evaluate(data, cfg, args.out, docs=args.docs, report_only=args.report_only, cache=args.cache)
    for name, row in metrics["models"].items():
        print(f"{name:>16}: NDCG@10 {row['ndcg@10'][0]:.4f} ± {row['ndcg@10'][1]:.4f}  HR@10 {row['hr@10'][0]:.4f}")
    print(f"wrote {args.out}/metrics.json, results.md and plots" + (f"; table -> {args.docs}" if args.docs else ""))
    return 0


def cmd_backend(args: argparse.Namespace) -> int:
    """Build Triton's onnxruntime backend for the pip-bundled server, or say whether it is there."""
    from hybridrec.backend_build import (
        APT_PACKAGES,
        BackendBuildError,
        MissingPrerequisitesError,
        build_onnxruntime_backend,
        build_prerequisites,
        bundled_backends_dir,
        has_onnxruntime_backend,
        onnxruntime_backend_dir,
    )

    if args.backend_cmd == "status":
        try:
            backends = bundled_backends_dir()
        except BackendBuildError as e:
            print(f"bundled tritonserver: not available ({e})")
        else:
            state = "installed" if has_onnxruntime_backend(backends) else "not installed (`hybridrec backend build`)"
            print(f"onnxruntime backend of the bundled tritonserver: {state} ({onnxruntime_backend_dir(backends)})")
        missing = build_prerequisites()
        print("build prerequisites: " + ("all present" if not missing else "missing:\n  " + "\n  ".join(missing)))
        return 0
    t0 = time.time()
    try:
        installed = build_onnxruntime_backend(
            bundled_backends_dir(),
            Path(args.source) if args.source else None,
            work_dir=Path(args.work_dir) if args.work_dir else None,
            jobs=args.jobs,
            force=args.force,
        )
    except MissingPrerequisitesError as e:
        print("missing build prerequisites:\n  " + "\n  ".join(e.missing), file=sys.stderr)
        print(f"Debian/Ubuntu: apt-get install -y {' '.join(APT_PACKAGES)}", file=sys.stderr)
        return 2
    except BackendBuildError as e:  # the first line names the failed step and the build log
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"onnxruntime backend installed in {installed} ({time.time() - t0:.1f} s)")
    return 0


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" unless the help text already says what the default is (e.g. an environment variable)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's --help shows each flag's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybridrec", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    def train_args(sp: argparse.ArgumentParser, preset: str | None) -> None:
        sp.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
        sp.add_argument("--run", default=DEFAULT_RUN, help="run folder for checkpoint + artifacts")
        sp.add_argument("--config", help="YAML run config")
        sp.add_argument("--preset", default=preset, choices=["demo", "ci", "full"], help="embedded YAML config")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. optim.epochs=2")
        sp.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = sub.add_parser("train", help="train the hybrid model (the demo preset unless --preset/--config say otherwise)")
    train_args(sp, "demo")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("export", help="export the three models to ONNX into a Triton model repository")
    sp.add_argument("--run", default=DEFAULT_RUN, help="the trained run to export")
    sp.add_argument("--repo", default=DEFAULT_REPO, help="the model repository to write into")
    sp.add_argument("--no-check", action="store_true", help="skip the eager-vs-onnxruntime parity check")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("export-tensorrt", help="build TensorRT plans for the `plan` config set (GPU machines)")
    sp.add_argument("--repo", default=DEFAULT_REPO, help="the model repository whose ONNX files become plans")
    sp.add_argument("--fp32", action="store_true", help="no FP16 kernels")
    sp.set_defaults(func=cmd_export_tensorrt)

    sp = sub.add_parser(
        "triton-configs", help="regenerate (or --check) every Triton config.pbtxt and config set from hybridrec/spec.py"
    )
    sp.add_argument("--repo", default=DEFAULT_REPO, help="the model repository whose configs are (re)generated")
    sp.add_argument("--check", action="store_true", help="only check: exit 1 when a generated file differs")
    sp.set_defaults(func=cmd_triton_configs)

    sp = sub.add_parser("serve", help="start tritonserver on the model repository (Ctrl-C stops it)")
    sp.add_argument("--repo", default=DEFAULT_REPO, help="the model repository to serve")
    sp.add_argument("--bundled", action="store_true", help="use the pip-bundled server even if one is on PATH")
    sp.add_argument(
        "--host", default="127.0.0.1", help="address to bind (0.0.0.0 to accept other machines, e.g. in a container)"
    )
    sp.add_argument("--http-port", type=int, default=8000, help="HTTP port")
    sp.add_argument("--grpc-port", type=int, default=8001, help="gRPC port")
    sp.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    sp.add_argument(
        "--admin-key-file",
        help="file holding the model-control key (created when absent; $HYBRIDREC_ADMIN_KEY wins; "
        "default ~/.config/hybridrec/admin-key)",
    )
    sp.add_argument("--cache-size", type=int, help="enable Triton's response cache for the ensembles (bytes)")
    sp.add_argument(
        "--config-set",
        default="auto",
        choices=["auto", "default", "cpu", "gpu-trt", "plan"],
        help="auto: the default set where the onnxruntime backend exists, else cpu",
    )
    sp.add_argument(
        "--probe-interval",
        type=float,
        default=5.0,
        help="seconds between model probes; a model that fails one is reloaded (0: off)",
    )
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("query", help="rank unseen movies for a user through the `rank` ensemble")
    sp.add_argument("--url", default=DEFAULT_URL, help="Triton address host:port (gRPC 8001 or HTTP 8000)")
    sp.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="the client's protocol")
    sp.add_argument("--repo", default=DEFAULT_REPO, help="model repository holding artifacts.json")
    sp.add_argument(
        "--data",
        help="dataset folder: the user's history and the candidate movies "
        "(default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)",
    )
    sp.add_argument("--user", type=int, default=1, help="the MovieLens userId whose history is used")
    sp.add_argument("--history", help="comma-separated movieIds, oldest first (instead of --user)")
    sp.add_argument("--candidates", type=int, default=200, help="unseen popular movies to rank")
    sp.add_argument("--top", type=int, default=10, help="how many to print")
    sp.add_argument("--recommend", action="store_true", help="top movies of the whole catalog (`recommend`)")
    sp.set_defaults(func=cmd_query)

    sp = sub.add_parser("catalog", help="catalog helpers")
    csub = sp.add_subparsers(dest="catalog_cmd", required=True)
    a = csub.add_parser("add", help="add a cold-start movie (poster + metadata) to the served catalog")
    a.add_argument("--repo", default=DEFAULT_REPO, help="the model repository that holds the catalog")
    a.add_argument(
        "--movie-id", type=int, required=True, help="the new movie's MovieLens movieId (an existing one is replaced)"
    )
    a.add_argument("--title", default="", help="the title shown by clients")
    a.add_argument("--genres", help="pipe-separated, e.g. 'Comedy|Drama'")
    a.add_argument("--year", type=int, help="release year")
    a.add_argument("--overview", help="plot overview text")
    a.add_argument("--cast", help="pipe-separated")
    a.add_argument("--directors", help="pipe-separated")
    a.add_argument("--poster", help="JPEG/PNG file (optional)")
    a.add_argument(
        "--url", default=DEFAULT_URL, help="the server that loads the new version (`hybridrec serve`; admin key sent)"
    )
    a.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="the client's protocol")
    a.add_argument("--offline", action="store_true", help="only write the new version into --repo; reload no server")
    a.set_defaults(func=cmd_catalog_add)

    sp = sub.add_parser("health", help="is the server live and every model ready? (exit 0 yes, 1 no)")
    sp.add_argument("--url", default=DEFAULT_URL, help="Triton address host:port (gRPC 8001 or HTTP 8000)")
    sp.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="the client's protocol")
    sp.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling until it is ready")
    sp.set_defaults(func=cmd_health)

    sp = sub.add_parser("demo", help="main job: train -> export -> serve -> query -> stop")
    train_args(sp, "demo")
    sp.add_argument("--repo", default=DEFAULT_REPO, help="the model repository to write into and serve")
    sp.add_argument("--user", type=int, default=1, help="the MovieLens userId to recommend for")
    sp.add_argument("--candidates", type=int, default=200, help="unseen popular movies to rank")
    sp.add_argument("--top", type=int, default=10, help="how many to print")
    sp.add_argument("--no-check", action="store_true", help="skip the eager-vs-onnxruntime parity check")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("data", help="dataset helpers")
    dsub = sp.add_subparsers(dest="data_cmd", required=True)
    f = dsub.add_parser("fetch", help="download MovieLens ml-latest-small from GroupLens")
    from hybridrec.data import DEFAULT_URL as DATA_URL

    f.add_argument("--dest", default="data", help="folder to download into")
    f.add_argument("--url", default=DATA_URL, help="the ml-latest-small zip to download (http(s):// or file://)")
    f.add_argument("--force", action="store_true", help="download again even if the data is there")
    i = dsub.add_parser("info", help="summarise a dataset folder")
    i.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    e = dsub.add_parser("export-split", help="write the leave-one-out split for external toolkits")
    e.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    e.add_argument("--format", choices=["recbole"], default="recbole", help="the toolkit's file layout")
    e.add_argument("--out", default="runs/recbole", help="RecBole data_path")
    e.add_argument("--name", default="ml-hybridrec", help="RecBole dataset name (folder and file prefix)")
    e.add_argument("--sequential", action="store_true", help="item_id_list:token_seq rows (RecBole sequential models)")
    sp.set_defaults(func=cmd_data)

    sp = sub.add_parser("evaluate", help="every model, ablation and seed on one split: metrics.json, table, plots")
    sp.add_argument("--data", help="dataset folder (default: $HYBRIDREC_DATA, then ../shared/data/movielens-small)")
    sp.add_argument("--out", default="runs/evaluate", help="evaluation folder: metrics.json, table, plots, runs")
    sp.add_argument(
        "--cache",
        help="folder of the per-(model, seed) results and their fingerprints (default: OUT/ranks); `make evaluate` "
        "uses docs/results/cache, committed with docs/results.md",
    )
    sp.add_argument("--docs", help="also write the markdown table (and its plots) here, e.g. docs/results.md")
    sp.add_argument("--config", help="YAML EvaluateConfig")
    sp.add_argument("--preset", default="evaluate", choices=["evaluate", "evaluate-ci"], help="embedded config")
    sp.add_argument("--models", help="comma-separated subset, e.g. 'Hybrid,EASE'")
    sp.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. hybrid.optim.epochs=2")
    sp.add_argument("--report-only", action="store_true", help="fit nothing: rebuild the table from cached results")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("backend", help="Triton's onnxruntime backend for the pip-bundled server (CPU build)")
    bsub = sp.add_subparsers(dest="backend_cmd", required=True)
    b = bsub.add_parser("build", help="build it from source (branch r24.10) and install it beside the python backend")
    b.add_argument("--source", help="source mirror folder (default: $HYBRIDREC_BACKEND_SOURCE, ../shared/vendor, git)")
    b.add_argument("--work-dir", help="keep sources, build tree and build.log here (default: a temporary folder)")
    b.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default: 2)")
    b.add_argument("--force", action="store_true", help="rebuild even if the backend is already installed")
    bsub.add_parser("status", help="is the backend installed for the bundled server; what a build still needs")
    sp.set_defaults(func=cmd_backend)

    sp = sub.add_parser(
        "loadtest", help="bounded headless Locust run (arguments after -- go to the runner)", add_help=False
    )
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(func=None)  # dispatched in main() (PASSTHROUGH); listed here for --help

    sp = sub.add_parser(
        "latency", help="single-request latency of recommend, rank and rank_content (a benchmark)", add_help=False
    )
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(func=None)

    sp = sub.add_parser(
        "metrics", help="per-model summary of a live server's /metrics (requests, failures, latencies)", add_help=False
    )
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(func=None)
    return p


# Subcommands that own their whole argument list (argparse's REMAINDER would not pass leading --options on).
PASSTHROUGH = {
    "loadtest": "hybridrec.loadtests.runner",
    "latency": "hybridrec.loadtests.latency",
    "metrics": "hybridrec.metrics_summary",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        rest = argv[1:]
        return int(importlib.import_module(PASSTHROUGH[argv[0]]).main(rest[1:] if rest[:1] == ["--"] else rest))
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2 if is_input_error(e) else 1


def is_input_error(e: BaseException) -> bool:
    """Exit 2 for what the user gave (a flag, a config key, a file, the data), 1 for what failed while running."""
    from hybridrec.dataclass_yaml import ConfigError

    return isinstance(e, FileNotFoundError | ConfigError | ValueError | KeyError)


def one_line(e: BaseException) -> str:
    """The message without a traceback; a server error's log excerpt becomes a pointer to the log file."""
    text = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip() or type(e).__name__
    lines = text.splitlines()
    log_line = next((ln for ln in lines[1:] if ln.startswith("log: ")), "")
    return lines[0] + f" ({log_line}; --debug for details)" if log_line else text


if __name__ == "__main__":
    sys.exit(main())
