"""One pretrained body, many heads: what every task on top of an encoder shares (notebooks 08 and 10).

A task is the same encoder (MiniLM, or bertbook's own pretrained model) with a small head on top of the
token vectors it returns:

- named entities (`bertbook.ner`): a label for every token, read at the first piece of every word;
- relations (`bertbook.relations`): one label per sentence, read from the vectors of entity markers;
- answers (`bertbook.qa`): a start and an end score for every token of the context;
- summaries (`bertbook.summarize`, notebook 10): a score for every sentence of an abstract, read at its [CLS];
- replies (`bertbook.dialogue`, notebook 10): a score for a context and a candidate reply, read together
  (cross-encoder) or apart (bi-encoder);
- translations (`bertbook.translate`, notebook 10): a decoder that writes Chinese while it attends to the
  encoder's vectors of the English.

This module holds what they have in common, read top to bottom: the task model (encoder + head), building
the encoder, padding features into batches, the training loop (an explicit ``for`` loop, as in notebook
06), saving and loading, and whole runs (``run_task``). Each task module provides the same few functions
(``task_data``, ``prepare``, ``make_head``, ``featurize``, ``evaluate``, ``predict``; ``make_model`` when
its model is more than an encoder and a head, ``epochs`` when it needs its own number of passes), so one
loop trains all seven tasks.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import MissingFileError, check_files, read_json_file
from .classifier import build_classifier, init_name, save_finetuned
from .config import ModelConfig, Preset
from .finetune import BestCheckpoint, batch_order
from .model import IGNORE_INDEX, ModelOutput
from .model import BertModel as OurBert  # beside transformers' BertModel in load_task_model
from .optim import check_finite, clip_gradients, make_optimizer, make_scheduler
from .paths import artifacts_dir
from .tokenizer import load_tokenizer
from .utils import device, device_of, machine, set_seed

__all__ = ["TASKS", "SIZE_FIELDS", "task_module", "TaskModel", "build_encoder", "build_task_model", "make_model",
           "add_special_tokens", "pad_features", "to_device", "TaskResult", "train_task", "save_task_model",
           "load_task_model", "TaskRun", "run_task", "take", "task_folder", "get_task_model"]

# task name -> (module, dataset, what the head predicts)
TASKS: dict[str, tuple[str, str, str]] = {
    "wikiann": ("ner", "wikiann-en", "entities (WikiANN-en: PER, ORG, LOC)"),
    "wnut17": ("ner", "wnut17", "emerging entities (WNUT-17: six types in social-media text)"),
    "semeval": ("relations", "semeval2010-task8", "the relation between two marked nominals (SemEval-2010 Task 8)"),
    "squad": ("qa", "squad-v1.1", "the answer span in a paragraph (SQuAD v1.1)"),
    "scitldr": ("summarize", "scitldr", "the sentence of an abstract that best summarises it (SciTLDR-A)"),
    "dailydialog": ("dialogue", "dailydialog", "the true next turn of a dialogue among 10 (DailyDialog)"),
    "tatoeba-zh": ("translate", "tatoeba-cmn-eng", "the Chinese translation of an English sentence (Tatoeba)"),
}
# task module -> the TasksConfig fields that `finetune --train-examples` and `--max-length` change
SIZE_FIELDS = {"ner": ("ner_train_examples", "max_length"), "relations": ("relation_train_examples", "max_length"),
               "qa": ("qa_train_examples", "qa_max_length"),
               "summarize": ("summary_train_examples", "summary_max_length"),
               "dialogue": ("dialogue_train_examples", "dialogue_max_length"),
               "translate": ("translation_train_pairs", "translation_max_length")}
INFO_NAME = "finetune.json"  # what a fine-tuned folder holds besides weights and tokenizer (as in notebook 06)


def task_module(task: str) -> ModuleType:
    """The module that implements ``task`` (``bertbook.ner``, ``relations``, ``qa``, ``summarize``, ``dialogue``
    or ``translate``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}.")
    return importlib.import_module(f"bertbook.{TASKS[task][0]}")


def take(items: Sequence, n: int, seed: int) -> list:
    """A seeded random sample of ``n`` items in their original order (0 = all)."""
    if n <= 0 or n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


# ---------------------------------------------------------------------------------------------------------
# 1. The model: one encoder, one head
# ---------------------------------------------------------------------------------------------------------

class TaskModel(nn.Module):
    """An encoder (bertbook's or transformers' ``BertModel``) and a task head on its token vectors.

    ``forward(input_ids, attention_mask, token_type_ids, **targets)`` runs the encoder and hands the last
    hidden states ``(B, T, D)`` and the targets to the head, which returns ``.logits`` and, given targets,
    ``.loss``. Both encoders return ``last_hidden_state``, so every head works on both.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The weights as ``model.safetensors`` in ``folder`` (the encoder's shape is saved by the caller)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(folder) / "model.safetensors"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **targets: torch.Tensor) -> ModelOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state  # (B, T, D)
        return self.head(hidden, attention_mask=attention_mask, **targets)


def build_encoder(P: Preset, init: str | os.PathLike = "minilm") -> tuple[nn.Module, Any, dict]:
    """The encoder a task starts from, its tokenizer and what it is: ``(encoder, tokenizer, info)``.

    ``init`` is what notebook 06 fine-tunes from: ``"minilm"``, ``"pretrained"`` (the preset's checkpoint
    from notebook 05, made on demand), ``"random"``, or a pretraining checkpoint folder. The encoder is the
    body of `classifier.build_classifier`'s model; its sentence head is dropped, a task head takes its place.
    """
    classifier, tokenizer, info = build_classifier(P, init, verbose=False)
    keep = {k: info[k] for k in ("init", "kind", "preset", "checkpoint") if k in info}
    return classifier.bert, tokenizer, keep


def build_task_model(P: Preset, task: str, init: str | os.PathLike = "minilm",
                     **options: Any) -> tuple["TaskModel", Any, dict]:
    """The encoder ``init`` with ``task``'s head on it: ``(model, tokenizer, info)``; ``info`` says how to
    read inputs for it (labels, lengths, pooling). ``options`` go to the task (``pooling="cls"``)."""
    module = task_module(task)
    encoder, tokenizer, info = build_encoder(P, init)
    info.update(task=task, **module.prepare(encoder, tokenizer, P, task, **options))
    model = make_model(module, encoder, info).to(device_of(encoder))
    return model, tokenizer, info


def make_model(module: ModuleType, encoder: nn.Module, info: dict) -> nn.Module:
    """The task's model around ``encoder``: ``TaskModel(encoder, module.make_head(...))``, unless the task
    module builds its own with ``make_model(encoder, info)`` (a model that holds the encoder as ``.encoder``,
    for example one that encodes two texts apart)."""
    if hasattr(module, "make_model"):
        return module.make_model(encoder, info)
    return TaskModel(encoder, module.make_head(encoder.config.hidden_size, info))


def add_special_tokens(encoder: nn.Module, tokenizer, tokens: Sequence[str], seed: int = 0) -> list[int]:
    """Add ``tokens`` to the vocabulary as special tokens (never split, never lower-cased) and give each
    a new row in the token-embedding table, started at the mean of the existing rows plus a little noise.
    Returns their ids. The rows are trained with the rest of the model (Baldini Soares et al. 2019)."""
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": list(new)}, replace_extra_special_tokens=False)
    size = len(tokenizer)
    table = encoder.embeddings.word_embeddings
    old = table.weight.detach()  # (V_old, D)
    if size > old.shape[0]:
        grown = nn.Embedding(size, old.shape[1], padding_idx=table.padding_idx).to(old.device)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(size - old.shape[0], old.shape[1], generator=generator) * old.std().item() * 0.1
        with torch.no_grad():
            grown.weight[:old.shape[0]] = old
            grown.weight[old.shape[0]:] = old.mean(dim=0) + noise.to(old.device)  # (V_new - V_old, D)
        encoder.embeddings.word_embeddings = grown
        if isinstance(encoder.config, ModelConfig):  # bertbook checks ids against config.vocab_size
            encoder.config = dataclasses.replace(encoder.config, vocab_size=size)
        else:
            encoder.config.vocab_size = size
    return tokenizer.convert_tokens_to_ids(list(tokens))


# ---------------------------------------------------------------------------------------------------------
# 2. Features to batches
# ---------------------------------------------------------------------------------------------------------

# Keys padded to the longest sequence of the batch *for that key*, and the value a padded position gets
# (None: the tokenizer's pad id). ``input_ids`` and ``decoder_input_ids`` also get a mask (1 = real token).
# Other keys that hold numbers (one per example, or a fixed-size list) are stacked; anything else (offsets,
# words) stays out.
PADDED = {"input_ids": None, "token_type_ids": 0, "labels": IGNORE_INDEX, "decoder_input_ids": None,
          "candidate_ids": None, "sentence_positions": 0}
MASKS = {"input_ids": "attention_mask", "decoder_input_ids": "decoder_attention_mask",
         "candidate_ids": "candidate_attention_mask"}
STACKED = ("labels", "markers", "start_positions", "end_positions")


def pad_features(features: Sequence[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """A batch from feature dicts: ``input_ids`` (padded with ``pad_id``) and its ``attention_mask``,
    ``token_type_ids`` (0 where absent), per-token ``labels`` padded with -100, a decoder's
    ``decoder_input_ids`` and a second text's ``candidate_ids`` (each with its own length and mask),
    per-sentence ``sentence_positions``, and per-example targets (a relation label, marker positions, answer
    start and end) stacked as they are."""
    B = len(features)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in PADDED.items():
        if key not in features[0] and key != "token_type_ids":
            continue
        if key == "labels" and not isinstance(features[0][key], list):
            continue
        values = [f.get(key) or [0] * len(f["input_ids"]) for f in features]
        T = max(len(v) for v in values)
        out = torch.full((B, T), pad_id if fill is None else fill, dtype=torch.long)  # (B, T_key)
        for i, v in enumerate(values):
            out[i, :len(v)] = torch.tensor(v, dtype=torch.long)
        batch[key] = out
        if key in MASKS:
            mask = torch.zeros((B, T), dtype=torch.long)  # (B, T_key): 1 = real token
            for i, v in enumerate(values):
                mask[i, :len(v)] = 1
            batch[MASKS[key]] = mask
    for key in STACKED:
        if key in features[0] and key not in batch:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)  # (B,) or (B, k)
    return batch


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------
# 3. The loop
# ---------------------------------------------------------------------------------------------------------

@dataclass
class TaskResult:
    """What `train_task` returns; the model is left holding the weights that scored best on validation."""

    history: list[dict]  # one record per epoch: train_loss, the validation metrics, kept
    losses: list[float]  # the training loss of every step
    best: dict  # the record whose weights were kept
    seconds: float


def _step(model: nn.Module, batch: dict[str, torch.Tensor], optimizer, scheduler, max_grad_norm: float) -> float:
    """One optimizer step: forward, loss, backward, clip (0: off), refuse NaN or inf, step."""
    loss = model(**batch).loss
    loss.backward()
    check_finite(loss, clip_gradients(model, max_grad_norm), optimizer)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def train_task(model: nn.Module, train: Sequence[dict], validate: Callable[[nn.Module], dict], *,
               learning_rate: float, epochs: int, batch_size: int, seed: int = 0, pad_id: int = 0,
               warmup_frac: float = 0.1, weight_decay: float = 0.01, max_grad_norm: float = 1.0,
               verbose: bool = True) -> TaskResult:
    """Fine-tune ``model`` on the features ``train``; after each epoch ``validate(model)`` returns metrics
    whose ``"score"`` chooses the weights kept. AdamW, warmup then linear decay, clipping: the recipe of
    notebook 06 (`finetune.fine_tune`), for any head."""
    if not train:
        raise ValueError("no training examples: the task's training slice is empty.")
    device = device_of(model)
    torch.manual_seed(seed)  # dropout masks and the new head's start
    total = math.ceil(len(train) / batch_size) * epochs
    optimizer = make_optimizer(model, learning_rate, weight_decay)
    scheduler = make_scheduler(optimizer, round(warmup_frac * total), total, kind="linear")
    best, history, losses, t0 = BestCheckpoint(), [], [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        first_step = len(losses)
        for idx in batch_order([len(f["input_ids"]) for f in train], batch_size, shuffle=True, seed=seed + epoch):
            batch = to_device(pad_features([train[j] for j in idx], pad_id), device)
            losses.append(_step(model, batch, optimizer, scheduler, max_grad_norm))
        metrics = validate(model)
        record = {"epoch": epoch, "steps": len(losses), "train_loss": float(np.mean(losses[first_step:])),
                  **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                  "seconds": round(time.perf_counter() - t0, 1)}
        record["kept"] = best.update(model, metrics["score"], epoch=epoch)
        history.append(record)
        if verbose:
            print(f"epoch {epoch}/{epochs} ({len(losses)} steps): train loss {record['train_loss']:.3f}, "
                  f"validation score {metrics['score']:.3f}{' (best so far, kept)' if record['kept'] else ''} "
                  f"[{record['seconds']:.0f} s]", flush=True)
    best.restore(model)
    model.eval()
    kept = next(r for r in history if r["epoch"] == best.where["epoch"])
    return TaskResult(history=history, losses=losses, best=kept, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------
# 4. Saving and loading a task model
# ---------------------------------------------------------------------------------------------------------

def _encoder_config(encoder: nn.Module) -> dict:
    config = encoder.config
    if isinstance(config, ModelConfig):
        return config.to_dict()
    return {k: v for k, v in config.to_diff_dict().items() if not isinstance(v, torch.dtype)}


def save_task_model(out: str | os.PathLike, model: TaskModel, tokenizer, info: dict, overwrite: bool = False) -> Path:
    """Weights (safetensors), tokenizer and ``finetune.json`` (what the model is, its labels, its metrics)
    into ``out``, written beside it and renamed into place (`classifier.save_finetuned`). A folder that holds
    files is replaced only with ``overwrite=True``."""
    saved = {**info, "encoder_config": _encoder_config(model.encoder),
             "encoder_pooler": getattr(model.encoder, "pooler", None) is not None}
    return save_finetuned(out, model, tokenizer, saved, overwrite=overwrite)


def _empty_encoder(info: dict) -> nn.Module:
    """An encoder of the saved shape, to receive the saved weights."""
    if info["kind"] == "transformers":
        from transformers import BertConfig, BertModel

        config = BertConfig(**{k: v for k, v in info["encoder_config"].items() if k != "transformers_version"})
        config._attn_implementation = "eager"
        return BertModel(config, add_pooling_layer=info.get("encoder_pooler", True))
    return OurBert(ModelConfig.from_dict(info["encoder_config"]), add_pooling_layer=info.get("encoder_pooler", True))


def load_task_model(folder: str | os.PathLike) -> tuple[TaskModel, Any, dict]:
    """A model saved by `save_task_model`: ``(model, tokenizer, info)``, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / INFO_NAME).is_file():
        raise MissingFileError(f"{folder} is not a fine-tuned model (no {INFO_NAME}). Make one with "
                               f"python -m bertbook finetune --task wikiann --init minilm --out {folder}.")
    remedy = (f"Fine-tune it again (python -m bertbook finetune --task TASK --init INIT --out {folder} "
              f"--overwrite), or delete the folder {folder}.")
    info = read_json_file(folder / INFO_NAME, remedy)
    if info.get("task") not in TASKS:
        raise ValueError(f"{folder} holds a {info.get('task')} classifier, not a task model of notebooks 08 and 10 "
                         f"({', '.join(TASKS)}): load it with bertbook.classifier.load_finetuned.")
    check_files(folder, ["model.safetensors", "tokenizer.json"], remedy)
    encoder = _empty_encoder(info)
    model = make_model(task_module(info["task"]), encoder, info)
    if info["encoder_config"]["vocab_size"] != encoder.embeddings.word_embeddings.num_embeddings:
        raise ValueError(f"{folder}: the saved vocabulary size does not match the encoder. {remedy}")
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    tokenizer = load_tokenizer(folder, remedy)
    return model.to(device()).eval(), tokenizer, info


# ---------------------------------------------------------------------------------------------------------
# 5. Whole runs
# ---------------------------------------------------------------------------------------------------------

@dataclass
class TaskRun:
    """One fine-tuning run of a task: the results row (``record``) and what the notebook looks at."""

    record: dict
    model: TaskModel
    tokenizer: Any
    info: dict
    result: TaskResult
    test: dict  # the test metrics and predictions (what the task's ``evaluate`` returns)
    path: Path | None = None


def run_task(P: Preset, task: str, init: str | os.PathLike = "minilm", out: str | os.PathLike | None = None, *,
             overwrite: bool = False, verbose: bool = True, **options: Any) -> TaskRun:
    """Build the encoder, add the task's head, fine-tune on the preset's slice, test once, save to ``out``.

    ``options`` go to the task module (e.g. ``pooling="cls"`` for relations). The time reported is that of
    preparing the features, fine-tuning and testing. Taught in notebook 08; ``finetune --task`` runs it.
    """
    mod = task_module(task)
    cfg = P.tasks
    if out is not None and Path(out).exists() and any(Path(out).iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite (overwrite=True) to replace it, "
                              f"or choose another --out.")
    set_seed(cfg.seed)
    splits = mod.task_data(P, task)
    model, tokenizer, info = build_task_model(P, task, init, **options)
    t0 = time.perf_counter()
    feats = {k: mod.featurize(tokenizer, v, info) for k, v in splits.items()}
    epochs = mod.epochs(P) if hasattr(mod, "epochs") else cfg.epochs  # a task may need more passes
    if verbose:
        print(f"{task} ({info['init']} encoder): " + ", ".join(f"{len(v):,} {k}" for k, v in splits.items())
              + f" examples; {epochs} epoch(s) of batch {cfg.batch_size}", flush=True)
    lr = cfg.minilm_learning_rate if info["kind"] == "transformers" else cfg.learning_rate
    result = train_task(model, feats["train"], lambda m: mod.evaluate(m, tokenizer, splits["validation"],
                                                                     feats["validation"], info),
                        learning_rate=lr, epochs=epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                        pad_id=tokenizer.pad_token_id or 0, verbose=verbose)
    test = mod.evaluate(model, tokenizer, splits["test"], feats["test"], info)
    seconds = time.perf_counter() - t0
    record = {"task": task, "model": info["init"], "preset": P.name, "train_examples": len(splits["train"]),
              "test_examples": len(splits["test"]), "epochs": epochs, "learning_rate": lr,
              **{k: v for k, v in test.items() if isinstance(v, (int, float))},
              "best_epoch": result.best["epoch"], "seconds": round(seconds, 1), "machine": machine()}
    info["metrics"] = {**record, "history": result.history}
    info["tasks_config"] = dataclasses.asdict(cfg)
    path = save_task_model(out, model, tokenizer, info, overwrite=overwrite) if out is not None else None
    if path is not None:
        record["path"] = str(path)
    return TaskRun(record=record, model=model, tokenizer=tokenizer, info=info, result=result, test=test, path=path)


def task_folder(P: Preset, task: str, init: str | os.PathLike = "minilm", **options: Any) -> Path:
    """Where the preset's fine-tuned model of a task lives: ``artifacts/<preset>/task-<task>-<init>[-<pooling>]``
    (the ``finetune`` command's default ``--out``)."""
    return artifacts_dir(P.name, "-".join(["task", task, init_name(init), *map(str, options.values())]))


def get_task_model(P: Preset, task: str, init: str | os.PathLike = "minilm", verbose: bool = True,
                   **options: Any) -> tuple[TaskModel, Any, dict]:
    """The preset's fine-tuned model of ``task``, loaded from `task_folder` when it was made with the preset's
    current settings (by notebook 08 or ``python -m bertbook finetune --task``), else fine-tuned now and
    saved there. Returns ``(model, tokenizer, info)``; ``info["metrics"]`` is its results row."""
    folder = task_folder(P, task, init, **options)
    info_file = folder / INFO_NAME
    if info_file.is_file():
        from .checkpoint import read_json_file

        saved = read_json_file(info_file)
        if saved.get("tasks_config") == dataclasses.asdict(P.tasks) and saved.get("task") == task:
            return load_task_model(folder)
        print(f"{folder} was fine-tuned with other settings than preset {P.name!r} has now: fine-tuning again.")
    elif verbose:
        print(f"No fine-tuned {task} model in {folder} yet: fine-tuning one now.")
    run = run_task(P, task, init, out=folder, overwrite=True, verbose=verbose, **options)
    return run.model, run.tokenizer, run.info
