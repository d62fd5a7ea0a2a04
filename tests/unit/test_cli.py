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
    assert main(["configs", "--check", "--repo", str(repo)]) == 0


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
