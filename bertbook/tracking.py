"""Experiment tracking: one small interface, so that training loops never know where their numbers go.

Taught in notebook 09. A loop calls ``tracker.log(step, {"train/loss": 0.41, "lr": 1e-3})`` and, at the
end, ``tracker.close()``. Which tracker receives the numbers is chosen once, by whoever starts the run:

* ``none``: nothing is written (the default);
* ``tensorboard``: event files in ``<run>/tensorboard`` (``tensorboard --logdir <run>`` draws them;
  `read_scalars` reads them back without TensorBoard's server, as notebook 09 does);
* ``wandb``: Weights & Biases in offline mode: files under ``<run>/wandb``, no account and no network
  needed; ``wandb sync <run>/wandb/offline-run-*`` uploads them later if you want.

The optional packages are imported only when asked for; a missing one says how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

__all__ = ["TRACKERS", "Tracker", "NoTracker", "TensorBoardTracker", "WandbTracker", "TrackerUnavailable",
           "open_tracker", "read_scalars", "plot_scalars"]

TRACKERS = ("none", "tensorboard", "wandb")


class TrackerUnavailable(ImportError):
    """The chosen tracker's package is not installed; the message says how to install it."""


class Tracker(Protocol):
    """What a training loop may call. Scalars are plain floats keyed by name ("train/loss")."""

    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class NoTracker:
    """Logs nothing: the loop's code stays the same when no tracker is wanted."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """Scalars into TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``) in ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike, config: dict | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise TrackerUnavailable("--tracker tensorboard needs the tensorboard package: pip install tensorboard "
                                     "(or pip install -e \".[lab]\"), or choose --tracker none.") from exc
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))
        if config:
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in _flat(config).items()), 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, float(value), step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """Scalars into a Weights & Biases run in offline mode, under ``<log_dir>/wandb`` (no account, no network)."""

    def __init__(self, log_dir: str | os.PathLike, config: dict | None = None, project: str = "bertbook",
                 name: str | None = None) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise TrackerUnavailable("--tracker wandb needs the wandb package: pip install wandb (or pip install "
                                     "-e \".[track]\"), or choose --tracker tensorboard or none.") from exc
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name or self.log_dir.name, dir=str(self.log_dir),
                              config=config or {}, mode="offline", reinit="create_new")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({k: float(v) for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(kind: str | None, run_dir: str | os.PathLike | None, config: dict | None = None) -> Tracker:
    """The tracker called ``kind`` ("none", "tensorboard" or "wandb"), writing under ``run_dir``."""
    kind = kind or "none"
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker {kind!r}: choose one of {', '.join(TRACKERS)}.")
    if kind == "none":
        return NoTracker()
    if run_dir is None:
        raise ValueError(f"--tracker {kind} writes its logs into the run's folder: give one (--out DIR).")
    if kind == "tensorboard":
        return TensorBoardTracker(Path(run_dir) / "tensorboard", config)
    return WandbTracker(Path(run_dir), config)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under ``log_dir``: ``{tag: [(step, value), ...]}``.

    Reads the files TensorBoard itself would read, without starting its server (notebook 09 plots them).
    """
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as exc:
        raise TrackerUnavailable("reading TensorBoard logs needs the tensorboard package: pip install "
                                 "tensorboard.") from exc
    log_dir = Path(log_dir)
    files = sorted(log_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {log_dir}: was the run started with "
                                f"--tracker tensorboard (tracker='tensorboard')?")
    scalars: dict[str, list[tuple[int, float]]] = {}
    for folder in sorted({f.parent for f in files}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in scalars.items()}


def plot_scalars(runs: dict[str, str | os.PathLike], tags: list[str], axes=None):
    """One panel per tag, one line per run: ``plot_scalars({"LoRA r=8": dir1, "full": dir2}, ["val/accuracy"])``."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.0), squeeze=False)
        axes = axes[0]
    read = {name: read_scalars(d) for name, d in runs.items()}
    for ax, tag in zip(axes, tags):
        for name, scalars in read.items():
            if tag in scalars:
                steps, values = zip(*scalars[tag])
                ax.plot(steps, values, marker="o" if len(steps) < 20 else None, ms=3, label=name)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    return axes
