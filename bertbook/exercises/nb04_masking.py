"""Notebook 04's exercises: the MLM loss by hand, and undoing the msc objective's shuffle."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..masking import IGNORE_INDEX, msc_shuffle, permutations
from .harness import call, direction, register_references, run_checks

__all__ = ['check_mlm_loss', 'check_unshuffle', 'solutions']


# Reference solutions (try first!)

def _mlm_loss_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    chosen = labels != IGNORE_INDEX  # (B, T)
    log_probs = logits[chosen].log_softmax(-1)  # (N, V)
    return -log_probs.gather(-1, labels[chosen].unsqueeze(-1)).mean()  # mean of -log p(original token)


def _unshuffle(segments: list[list[int]], label: int) -> list[list[int]]:
    order = permutations(len(segments))[label]  # segment order[i] of the original was put at position i
    original: list = [None] * len(segments)
    for position, source in enumerate(order):
        original[source] = segments[position]
    return original


def _mask_count(tokens: int = 126, mask_prob: float = 0.15, mask_share: float = 0.8) -> tuple[float, float]:
    """Exercise 3: the average number of [MASK] tokens in a row of ``tokens`` ordinary tokens, and the
    average number of positions the model predicts."""
    predicted = tokens * mask_prob  # every chosen token is predicted, whatever it was replaced with
    masks = predicted * mask_share  # 80% of the chosen ones become [MASK]
    return round(masks, 6), round(predicted, 6)


solutions = register_references(SimpleNamespace(mlm_loss=_mlm_loss_by_hand, unshuffle=_unshuffle,
                                                mask_count=_mask_count))


def check_mlm_loss(fn: Callable, raise_on_error: bool = True, trials: int = 10) -> bool:
    """Check ``fn(logits (B, T, V), labels (B, T)) -> loss``: the mean of -log p(original token) over the
    positions whose label is not -100 (notebook 04, exercise 1)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        for _ in range(trials):
            B, T, V = (int(x) for x in torch.randint(2, 9, (3,), generator=g))
            logits = torch.randn(B, T, V, generator=g)
            labels = torch.randint(0, V, (B, T), generator=g)
            labels[torch.rand(B, T, generator=g) > 0.3] = IGNORE_INDEX
            labels[0, 0] = 1  # at least one position to predict
            got = call(fn, logits.clone(), labels.clone())
            want = _mlm_loss_by_hand(logits, labels)
            if got is None:
                raise AssertionError("your function returned None: return the loss, a scalar tensor.")
            try:
                got = torch.as_tensor(got).float()
            except (TypeError, ValueError, RuntimeError):
                raise AssertionError(f"return the loss as a scalar tensor, got {type(got).__name__}.") from None
            if got.numel() != 1:
                raise AssertionError(f"return one number (the mean), got shape {tuple(got.shape)}.")
            if torch.allclose(got, want, atol=1e-5):
                continue
            every = F.cross_entropy(logits.flatten(0, 1), labels.clamp_min(0).flatten())
            if torch.allclose(got, every, atol=1e-5):
                raise AssertionError("you scored every position: only those with a label other than -100 count.")
            if torch.allclose(got, -want, atol=1e-5):
                raise AssertionError("the sign is wrong: the loss is minus the log-probability.")
            n = int((labels != IGNORE_INDEX).sum())
            if torch.allclose(got, want * n, atol=1e-4):
                raise AssertionError("take the mean over the predicted positions, not the sum.")
            if torch.allclose(got, want * n / labels.numel(), atol=1e-5):
                raise AssertionError("you divided by every position; divide by the number of predicted ones.")
            raise AssertionError(f"you returned {float(got):.4f}, {direction(float(got), float(want))}: the loss is "
                                 "the mean of -log softmax(logits)[label] over the predicted positions (did you take "
                                 "log_softmax over the vocabulary axis, the last one?).")
        return trials

    return run_checks("MLM loss", tests, raise_on_error, fn=fn)


def check_unshuffle(fn: Callable, raise_on_error: bool = True, trials: int = 20) -> bool:
    """Check ``fn(shuffled_segments, label) -> original_segments`` for the msc objective (notebook 04,
    exercise 2)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        for _ in range(trials):
            k = int(torch.randint(2, 5, (1,), generator=g))
            original = [[10 * i + j for j in range(int(torch.randint(1, 4, (1,), generator=g)))] for i in range(k)]
            label = int(torch.randint(0, math.factorial(k), (1,), generator=g))
            shuffled, _ = msc_shuffle(original, permutations(k)[label])
            got = call(fn, [list(s) for s in shuffled], label)
            if got is None:
                raise AssertionError("your function returned None: return the list of segments in their "
                                     "original order.")
            try:
                got = [list(s) for s in got]
            except TypeError:
                raise AssertionError("return a list of segments (each a list of token ids).") from None
            if got == original:
                continue
            order = permutations(k)[label]
            if got == [shuffled[i] for i in order]:
                raise AssertionError("you applied the permutation again instead of undoing it: the segment at "
                                     "position i came from position order[i] of the original.")
            if sorted(got) != sorted(list(s) for s in shuffled):
                raise AssertionError(f"for label {label} you returned {got}, which is not a reordering of the "
                                     f"segments {shuffled}: keep every segment, unchanged, and only move them.")
            raise AssertionError(f"for the segments {shuffled} and label {label} (order {order}) you returned "
                                 f"{got}, not the original order: the segment at position i came from position "
                                 "order[i] of the original, so it goes back there.")
        return trials

    return run_checks("unshuffle", tests, raise_on_error, fn=fn)
