"""Training robustness: atomic model/checkpoint writes, --resume from torn or missing checkpoints, and datasets too
small to split. Everything runs on tiny synthetic MovieLens folders (no posters, no metadata) in a few seconds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hybridrec.cli import PRESETS, main  # noqa: E402
from hybridrec.data import DataFormatError, DatasetTooSmallError, load_movielens  # noqa: E402
from hybridrec.dataclass_yaml import load_yaml  # noqa: E402
from hybridrec.training import train as train_mod  # noqa: E402
from hybridrec.training.config import RunConfig  # noqa: E402

pytestmark = pytest.mark.unit

N_MOVIES = 12


def write_dataset(root: Path, lengths: list[int]) -> Path:
    """An ml-latest folder: user i+1 rates the first lengths[i] movies of a per-user rotation, one per day."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},Movie {m} ({1990 + m}),Drama|Comedy\n" for m in range(1, N_MOVIES + 1))
    )
    rows = [
        f"{u + 1},{(u + k) % N_MOVIES + 1},4.0,{86400 * (k + 1)}\n" for u, n in enumerate(lengths) for k in range(n)
    ]
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    return root


def tiny_config(tmp_path: Path, epochs: int = 1, **overrides: object) -> RunConfig:
    sets = {
        "data.max_users": None,
        "optim.epochs": epochs,
        "optim.patience": 99,
        "optim.threads": 1,
        "optim.softmax_negatives": None,
        "optim.hard_negatives": 4,
        "optim.random_negatives": 4,
        "optim.live_posters": 2,
        **overrides,
    }
    return load_yaml(RunConfig, PRESETS / "ci.yaml", sets)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ml") / "ml-tiny", [8, 7, 6, 9, 5, 8])


def run_train(cfg: RunConfig, run: Path, data_dir: Path, resume: bool = False) -> train_mod.TrainResult:
    return train_mod.train(cfg, run, data=load_movielens(data_dir), resume=resume, progress=False)


def temp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ---------------------------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_save_leaves_no_temp_file_and_rotates(tmp_path: Path) -> None:
    path, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    train_mod.atomic_save({"v": 1}, path, keep_previous=prev)
    assert not prev.exists()
    train_mod.atomic_save({"v": 2}, path, keep_previous=prev)
    assert torch.load(path)["v"] == 2
    assert torch.load(prev)["v"] == 1
    assert temp_files(tmp_path) == []


def test_write_killed_midway_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    train_mod.atomic_save({"v": 1}, path, keep_previous=prev)
    before = path.read_bytes()
    real_save = torch.save

    def dies_midway(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f, *args, **kwargs)  # some bytes are already in the temporary file...
        assert temp_files(tmp_path), "the write must go to a temporary file first"
        raise KeyboardInterrupt("killed during the checkpoint write")  # ...when the process dies

    monkeypatch.setattr(train_mod.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        train_mod.atomic_save({"v": 2}, path, keep_previous=prev)
    assert path.read_bytes() == before  # untouched, still the old state
    assert torch.load(path)["v"] == 1
    assert not prev.exists()  # no rotation happened either
    assert temp_files(tmp_path) == []


def test_model_and_checkpoint_share_the_atomic_writer(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real = train_mod.atomic_save

    def spy(obj: object, path: Path, **kwargs: object) -> Path:
        written.append(Path(path).name)
        return real(obj, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "atomic_save", spy)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.123.tmp").write_bytes(b"left by a killed write")
    run_train(tiny_config(tmp_path, epochs=2), run, data_dir)
    assert {"model.pt", "checkpoint.pt"} <= set(written)
    assert (run / "checkpoint.pt").exists() and (run / "checkpoint.prev.pt").exists()
    assert temp_files(run) == []  # the stale one is cleaned up too


# ---------------------------------------------------------------------------------------------------------------------
# resume


def test_resume_from_torn_checkpoint_falls_back_to_previous(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    run_train(tiny_config(tmp_path, epochs=2), run, data_dir)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # torn: killed mid-write by an older version
    caplog.set_level(logging.INFO, logger=train_mod.__name__)
    result = run_train(tiny_config(tmp_path, epochs=3), run, data_dir, resume=True)
    text = warnings_of(caplog)
    assert "checkpoint.pt is unreadable" in text and str(ckpt) in text
    assert "falling back to the previous checkpoint" in text and "checkpoint.prev.pt" in text
    assert "zip archive" in text or "Error" in text  # the reason
    assert result.epochs == 3  # epochs 1 (from checkpoint.prev.pt), 2 and 3 (run again)
    assert (run / "checkpoint.pt.corrupt").exists()
    assert train_mod.load_checkpoint(run)["epoch"] == 2  # type: ignore[index]
    assert (run / "metrics.json").exists()


def test_resume_with_only_torn_checkpoints_starts_fresh(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    caplog.set_level(logging.INFO, logger=train_mod.__name__)
    result = run_train(tiny_config(tmp_path), run, data_dir, resume=True)
    text = warnings_of(caplog)
    assert f"{run / 'checkpoint.pt'} is unreadable" in text
    assert "no readable checkpoint" in text and "starting fresh" in text
    assert result.epochs == 1 and (run / "model.pt").exists()
    assert train_mod.load_checkpoint(run) is not None  # a good one now


def test_resume_goes_on_with_the_checkpoints_weight_average(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    averaged = {"optim.ema_decay": 0.9}
    run_train(tiny_config(tmp_path, **averaged), run, data_dir)
    ckpt = train_mod.load_checkpoint(run)
    assert ckpt is not None and ckpt["average"] is not None and len(ckpt["average"]) > 0
    caplog.set_level(logging.INFO, logger=train_mod.__name__)
    assert run_train(tiny_config(tmp_path, epochs=2, **averaged), run, data_dir, resume=True).epochs == 2
    assert "no weight average" not in warnings_of(caplog)
    # A checkpoint from before the average was kept: the resume says the average restarts at the raw weights.
    old = {k: v for k, v in torch.load(run / "checkpoint.pt", weights_only=False).items() if k != "average"}
    torch.save(old, run / "checkpoint.pt")
    run_train(tiny_config(tmp_path, epochs=3, **averaged), run, data_dir, resume=True)
    assert "has no weight average; the average restarts from the raw weights" in warnings_of(caplog)


def test_resume_without_checkpoint_warns_and_starts_fresh(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    caplog.set_level(logging.INFO, logger=train_mod.__name__)
    result = run_train(tiny_config(tmp_path), run, data_dir, resume=True)
    text = warnings_of(caplog)
    assert "no checkpoint" in text and "starting fresh" in text and str(run) in text
    assert result.epochs == 1


# ---------------------------------------------------------------------------------------------------------------------
# datasets too small to train on


@pytest.mark.parametrize(
    ("lengths", "phrase"),
    [
        ([], "no ratings to train on"),
        ([1, 1, 1], "too small to split"),
        ([3, 3, 1], "no training examples"),
    ],
    ids=["header-only", "one-rating-users", "no-training-prefix"],
)
def test_too_small_dataset_is_refused(tmp_path: Path, lengths: list[int], phrase: str) -> None:
    data_dir = write_dataset(tmp_path / "ml", lengths)
    run = tmp_path / "run"
    with pytest.raises(DatasetTooSmallError, match=phrase) as info:
        train_mod.train(tiny_config(tmp_path), run, data=load_movielens(data_dir), progress=False)
    assert str(data_dir / "ratings.csv") in str(info.value)
    assert isinstance(info.value, DataFormatError) and isinstance(info.value, FileNotFoundError)
    assert not run.exists()  # nothing written


def test_a_train_gap_that_leaves_no_target_is_refused(tmp_path: Path) -> None:
    """Users with 4 ratings keep 2 for training: one prefix, which data.train_gap=1 takes away."""
    data_dir = write_dataset(tmp_path / "ml", [4, 4, 4])
    cfg = tiny_config(tmp_path, **{"data.train_gap": 1})
    with pytest.raises(DatasetTooSmallError, match="train_gap=1"):
        train_mod.train(cfg, tmp_path / "run", data=load_movielens(data_dir), progress=False)
    assert run_train(tiny_config(tmp_path), tmp_path / "run0", data_dir).run_dir.exists()  # no gap: trainable
    with pytest.raises(ValueError, match="train_gap"):
        negative = tiny_config(tmp_path, **{"data.train_gap": -1})
        train_mod.train(negative, tmp_path / "neg", data=load_movielens(data_dir))
    assert not (tmp_path / "neg").exists()


def test_train_gap_keeps_the_last_training_items_out_of_the_targets() -> None:
    import numpy as np

    from hybridrec.training.objectives.next_item import epoch_examples

    seqs = {1: np.arange(6), 2: np.arange(3), 3: np.arange(1)}
    every = epoch_examples(seqs, [1, 2, 3], None, np.random.default_rng(0))
    assert sorted(every) == [(1, t) for t in range(1, 6)] + [(2, 1), (2, 2)]
    gap = epoch_examples(seqs, [1, 2, 3], None, np.random.default_rng(0), gap=1)
    assert sorted(gap) == [(1, t) for t in range(1, 5)] + [(2, 1)]
    capped = epoch_examples(seqs, [1], 2, np.random.default_rng(0), gap=2)
    assert len(capped) == 2 and all(1 <= t <= 3 for _, t in capped)
    with pytest.raises(ValueError, match="train_gap"):
        epoch_examples(seqs, [1], None, np.random.default_rng(0), gap=-1)


def test_the_future_window_reaches_the_items_after_the_target_but_never_the_gap() -> None:
    import numpy as np

    from hybridrec.training.objectives.next_item import future_items

    seqs = {1: np.arange(10, 16), 2: np.arange(20, 23)}  # positions 0..5 and 0..2
    got = future_items(seqs, [(1, 1), (1, 4), (2, 2)], window=3).numpy()
    assert got.tolist() == [[12, 13], [15, 0], [0, 0]]  # 0: PAD, past the sequence's end
    gapped = future_items(seqs, [(1, 1), (1, 3), (1, 4)], window=4, gap=1).numpy()
    assert gapped.tolist() == [[12, 13, 14], [14, 0, 0], [0, 0, 0]]  # item 15 (the gap) is never a target
    assert future_items(seqs, [(1, 1)], window=1).shape == (1, 0)  # the next item only


def test_the_future_loss_is_the_mean_likelihood_of_each_rows_next_items() -> None:
    import torch

    from hybridrec.training.objectives.next_item import future_loss

    cols = torch.tensor([0, 1, 4, 7, 9])  # sampled softmax: sorted item ids, one column each
    dot = torch.randn(3, 5)
    future = torch.tensor([[4, 9], [7, 0], [0, 0]])  # the third row has none
    logp = torch.log_softmax(dot, dim=1)
    want = (-(logp[0, 2] + logp[0, 4]) / 2 - logp[1, 3]) / 2
    assert torch.allclose(future_loss(dot, cols, future), want)
    assert future_loss(dot, cols, torch.zeros(3, 2, dtype=torch.long)).item() == 0.0


def test_label_smoothing_spreads_the_target_over_the_scored_columns_only() -> None:
    import torch
    import torch.nn.functional as F

    from hybridrec.dataclass_yaml import ConfigError
    from hybridrec.training.config import OptimConfig
    from hybridrec.training.modules import NEG
    from hybridrec.training.objectives.next_item import smoothed_cross_entropy

    dot, label = torch.randn(4, 6), torch.tensor([2, 3, 4, 5])
    assert torch.equal(smoothed_cross_entropy(dot, label, 0.0), F.cross_entropy(dot, label))  # 0: the plain loss
    plain = F.cross_entropy(dot, label, label_smoothing=0.1)  # every column scored: torch's own smoothing
    torch.testing.assert_close(smoothed_cross_entropy(dot, label, 0.1), plain)
    masked = torch.cat([torch.full((4, 2), NEG), dot], dim=1)  # PAD and UNK columns, as the step scores them
    torch.testing.assert_close(smoothed_cross_entropy(masked, label + 2, 0.1), smoothed_cross_entropy(dot, label, 0.1))
    with pytest.raises(ConfigError, match="label_smoothing"):
        OptimConfig(label_smoothing=1.0)


def test_a_run_with_a_future_window_trains_and_the_window_must_be_positive(tmp_path: Path, data_dir: Path) -> None:
    import json
    import math

    from hybridrec.dataclass_yaml import ConfigError
    from hybridrec.training.config import OptimConfig

    for sampled in (None, 16):  # full softmax, and sampled (the window's items join the columns)
        sets = {"optim.future_window": 4, "optim.softmax_negatives": sampled, "data.train_gap": 1}
        result = run_train(tiny_config(tmp_path, **sets), tmp_path / f"run{sampled}", data_dir)
        history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
        assert history and all(math.isfinite(h["loss"]) for h in history)
    with pytest.raises(ConfigError, match="future_window"):
        OptimConfig(future_window=0)


def test_mask_seen_hides_the_rated_items_in_the_columns_but_never_the_target() -> None:
    import numpy as np
    import torch

    from hybridrec.training.modules import NEG
    from hybridrec.training.objectives.next_item import mask_seen_

    cols = torch.tensor([0, 1, 4, 7, 9])  # sampled softmax: sorted item ids, one column each
    dot = torch.zeros(3, 5)
    seen = [np.array([4, 5, 9]), np.array([], dtype=np.int64), np.array([7, 4])]  # 5 is not among the columns
    label = torch.tensor([3, 2, 2])  # row 2's target (4) is also in its history: it stays
    mask_seen_(dot, cols, seen, label)
    assert (dot == NEG).nonzero().tolist() == [[0, 2], [0, 4], [2, 3]]
    full = torch.zeros(2, 10)
    mask_seen_(full, torch.arange(10), [np.array([2, 3]), np.array([9])], torch.tensor([5, 1]))
    assert (full == NEG).nonzero().tolist() == [[0, 2], [0, 3], [1, 9]]


def test_a_run_with_the_seen_items_masked_trains(tmp_path: Path, data_dir: Path) -> None:
    import json
    import math

    for sampled, skip in ((None, 0), (16, 0), (None, 2)):
        sets = {"optim.mask_seen": True, "optim.softmax_negatives": sampled, "optim.mask_seen_skip_last": skip}
        result = run_train(tiny_config(tmp_path, **sets), tmp_path / f"run{sampled}-{skip}", data_dir)
        history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
        assert history and all(math.isfinite(h["loss"]) for h in history)


def test_mask_seen_skip_last_keeps_the_latest_items_as_negatives() -> None:
    import torch

    from hybridrec.dataclass_yaml import ConfigError
    from hybridrec.training.config import OptimConfig
    from hybridrec.training.modules import NEG
    from hybridrec.training.objectives.next_item import mask_seen_

    assert OptimConfig(mask_seen=True, mask_seen_skip_last=2).mask_seen_skip_last == 2
    with pytest.raises(ConfigError, match="mask_seen_skip_last needs"):
        OptimConfig(mask_seen_skip_last=2)
    with pytest.raises(ConfigError, match="mask_seen_skip_last must"):
        OptimConfig(mask_seen=True, mask_seen_skip_last=-1)
    seen = [np.array([2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)]
    dot = torch.zeros(3, 10)
    mask_seen_(dot, torch.arange(10), seen, torch.tensor([6, 8, 1]), skip_last=2)
    assert (dot == NEG).nonzero().tolist() == [[0, 2], [0, 3]]  # 4 and 5, and row 1's only item, stay negatives


def test_cli_reports_too_small_dataset_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = write_dataset(tmp_path / "ml", [])
    rc = main(["train", "--preset", "ci", "--quiet", "--data", str(data_dir), "--run", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert err[-1].startswith("error: ") and "no ratings to train on" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_the_fusion_head_trains_on_a_row_subset(tmp_path: Path, data_dir: Path) -> None:
    """rerank_rows below the batch size: every step still has a finite loss and the run writes its model."""
    import json
    import math

    cfg = tiny_config(tmp_path, epochs=2, **{"optim.batch_size": 8, "optim.rerank_rows": 3})
    assert cfg.optim.rerank_rows == 3
    result = run_train(cfg, tmp_path / "run", data_dir)
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert (result.run_dir / "model.pt").exists()


def test_history_features_train_score_in_the_evaluation_and_refuse_export(tmp_path: Path, data_dir: Path) -> None:
    from hybridrec.export.onnx_export import export_run
    from hybridrec.training.evaluation.hybrid import HybridScorer
    from hybridrec.training.evaluation.splits import ItemIndex, leave_one_out_split

    sets = {"model.sequence.rating_feature": True, "model.sequence.recency_buckets": 32}
    cfg = tiny_config(tmp_path, **sets)
    data = load_movielens(data_dir)
    result = run_train(cfg, tmp_path / "run", data_dir)
    assert result.metrics["test_users_vocab"] > 0
    ix = leave_one_out_split(data).indexed(ItemIndex.from_data(data))
    users, histories, _ = ix.stage("test")
    scorer = HybridScorer(cfg, result.run_dir, data).load()
    scores = scorer.score(users[:4], [histories[u] for u in users[:4]])
    assert scores.shape == (4, len(ix.items)) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="not the first"):  # a history that is not the user's own
        scorer.score(users[:1], [histories[users[1]]])
    with pytest.raises(ValueError, match="training-time probe"):
        export_run(result.run_dir, tmp_path / "repo", data=data)
