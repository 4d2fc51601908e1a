"""Notebook 09's exercises: merge a LoRA update into its weight, and count LoRA's parameters."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch

from .harness import call, close, direction, register_references, run_checks, whole_number

__all__ = ["check_merge_lora", "check_lora_count", "solutions"]


# Reference solutions (try first!)

def _merge_lora(W, A, B, alpha: float, r: int):
    return W + (alpha / r) * (B @ A)  # (d_out, r) @ (r, d_in) = (d_out, d_in)


def _lora_count(d_in: int, d_out: int, r: int, layers: int, targets: int) -> int:
    return layers * targets * r * (d_in + d_out)  # A is (r, d_in), B is (d_out, r)


solutions = register_references(SimpleNamespace(merge_lora=_merge_lora, lora_count=_lora_count))


def check_merge_lora(fn: Callable, raise_on_error: bool = True, trials: int = 20) -> bool:
    """Check ``fn(W, A, B, alpha, r) -> W'``: the weight with LoRA's update folded in, W + (alpha / r) B A,
    with W (d_out, d_in), A (r, d_in), B (d_out, r) (notebook 09, exercise 1)."""

    def tests() -> int:
        for _ in range(trials):
            d_in, d_out, r = (int(v) for v in torch.randint(2, 12, (3,)))
            r = min(r, d_in, d_out)
            alpha = float(torch.randint(1, 33, ()))
            W, A, B = torch.randn(d_out, d_in), torch.randn(r, d_in), torch.randn(d_out, r)
            got = call(fn, W.clone(), A.clone(), B.clone(), alpha, r)
            want = _merge_lora(W, A, B, alpha, r)
            if not isinstance(got, torch.Tensor):
                raise AssertionError(f"return a tensor shaped like W, got {type(got).__name__}.")
            if got.shape != W.shape:
                transposed = " (that is W's shape transposed)" if got.shape == W.T.shape and d_in != d_out else ""
                raise AssertionError(f"the merged weight must keep W's shape (d_out, d_in); yours is "
                                     f"{tuple(got.shape)}{transposed}: B @ A is (d_out, r) @ (r, d_in).")
            if close(got, want):
                continue
            if close(got, W + B @ A):
                raise AssertionError("the update is not scaled: multiply B @ A by alpha / r.")
            if close(got, W + (r / alpha) * (B @ A)):
                raise AssertionError("the scale is upside down: LoRA multiplies by alpha / r, not r / alpha.")
            if close(got, (alpha / r) * (B @ A)):
                raise AssertionError("you returned the update alone: add it to W.")
            if close(got, W + alpha * (B @ A)):
                raise AssertionError("the scale is alpha / r, not alpha alone: divide by the rank too.")
            raise AssertionError("the merged weight differs from W + (alpha / r) B A.")
        return trials

    return run_checks("merge_lora", tests, raise_on_error, fn=fn)


def check_lora_count(fn: Callable, raise_on_error: bool = True) -> bool:
    """Check ``fn(d_in, d_out, r, layers, targets) -> int``: LoRA's new parameters when ``targets``
    (d_out x d_in) matrices in each of ``layers`` layers get rank-r updates (notebook 09, exercise 2)."""
    cases = [(384, 384, 8, 6, 2), (256, 1024, 4, 4, 1), (768, 768, 16, 12, 4), (64, 128, 1, 2, 3)]

    def tests() -> int:
        for d_in, d_out, r, layers, targets in cases:
            got = call(fn, d_in, d_out, r, layers, targets)
            want = _lora_count(d_in, d_out, r, layers, targets)
            if got is None:
                raise AssertionError("your function returned None: return the count, a whole number.")
            got = whole_number(got)
            if got == want:
                continue
            per_pair = r * (d_in + d_out)  # one A and one B
            named = True
            if got == layers * targets * d_in * d_out:
                hint = "that is the number of weights LoRA freezes; LoRA trains A (r x d_in) and B (d_out x r)."
            elif got in (layers * targets * r * d_in, layers * targets * r * d_out):
                hint = "count both matrices: A has r x d_in numbers and B has d_out x r."
            elif got == per_pair:
                hint = "that is one adapted matrix; every target in every layer gets its own A and B."
            elif got in (per_pair * layers, per_pair * targets):
                hint = "count every layer and every target: each pair gets its own A and B."
            elif got == layers * targets * r * r or got == layers * targets * (r * d_in * d_out):
                hint = "A is r x d_in and B is d_out x r: add their sizes."
            else:
                hint, named = "each of the layers x targets matrices gets an A (r x d_in) and a B (d_out x r).", False
            raise AssertionError(f"for d_in={d_in}, d_out={d_out}, r={r}, {layers} layers and {targets} targets "
                                 f"per layer you returned {got:,}, {direction(got, want, factor=not named)}: {hint}")
        return len(cases)

    return run_checks("lora_count", tests, raise_on_error, passed="passed {n} cases.", fn=fn)
