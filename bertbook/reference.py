"""The course's reference model: the learner's model, pretrained for hours by the course's own command.

Taught in notebooks 05-09. A quarter of an hour on a laptop CPU reads about 10 M tokens, and at that budget
the model has barely left the stage where it predicts the most frequent words. The reference is the *same*
model (the laptop preset's architecture, tokenizer settings, corpus and recipe) pretrained by
``python -m bertbook pretrain`` for ten or more times the tokens, so that a learner sees what pretraining buys
without waiting hours. It is shipped in ``models/reference-laptop/``, small and verifiable:

- ``model.safetensors``: the weights in bf16 (half the bytes; they are widened to fp32 when loaded);
- ``config.json`` and the tokenizer files, as in every bertbook checkpoint;
- ``reference.json``: the exact command, the steps, tokens, seconds and machine of the run, its whole held-out
  curve, and the accuracy of the shipped weights on a small fixed slice of held-out text (`check_slice`);
- ``SHA256SUMS``: the SHA-256 of every other file, in the format ``sha256sum -c`` reads.

`reference` checks the files and returns the folder, which every command that takes a checkpoint accepts
(``finetune --init reference``, ``pretrain --init-from reference``); `load_reference` builds the model.
``make reference`` (`REFERENCE_COMMAND`, then ``python -m bertbook reference export``) remakes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, MissingFileError, read_json_file
from .config import get_preset
from .paths import project_root
from .registry import sha256_file
from .utils import atomic_write, replace_folder

__all__ = ["REFERENCE_NAME", "REFERENCE_STEPS", "REFERENCE_COMMAND", "RECORD_NAME", "SUMS_NAME", "reference_dir",
           "reference", "load_reference", "course_mlm", "reference_record", "verify_reference", "check_slice",
           "export_reference"]

REFERENCE_NAME = "reference"  # what --init and --init-from accept for it
RECORD_NAME = "reference.json"
SUMS_NAME = "SHA256SUMS"
# The run: the laptop preset as it is, only longer. 24,500 steps of 32 x 128 tokens read 100.4 M tokens, ten
# times the learner's 2,400 steps; evaluating every 500 steps keeps the whole curve (the learner's run
# evaluates every 200). The triangle schedule stretches with max_steps, so the recipe keeps its shape.
REFERENCE_STEPS = 24_500
REFERENCE_RUN = "build/reference-laptop"  # the run folder (git-ignored); --resume continues it
REFERENCE_COMMAND = ["python", "-m", "bertbook", "pretrain", "--preset", "laptop", "--out", REFERENCE_RUN,
                     "--set", f"pretrain.max_steps={REFERENCE_STEPS}", "--set", "pretrain.eval_every=500",
                     "--set", "pretrain.checkpoint_every=500", "--no-progress"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# The fixed slice that a test recomputes: the first rows of the held-out reviews, masked with the fixed seed of
# every evaluation. Argmax accuracy on ~600 masked tokens moves by at most a token or two between CPUs.
SLICE = {"name": "imdb-reviews", "max_chars": 40_000, "batches": 2}
SLICE_TOLERANCE = 0.005  # accuracy (0.5 points): other CPUs round bf16 -> fp32 matmuls differently


def reference_dir() -> Path:
    """``models/reference-laptop`` in the checkout."""
    return project_root() / "models" / "reference-laptop"


REMAKE = ("restore it from git (`git checkout -- models/reference-laptop`) if your checkout ships it, or remake "
          "it with `make reference` (hours of CPU: `make help` says how long)")


def _remake_advice(folder: Path) -> str:
    return f"Put the shipped files back in {folder}: {REMAKE}."


def _read_sums(folder: Path) -> dict[str, str]:
    path = folder / SUMS_NAME
    if not path.is_file():
        raise MissingFileError(f"{path} is missing, so the reference model cannot be checked. "
                               + _remake_advice(folder))
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise CheckpointError(f"{path} is damaged (a line is not 'SHA-256  file name'). " + _remake_advice(folder))
        sums[name] = digest
    return sums


def verify_reference(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Check that every file of the reference is there and has the SHA-256 that ``SHA256SUMS`` records;
    return ``{file: sha256}``. A missing or changed file raises a CheckpointError that says what to do."""
    folder = Path(folder) if folder is not None else reference_dir()
    if not folder.is_dir():
        raise MissingFileError(f"There is no reference model in {folder}: {REMAKE}.")
    sums = _read_sums(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME, RECORD_NAME, "tokenizer.json"):
        if name not in sums:
            raise CheckpointError(f"{folder / SUMS_NAME} does not list {name}. " + _remake_advice(folder))
    for name in sums:
        if not (folder / name).is_file():
            raise MissingFileError(f"{folder / name} is missing. " + _remake_advice(folder))
    for name, digest in sums.items():
        path = folder / name
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path} differs from the file that was shipped (its SHA-256 does not match "
                                  f"{SUMS_NAME}): it was changed or damaged. " + _remake_advice(folder))
    return sums


def reference(folder: str | os.PathLike | None = None) -> Path:
    """The reference model's folder, after checking every file's SHA-256. Pass it wherever a checkpoint folder
    goes: ``BertForPreTraining.from_pretrained``, ``model.load_encoder``, ``build_classifier(P, init=...)``."""
    folder = Path(folder) if folder is not None else reference_dir()
    verify_reference(folder)
    return folder


def reference_record(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """``reference.json``: command, steps, tokens, seconds, machine, curve, held-out metrics, the check slice."""
    folder = Path(folder) if folder is not None else reference_dir()
    return read_json_file(folder / RECORD_NAME, _remake_advice(folder))


def load_reference(folder: str | os.PathLike | None = None):
    """``(model, tokenizer, record)``: the reference as a `BertForPreTraining` in fp32 (eval mode), its
    tokenizer and its record, after checking every file."""
    from .model import BertForPreTraining
    from .tokenizer import load_tokenizer

    folder = reference(folder)
    model = BertForPreTraining.from_pretrained(folder).float().eval()
    return model, load_tokenizer(folder, _remake_advice(folder)), reference_record(folder)


def course_mlm(P=None):
    """The course's best masked LM for preset ``P``: ``(model, tokenizer, name)``, in eval mode.

    The reference model when it is shipped and ``P`` has its shape (the laptop preset), else the preset's
    own pretraining checkpoint of notebook 05 (`train.get_pretrained`, which pretrains now if there is none).
    ``name`` says which: "the reference model" or "the preset's 15-minute model" (notebook 10 asks it to write).
    """
    from .config import ModelConfig
    from .model import BertForPreTraining
    from .tokenizer import get_tokenizer
    from .train import get_pretrained

    P = P or get_preset()
    if (reference_dir() / CONFIG_NAME).is_file():
        shipped = ModelConfig.from_dict(read_json_file(reference_dir() / CONFIG_NAME, _remake_advice(reference_dir())))
        same = {k: getattr(P.model, k) for k in ("vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob")}
        if dataclasses.replace(shipped, **same) == P.model:  # the vocabulary is the tokenizer's, dropout was off
            model, tokenizer, _ = load_reference()
            return model, tokenizer, "the reference model"
    folder = get_pretrained(P)
    return BertForPreTraining.from_pretrained(folder).eval(), get_tokenizer(P), f"preset {P.name!r}'s own model"


def check_slice(model: torch.nn.Module, tokenizer, preset=None) -> dict[str, float]:
    """Held-out MLM loss and accuracy on the small fixed slice (`SLICE`) that the record keeps and a test
    recomputes, in fp32 on the CPU, so that the shipped weights cannot silently differ from their record."""
    from .corpus import eval_batches, eval_text
    from .evaluate import evaluate_mlm
    from .masking import MaskVocab

    P = preset or get_preset("laptop")
    batches = eval_batches(eval_text(SLICE["name"], SLICE["max_chars"], P), tokenizer,
                           MaskVocab.from_tokenizer(tokenizer), P.pretrain.seq_len, P.pretrain.batch_size,
                           SLICE["batches"])
    return evaluate_mlm(model.float(), batches, "cpu", None)


def _command_line(run: dict) -> str:
    """The command that made the run, as the run records its settings (steps, evaluation, preset)."""
    preset = run["preset"]["name"]
    steps = run["total_steps"]
    return (f"python -m bertbook pretrain --preset {preset} --out {REFERENCE_RUN} --set pretrain.max_steps={steps} "
            f"--set pretrain.eval_every={run['preset']['pretrain']['eval_every']} "
            f"--set pretrain.checkpoint_every={run['preset']['pretrain']['checkpoint_every']} --no-progress")


def export_reference(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None,
                     overwrite: bool = False) -> Path:
    """Turn a finished pretraining checkpoint into the shipped reference folder: weights in bf16, config,
    tokenizer, ``reference.json`` (the run's record and the slice's accuracy) and ``SHA256SUMS``.

    The folder is written beside ``out`` and renamed into place; an existing reference is replaced only with
    ``overwrite=True``, so nothing already shipped is lost by accident."""
    from safetensors.torch import save_file

    from .model import BertForPreTraining
    from .runstate import read_run
    from .tokenizer import load_tokenizer

    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else reference_dir()
    run = read_run(checkpoint)
    if not run.get("finished"):
        raise ValueError(f"The run in {checkpoint} stopped at step {run.get('step')} of {run.get('total_steps')}: "
                         f"finish it first ({' '.join(REFERENCE_COMMAND)} --resume).")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds a reference model; pass --overwrite to replace it "
                              f"(the shipped one stays in git's history) or choose another --out.")
    model = BertForPreTraining.from_pretrained(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)  # config.json as every checkpoint has it; the weights are rewritten in bf16
        state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "dtype": "bfloat16"})
        tokenizer.save_pretrained(str(tmp))
        shipped = BertForPreTraining.from_pretrained(tmp).float()  # what a learner will load
        history = run["history"]
        final = {e["name"]: {k: e[k] for k in ("loss", "accuracy", "perplexity")}
                 for e in history["eval"] if e["step"] == run["step"]}
        record = {
            "what": "the laptop preset's model pretrained by the course's own command, ten times the tokens",
            "command": _command_line(run), "preset": run["preset"], "steps": run["step"], "tokens": run["tokens"],
            "train_seconds": round(run["train_seconds"], 1), "machine": run["machine"],
            "world_size": run.get("world_size", 1), "tokenizer": run["tokenizer"],
            "held_out": final, "curve": history["eval"],
            "train_curve": [{k: r[k] for k in ("step", "tokens", "loss", "lr", "seconds")}
                            for r in history["train"][::50] + history["train"][-1:]],
            "weights_dtype": "bfloat16", "parameters": sum(p.numel() for p in shipped.parameters()),
            "check_slice": {**SLICE, "tolerance": SLICE_TOLERANCE,
                            **check_slice(shipped, tokenizer, get_preset(run["preset"]["name"]))},
        }
        atomic_write(tmp / RECORD_NAME, json.dumps(record, indent=1) + "\n")
        names = sorted(p.name for p in tmp.iterdir() if p.is_file())
        atomic_write(tmp / SUMS_NAME, "".join(f"{sha256_file(tmp / n)}  {n}\n" for n in names))
        replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
