"""The tracking interface: TensorBoard logs read back, a missing tracker says how to install it."""

import sys

import pytest

from bertbook import tracking


def test_tensorboard_scalars_are_read_back(tmp_path):
    tracker = tracking.open_tracker("tensorboard", tmp_path, config={"lr": 1e-3, "model": {"layers": 2}})
    for step in range(1, 6):
        tracker.log(step, {"train/loss": 1.0 / step, "lr": 0.1 * step})
    tracker.log(5, {"val/accuracy": 0.75})
    tracker.close()
    scalars = tracking.read_scalars(tmp_path)
    assert set(scalars) == {"train/loss", "lr", "val/accuracy"}
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5]
    assert scalars["train/loss"][1][1] == pytest.approx(0.5)
    assert scalars["val/accuracy"] == [(5, pytest.approx(0.75))]


def test_no_tracker_writes_nothing(tmp_path):
    tracker = tracking.open_tracker("none", tmp_path)
    tracker.log(1, {"loss": 1.0})
    tracker.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="--tracker tensorboard"):
        tracking.read_scalars(tmp_path)


def test_unknown_tracker_and_missing_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="none, tensorboard, wandb"):
        tracking.open_tracker("mlflow", tmp_path)
    with pytest.raises(ValueError, match="--out"):
        tracking.open_tracker("tensorboard", None)


def test_missing_wandb_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(tracking.TrackerUnavailable, match="pip install wandb"):
        tracking.open_tracker("wandb", tmp_path)


def test_missing_tensorboard_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(tracking.TrackerUnavailable, match="pip install tensorboard"):
        tracking.open_tracker("tensorboard", tmp_path)


def test_wandb_offline_run_writes_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = tracking.open_tracker("wandb", tmp_path, config={"lr": 1e-3})
    tracker.log(1, {"train/loss": 0.5})
    tracker.close()
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline run folder written"


def test_pretrain_logs_through_the_tracker(artifacts, tmp_path, capsys):
    from bertbook import cli

    out = tmp_path / "run"
    small = {"pretrain.max_steps": 4, "pretrain.batch_size": 4, "pretrain.eval_every": 2,
             "pretrain.checkpoint_every": 4, "pretrain.eval_batches": 1}
    args = ["--preset", "ci", "--out", str(out), "--no-progress", "--tracker", "tensorboard",
            *[f"--set={k}={v}" for k, v in small.items()]]
    assert cli.cli_pretrain(args) == 0
    scalars = tracking.read_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["gutenberg/loss"]] == [2, 4]  # each held-out set under its own name
