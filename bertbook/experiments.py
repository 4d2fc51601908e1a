"""Short pretraining experiments: change one setting, train briefly, compare the curves (notebooks 04, 05).

``run_experiment`` pretrains with a few preset fields changed for a tenth of the preset's run (or a given
number of steps) and keeps the finished run on disk, so the same settings are never trained twice;
``plot_runs`` overlays their loss curves. The sliders that drive them are ``widgets.experiment_panel``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .config import ConfigError
from .paths import artifacts_dir
from .runstate import pretraining_settings
from .train import pretrain

__all__ = ["experiment_length", "experiment_settings", "run_experiment", "plot_runs"]


def experiment_length(preset) -> dict:
    """How long a short experiment runs when no number of steps is given: a tenth of the preset's time
    budget if it has one, else a tenth of its ``max_steps`` (at least 10). Returns preset overrides."""
    p = preset.pretrain
    if p.time_budget_s:
        return {"pretrain.time_budget_s": p.time_budget_s / 10}
    return {"pretrain.max_steps": min(p.max_steps, max(10, round(p.max_steps / 10))), "pretrain.time_budget_s": 0.0}


def experiment_settings(preset, learning_rate: float | None = None, mask_prob: float | None = None,
                        layers: int | None = None, heads: int | None = None, width: int | None = None,
                        steps: int | None = None, sentence_objective: str | None = None) -> dict:
    """The preset overrides for a short experiment (the logic behind :func:`experiment_panel`).

    Validated against the preset (an impossible combination raises ``ConfigError`` saying what to change);
    the feed-forward width follows the width (4x, as in BERT). Returns ``{"group.field": value}``.
    """
    changes: dict = {}
    if learning_rate is not None:
        changes["pretrain.learning_rate"] = float(learning_rate)
    if mask_prob is not None:
        changes["pretrain.mask_prob"] = float(mask_prob)
    if layers is not None:
        changes["model.num_hidden_layers"] = int(layers)
    if heads is not None:
        changes["model.num_attention_heads"] = int(heads)
    if width is not None:
        changes["model.hidden_size"] = int(width)
        changes["model.intermediate_size"] = 4 * int(width)
    if steps:  # None or 0: the default length (experiment_length)
        changes["pretrain.max_steps"] = int(steps)
        changes["pretrain.time_budget_s"] = 0.0
    if sentence_objective is not None:
        changes["pretrain.sentence_objective"] = sentence_objective
    preset.override(**changes)  # raises ConfigError with the reason if the combination is impossible
    steps = changes.get("pretrain.max_steps", 0)
    if steps > preset.pretrain.max_steps:
        raise ConfigError(f"{steps} steps is more than this preset's whole run ({preset.pretrain.max_steps}): a "
                          f"short experiment should be shorter. Use pretrain() for long runs.")
    return changes


def _describe(changes: dict) -> str:
    short = {"pretrain.learning_rate": "lr", "pretrain.mask_prob": "mask", "model.num_hidden_layers": "L",
             "model.num_attention_heads": "A", "model.hidden_size": "H", "pretrain.max_steps": "steps",
             "pretrain.sentence_objective": "obj"}
    parts = [f"{short[k]}={v:g}" if isinstance(v, float) else f"{short[k]}={v}"
             for k, v in changes.items() if k in short]
    return ", ".join(parts) or "preset defaults"


def run_experiment(preset, label: str | None = None, **settings) -> dict:
    """Pretrain briefly with some settings changed (keywords of :func:`experiment_settings`; by default
    :func:`experiment_length`) and return ``{"label", "settings", "history"}`` (notebooks 04 and 05).
    Each run evaluates at its end; a finished run with the same settings is reused from
    ``artifacts/<preset>/experiments``."""
    changes = experiment_settings(preset, **settings)
    length = {} if "pretrain.max_steps" in changes else experiment_length(preset)
    P = preset.override(**{**length, **changes})
    P = P.override(**{"pretrain.eval_every": P.pretrain.max_steps, "pretrain.checkpoint_every": P.pretrain.max_steps})
    settings = json.dumps(pretraining_settings(P.to_dict()), sort_keys=True, default=str)
    key = hashlib.sha256(settings.encode()).hexdigest()[:12]
    history = pretrain(P, artifacts_dir(P.name, "experiments", key), resume=True, progress=False, verbose=False)
    return {"label": label or _describe(changes), "settings": changes, "history": history}


def plot_runs(runs: list[dict], ax=None, smooth: int = 5):
    """Overlay the training-loss curves of several runs (moving average over ``smooth`` steps) with their
    final held-out loss as a dot (notebook 05). Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, run in enumerate(runs):
        h = run["history"]
        steps = np.array([r["step"] for r in h.train])
        loss = np.array([r["mlm_loss"] for r in h.train])
        k = max(1, min(smooth, len(loss)))
        curve = np.convolve(loss, np.ones(k) / k, mode="valid")
        (line,) = ax.plot(steps[k - 1:], curve, lw=1.5, label=run["label"], color=f"C{i % 10}")
        ev = h.last_eval("gutenberg")
        if ev is not None:
            ax.plot([ev["step"]], [ev["loss"]], "o", color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("MLM loss (nats)")
    ax.set_title("training loss (lines), held-out loss at the end (dots)")
    ax.legend(fontsize=8)
    return ax
