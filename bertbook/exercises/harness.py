"""The checker harness every exercise uses.

A checker calls the learner's function on fresh random inputs, compares it with a reference and says what
is wrong in words (not just "assert failed"). It prints a tick and returns True when all tests pass;
otherwise it raises an AssertionError with the diagnosis, or, with ``raise_on_error=False``, prints it and
returns False.

A diagnosis says what is wrong and how to look for the mistake; it never prints the expected answer (no
target number, shape or list), only the learner's own value and the inputs of the failing case. A checker
given a reference solution (a function in ``exercises.solutions``) prints a short confirmation, not the
answer it computed, so a notebook cell that checks the reference solutions shows nothing to copy.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from types import SimpleNamespace

import torch

__all__ = ["call", "close", "direction", "is_reference", "register_references", "run_checks", "shape_hint",
           "whole_number"]

_REFERENCES: list[Callable] = []  # the reference solutions of every notebook, compared by identity


def register_references(solutions: SimpleNamespace) -> SimpleNamespace:
    """Mark every function of a module's ``solutions`` as a reference solution; returns ``solutions``."""
    for fn in vars(solutions).values():
        if not is_reference(fn):
            _REFERENCES.append(fn)
    return solutions


def is_reference(fn) -> bool:
    """True when ``fn`` is one of the reference solutions (the very function, not a copy of it)."""
    return any(fn is ref for ref in _REFERENCES)


def run_checks(name: str, tests: Callable[[], int], raise_on_error: bool, passed: str = "passed {n} random tests.",
               fn: Callable | None = None) -> bool:
    """Run ``tests`` (which returns the number of tests passed or raises AssertionError) and report.

    When ``fn`` is a reference solution and ``passed`` is a message of its own (it may name the answer, which a
    learner should reach before seeing it), the tick says only that the reference solution passes; the usual
    "passed {n} ..." count gives nothing away and is printed as for any solution."""
    try:
        n = tests()
    except AssertionError as exc:
        if raise_on_error:
            raise
        print(f"✗ {name}: {exc}")
        return False
    own_message = not passed.startswith("passed {n}")
    print(f"✓ {name}: " + ("the reference solution passes." if own_message and fn is not None and is_reference(fn)
                           else passed.format(n=n)))
    return True


def call(fn: Callable, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the learner's code failed: say so as a check failure, with the cause
        raise AssertionError(f"your function raised {type(exc).__name__}: {exc}") from exc


def whole_number(got) -> int:
    """``got`` as an int (Python, NumPy or a one-element integer tensor), or an AssertionError that says so."""
    if not isinstance(got, bool):
        try:
            return operator.index(got)
        except TypeError:
            pass
    raise AssertionError(f"return a whole number (int), got {type(got).__name__} {got!r}.")


def one_number(got, what: str) -> float:
    """``got`` as a float, or an AssertionError that says what to return (``what``, e.g. "a float between 0
    and 1") when it is None or not a number."""
    if got is None:
        raise AssertionError(f"your function returned None: return {what}.")
    try:
        return float(got)
    except (TypeError, ValueError):
        raise AssertionError(f"return one number, got {type(got).__name__}.") from None


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)


def direction(got: float, want: float, factor: bool = True) -> str:
    """"too large" or "too small", with a rough factor when the two are far apart (and ``factor``): a hint
    that does not give the expected value away (the factor is rounded to a whole number and only named from
    2 to 20; beyond, it is "far too large", as a precise large factor would give the answer away)."""
    if not factor or want == 0 or got == 0 or (got > 0) != (want > 0):
        return "too large" if got > want else "too small"
    ratio = got / want
    word = "too large" if ratio > 1 else "too small"
    times = ratio if ratio > 1 else 1 / ratio
    if times > 20:
        return f"far {word} (by more than a factor of 20)"
    return f"{word} by a factor of about {times:.0f}" if times >= 2 else word


def shape_hint(got: tuple, axes: tuple[str, ...], sizes: dict[str, int]) -> str:
    """Describe which axes of a returned shape are wrong, by name (``axes`` is the expected shape in letters,
    e.g. ("B", "H", "T", "T"), ``sizes`` the letters' values): "axis 3 has the size of d_k where T belongs".
    It names the letters, never the expected tuple."""
    got = tuple(got)
    if len(got) != len(axes):
        return (f"it has {len(got)} axes; the result has {len(axes)}: ({', '.join(axes)}).")
    notes = []
    for i, (n, letter) in enumerate(zip(got, axes)):
        if n == sizes[letter]:
            continue
        named = [k for k, v in sizes.items() if v == n]
        notes.append(f"axis {i} has the size of {' or '.join(named)} where {letter} belongs" if named else
                     f"axis {i} should have the size of {letter}")
    if sorted(got) == sorted(sizes[a] for a in axes) and notes:
        notes.append("the right sizes in the wrong order: a transpose is missing or one too many")
    return "; ".join(notes) + f" (the result is ({', '.join(axes)}))."
