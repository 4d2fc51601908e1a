"""Classifiers: build one from any starting point, save it, load it, and ask it about a text.

Taught in notebook 06. ``build_classifier`` starts from random weights, from the preset's pretraining
checkpoint (notebook 05), from MiniLM, or from a checkpoint folder; ``save_finetuned`` writes weights,
tokenizer and ``finetune.json`` atomically; ``load_finetuned`` refuses a missing or damaged file with the
command that makes it again; ``classify``, ``cls_attention_over_tokens`` and ``describe`` answer the
"try it" panel. Models that train only a fraction of their weights are saved and loaded by
`bertbook.efficient`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import SHAPE_FIELDS, MissingFileError, check_files, load_or_explain, read_json_file
from .config import PRESETS, ModelConfig, Preset
from .finetune import collate, encode, predict_proba
from .model import BertForSequenceClassification
from .minilm import load_minilm
from .reference import reference
from .tokenizer import get_tokenizer, load_tokenizer
from .train import get_pretrained
from .utils import device, device_of, eval_mode, jsonable, replace_folder
from .views import attention_html

__all__ = ["INFO_NAME", "build_classifier", "save_finetuned", "load_finetuned", "classify",
           "cls_attention_over_tokens", "merge_wordpieces", "describe"]

INFO_NAME = "finetune.json"  # what a fine-tuned model folder holds besides weights and tokenizer
# a folder of bertbook.efficient holds this instead: only the weights trained on a frozen base
EFFICIENT_SETTINGS = "efficient.json"


def init_name(init: str | os.PathLike) -> str:
    return str(init) if str(init) in ("random", "pretrained", "reference", "minilm") else "checkpoint"


def _repretrain_advice(folder: Path) -> str:
    """What to do when a file of a pretraining checkpoint is damaged."""
    run = folder.parent if folder.name == "checkpoint" else folder
    return (f"Delete the folder {folder} and pretrain again (notebook 05, or python -m bertbook pretrain --out "
            f"{run}), or fine-tune from another --init.")


def _check_checkpoint(folder: Path, expected: ModelConfig, preset: Preset) -> None:
    """Refuse a pretraining checkpoint of another shape, or with a damaged file, before loading anything,
    saying what to do."""

    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise MissingFileError(f"{folder} is not a pretraining checkpoint (no config.json). Pass a folder "
                               f"written by model.save_pretrained, e.g. the one train.get_pretrained(P) "
                               f"returns, or --init random|pretrained|minilm.")
    check_files(folder, ["config.json", "model.safetensors"], _repretrain_advice(folder))
    found = ModelConfig.from_dict(read_json_file(cfg_file, _repretrain_advice(folder)))

    diffs = [f"{f} {getattr(found, f)} (checkpoint) vs {getattr(expected, f)} (preset {preset.name!r})"
             for f in SHAPE_FIELDS if getattr(found, f) != getattr(expected, f)]
    if diffs:
        match = [n for n, p in PRESETS.items() if all(getattr(p.model, f) == getattr(found, f)
                                                      for f in SHAPE_FIELDS if f != "vocab_size")]
        hint = f" It looks like a checkpoint of preset {match[0]!r}: use --preset {match[0]}." if match else ""
        raise ValueError(f"The checkpoint in {folder} was made with another model config: " + "; ".join(diffs)
                         + f".{hint} Fine-tune it with the preset it was pretrained with, or pretrain on "
                         f"this preset (python -m bertbook pretrain --preset {preset.name}).")


def build_classifier(P: Preset, init: str | os.PathLike = "random", num_labels: int = 2,
                     verbose: bool = True) -> tuple[torch.nn.Module, Any, dict]:
    """A sequence classifier and its tokenizer, ready to fine-tune. Taught in notebook 06.

    ``init``: ``"random"`` (no pretraining), ``"pretrained"`` (the preset's checkpoint from notebook 05,
    made on demand by `train.get_pretrained`), ``"reference"`` (the same model pretrained for hours, shipped
    in ``models/reference-laptop``: `bertbook.reference`), ``"minilm"`` (all-MiniLM-L6-v2, a transformers model), or
    a folder holding a bertbook pretraining checkpoint of this preset's shape. Returns
    ``(model, tokenizer, info)``; ``info`` records how to encode texts for it (``max_length``,
    ``truncation``) and what it is (``kind``: "bertbook" or "transformers").
    """

    info = {"init": init_name(init), "truncation": P.finetune.truncation, "preset": P.name}
    if str(init) == "minilm":
        model, tokenizer = load_minilm(task="sequence-classification", num_labels=num_labels)
        info.update(kind="transformers", max_length=P.finetune.minilm_max_length)
        return model.to(device()), tokenizer, info

    folder: Path | None = None
    if str(init) == "pretrained":
        folder = Path(get_pretrained(P))
    elif str(init) == "reference":  # the laptop model pretrained for hours, shipped with the course
        folder = reference()
    elif str(init) != "random":
        folder = Path(init)
        if not folder.is_dir():
            raise FileNotFoundError(f"--init {init!r}: not 'random', 'pretrained', 'reference', 'minilm', nor a "
                                    f"folder.")
    if folder is not None and (folder / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(folder, _repretrain_advice(folder))
    else:
        tokenizer = get_tokenizer(P)
    cfg = dataclasses.replace(P.model, vocab_size=len(tokenizer))
    if folder is not None:
        _check_checkpoint(folder, cfg, P)
    model = BertForSequenceClassification(cfg, num_labels=num_labels,
                                          classifier_dropout=P.finetune.classifier_dropout,
                                          pooling=P.finetune.pooling)
    if folder is not None:
        model.load_encoder(folder)
        info["checkpoint"] = str(folder)
    info.update(kind="bertbook", max_length=P.finetune.max_length)
    if verbose:
        print(f"classifier: {info['init']} init, {sum(p.numel() for p in model.parameters()):,} parameters")
    return model.to(device()), tokenizer, info


def save_finetuned(out: str | os.PathLike, model: torch.nn.Module, tokenizer, info: dict,
                   overwrite: bool = False) -> Path:
    """Save weights, tokenizer and ``finetune.json`` (info and metrics) into ``out``, atomically.

    The folder is written next to ``out`` and renamed into place, so an interrupted save never leaves a
    half-written model. A folder that already holds files is replaced only with ``overwrite=True``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds files; choose another --out, or pass --overwrite "
                              f"(overwrite=True) to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(str(tmp))
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2, default=jsonable) + "\n")
        replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_finetuned(folder: str | os.PathLike) -> tuple[torch.nn.Module, Any, dict]:
    """Load a model saved by `save_finetuned` (bertbook or transformers): ``(model, tokenizer, info)``.
    Folders of `efficient.save_efficient` (the trained weights only) are loaded by `efficient.load_efficient`."""
    folder = Path(folder)
    if (folder / EFFICIENT_SETTINGS).is_file():
        raise ValueError(f"{folder} holds only the weights trained on a frozen base (notebook 09): load it "
                         f"with bertbook.efficient.load_efficient, which puts them back on their base.")
    if not (folder / INFO_NAME).is_file():
        raise MissingFileError(f"{folder} is not a fine-tuned model (no {INFO_NAME}). Make one with "
                               f"python -m bertbook finetune --task sst2 --init random --out {folder}.")
    remedy = _refinetune_advice(folder, {})
    info = read_json_file(folder / INFO_NAME, remedy)
    remedy = _refinetune_advice(folder, info)
    # every file is checked before any is loaded, so a damaged one is named in the error (not a library's)
    names = ["config.json", "model.safetensors", "tokenizer.json"] + [
        n for n in ("tokenizer_config.json", "special_tokens_map.json") if (folder / n).exists()]
    check_files(folder, names, remedy)
    if info.get("kind") == "transformers":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model, tokenizer = load_or_explain(lambda: (
            AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager"),
            AutoTokenizer.from_pretrained(str(folder))), folder, names, remedy)
    else:
        model = BertForSequenceClassification.from_pretrained(folder)
        tokenizer = load_tokenizer(folder, remedy)
    return model.to(device()).eval(), tokenizer, info


def _refinetune_advice(folder: Path, info: dict) -> str:
    """What to do when a file of a fine-tuned model folder is damaged: the command that makes it again."""
    if "task" in info:
        init = info.get("checkpoint") or info.get("init")
        command = (f"python -m bertbook finetune --task {info['task']} --init {init} --preset {info.get('preset')} "
                   f"--out {folder} --overwrite")
    else:
        command = f"python -m bertbook finetune --task TASK --init INIT --out {folder} --overwrite"
    return f"Fine-tune it again ({command}), or delete the folder {folder}."


def classify(model: torch.nn.Module, tokenizer, texts: Sequence[str], info: dict,
             label_names: Sequence[str] | None = None) -> list[dict]:
    """Label and probability of each text: ``[{"label": "positive", "probability": 0.97, "probs": [...]}]``."""
    names = list(label_names or info.get("label_names") or ["negative", "positive"])
    enc = encode(tokenizer, texts, [0] * len(texts), info["max_length"], info.get("truncation", "head"))
    probs = predict_proba(model, enc.ids, pad_id=tokenizer.pad_token_id or 0)
    return [{"label": names[int(p.argmax())], "probability": float(p.max()), "probs": p.tolist()}
            for p in probs]


@torch.no_grad()
def cls_attention_over_tokens(model: torch.nn.Module, tokenizer, text: str, info: dict,
                  layer: int = -1) -> tuple[list[str], np.ndarray]:
    """How much the [CLS] token attends to every token in one layer (default: the last), averaged over heads.

    Returns the tokens and a weight per token (they sum to 1). The pooled [CLS] vector that the classifier
    reads is built from this mixture; it is a view of where information flows, not an explanation
    (Jain & Wallace 2019, "Attention is not Explanation").
    """
    enc = encode(tokenizer, [text], [0], info["max_length"], info.get("truncation", "head"))
    batch = {k: v.to(device_of(model)) for k, v in collate(enc.ids, None, tokenizer.pad_token_id or 0).items()}
    with eval_mode(model):
        out = model(**batch, output_attentions=True)
    if not out.attentions or out.attentions[layer] is None:
        raise RuntimeError("the model returned no attention weights: load a transformers model with "
                           "attn_implementation='eager' (load_minilm and load_finetuned do).")
    att = out.attentions[layer][0].float()  # (H, T, T) for the one text
    weights = att.mean(dim=0)[0].cpu().numpy()  # (T,): row of [CLS], averaged over heads
    return tokenizer.convert_ids_to_tokens(enc.ids[0]), weights


def merge_wordpieces(tokens: Sequence[str], weights: Sequence[float]) -> tuple[list[str], list[float]]:
    """Glue WordPiece continuations (``##ing``) back onto their word, adding their weights."""
    words: list[str] = []
    out: list[float] = []
    for tok, w in zip(tokens, weights):
        if tok.startswith("##") and words:
            words[-1] += tok[2:]
            out[-1] += float(w)
        else:
            words.append(tok)
            out.append(float(w))
    return words, out


def describe(model: torch.nn.Module, tokenizer, info: dict, text: str) -> dict:
    """Everything the "try it" panel shows for one text: label, probability, words and [CLS] attention."""
    if not text or not text.strip():
        raise ValueError("Type a review first: the text is empty.")
    pred = classify(model, tokenizer, [text], info)[0]
    tokens, weights = cls_attention_over_tokens(model, tokenizer, text, info)
    words, wsum = merge_wordpieces(tokens, weights)
    return {**pred, "words": words, "weights": wsum, "truncated": len(tokens) >= info["max_length"],
            "html": attention_html(words, wsum)}
