"""Notebook 06's exercises: F1 from a confusion matrix, and tail-only truncation."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from .harness import call, one_number, register_references, run_checks

__all__ = ['check_f1_from_confusion', 'check_tail_only', 'solutions']


# Reference solutions (try first!)

def _f1_from_confusion(cm) -> float:
    tp, fp, fn = cm[1][1], cm[0][1], cm[1][0]  # cm[true][predicted]; class 1 is the positive one
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))  # = 2PR / (P + R)


def _tail_only(ids, budget: int) -> list:
    return list(ids[len(ids) - budget:]) if len(ids) > budget else list(ids)


solutions = register_references(SimpleNamespace(f1_from_confusion=_f1_from_confusion, tail_only=_tail_only))


def check_f1_from_confusion(fn: Callable, raise_on_error: bool = True, trials: int = 50) -> bool:
    """Check ``fn(cm) -> float``: the F1 of the positive class (index 1) from a 2 x 2 confusion matrix
    ``cm[true, predicted]`` (a NumPy array), 0.0 when it is undefined (notebook 06, exercise 1)."""
    import numpy as np

    def reference_parts(cm) -> tuple[float, float]:
        tp, fp, fn_ = int(cm[1, 1]), int(cm[0, 1]), int(cm[1, 0])
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn_) if tp + fn_ else 0.0
        return precision, recall

    def tests() -> int:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        edge = [np.array([[5, 0], [0, 0]]), np.array([[3, 2], [4, 0]]), np.array([[0, 0], [0, 7]])]
        cases = [rng.integers(1, 30, (2, 2)) for _ in range(trials)] + edge  # the usual case first
        for cm in cases:
            want = _f1_from_confusion(cm)
            got = call(fn, cm.copy())
            got = one_number(got, "the F1, a number between 0 and 1")
            if math.isclose(got, want, abs_tol=1e-9):
                continue
            precision, recall = reference_parts(cm)
            hint = ""
            if math.isnan(got):
                hint = " With no true positives, precision and recall are 0 / 0 or 0: return 0.0, not NaN."
            elif math.isclose(got, _f1_from_confusion(cm[::-1, ::-1]), abs_tol=1e-9):
                hint = " That is the F1 of class 0; the positive class is index 1."
            elif math.isclose(got, _f1_from_confusion(cm.T), abs_tol=1e-9) and cm[0, 1] != cm[1, 0]:
                hint = (" Rows and columns are swapped: cm[true, predicted], so a false positive (true 0, "
                        "predicted 1) is cm[0, 1].")
            elif math.isclose(got, (precision + recall) / 2, abs_tol=1e-9):
                hint = " That is the arithmetic mean of precision and recall; F1 is their harmonic mean."
            elif math.isclose(got, (cm[0, 0] + cm[1, 1]) / cm.sum(), abs_tol=1e-9):
                hint = " That is the accuracy."
            elif math.isclose(got, precision, abs_tol=1e-9):
                hint = " That is the precision alone; F1 combines precision and recall (their harmonic mean)."
            elif math.isclose(got, recall, abs_tol=1e-9):
                hint = " That is the recall alone; F1 combines precision and recall (their harmonic mean)."
            else:
                hint = (" F1 is the harmonic mean of precision tp / (tp + fp) and recall tp / (tp + fn), "
                        "with tp = cm[1, 1].")
            raise AssertionError(f"for cm = {cm.tolist()} (rows: true class, columns: predicted) you returned "
                                 f"{got:.4f}, {'too high' if got > want else 'too low'}.{hint}")
        return len(cases)

    return run_checks("F1 from a confusion matrix", tests, raise_on_error, passed="passed {n} tests.", fn=fn)


def check_tail_only(fn: Callable, raise_on_error: bool = True, trials: int = 50) -> bool:
    """Check ``fn(ids, budget) -> list``: the last ``budget`` tokens of ``ids``, or all of them when there
    are no more than ``budget`` (notebook 06, exercise 2)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        cases = [(list(range(100)), 10), (list(range(5)), 10), (list(range(7)), 7), (list(range(8)), 1)]
        for _ in range(trials):
            n, budget = (int(x) for x in torch.randint(1, 40, (2,), generator=g))
            cases.append((torch.randint(5, 2000, (n,), generator=g).tolist(), budget))
        for ids, budget in cases:
            want = _tail_only(ids, budget)
            got = call(fn, list(ids), budget)
            if got is None:
                raise AssertionError("your function returned None: return the list of kept token ids.")
            try:
                got = list(got)
            except TypeError:
                raise AssertionError(f"return a list of token ids, got {type(got).__name__}.") from None
            if got == want:
                continue
            if got == ids[:budget]:
                hint = " You kept the head; keep the last tokens."
            elif len(ids) <= budget:
                hint = " A sequence that already fits must come back unchanged."
            elif len(got) != budget:
                hint = f" Keep exactly `budget` tokens when the sequence is longer (you kept {len(got)})."
            elif got[-1] != ids[-1]:
                hint = " You kept `budget` tokens, but not the last ones: the kept tokens must end where ids ends."
            else:
                hint = " Keep the tokens in their order, unchanged."
            shown = f"{got[:3]}...{got[-3:]}" if len(got) > 6 else f"{got}"
            raise AssertionError(f"for {len(ids)} tokens and a budget of {budget} you returned {shown} "
                                 f"({len(got)} tokens).{hint}")
        return len(cases)

    return run_checks("tail-only truncation", tests, raise_on_error, passed="passed {n} tests.", fn=fn)
