"""Shared fixtures: a tiny model trained on the real data pack, exported into a model repository, served live.

Everything heavy is session-scoped, so the whole suite trains once, exports once and starts one server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")

def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


_FOLDER_MARKS = {"unit": "unit", "export": "export", "integration": "integration"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The folder a test lives in is its kind: `pytest -m unit` etc.
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _FOLDER_MARKS:
            item.add_marker(getattr(pytest.mark, _FOLDER_MARKS[folder]))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from hybridrec.data import DataNotFoundError, resolve_data_dir

    try:
        return resolve_data_dir()
    except DataNotFoundError as e:
        if in_ci():  # CI must run every test: a missing data pack is a failure there, not a reason to skip
            pytest.fail(f"real data pack not available in CI: {e}")
        pytest.skip(f"real data pack not available: {e}")


@pytest.fixture(scope="session")
def dataset(data_dir: Path):  # type: ignore[no-untyped-def]
    from hybridrec.data import load_movielens

    return load_movielens(data_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, dataset) -> Path:  # type: ignore[no-untyped-def]
    """The `ci` preset: 24 users, one epoch, on the real data (posters, metadata and all)."""
    from hybridrec.cli import PRESETS
    from hybridrec.dataclass_yaml import load_yaml
    from hybridrec.training.config import RunConfig
    from hybridrec.training.train import train

    run = tmp_path_factory.mktemp("run")
    train(load_yaml(RunConfig, PRESETS / "ci.yaml"), run, data=dataset, progress=False)
    return run


@pytest.fixture(scope="session")
def exported_repo(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    from hybridrec.export.onnx_export import export_run

    repo = tmp_path_factory.mktemp("model_repository")
    export_run(tiny_run, repo)
    return repo


@pytest.fixture(scope="session")
def live_server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """The server every integration test talks to: the DEFAULT config set (onnxruntime backend, what the official
    container serves) wherever that backend exists. CI must serve it: there a missing backend fails the suite."""
    from hybridrec.serving import TritonServer, choose_config_set, find_tritonserver

    binary = find_tritonserver()
    config_set, why = choose_config_set(binary)
    if config_set is not None and in_ci():
        pytest.fail(f"CI serves the default config set, but {why}")
    log = tmp_path_factory.mktemp("server") / "tritonserver.log"
    with TritonServer(exported_repo, binary=binary, log_file=log, model_config_name=config_set) as server:
        yield server


@pytest.fixture(scope="session")
def cpu_server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """A second server on a copy of the same repository with the python-backend `cpu` set (the fallback)."""
    import shutil

    from hybridrec.serving import TritonServer, find_tritonserver

    repo = tmp_path_factory.mktemp("cpu_set") / "model_repository"
    shutil.copytree(exported_repo, repo)
    log = repo.parent / "tritonserver.log"
    binary = find_tritonserver(prefer_bundled=True)
    with TritonServer(repo, binary=binary, log_file=log, model_config_name="cpu") as server:
        yield server


@pytest.fixture(scope="session")
def catalog(dataset, exported_repo: Path):  # type: ignore[no-untyped-def]
    from hybridrec.preprocessing import Artifacts, ItemCatalog

    return ItemCatalog(dataset, Artifacts.load(exported_repo))
