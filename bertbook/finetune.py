"""Fine-tuning an encoder for sentence classification: batches, metrics and the loop.

Taught in notebook 06. The recipe of Devlin et al. (2019), section 4: put a linear layer on the pooled
[CLS] vector, train *all* weights with a small learning rate (warmup, then linear decay) for a few epochs,
keep the checkpoint that does best on a validation set, and report the test set once.

Read top to bottom:

1. text -> batches: truncation (head, or head + tail after Sun et al. 2019), dynamic padding;
2. metrics: accuracy, precision, recall, F1 from the confusion matrix; the surest mistakes;
3. the loop: `fine_tune` (an explicit ``for`` loop) and `evaluate_classifier`.

Building, saving and loading classifiers is in `bertbook.classifier`; whole runs and the results table
in `bertbook.results`. The loop is written against a generic interface, ``model(**batch)`` returning
``.loss`` and ``.logits``, so the same code fine-tunes bertbook's `BertForSequenceClassification` and
MiniLM's transformers model. One label per text: the source article's data loader padded token-level
labels for a sentence task, which a sentence classifier does not have.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .config import FinetuneConfig
from .optim import check_finite, clip_gradients, make_optimizer, make_scheduler
from .utils import autocast, autocast_dtype, device_of, eval_mode

__all__ = [
    "Encoded", "clean_text", "truncate", "encode", "batch_order", "collate", "confusion_matrix",
    "classification_metrics", "most_confident_mistakes", "predict_proba", "evaluate_classifier",
    "BestCheckpoint", "FineTuneResult", "fine_tune",
]


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


def most_confident_mistakes(texts: Sequence[str], labels: Sequence[int], probs: np.ndarray, k: int = 5,
                            label_names: Sequence[str] = ("negative", "positive")) -> list[dict]:
    """The k wrong predictions the model was surest of: the place to start error analysis."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:k]
    return [{"text": clean_text(texts[i]), "true": label_names[labels[i]], "predicted": label_names[preds[i]],
             "probability": float(probs[i, preds[i]])} for i in wrong]


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
            check_finite(loss, clip_gradients(model, cfg.max_grad_norm), optimizer)  # 0: no clipping
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
