"""Why BERT does not write: asking a masked language model to generate, and what it costs (notebook 10).

A masked LM is trained to fill blanks with the whole text in view, left and right. It never learned to
continue a text, and its attention has no order: every token sees every other (`attention.causal_mask` is the
one line that would change that). Two ways to make it write anyway, read top to bottom:

1. **left to right** (`write_left_to_right`): put n [MASK]s after the prompt and fill the first one, then
   the next, with a forward pass over the whole sequence each time. Because every position sees every
   other, filling one blank changes every vector, so nothing computed for the previous step can be kept:
   n passes over all ``prompt + n`` positions. A decoder with causal attention keeps its keys and values
   (the "KV cache") and computes one new position per step.
2. **all at once, then refine** (`mask_predict`, Ghazvininejad et al. 2019, "Mask-Predict: Parallel
   Decoding of Conditional Masked Language Models"): predict every blank in one pass, then re-mask the
   least confident ones and predict them again, a fixed number of times. Few passes; but the blanks are
   guessed independently of each other in the first pass, so the words often repeat or disagree.

`writing_cost` counts the forward passes and the token positions computed by each road. The models built to
write took the other roads: encoder-decoders (BERT2BERT warm-starting, Rothe et al. 2020; BART, Lewis et al.
2020; T5, Raffel et al. 2020) and decoder-only models (GPT, Radford et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .utils import device_of, eval_mode

__all__ = ["Writing", "write_left_to_right", "mask_predict", "writing_cost"]


@dataclass
class Writing:
    """What a masked LM wrote: the final text, the text after every pass ([MASK] where still blank), and the
    number of forward passes and token positions it took."""

    text: str
    steps: list[str] = field(default_factory=list)
    passes: int = 0
    positions: int = 0  # token positions computed, summed over the passes


def _start(tokenizer, prompt: str, new_tokens: int) -> tuple[torch.Tensor, list[int]]:
    """``[CLS] prompt [MASK] x new_tokens [SEP]`` as ids (1, T), and the positions of the blanks."""
    if not prompt.strip():
        raise ValueError("Write a prompt for the model to continue, e.g. 'The old man walked into the'.")
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be at least 1, got {new_tokens}.")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.cls_token_id, *prompt_ids, *[tokenizer.mask_token_id] * new_tokens, tokenizer.sep_token_id]
    blanks = list(range(1 + len(prompt_ids), 1 + len(prompt_ids) + new_tokens))
    return torch.tensor([ids]), blanks


def _show(tokenizer, ids: torch.Tensor) -> str:
    """The text between [CLS] and [SEP], blanks shown as [MASK]."""
    return tokenizer.decode(ids[0, 1:-1].tolist())


def _probabilities(model: nn.Module, ids: torch.Tensor, special: list[int]) -> torch.Tensor:
    """One forward pass: (T, V) probabilities, special tokens ([MASK], [CLS], ...) never chosen."""
    logits = model(input_ids=ids.to(device_of(model))).logits[0].float()  # (T, V)
    logits[:, special] = float("-inf")
    return logits.softmax(-1).cpu()  # (T, V)


@torch.no_grad()
def write_left_to_right(model: nn.Module, tokenizer, prompt: str, new_tokens: int = 8) -> Writing:
    """Fill ``new_tokens`` blanks after ``prompt`` one at a time, left to right, each with the most likely
    token given everything else (the later blanks still [MASK]). One full forward pass per token.

    ``model`` is a masked LM whose output has ``.logits`` (B, T, V): bertbook's `BertForPreTraining` or
    `BertForMaskedLM`, or transformers' ``BertForMaskedLM``.
    """
    ids, blanks = _start(tokenizer, prompt, new_tokens)
    out = Writing(text="", steps=[_show(tokenizer, ids)])
    with eval_mode(model):
        for position in blanks:
            probs = _probabilities(model, ids, tokenizer.all_special_ids)  # (T, V)
            ids[0, position] = probs[position].argmax()
            out.passes += 1
            out.positions += ids.shape[1]
            out.steps.append(_show(tokenizer, ids))
    out.text = out.steps[-1]
    return out


@torch.no_grad()
def mask_predict(model: nn.Module, tokenizer, prompt: str, new_tokens: int = 8, iterations: int = 4) -> Writing:
    """Mask-Predict (Ghazvininejad et al. 2019): guess every blank in one pass; then, for t = 1 .. T-1, re-mask
    the n (T - t) / T blanks whose current token has the lowest probability and guess them again. ``iterations``
    (T) forward passes in all, whatever ``new_tokens`` is."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}.")
    ids, blanks = _start(tokenizer, prompt, new_tokens)
    where = torch.tensor(blanks)
    confidence = torch.zeros(len(blanks))  # (n,): probability of each blank's current token
    out = Writing(text="", steps=[_show(tokenizer, ids)])
    with eval_mode(model):
        for t in range(iterations):
            redo = torch.arange(len(blanks)) if t == 0 else \
                confidence.argsort()[: len(blanks) * (iterations - t) // iterations]  # least confident first
            ids[0, where[redo]] = tokenizer.mask_token_id
            probs = _probabilities(model, ids, tokenizer.all_special_ids)[where]  # (n, V)
            best = probs.max(-1)  # values, indices: (n,), (n,)
            ids[0, where[redo]] = best.indices[redo]
            confidence[redo] = best.values[redo]
            out.passes += 1
            out.positions += ids.shape[1]
            out.steps.append(_show(tokenizer, ids))
    out.text = out.steps[-1]
    return out


def writing_cost(prompt_tokens: int, new_tokens: int, iterations: int = 4) -> list[dict]:
    """Forward passes and token positions computed to write ``new_tokens`` after a prompt of
    ``prompt_tokens`` (plus [CLS] and [SEP] for the masked LM), by each road:

    - a masked LM left to right: one pass over all positions per new token;
    - Mask-Predict: ``iterations`` passes over all positions;
    - a decoder with a KV cache: the prompt once, then one new position per token (each of those passes
      still attends to every earlier position, but computes only the new one).
    """
    total = prompt_tokens + new_tokens + 2
    return [
        {"road": "masked LM, left to right", "passes": new_tokens, "positions": new_tokens * total},
        {"road": f"masked LM, Mask-Predict ({iterations} passes)", "passes": iterations,
         "positions": iterations * total},
        {"road": "decoder with a KV cache", "passes": new_tokens, "positions": prompt_tokens + new_tokens - 1},
    ]
