"""A pretraining run on disk: what its checkpoint holds, so that a resumed run continues exactly.

Taught in notebook 05. Continuing a run where it stopped, with the same numbers as a run that never
stopped, needs more than the weights: the optimizer's moments, the schedule's step, every random
generator's state (dropout's among them) and the record of what was trained so far. A run folder's
``checkpoint/`` holds them all (the model and tokenizer as ``save_pretrained`` writes them, then
``training_state.pt`` and ``pretrain.json``), and is replaced as a whole, by renames, so that a crash
leaves one complete checkpoint. Before a run resumes, its settings are compared with the checkpoint's:
another model, recipe or tokenizer is refused with every difference named. The loop that writes and reads
these is ``train``; the files of a model checkpoint and their errors are ``checkpoint``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import WEIGHTS_NAME, CheckpointError, file_error, read_json_file, read_weights_file
from .utils import replace_folder

__all__ = ["CHECKPOINT", "STATE_FILE", "RUN_FILE", "PRETRAINING_GROUPS", "RESUMABLE_CHANGES", "rng_state",
           "set_rng_state", "save_checkpoint", "find_checkpoint", "read_run", "read_weights",
           "load_training_state", "pretraining_settings", "check_resumable"]


CHECKPOINT = "checkpoint"  # the latest good checkpoint inside a run folder
STATE_FILE = "training_state.pt"  # optimizer, scheduler, random generators
RUN_FILE = "pretrain.json"  # preset, progress and history (human-readable)
PRETRAINING_GROUPS = ("model", "pretrain", "data")  # the preset groups a pretraining run depends on
# Settings that may differ when a run is resumed: they change how often it reports, not what it computes.
RESUMABLE_CHANGES = {"pretrain.eval_every", "pretrain.eval_batches", "pretrain.checkpoint_every",
                     "pretrain.compile", "pretrain.precision", "data.eval_max_chars"}


# ---------------------------------------------------------------------------------------------------------
# 1. Random state: every generator, as tensors and numbers
# ---------------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """Every random generator's state as tensors, numbers and strings only, so that the checkpoint loads with
    ``torch.load(weights_only=True)``, which unpickles no Python objects (a numpy array would need that)."""
    version, mt, gauss_next = random.getstate()  # Mersenne Twister: 624 words and a position
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss_next},
             "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore every generator from a :func:`rng_state` (CUDA's only where there is a GPU)."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["name"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---------------------------------------------------------------------------------------------------------
# 2. The checkpoint folder: written atomically, read with errors that say what to do
# ---------------------------------------------------------------------------------------------------------


def save_checkpoint(run_dir: Path, model: nn.Module, tokenizer, optimizer, scheduler, run: dict,
                    rng_states: list[dict]) -> Path:
    """Write ``run_dir/checkpoint`` atomically: everything goes into a temporary sibling folder that then
    replaces the old checkpoint by renames, so a crash at any moment leaves one complete checkpoint
    (``checkpoint`` or, mid-swap, ``checkpoint.old``). Notebook 05."""
    run_dir = Path(run_dir)
    final, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.old"
    tmp = run_dir / f".{CHECKPOINT}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(str(tmp))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_states}, tmp / STATE_FILE)
    (tmp / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    return replace_folder(tmp, final, keep_old=old)


def find_checkpoint(run_dir: Path) -> Path | None:
    """The run's latest complete checkpoint, recovering from a crash in the middle of a swap."""
    run_dir = Path(run_dir)
    final, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.old"
    if not (final / RUN_FILE).exists() and (old / RUN_FILE).exists():
        shutil.rmtree(final, ignore_errors=True)
        os.rename(old, final)
    return final if (final / RUN_FILE).exists() else None


def _restart_advice(checkpoint: Path) -> str:
    """What to do when a file of a pretraining checkpoint is missing or damaged."""
    return (f"Delete the folder {checkpoint} and pretrain again (notebook 05, or python -m bertbook pretrain "
            f"--out {Path(checkpoint).parent}).")


def read_run(checkpoint: Path) -> dict:
    """The ``pretrain.json`` of a checkpoint: preset, step, finished flag and history."""

    return read_json_file(Path(checkpoint) / RUN_FILE, _restart_advice(checkpoint))


def read_weights(checkpoint: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The model weights of a pretraining checkpoint (``model.safetensors``), on ``device``; a missing or
    damaged file raises a CheckpointError that says to delete the checkpoint and pretrain again."""
    return read_weights_file(Path(checkpoint) / WEIGHTS_NAME, _restart_advice(checkpoint), device=device)


def load_training_state(checkpoint: Path) -> dict:
    """A checkpoint's optimizer, scheduler and random states (``training_state.pt``), read with
    ``torch.load(weights_only=True)``: the file holds only tensors, numbers, strings, lists and dicts, so
    loading it runs no code from it, whoever wrote it. A missing or damaged file raises a CheckpointError."""

    path = Path(checkpoint) / STATE_FILE
    advice = _restart_advice(checkpoint)
    if not path.is_file():
        raise file_error(path, None, advice)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # Python objects inside: an older bertbook's format, or not ours at all
        raise file_error(path, "it holds Python objects that only unpickling could read, and unpickling can "
                               "run code from the file; bertbook writes only tensors and numbers there, older "
                               "versions pickled the random states", advice) from None
    except Exception as exc:  # truncated: OSError, EOFError or RuntimeError from the zip reader
        raise file_error(path, "not a readable torch file", advice, exc) from None


# ---------------------------------------------------------------------------------------------------------
# 3. May this checkpoint be resumed with these settings?
# ---------------------------------------------------------------------------------------------------------


def flatten_settings(d: dict, prefix: str = "") -> dict:
    """A preset's nested dict as ``{"group.field": value}``, tuples as lists (as JSON reads them back)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_settings(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def pretraining_settings(preset: dict) -> dict:
    """The settings that decide what pretraining computes, flattened (``{"pretrain.learning_rate": ...}``):
    the model, pretraining and data groups. Fine-tuning and the later notebooks' groups are left out, so that
    changing them (or a version of the course adding a group) never invalidates a pretraining run."""
    return {k: v for k, v in flatten_settings(preset).items() if k.split(".", 1)[0] in PRETRAINING_GROUPS}


def check_resumable(saved: dict, preset, tokenizer_hash: str, where: Path) -> None:
    """Refuse to resume a checkpoint made with another configuration, naming every difference. A setting that a
    checkpoint does not record (it was written before the setting existed) counts as that setting's default."""
    old, new = pretraining_settings(saved["preset"]), pretraining_settings(preset.to_dict())
    for key in set(new) - set(old):
        group, _, name = key.partition(".")
        field = {f.name: f for f in dataclasses.fields(getattr(preset, group))}.get(name)
        if field is not None and field.default is not dataclasses.MISSING:
            old[key] = field.default
    diffs = [f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(set(old) | set(new))
             if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]
    if saved.get("tokenizer") != tokenizer_hash:
        diffs.append("the tokenizer differs (it was retrained since)")
    if diffs:
        raise CheckpointError(f"The checkpoint in {where} was trained with another configuration, so it cannot "
                              f"be resumed: " + "; ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
                              + ". Resume it with the same preset and settings, or start a new run in another "
                              "folder (--out).")
