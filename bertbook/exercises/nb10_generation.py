"""Notebook 10's exercises: the causal mask, a decoder's teacher-forcing inputs, and ranking metrics."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import SimpleNamespace

import torch

from ..attention import causal_mask
from .harness import call, register_references, run_checks

__all__ = ["check_causal_mask", "check_teacher_forcing", "check_ranking_metrics", "teacher_forcing",
           "ranking_metrics", "solutions"]


def teacher_forcing(target: list[int], bos: int, eos: int) -> tuple[list[int], list[int]]:
    """A decoder's training pair for one target sentence: what it reads, ``[BOS] + target``, and what it must
    predict at each of those positions, ``target + [EOS]`` (the same sentence shifted by one)."""
    return [bos, *target], [*target, eos]


def ranking_metrics(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Recall@1 and mean reciprocal rank of the true candidates: ``scores`` (N, C), one row of candidate scores
    per example; ``labels`` (N,), the index of the true candidate. The rank of the true one is 1 + the number
    of candidates scored higher (a tie counts in the true one's favour)."""
    true = scores.gather(1, labels[:, None])  # (N, 1)
    rank = 1 + (scores > true).sum(dim=1)  # (N,): 1 = ranked first
    return float((rank == 1).float().mean()), float((1.0 / rank).mean())


# Reference solutions (try first!)
solutions = register_references(SimpleNamespace(causal_mask=causal_mask, teacher_forcing=teacher_forcing,
                                                ranking_metrics=ranking_metrics))


def check_causal_mask(fn: Callable[[int], torch.Tensor], raise_on_error: bool = True) -> bool:
    """Check ``fn(T) -> mask``: a (T, T) boolean tensor, True where query i may look at key j, that is for
    j <= i (notebook 10, exercise 1)."""

    def tests() -> int:
        sizes = [1, 2, 5, 9]
        for T in sizes:
            got = call(fn, T)
            if not isinstance(got, torch.Tensor):
                raise AssertionError(f"return a torch tensor, got {type(got).__name__}.")
            if got.dtype != torch.bool:
                raise AssertionError(f"return a boolean tensor (True = may attend), got dtype {got.dtype}: compare "
                                     f"with a condition, or call .bool().")
            if tuple(got.shape) != (T, T):
                raise AssertionError(f"for T={T} your mask has shape {tuple(got.shape)}: one row per query and one "
                                     f"column per key.")
            want = causal_mask(T)
            if torch.equal(got, want):
                continue
            if torch.equal(got, want.T):
                raise AssertionError(f"for T={T} query 0 may look at later keys in your mask: rows are queries, "
                                     f"columns are keys, and a query sees only keys at or before it.")
            if torch.equal(got, want & ~torch.eye(T, dtype=torch.bool)):
                raise AssertionError(f"for T={T} your mask hides each token from itself; a token may look at "
                                     f"itself (the diagonal stays True).")
            if bool(got.all()):
                raise AssertionError(f"for T={T} every query may look at every key: that is BERT's mask, not a "
                                     f"decoder's.")
            raise AssertionError(f"for T={T} your mask is\n{got.int()}\nQuery i may look at key j exactly when "
                                 f"j <= i.")
        return len(sizes)

    return run_checks("causal mask", tests, raise_on_error, passed="passed {n} sizes.", fn=fn)


def check_teacher_forcing(fn: Callable[[list[int], int, int], tuple], raise_on_error: bool = True,
                          trials: int = 30) -> bool:
    """Check ``fn(target, bos, eos) -> (decoder_input_ids, labels)`` (notebook 10, exercise 2)."""

    def tests() -> int:
        rng = random.Random()
        for _ in range(trials):
            target = [rng.randint(4, 99) for _ in range(rng.randint(1, 7))]
            bos, eos = 2, 3
            got = call(fn, list(target), bos, eos)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise AssertionError("return two lists: (decoder_input_ids, labels).")
            inputs, labels = (list(map(int, x)) for x in got)
            want_inputs, want_labels = teacher_forcing(target, bos, eos)
            if (inputs, labels) == (want_inputs, want_labels):
                continue
            case = f"for target {target}, bos={bos}, eos={eos} you returned inputs {inputs} and labels {labels}"
            if len(inputs) != len(labels):
                raise AssertionError(f"{case}: there is one label per input position, so the two have the same "
                                     f"length.")
            if inputs == labels:
                raise AssertionError(f"{case}: the labels are the inputs shifted by one position, so that each "
                                     f"position predicts the next token, not the one it reads.")
            if inputs[:1] != [bos]:
                raise AssertionError(f"{case}: the decoder starts from [BOS], before it has written anything.")
            if labels[-1:] != [eos]:
                raise AssertionError(f"{case}: the last position must learn to stop, so the labels end with [EOS].")
            raise AssertionError(f"{case}: the inputs are [BOS] then the target; the labels are the target then "
                                 f"[EOS].")
        return trials

    return run_checks("teacher forcing", tests, raise_on_error, fn=fn)


def check_ranking_metrics(fn: Callable[[torch.Tensor, torch.Tensor], tuple], raise_on_error: bool = True,
                          trials: int = 30) -> bool:
    """Check ``fn(scores, labels) -> (recall_at_1, mrr)`` on random scores (N, 10) (notebook 10, exercise 3)."""

    def tests() -> int:
        for _ in range(trials):
            N = random.randint(1, 12)
            scores = torch.randn(N, 10)
            labels = torch.randint(0, 10, (N,))
            got = call(fn, scores.clone(), labels.clone())
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise AssertionError("return two numbers: (recall_at_1, mrr).")
            try:
                recall, mrr = (float(x) for x in got)
            except (TypeError, ValueError):
                raise AssertionError("return two numbers: (recall_at_1, mrr).") from None
            want_recall, want_mrr = ranking_metrics(scores, labels)
            if abs(recall - want_recall) < 1e-6 and abs(mrr - want_mrr) < 1e-6:
                continue
            case = f"for {N} example(s) you returned recall@1 {recall:.3f} and MRR {mrr:.3f}"
            if not (0 <= recall <= 1 and 0 < mrr <= 1):
                raise AssertionError(f"{case}: both are between 0 and 1 (MRR above 0); is the best rank 1, not 0?")
            flipped = ranking_metrics(-scores, labels)
            if abs(recall - flipped[0]) < 1e-6 and abs(mrr - flipped[1]) < 1e-6:
                raise AssertionError(f"{case}: a higher score means a better candidate; you ranked the lowest "
                                     f"score first.")
            if abs(recall - want_recall) < 1e-6:
                raise AssertionError(f"{case}: recall@1 is right; for MRR average 1 / rank of the true candidate, "
                                     f"with rank 1 for the best-scored one.")
            raise AssertionError(f"{case}: recall@1 is the share of examples whose true candidate has the highest "
                                 f"score of its row.")
        return trials

    return run_checks("recall@1 and MRR", tests, raise_on_error, fn=fn)
