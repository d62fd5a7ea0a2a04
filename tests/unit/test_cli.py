from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from hybridrec.cli import main


def _zip_dataset(tmp_path: Path) -> Path:
    src = tmp_path / "ml-latest-small"
    src.mkdir()
    (src / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n2,Heat (1995),Action\n")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.0,20\n")
    (src / "links.csv").write_text("movieId,imdbId,tmdbId\n1,114709,862\n2,113277,949\n")
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in src.iterdir():
            z.write(f, f"ml-latest-small/{f.name}")
    return archive


def test_data_fetch_from_a_file_url_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = _zip_dataset(tmp_path)
    dest = tmp_path / "data"
    assert main(["data", "fetch", "--dest", str(dest), "--url", archive.as_uri()]) == 0
    assert (dest / "ml-latest-small" / "ratings.csv").exists()
    assert main(["data", "info", "--data", str(dest / "ml-latest-small")]) == 0
    out = capsys.readouterr().out
    assert "ratings: 2" in out and "users: 1" in out


def test_missing_data_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data", str(tmp_path / "nowhere")]) == 2
    assert "hybridrec data fetch" in capsys.readouterr().err


def test_export_without_a_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--run", str(tmp_path / "none"), "--repo", str(tmp_path / "repo")]) == 2
    assert "hybridrec train" in capsys.readouterr().err


def test_configs_check_passes_on_the_committed_repository(capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2] / "model_repository"
    assert main(["triton-configs", "--check", "--repo", str(repo)]) == 0


def test_data_export_split_writes_recbole_benchmark_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ml-latest-small"
    src.mkdir()
    (src / "movies.csv").write_text("movieId,title,genres\n1,A (1995),Comedy\n2,B (1995),Action\n3,C (1996),Drama\n")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.0,20\n1,3,5.0,20\n")
    out = tmp_path / "recbole"
    assert main(["data", "export-split", "--data", str(src), "--format", "recbole", "--out", str(out)]) == 0
    folder = out / "ml-hybridrec"
    for part in ("train", "valid", "test"):
        assert (folder / f"ml-hybridrec.{part}.inter").exists()
    # ties on timestamp 20 break by movieId: movie 3 is the test item
    assert (folder / "ml-hybridrec.test.inter").read_text().splitlines()[1].split("\t")[:2] == ["1", "3"]
    assert "benchmark_filename" in capsys.readouterr().out


def test_usage_and_input_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a config key typo: the message names the key, no traceback
    assert main(["train", "--set", "optim.epoch=3", "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "epoch" in err and "Traceback" not in err
    # a bad rating in the data: one clear message
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    (bad / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,great,10\n")
    assert main(["train", "--data", str(bad), "--run", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from hybridrec.dataclass_yaml import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--set", "optim.epoch=3", "--run", str(tmp_path / "r")])


def test_export_tensorrt_without_tensorrt_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tensorrt = pytest.importorskip("hybridrec.export.tensorrt")

    def no_tensorrt(*_: object, **__: object) -> None:
        raise tensorrt.TensorRTUnavailableError("tensorrt is not installed")

    monkeypatch.setattr(tensorrt, "build_plans", no_tensorrt)
    assert main(["export-tensorrt", "--repo", str(tmp_path)]) == 1  # nothing built is a failure, not a skip
    assert "no plans built" in capsys.readouterr().err


def test_every_flag_has_help_and_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from hybridrec.cli import build_parser

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(f"{name} {sub_name}".strip(), sub)
            elif action.dest not in ("help", "rest"):
                assert action.help, f"hybridrec {name} {action.option_strings or action.dest}: no help text"

    walk("", build_parser())
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "(default: 8001)" in capsys.readouterr().out


def test_health_and_catalog_add_without_a_server_fail_in_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = "127.0.0.1:9"  # the discard port: nothing listens there
    assert main(["health", "--url", closed]) == 1
    err = capsys.readouterr().err
    assert closed in err and "Traceback" not in err
    repo = tmp_path / "repo"
    repo.mkdir()
    add = ["catalog", "add", "--movie-id", "5", "--title", "X", "--repo", str(repo), "--url", closed]
    assert main(add) == 1
    err = capsys.readouterr().err
    assert "hybridrec serve" in err and "--offline" in err and len(err.strip().splitlines()) == 1
    assert list(repo.iterdir()) == []  # checked before anything was written


def test_every_client_command_defaults_to_the_served_ports() -> None:
    from hybridrec.cli import DEFAULT_URL, build_parser

    parser = build_parser()
    for argv in (["query"], ["health"], ["catalog", "add", "--movie-id", "1"]):
        assert parser.parse_args(argv).url == DEFAULT_URL == "127.0.0.1:8001", argv
    serve = parser.parse_args(["serve"])
    assert (serve.http_port, serve.grpc_port, serve.metrics_port) == (8000, 8001, 8002)
