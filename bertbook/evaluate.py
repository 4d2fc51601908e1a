"""What a masked language model has learned: held-out scores with fixed masks, the baseline to beat, guesses.

Taught in notebook 05. A pretraining run is scored on held-out text whose masks are drawn once
(``corpus.eval_batches``), so that two evaluations, or two runs, see the same masked tokens and their
numbers compare. The score is the masked-LM loss, its exponential (perplexity) and the share of masked
tokens guessed right. A model that ignores the context (the unigram baseline) sets the number to beat: a
run first falls to about its loss and can sit near it for a long while before it learns to use the
context. Fill-mask shows the same model's guesses in words.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .utils import autocast, device_of, eval_mode

__all__ = ["evaluate_mlm", "unigram_baseline", "fill_mask"]


@torch.no_grad()
def evaluate_mlm(model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> dict[str, float]:
    """Masked-LM loss, accuracy and perplexity (exp of the loss) over fixed batches (notebook 05).

    Every masked token counts equally (a token-weighted mean over all batches).
    """
    device = torch.device(device)
    total_loss, correct, count = 0.0, 0, 0
    with eval_mode(model):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "token_type_ids", "labels")}
            with autocast(device, dtype):
                out = model(**batch, masked_only=True)
            target = batch["labels"][batch["labels"] != -100]  # (N,)
            logits = out.logits.float()  # (N, V)
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(-1) == target).sum())
            count += int(target.numel())
    loss = total_loss / max(count, 1)
    return {"loss": loss, "accuracy": correct / max(count, 1), "perplexity": math.exp(min(loss, 50.0)),
            "tokens": count}


def unigram_baseline(train_ids, batches: list[dict[str, torch.Tensor]], vocab_size: int) -> dict[str, float]:
    """The held-out numbers of a model that ignores the context (notebook 05): at every masked position it
    predicts how often each token occurs in the training ids (add-one smoothed), so its top guess is always
    the most frequent token. A pretraining run first falls to about this loss and can sit near it for a
    long while (the plateau) before it learns to use the context. Same batches, same keys as `evaluate_mlm`."""
    counts = torch.from_numpy(np.bincount(np.asarray(train_ids), minlength=vocab_size))
    log_p = torch.log((counts[:vocab_size].double() + 1.0) / (counts[:vocab_size].sum() + vocab_size))
    target = torch.cat([b["labels"][b["labels"] != -100] for b in batches])
    loss = float(-log_p[target].mean())
    return {"loss": loss, "accuracy": float((target == log_p.argmax()).double().mean()),
            "perplexity": math.exp(min(loss, 50.0)), "tokens": int(target.numel())}


@torch.no_grad()
def fill_mask(model: nn.Module, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For every [MASK] in ``text``, the ``top_k`` most likely tokens and their probabilities (notebook 05)."""
    if tokenizer.mask_token not in text:
        raise ValueError(f"The text has no {tokenizer.mask_token}: write one where a word should be guessed, "
                         f"e.g. 'It is a truth universally {tokenizer.mask_token}.'")
    device = device_of(model)
    enc = tokenizer(text, return_tensors="pt")
    with eval_mode(model):
        out = model(input_ids=enc["input_ids"].to(device), token_type_ids=enc["token_type_ids"].to(device))
    where = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    probs = out.logits[0, where].float().softmax(-1)  # (M, V)
    top = probs.topk(top_k, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(i), float(p)) for i, p in zip(ids.tolist(), ps.tolist())]
            for ids, ps in zip(top.indices, top.values)]
