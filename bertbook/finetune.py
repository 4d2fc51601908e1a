"""Fine-tuning an encoder for sentence classification, the metrics, and the results table.

Taught in notebook 06. The recipe of Devlin et al. (2019), section 4: put a linear layer on the pooled
[CLS] vector, train *all* weights with a small learning rate (warmup, then linear decay) for a few epochs,
keep the checkpoint that does best on a validation set, and report the test set once.

Read top to bottom:

1. text -> batches: truncation (head, or head + tail after Sun et al. 2019), dynamic padding;
2. metrics: accuracy, precision, recall, F1 from the confusion matrix;
3. the loop: `fine_tune` (an explicit ``for`` loop) and `evaluate`;
4. models: build (random, pretrained in notebook 05, MiniLM, or a checkpoint folder), save, load, predict,
   the [CLS] token's attention over the words;
5. whole runs: `run_finetune`, `results_table`, `learning_curve`;
6. pictures and the "try it" widget;
7. the command line: ``finetune``, ``predict``, ``results``.

The loop is written against a generic interface, ``model(**batch)`` returning ``.loss`` and ``.logits``,
so the same code fine-tunes bertbook's `BertForSequenceClassification` and MiniLM's transformers model.
One label per text: the source article's data loader padded token-level labels for a sentence task,
which a sentence classifier does not have.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data import label_names, load_classification
from .baselines import bag_of_words
from .checkpoint import SHAPE_FIELDS, MissingFileError, check_files, load_or_explain, read_json_file
from .config import PRESETS, FinetuneConfig, ModelConfig, Preset
from .course import device, machine, set_seed
from .model import BertForSequenceClassification
from .paths import artifacts_dir
from .pretrained import load_minilm
from .tokenizer import get_tokenizer, load_tokenizer
from .optim import make_optimizer, make_scheduler
from .train import get_pretrained
from .utils import autocast, autocast_dtype, device_of, eval_mode, replace_folder

__all__ = [
    "TASKS", "MODEL_NAMES", "Encoded", "clean_text", "truncate", "encode", "batch_order", "collate",
    "confusion_matrix", "classification_metrics", "predict_proba", "evaluate_classifier", "BestCheckpoint",
    "FineTuneResult", "fine_tune", "build_classifier", "save_finetuned", "load_finetuned",
    "get_finetuned", "classify", "cls_attention_over_tokens", "merge_wordpieces", "task_data", "FinetuneRun",
    "run_finetune", "learning_rate_for", "bow_row", "seeded_row", "summarize_seeds", "results_table",
    "render_markdown", "curve_sizes", "learning_curve",
    "plot_confusion", "plot_confidence", "plot_learning_curve", "most_confident_mistakes",
    "attention_html", "describe",
]

TASKS = ("imdb", "sst2")  # the fine-tuning tasks; "rotten-tomatoes" is the out-of-domain check for IMDB
OOD_TASK = {"imdb": "rotten-tomatoes"}  # SST-2 *is* Rotten Tomatoes sentences (Socher et al. 2013): no OOD
MODEL_NAMES = {
    "bow": "bag of words (TF-IDF 1-2 grams + logistic regression)",
    "random": "bertbook, random init (no pretraining)",
    "pretrained": "bertbook, pretrained in notebook 05",
    "minilm": "MiniLM-L6 (all-MiniLM-L6-v2), pretrained",
}
INFO_NAME = "finetune.json"  # what a fine-tuned model folder holds besides weights and tokenizer


# ---------------------------------------------------------------------------------------------------------
# 1. Text to batches
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Encoded:
    """A split ready for the model: token ids ([CLS] ... [SEP]) and one label per text."""

    ids: list[list[int]]
    labels: list[int]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def clean_text(text: str) -> str:
    """IMDB reviews keep HTML line breaks (``<br />``); they are markup, not words."""
    return text.replace("<br />", " ")


def truncate(ids: Sequence[int], budget: int, strategy: str = "head") -> list[int]:
    """Cut a token sequence to ``budget`` tokens.

    ``head`` keeps the first tokens. ``head+tail`` keeps the first quarter of the budget and fills the rest
    from the end: for a 510-token budget that is the first 128 and the last 382 tokens, the split that
    Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?") found best on IMDB, where a
    reviewer's verdict is often in the last lines. Taught in notebook 06.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 token, got {budget}.")
    if strategy not in ("head", "head+tail"):
        raise ValueError(f"truncation must be 'head' or 'head+tail', got {strategy!r}.")
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    if strategy == "head":
        return ids[:budget]
    head = -(-budget // 4)  # ceil(budget / 4): 128 of 510
    tail = budget - head
    return ids[:head] + ids[len(ids) - tail:]


def encode(tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int,
           truncation: str = "head") -> Encoded:
    """Tokenize whole texts, truncate each to ``max_length - 2`` tokens, add [CLS] and [SEP]."""
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS], a token and [SEP]; got {max_length}.")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels: one label per text.")
    cleaned = [clean_text(t) for t in texts]
    # verbose=False: the full review may be longer than the model's limit; we truncate it ourselves below.
    pieces = tokenizer(cleaned, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids = [[cls] + truncate(p, max_length - 2, truncation) + [sep] for p in pieces]
    return Encoded(ids=ids, labels=[int(y) for y in labels], texts=list(texts))


def batch_order(lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0) -> list[np.ndarray]:
    """Indices of each batch. Examples of similar length share a batch, so little padding is computed.

    Evaluation sorts everything by length. Training shuffles, sorts only within pools of 50 batches, then
    shuffles the batches: random enough for SGD, and most padding is still avoided.
    """
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(perm), pool):
        chunk = perm[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(ids: Sequence[Sequence[int]], labels: Sequence[int] | None, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``."""
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(ids), T), dtype=torch.long)  # (B, T): 1 = real token
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        attention_mask[i, :len(x)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "token_type_ids": torch.zeros_like(input_ids)}  # one segment: all 0
    if labels is not None:
        batch["labels"] = torch.tensor(list(labels), dtype=torch.long)  # (B,): one label per text
    return batch


# ---------------------------------------------------------------------------------------------------------
# 2. Metrics
# ---------------------------------------------------------------------------------------------------------

def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_labels: int = 2) -> np.ndarray:
    """``cm[i, j]`` = number of examples of true class i predicted as class j."""
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    for y, p in zip(labels, preds):
        cm[int(y), int(p)] += 1
    return cm


def classification_metrics(labels: Sequence[int], preds: Sequence[int], positive: int = 1) -> dict[str, float]:
    """Accuracy, and precision / recall / F1 of the positive class, from the confusion matrix.

    precision = TP / (TP + FP): of the texts called positive, how many are;
    recall    = TP / (TP + FN): of the positive texts, how many were found;
    F1        = 2 P R / (P + R), their harmonic mean. An undefined ratio (0 / 0) counts as 0, as in sklearn.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    if len(labels) == 0:
        raise ValueError("no examples to score: the evaluation set is empty.")
    tp = int(((preds == positive) & (labels == positive)).sum())
    fp = int(((preds == positive) & (labels != positive)).sum())
    fn = int(((preds != positive) & (labels == positive)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((labels == preds).mean()), "precision": precision, "recall": recall, "f1": f1,
            "n": int(len(labels))}


# ---------------------------------------------------------------------------------------------------------
# 3. The loop
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_proba(model: torch.nn.Module, ids: Sequence[Sequence[int]], batch_size: int = 64,
                  pad_id: int = 0) -> np.ndarray:
    """Class probabilities ``(N, num_labels)`` for token-id sequences, in their original order (the model
    runs in eval mode, and is given back in the mode it came in)."""
    device = device_of(model)
    dtype = autocast_dtype("auto", device)  # bf16 where the GPU or CPU computes it in hardware, else fp32
    out: np.ndarray | None = None
    with eval_mode(model):
        for idx in batch_order([len(x) for x in ids], batch_size, shuffle=False):
            batch = {k: v.to(device) for k, v in collate([ids[i] for i in idx], None, pad_id).items()}
            with autocast(device, dtype):
                logits = model(**batch).logits  # (B, num_labels)
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((len(ids), probs.shape[1]), dtype=np.float32)
            out[idx] = probs
    if out is None:
        raise ValueError("no examples to predict.")
    return out


def evaluate_classifier(model: torch.nn.Module, data: Encoded, batch_size: int = 64, pad_id: int = 0) -> dict[str, Any]:
    """Loss (mean cross-entropy), metrics, confusion matrix and probabilities on one split."""
    probs = predict_proba(model, data.ids, batch_size, pad_id)  # (N, C)
    labels = np.asarray(data.labels)
    preds = probs.argmax(axis=1)
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    return {"loss": loss, **classification_metrics(labels, preds),
            "confusion": confusion_matrix(labels, preds, probs.shape[1]).tolist(), "probs": probs}


class BestCheckpoint:
    """Keep a copy of the weights whenever the validation score improves; restore the best at the end.

    Fine-tuning can overfit within a few epochs; the checkpoint that generalised best is the one chosen on
    held-out data, and the test set is then evaluated once, with those weights.
    """

    def __init__(self) -> None:
        self.score = -math.inf
        self.where: dict[str, Any] = {}
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: torch.nn.Module, score: float, **where: Any) -> bool:
        """Store the weights if ``score`` beats the best so far (ties keep the earlier one)."""
        if score <= self.score:
            return False
        self.score, self.where = float(score), dict(where)
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is None:
            raise RuntimeError("no checkpoint kept yet: call update() after an evaluation first.")
        model.load_state_dict(self.state)


@dataclass
class FineTuneResult:
    """What `fine_tune` returns. The model itself is left holding the best weights."""

    history: list[dict]  # one record per evaluation: epoch, step, train_loss, val_loss, val_accuracy, ...
    losses: list[float]  # training loss of every step
    best: dict  # the evaluation whose weights were kept
    seconds: float


def fine_tune(model: torch.nn.Module, train: Encoded, val: Encoded, cfg: FinetuneConfig, *, pad_id: int = 0,
              evals_per_epoch: int = 1, verbose: bool = True, tracker: Any = None,
              after_step: Any = None) -> FineTuneResult:
    """Fine-tune ``model`` on ``train``; keep the weights that score best on ``val``. Taught in notebook 06.

    AdamW with no decay on biases and LayerNorm, linear warmup over ``cfg.warmup_frac`` of the steps then
    linear decay to 0, gradient clipping at ``cfg.max_grad_norm``. The model must accept the batch keys
    and return ``.loss`` and ``.logits`` (bertbook and transformers models both do). ``tracker`` (a
    `bertbook.tracking.Tracker`) receives the loss and learning rate of every step and each evaluation;
    ``after_step(step)`` runs after each optimizer step, while the gradients still exist (AdaLoRA, notebook 09).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"empty split: {len(train)} training and {len(val)} validation examples.")
    device = device_of(model)
    dtype = autocast_dtype("auto", device)  # bf16 where the hardware computes it (fewer bytes, faster), else fp32
    torch.manual_seed(cfg.seed)  # dropout masks
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = make_optimizer(model, cfg.learning_rate, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, round(cfg.warmup_frac * total), total, kind="linear")
    eval_at = {round(steps_per_epoch * (k + 1) / evals_per_epoch) for k in range(evals_per_epoch)}
    best, history, losses = BestCheckpoint(), [], []
    t0, step, last_eval_step = time.perf_counter(), 0, 0
    for epoch in range(1, cfg.epochs + 1):
        batches = batch_order([len(x) for x in train.ids], cfg.batch_size, shuffle=True, seed=cfg.seed + epoch)
        model.train()
        for i, idx in enumerate(batches, start=1):
            batch = collate([train.ids[j] for j in idx], [train.labels[j] for j in idx], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, dtype):
                loss = model(**batch).loss  # mean cross-entropy over the batch
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if after_step is not None:
                after_step(step + 1)
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if tracker is not None:
                tracker.log(step, {"train/loss": losses[-1], "train/lr": scheduler.get_last_lr()[0]})
            if i in eval_at:
                ev = evaluate_classifier(model, val, cfg.batch_size * 2, pad_id)
                record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses[last_eval_step:])),
                          "val_loss": ev["loss"], "val_accuracy": ev["accuracy"], "val_f1": ev["f1"],
                          "seconds": time.perf_counter() - t0}
                record["kept"] = best.update(model, ev["accuracy"], epoch=epoch, step=step)
                if tracker is not None:
                    tracker.log(step, {"val/loss": ev["loss"], "val/accuracy": ev["accuracy"], "val/f1": ev["f1"]})
                history.append(record)
                last_eval_step = step
                if verbose:
                    print(f"epoch {epoch}/{cfg.epochs} step {step}/{total}: train loss {record['train_loss']:.3f}"
                          f", val loss {ev['loss']:.3f}, val accuracy {ev['accuracy']:.3f}"
                          f"{' (best so far, kept)' if record['kept'] else ''} [{record['seconds']:.0f} s]",
                          flush=True)
                model.train()
    best.restore(model)
    model.eval()
    best_record = next(r for r in history if r["step"] == best.where["step"])
    return FineTuneResult(history=history, losses=losses, best=best_record, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------
# 4. Models: build, save, load, predict, look at [CLS]
# ---------------------------------------------------------------------------------------------------------

def init_name(init: str | os.PathLike) -> str:
    return str(init) if str(init) in ("random", "pretrained", "minilm") else "checkpoint"


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
    made on demand by `train.get_pretrained`), ``"minilm"`` (all-MiniLM-L6-v2, a transformers model), or
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
    elif str(init) != "random":
        folder = Path(init)
        if not folder.is_dir():
            raise FileNotFoundError(f"--init {init!r}: not 'random', 'pretrained', 'minilm', nor a folder.")
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
    """Load a model saved by `save_finetuned` (bertbook or transformers), or by `efficient.save_efficient`
    (the trained weights only, on their base): ``(model, tokenizer, info)``."""
    folder = Path(folder)
    from .efficient import is_efficient, load_efficient

    if is_efficient(folder):  # only the weights trained on a frozen base (notebook 09)
        return load_efficient(folder)
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


def get_finetuned(P: Preset, task: str = "imdb", init: str = "pretrained") -> Path:
    """The folder of the preset's fine-tuned model ``finetune-<task>-<init>``; fine-tunes it if absent."""
    folder = artifacts_dir(P.name, f"finetune-{task}-{init}")
    if not (folder / INFO_NAME).is_file():
        print(f"No fine-tuned {task} model ({init} init) for preset {P.name!r} yet: fine-tuning one now, "
              f"as notebook 06 does.")
        run_finetune(P, task, init, out=folder)
    return folder


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


# ---------------------------------------------------------------------------------------------------------
# 5. Whole runs: one fine-tuning, the results table, the learning curve
# ---------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def load_task_examples(name: str, seed: int) -> dict[str, list[dict]]:

    return load_classification(name, seed=seed)


def _take(items: list[dict], n: int, seed: int) -> list[dict]:
    """A seeded random sample of n items (0 = all). Sources are often sorted by label: never take the head."""
    if n <= 0 or n >= len(items):
        n = len(items)
    rng = random.Random(seed)
    return rng.sample(items, n)


def task_data(P: Preset, task: str, train_examples: int | None = None) -> dict[str, tuple[list[str], list[int]]]:
    """The preset's slice of a task: ``{"train", "validation", "test"[, "ood"]} -> (texts, labels)``.

    Sizes come from ``P.finetune`` (``train_examples``, ``val_examples``, ``test_examples``); ``ood`` is the
    Rotten Tomatoes test split for IMDB models (short snippets instead of long reviews).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}.")
    f = P.finetune
    ds = load_task_examples(task, f.seed)
    n_train = f.train_examples if train_examples is None else train_examples
    parts = {"train": _take(ds["train"], n_train, f.seed),
             "validation": _take(ds["validation"], f.val_examples, f.seed),
             "test": _take(ds["test"], f.test_examples, f.seed)}
    if task in OOD_TASK:
        parts["ood"] = _take(load_task_examples(OOD_TASK[task], f.seed)["test"], f.test_examples, f.seed)
    return {k: ([x["text"] for x in v], [int(x["label"]) for x in v]) for k, v in parts.items()}


@dataclass
class FinetuneRun:
    """One fine-tuning run: the table row (``record``) plus what the notebook plots."""

    record: dict
    model: torch.nn.Module
    tokenizer: Any
    info: dict
    result: FineTuneResult
    test: Encoded
    test_probs: np.ndarray
    path: Path | None = None


def jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.ndarray,)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def learning_rate_for(cfg: FinetuneConfig, info: dict) -> float:
    """Each starting point has its own peak learning rate (chosen on validation): MiniLM a small one that
    keeps its weights, bertbook from random weights and from its own pretraining their own."""
    if info["kind"] == "transformers":
        return cfg.minilm_learning_rate
    return cfg.pretrained_learning_rate if "checkpoint" in info else cfg.learning_rate


def run_finetune(P: Preset, task: str, init: str | os.PathLike = "random", out: str | os.PathLike | None = None,
                 *, train_examples: int | None = None, max_length: int | None = None,
                 truncation: str | None = None, overwrite: bool = True, data: dict | None = None,
                 verbose: bool = True, tracker: Any = None) -> FinetuneRun:
    """Build, fine-tune, test (and for IMDB, test on Rotten Tomatoes); save to ``out`` if given. ``tracker``
    (`bertbook.tracking`) receives the training curves.

    The time reported is that of fine-tuning and evaluating, not of making the pretrained checkpoint.
    Taught in notebook 06; the ``finetune`` command runs it.
    """

    set_seed(P.finetune.seed)
    splits = data if data is not None else task_data(P, task, train_examples)
    model, tokenizer, info = build_classifier(P, init, verbose=verbose)
    info["max_length"] = max_length or info["max_length"]
    info["truncation"] = truncation or info["truncation"]
    info.update(task=task, label_names=list(label_names(task)))
    L, trunc, pad = info["max_length"], info["truncation"], tokenizer.pad_token_id or 0
    enc = {k: encode(tokenizer, texts, labels, L, trunc) for k, (texts, labels) in splits.items()}
    if verbose:
        print(f"{task}: {len(enc['train'])} train / {len(enc['validation'])} validation / {len(enc['test'])} "
              f"test examples, length {L} ({trunc}), {P.finetune.epochs} epoch(s)")
    t0 = time.perf_counter()
    cfg = dataclasses.replace(P.finetune, learning_rate=learning_rate_for(P.finetune, info))
    result = fine_tune(model, enc["train"], enc["validation"], cfg, pad_id=pad, verbose=verbose, tracker=tracker)
    test = evaluate_classifier(model, enc["test"], P.finetune.batch_size * 2, pad)
    ood = evaluate_classifier(model, enc["ood"], P.finetune.batch_size * 2, pad) if "ood" in enc else None
    seconds = time.perf_counter() - t0
    record = {"task": task, "model": info["init"], "preset": P.name, "train_examples": len(enc["train"]),
              "max_length": L, "truncation": trunc, "epochs": P.finetune.epochs, "learning_rate": cfg.learning_rate,
              "pooling": getattr(model, "pooling", "cls"), "seed": P.finetune.seed,
              "accuracy": test["accuracy"], "precision": test["precision"], "recall": test["recall"],
              "f1": test["f1"], "test_examples": test["n"], "rt_accuracy": ood["accuracy"] if ood else None,
              "val_accuracy": result.best["val_accuracy"], "best_epoch": result.best["epoch"],
              "seconds": round(seconds, 1), "machine": machine(),
              "autocast": "bf16" if autocast_dtype("auto", device_of(model)) else "fp32"}
    info["metrics"] = {**record, "confusion": test["confusion"], "history": result.history}
    path = None
    if out is not None:
        out_dir = Path(out)
        if verbose and out_dir.exists() and any(out_dir.iterdir()):
            print(f"replacing the fine-tuned model in {out_dir}")
        path = save_finetuned(out_dir, model, tokenizer, info, overwrite=overwrite)
        record["path"] = str(path)
    return FinetuneRun(record=record, model=model, tokenizer=tokenizer, info=info, result=result,
                       test=enc["test"], test_probs=test["probs"], path=path)


def bow_row(P: Preset, task: str, data: dict | None = None, train_examples: int | None = None) -> dict:
    """The bag-of-words row of the results table (row a), on the same slices as the neural models."""

    splits = data if data is not None else task_data(P, task, train_examples)
    t0 = time.perf_counter()
    bow = bag_of_words(*splits["train"], *splits["validation"], seed=P.finetune.seed)
    test_texts, test_labels = splits["test"]
    test = classification_metrics(test_labels, bow.predict_proba(test_texts).argmax(axis=1))
    rt = None
    if "ood" in splits:
        ood_texts, ood_labels = splits["ood"]
        rt = classification_metrics(ood_labels, bow.predict_proba(ood_texts).argmax(axis=1))["accuracy"]
    return {"task": task, "model": "bow", "preset": P.name, "train_examples": len(splits["train"][0]),
            "max_length": None, "truncation": None, "epochs": None, "accuracy": test["accuracy"],
            "precision": test["precision"], "recall": test["recall"], "f1": test["f1"],
            "test_examples": test["n"], "rt_accuracy": rt, "val_accuracy": bow.val_accuracy[bow.C],
            "C": bow.C, "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}


def seeded_row(P: Preset, task: str, init: str, splits: dict, seeds: int = 1, poolings: Sequence[str] = (),
               learning_rates: Sequence[float] = (), out: str | os.PathLike | None = None,
               verbose: bool = True) -> dict:
    """One bertbook row of the results table, fine-tuned ``seeds`` times (notebook 06).

    Every run sees the same examples; the seed changes the head's initialisation (and a random model's
    weights), the batch order and the dropout masks. With ``poolings`` (e.g. ``("cls", "mean")``) and/or
    ``learning_rates``, the first seed is run once per combination and the one with the best *validation*
    accuracy is kept for the other seeds (the test set never chooses). The record holds the mean of every
    metric, the sample standard deviation of the test accuracy (``accuracy_std``), each seed's numbers
    (``runs``) and the validation accuracy of every candidate (``choice``); the first seed's chosen model is
    saved to ``out``.
    """
    first = P.finetune.seed
    lr_field = "finetune.pretrained_learning_rate" if init != "random" else "finetune.learning_rate"
    grid = [{"finetune.pooling": p, lr_field: lr} for p in poolings or (P.finetune.pooling,)
            for lr in learning_rates or (_get(P, lr_field),)]
    candidates = []
    for settings in grid:
        candidates.append(run_finetune(P.override(**settings), task, init, data=splits, verbose=verbose))
        if verbose and len(grid) > 1:
            print(f"    pooling {settings['finetune.pooling']}, learning rate {settings[lr_field]:g}: validation "
                  f"accuracy {candidates[-1].record['val_accuracy']:.3f}", flush=True)
    i = max(range(len(grid)), key=lambda j: (candidates[j].record["val_accuracy"], -j))  # first wins a tie
    best = candidates[i]
    if out is not None:
        # the table's own folder for this row, replaced on every run as run_finetune(out=...) does
        best.record["path"] = str(save_finetuned(Path(out), best.model, best.tokenizer, best.info, overwrite=True))
    runs = [best.record]
    for k in range(1, seeds):
        Q = P.override(**grid[i], **{"finetune.seed": first + k})
        runs.append(run_finetune(Q, task, init, data=splits, verbose=verbose).record)
    return summarize_seeds(runs, [c.record for c in candidates])


def _get(P: Preset, dotted: str) -> Any:
    group, _, name = dotted.partition(".")
    return getattr(getattr(P, group), name)


def summarize_seeds(runs: Sequence[dict], candidates: Sequence[dict] = ()) -> dict:
    """Mean of each metric over seeded runs, the test accuracy's sample standard deviation, and the runs."""
    rec = dict(runs[0])
    for key in ("accuracy", "precision", "recall", "f1", "rt_accuracy", "val_accuracy"):
        values = [r[key] for r in runs if r.get(key) is not None]
        rec[key] = float(np.mean(values)) if values else None
    accs = [r["accuracy"] for r in runs]
    rec.update(seeds=[r["seed"] for r in runs], accuracy_std=float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
               rt_accuracy_std=(float(np.std([r["rt_accuracy"] for r in runs], ddof=1))
                                if len(runs) > 1 and runs[0].get("rt_accuracy") is not None else None),
               seconds=round(sum(r["seconds"] for r in runs) + sum(c["seconds"] for c in candidates[1:]), 1),
               runs=[{k: r.get(k) for k in ("seed", "pooling", "accuracy", "f1", "rt_accuracy", "val_accuracy",
                                              "best_epoch", "seconds")} for r in runs],
               choice=[{k: c[k] for k in ("pooling", "learning_rate", "val_accuracy")} for c in candidates]
               if len(candidates) > 1 else None)
    return rec


def results_table(P: Preset, tasks: Sequence[str] = TASKS, rows: Sequence[str] = ("bow", "random", "pretrained", "minilm"),
                  reuse: Sequence[dict] = (), verbose: bool = True, seeds: int = 1,
                  poolings: Sequence[str] = (), learning_rates: dict[str, Sequence[float]] | None = None) -> list[dict]:
    """The results table on the current preset: one row per (task, model). Taught in notebook 06.

    Rows: ``bow`` (a), ``random`` (b: bertbook from random initialisation), ``pretrained`` (c: bertbook
    pretrained in notebook 05), ``minilm`` (d). Every row states the preset, the training examples, the
    seconds it took and the machine. Fine-tuned models are saved in ``artifacts/<preset>/finetune-<task>-<row>``.
    The bertbook rows (b, c) run ``seeds`` times and report mean and spread, with the pooling chosen on
    validation among ``poolings`` and ``learning_rates[row]`` (see `seeded_row`).
    ``reuse``: records computed earlier in this session (same preset, default settings) that are taken as
    they are instead of being run again.
    """
    done = {(r["task"], r["model"]): r for r in reuse if r["preset"] == P.name}
    table = []
    for task in tasks:
        splits = None
        for row in rows:
            if (task, row) in done:
                table.append(done[(task, row)])
                continue
            if verbose:
                print(f"--- {task}: {MODEL_NAMES.get(row, row)}", flush=True)
            splits = splits or task_data(P, task)
            if row == "bow":
                rec = bow_row(P, task, splits)
            elif row in ("random", "pretrained"):
                rec = seeded_row(P, task, row, splits, seeds, poolings, (learning_rates or {}).get(row, ()),
                                 out=artifacts_dir(P.name, f"finetune-{task}-{row}"), verbose=verbose)
            elif row == "minilm":
                rec = run_finetune(P, task, row, out=artifacts_dir(P.name, f"finetune-{task}-{row}"),
                                   data=splits, verbose=verbose).record
            else:
                raise ValueError(f"unknown row {row!r}: choose from bow, random, pretrained, minilm.")
            table.append(rec)
            if verbose:
                spread = f" ± {rec['accuracy_std']:.3f} over {len(rec['seeds'])} seeds" if rec.get("accuracy_std") else ""
                print(f"    test accuracy {rec['accuracy']:.3f}{spread}, F1 {rec['f1']:.3f} in {rec['seconds']:.0f} s",
                      flush=True)
    return table


def render_markdown(rows: Sequence[dict]) -> str:
    """A markdown table of results rows (from `results_table` or `learning_curve`)."""
    head = ("| task | model | preset | train examples | length | epochs | lr, pooling | test accuracy | test F1 "
            "| RT accuracy (out of domain) | seconds | machine |")
    lines = [head, "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    def spread(r: dict, key: str) -> str:
        std = r.get(f"{key}_std")
        return num(r.get(key), ".3f") + (f" ± {std:.3f} (n={len(r['seeds'])})" if std is not None else "")

    for r in rows:
        lines.append(f"| {r['task']} | {MODEL_NAMES.get(r['model'], r['model'])} | {r['preset']} "
                     f"| {r['train_examples']:,} | {num(r.get('max_length'), 'd')} | {num(r.get('epochs'), 'd')} "
                     f"| {num(r.get('learning_rate'), 'g')}{', ' + r['pooling'] if r.get('pooling') else ''} "
                     f"| {spread(r, 'accuracy')} | {num(r['f1'], '.3f')} | {spread(r, 'rt_accuracy')} "
                     f"| {r['seconds']:.0f} | {r['machine']}{', ' + r['autocast'] if r.get('autocast') else ''} |")
    return "\n".join(lines) + "\n"


def curve_sizes(P: Preset, available: int | None = None) -> list[int]:
    """Training-set sizes for the learning curve, scaled from the preset: n/8, n/2 and n, with n the
    preset's ``train_examples`` (all of the training split if 0), never more than ``available``."""
    n = P.finetune.train_examples or (available or 0)
    sizes = sorted({max(P.finetune.batch_size, n // 8), max(P.finetune.batch_size, n // 2), n})
    return [s for s in sizes if available is None or s <= available] or [min(sizes)]


def learning_curve(P: Preset, sizes: Sequence[int] | None = None, task: str = "imdb", init: str = "minilm",
                   reuse: Sequence[dict] = (), verbose: bool = True) -> list[dict]:
    """Test accuracy against the number of training examples (MiniLM by default), with the time of each.

    Pretraining pays off most when labels are few: the curve shows how many labelled reviews a
    pretrained model needs. ``reuse``: records already computed (e.g. the results table's row for the
    full training set), taken as they are. Taught in notebook 06.
    """
    available = len(load_task_examples(task, P.finetune.seed)["train"])
    sizes = list(sizes) if sizes else curve_sizes(P, available)
    done = {r["train_examples"]: r for r in reuse
            if (r["task"], r["model"], r["preset"]) == (task, init, P.name)}
    rows = []
    for n in sizes:
        if n in done:
            rows.append(done[n])
            continue
        if verbose:
            print(f"--- {task}, {init}, {n} training examples", flush=True)
        run = run_finetune(P, task, init, out=None, train_examples=n, verbose=verbose)
        rows.append(run.record)
        if verbose:
            print(f"    test accuracy {run.record['accuracy']:.3f} in {run.record['seconds']:.0f} s", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------
# 6. Pictures and the "try it" widget
# ---------------------------------------------------------------------------------------------------------

def plot_confusion(cm: Sequence[Sequence[int]], label_names: Sequence[str] = ("negative", "positive"),
                   title: str = "confusion matrix (test)", ax=None):
    """Counts of true (rows) vs predicted (columns) classes, with the numbers written in."""
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(cm, cmap="Blues")
    ax.grid(False)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(label_names)), label_names)
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return ax


def plot_confidence(probs: np.ndarray, labels: Sequence[int], ax=None, title: str = "confidence (test)"):
    """Histogram of the predicted class's probability, for right and for wrong predictions."""
    import matplotlib.pyplot as plt

    probs, labels = np.asarray(probs), np.asarray(labels)
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(0.5 if probs.shape[1] == 2 else 0.0, 1.0, 11)
    ax.hist([conf[right], conf[~right]], bins=bins, label=[f"right ({right.sum()})", f"wrong ({(~right).sum()})"],
            color=["tab:green", "tab:red"], stacked=True)
    ax.set_xlabel("probability of the predicted class")
    ax.set_ylabel("examples")
    ax.set_title(title)
    ax.legend()
    return ax


def plot_learning_curve(rows: Sequence[dict], ax=None, baseline: dict | None = None):
    """Test accuracy against training-set size (log scale), each point labelled with its time."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["train_examples"] for r in rows]
    ys = [r["accuracy"] for r in rows]
    ax.plot(xs, ys, "o-", label=MODEL_NAMES.get(rows[0]["model"], rows[0]["model"]) if rows else None)
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(f"{r['seconds']:.0f} s", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    if baseline is not None:
        ax.axhline(baseline["accuracy"], color="gray", ls="--",
                   label=f"bag of words, {baseline['train_examples']:,} examples")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("training examples")
    ax.set_ylabel("test accuracy")
    if rows:
        ax.set_title(f"learning curve: {rows[0]['task']}, preset {rows[0]['preset']}, {rows[0]['machine']}",
                     fontsize=9)
    ax.legend(fontsize=8)
    return ax


def most_confident_mistakes(texts: Sequence[str], labels: Sequence[int], probs: np.ndarray, k: int = 5,
                            label_names: Sequence[str] = ("negative", "positive")) -> list[dict]:
    """The k wrong predictions the model was surest of: the place to start error analysis."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:k]
    return [{"text": clean_text(texts[i]), "true": label_names[labels[i]], "predicted": label_names[preds[i]],
             "probability": float(probs[i, preds[i]])} for i in wrong]


def attention_html(words: Sequence[str], weights: Sequence[float]) -> str:
    """Words on a background whose strength is the weight (the largest weight is full colour)."""
    weights = np.asarray(weights, dtype=float)
    top = weights.max() if len(weights) and weights.max() > 0 else 1.0
    spans = [f'<span title="{w:.3f}" style="background: rgba(214, 39, 40, {w / top:.2f}); padding: 1px 2px; '
             f'margin: 1px; border-radius: 3px; display: inline-block">{html.escape(t)}</span>'
             for t, w in zip(words, weights)]
    return '<div style="line-height: 1.9; font-family: sans-serif">' + " ".join(spans) + "</div>"


def describe(model: torch.nn.Module, tokenizer, info: dict, text: str) -> dict:
    """Everything the "try it" panel shows for one text: label, probability, words and [CLS] attention."""
    if not text or not text.strip():
        raise ValueError("Type a review first: the text is empty.")
    pred = classify(model, tokenizer, [text], info)[0]
    tokens, weights = cls_attention_over_tokens(model, tokenizer, text, info)
    words, wsum = merge_wordpieces(tokens, weights)
    return {**pred, "words": words, "weights": wsum, "truncated": len(tokens) >= info["max_length"],
            "html": attention_html(words, wsum)}


# ---------------------------------------------------------------------------------------------------------
# 7. The command line
# ---------------------------------------------------------------------------------------------------------


