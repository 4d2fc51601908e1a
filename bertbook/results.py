"""Whole fine-tuning runs: one run, seeded rows, the results table and the learning curve.

Taught in notebook 06; the ``finetune`` and ``results`` commands run them. Each row of the table starts
from its own point (bag of words, random weights, our pretraining, MiniLM), is fine-tuned on the same
examples, chooses its pooling and learning rate on validation, and reports the test set once, with the
mean and spread over seeds. The pictures of a run (confusion matrix, confidence, learning curve) close
the module.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import replace
import random
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .baselines import bag_of_words
from .classifier import INFO_NAME, build_classifier, save_finetuned
from .config import FinetuneConfig, Preset
from .data import label_names, load_classification
from .efficient import (Method, apply_method, build_base, count_parameters, method_from_preset, save_efficient,
                        trainable_state)
from .finetune import Encoded, FineTuneResult, classification_metrics, encode, evaluate_classifier, fine_tune
from .paths import artifacts_dir
from .utils import PeakRSS, autocast_dtype, device_of, machine, set_seed

__all__ = ["TASKS", "MODEL_NAMES", "task_data", "FinetuneRun", "learning_rate_for", "run_finetune",
           "get_finetuned", "bow_row", "seeded_row", "summarize_seeds", "results_table", "render_markdown",
           "curve_sizes", "learning_curve", "plot_confusion", "plot_confidence", "plot_learning_curve"]

TASKS = ("imdb", "sst2")  # the fine-tuning tasks; "rotten-tomatoes" is the out-of-domain check for IMDB
OOD_TASK = {"imdb": "rotten-tomatoes"}  # SST-2 *is* Rotten Tomatoes sentences (Socher et al. 2013): no OOD
MODEL_NAMES = {
    "bow": "bag of words (TF-IDF 1-2 grams + logistic regression)",
    "random": "bertbook, random init (no pretraining)",
    "pretrained": "bertbook, pretrained in notebook 05",
    "reference": "bertbook, the reference (the same model pretrained for hours)",
    "minilm": "MiniLM-L6 (all-MiniLM-L6-v2), pretrained",
}


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


def get_finetuned(P: Preset, task: str = "imdb", init: str = "pretrained") -> Path:
    """The folder of the preset's fine-tuned model ``finetune-<task>-<init>``; fine-tunes it if absent."""
    folder = artifacts_dir(P.name, f"finetune-{task}-{init}")
    if not (folder / INFO_NAME).is_file():
        print(f"No fine-tuned {task} model ({init} init) for preset {P.name!r} yet: fine-tuning one now, "
              f"as notebook 06 does.")
        run_finetune(P, task, init, out=folder)
    return folder


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


def results_table(P: Preset, tasks: Sequence[str] = TASKS,
                  rows: Sequence[str] = ("bow", "random", "pretrained", "minilm"),
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
            elif row in ("random", "pretrained", "reference"):
                rec = seeded_row(P, task, row, splits, seeds, poolings, (learning_rates or {}).get(row, ()),
                                 out=artifacts_dir(P.name, f"finetune-{task}-{row}"), verbose=verbose)
            elif row == "minilm":
                rec = run_finetune(P, task, row, out=artifacts_dir(P.name, f"finetune-{task}-{row}"),
                                   data=splits, verbose=verbose).record
            else:
                raise ValueError(f"unknown row {row!r}: choose from {', '.join(MODEL_NAMES)}.")
            table.append(rec)
            if verbose:
                std = rec.get("accuracy_std")
                spread = f" ± {std:.3f} over {len(rec['seeds'])} seeds" if std else ""
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
# Pictures: a confusion matrix, confidence, the learning curve
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


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning a fraction of the weights: whole runs and the comparison table (notebook 09)
# ---------------------------------------------------------------------------------------------------------

def learning_rate(P: Preset, info: dict, method: Method) -> float:
    """Peak learning rate for a method: full fine-tuning keeps notebook 06's rate for its starting point; the
    others train few, freshly started weights and take larger rates (``P.efficient``)."""
    e = P.efficient
    if method.kind == "full":
        return learning_rate_for(P.finetune, {**info, "kind": info.get("base_kind", info["kind"])})
    return {"head": e.head_learning_rate, "lora": e.lora_learning_rate, "adapter": e.adapter_learning_rate,
            "prefix": e.prefix_learning_rate}[method.kind]


def comparison_preset(P: Preset) -> Preset:
    """The preset with the comparison's sizes (``P.efficient.train_examples``, ``val_examples``, ``test_examples``)
    and mean pooling: a frozen encoder must hand the head a useful text vector, and neither ours (pretrained by
    MLM alone, notebook 06) nor all-MiniLM-L6-v2 (trained as a mean-pooled sentence encoder, Reimers & Gurevych
    2019) has trained its [CLS] pooler for it."""
    e = P.efficient
    return P.override(**{"finetune.train_examples": e.train_examples, "finetune.val_examples": e.val_examples,
                         "finetune.test_examples": e.test_examples, "finetune.pooling": "mean"})


def run_efficient(P: Preset, task: str, init: str | os.PathLike, method: Method, *, data: dict | None = None,
                  out: str | os.PathLike | None = None, overwrite: bool = False, tracker=None,
                  verbose: bool = True) -> dict:
    """Fine-tune with ``method`` and measure it: test accuracy, trainable and total parameters, seconds per
    epoch (training and validation), peak memory while training (RSS above its start, `PeakRSS`) and the size
    of what must be saved. Taught in
    notebook 09; the ``finetune --peft`` command runs it. Returns the record; the run's objects (model,
    tokenizer, info, the `FineTuneResult`) are in ``record["_run"]``."""

    set_seed(P.finetune.seed)
    splits = dict(data if data is not None else task_data(P, task))
    splits.pop("ood", None)  # the comparison tests in domain only
    model, tokenizer, info = build_base(P, init, verbose=False)
    apply_method(model, method)
    info.update(task=task, label_names=list(label_names(task)), method=method.to_dict())
    L, pad = info["max_length"], tokenizer.pad_token_id or 0
    enc = {k: encode(tokenizer, t, y, L, info["truncation"]) for k, (t, y) in splits.items()}
    cfg = replace(P.finetune, learning_rate=learning_rate(P, info, method))
    with PeakRSS() as mem:  # training only: gradients, optimizer state, activations
        result = fine_tune(model, enc["train"], enc["validation"], cfg, pad_id=pad, verbose=verbose, tracker=tracker)
    test = evaluate_classifier(model, enc["test"], P.finetune.batch_size * 2, pad)
    counts = count_parameters(model)
    record = {"task": task, "model": info["init"], "method": method.kind, "label": method.label,
              "preset": P.name, "seed": P.finetune.seed, "train_examples": len(enc["train"]), "max_length": L,
              "epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "pooling": info["pooling"], **counts,
              "accuracy": test["accuracy"], "f1": test["f1"], "val_accuracy": result.best["val_accuracy"],
              "test_examples": test["n"], "seconds_per_epoch": round(result.seconds / cfg.epochs, 1),
              "seconds": round(result.seconds, 1), "peak_rss_mb": round(mem.peak_mb),
              "extra_rss_mb": round(mem.extra_mb), "saved_bytes": _saved_bytes(model), "machine": machine()}
    info["metrics"] = {k: v for k, v in record.items()}
    if out is not None and method.kind != "full" and info["init"] != "random":
        record["path"] = str(save_efficient(out, model, info, method, overwrite=overwrite))
    record["_run"] = {"model": model, "tokenizer": tokenizer, "info": info, "result": result}
    return record


def _saved_bytes(model: nn.Module) -> int:
    """Bytes of the safetensors file that holds the trained tensors (what each task must store)."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        save_file(trainable_state(model), f"{d}/w.safetensors")
        return os.path.getsize(f"{d}/w.safetensors")


def comparison_methods(P: Preset) -> list[Method]:
    """The comparison's rows: full, head only, LoRA at ``P.efficient.lora_ranks`` (alpha = 2 r), adapters, prefix."""
    lora = [method_from_preset(P, "lora", r=r, alpha=2.0 * r) for r in P.efficient.lora_ranks]
    return [method_from_preset(P, "full"), method_from_preset(P, "head"), *lora,
            method_from_preset(P, "adapter"), method_from_preset(P, "prefix")]


def comparison_row(P: Preset, task: str, init: str, method: Method, seeds: int | None = None,
                   data: dict | None = None, verbose: bool = False) -> dict:
    """One row of the comparison: ``seeds`` runs on the same examples, mean and spread (`summarize_seeds`)."""
    P = comparison_preset(P)
    data = data if data is not None else task_data(P, task)
    runs = []
    for k in range(seeds or P.efficient.seeds):
        rec = run_efficient(P.override(**{"finetune.seed": P.finetune.seed + k}), task, init, method, data=data,
                            verbose=verbose)
        rec.pop("_run")
        runs.append(rec)
        if verbose:
            print(f"    {method.label}, seed {rec['seed']}: test accuracy {rec['accuracy']:.3f}", flush=True)
    row = summarize_seeds(runs)
    row["seconds_per_epoch"] = round(sum(r["seconds_per_epoch"] for r in runs) / len(runs), 1)
    for key in ("peak_rss_mb", "extra_rss_mb"):  # the first run's is the largest: later ones reuse freed memory
        row[key] = max(r[key] for r in runs)
    row["runs"] = [{**r0, "seconds_per_epoch": r["seconds_per_epoch"], "extra_rss_mb": r["extra_rss_mb"]}
                   for r0, r in zip(row["runs"], runs)]
    return row


def render_comparison(rows: Sequence[dict]) -> str:
    """The comparison as a markdown table."""
    lines = ["| task | model | method | trainable | of total | test accuracy | s / epoch | extra RSS | saved |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = f" ± {100 * r['accuracy_std']:.1f}" if r.get("accuracy_std") is not None else ""
        lines.append(f"| {r['task']} | {r['model']} | {r['label']} | {r['trainable']:,} "
                     f"| {100 * r['trainable'] / r['total']:.2f}% | {100 * r['accuracy']:.1f}%{spread} "
                     f"| {r['seconds_per_epoch']:.0f} | {r['extra_rss_mb']:.0f} MB | {_size(r['saved_bytes'])} |")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"
