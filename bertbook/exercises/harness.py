"""The checker harness every exercise uses.

A checker calls the learner's function on fresh random inputs, compares it with a reference and says what
is wrong in words (not just "assert failed"). It prints a tick and returns True when all tests pass;
otherwise it raises an AssertionError with the diagnosis, or, with ``raise_on_error=False``, prints it and
returns False.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["run_checks", "call", "close"]


def run_checks(name: str, tests: Callable[[], int], raise_on_error: bool, passed: str = "passed {n} random tests.") -> bool:
    try:
        n = tests()
    except AssertionError as exc:
        if raise_on_error:
            raise
        print(f"✗ {name}: {exc}")
        return False
    print(f"✓ {name}: {passed.format(n=n)}")
    return True


def call(fn: Callable, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the learner's code failed: say so as a check failure, with the cause
        raise AssertionError(f"your function raised {type(exc).__name__}: {exc}") from exc


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)
