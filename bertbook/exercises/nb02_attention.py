"""Notebook 02's exercises: masked softmax, scaled dot-product attention, splitting heads."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch

from .harness import call, close, register_references, run_checks, shape_hint

__all__ = ['check_masked_softmax', 'check_attention', 'check_split_heads', 'solutions']


# Reference solutions (try first!)

def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5  # (..., T, T), divided by sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights  # (..., T, d_k), (..., T, T)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, H, T, d_k)


solutions = register_references(SimpleNamespace(masked_softmax=_masked_softmax, attention=_attention,
                                                split_heads=_split_heads))


def check_masked_softmax(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], raise_on_error: bool = True,
                         trials: int = 20) -> bool:
    """Check ``fn(scores, mask) -> weights``: softmax over the last axis with zero weight where mask is False
    (notebook 02). ``mask`` is boolean and broadcastable to ``scores`` (True = may attend)."""

    def tests() -> int:
        for t in range(trials):
            B, H, T = (int(x) for x in torch.randint(1, 6, (3,)))
            T += 1
            scores = torch.randn(B, H, T, T) * 3
            lengths = torch.randint(1, T + 1, (B,))
            mask = (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
            got = call(fn, scores.clone(), mask)
            want = _masked_softmax(scores, mask)
            if not isinstance(got, torch.Tensor):
                raise AssertionError(f"return a tensor of weights, got {type(got).__name__}.")
            if got.shape != want.shape:
                raise AssertionError(f"you returned shape {tuple(got.shape)}: the weights must have the same shape "
                                     "as the scores (one weight per score); "
                                     + shape_hint(got.shape, ("B", "H", "T", "T"), {"B": B, "H": H, "T": T}))
            if torch.isnan(got).any():
                raise AssertionError("the weights contain NaN: fill masked scores with a very negative number "
                                     "(torch.finfo(dtype).min), not -inf minus -inf.")
            if (got.masked_select(~mask.expand_as(got)).abs() > 1e-6).any():
                raise AssertionError("padded keys (mask False) still get weight: fill their scores with a very "
                                     "negative number before the softmax.")
            if not torch.allclose(got.sum(-1), torch.ones(B, H, T), atol=1e-5):
                if close(got, torch.softmax(scores, -1) * mask):
                    raise AssertionError("zeroing the padded weights after the softmax leaves rows that no longer "
                                         "sum to 1: mask the scores before the softmax instead.")
                raise AssertionError("each row of weights must sum to 1: take the softmax over the last axis "
                                     "(dim=-1), the keys.")
            if not close(got, want):
                raise AssertionError("the weights of real keys differ from softmax(scores) over the real keys.")
        return trials

    return run_checks("masked softmax", tests, raise_on_error, fn=fn)


def check_attention(fn: Callable, raise_on_error: bool = True, trials: int = 20) -> bool:
    """Check ``fn(q, k, v, mask) -> (output, weights)``: scaled dot-product attention with a boolean padding
    mask (notebook 02). q, k, v: (B, H, T, d_k); mask: (B, 1, 1, T) or None."""

    def tests() -> int:
        for t in range(trials):
            B = int(torch.randint(1, 4, ()))
            H = int(torch.randint(2, 5, ()))  # at least two heads, so sqrt(H) differs from 1
            T = int(torch.randint(2, 9, ()))
            d_k = int(torch.randint(2, 5, ())) ** 2  # 4, 9 or 16: sqrt(d_k) is a whole number
            if H * H == d_k:
                H += 1  # keep d_k and H distinguishable
            q, k, v = (torch.randn(B, H, T, d_k) for _ in range(3))
            lengths = torch.randint(1, T + 1, (B,))
            mask = None if t % 4 == 0 else (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]
            got = call(fn, q, k, v, mask)
            if not (isinstance(got, tuple) and len(got) == 2):
                raise AssertionError("return a pair (output, weights).")
            out, weights = got
            if not (isinstance(out, torch.Tensor) and isinstance(weights, torch.Tensor)):
                raise AssertionError("return a pair of tensors (output, weights).")
            want_out, want_w = _attention(q, k, v, mask)
            sizes = {"B": B, "H": H, "T": T, "d_k": d_k}
            if weights.shape != want_w.shape:
                swapped = " Is the pair in the order (output, weights)?" if weights.shape == want_out.shape else ""
                raise AssertionError(f"your weights have shape {tuple(weights.shape)}: "
                                     + shape_hint(weights.shape, ("B", "H", "T", "T"), sizes)
                                     + " Compare every query with every key, q @ k^T." + swapped)
            if out.shape != want_out.shape:
                raise AssertionError(f"your output has shape {tuple(out.shape)}: "
                                     + shape_hint(out.shape, ("B", "H", "T", "d_k"), sizes)
                                     + " Multiply the weights by v.")
            if not close(weights, want_w):
                if close(weights, want_out) and close(out, want_w):
                    raise AssertionError("the pair is in the wrong order: return it in the order (output, weights).")
                if close(weights, _attention(q * d_k ** 0.5, k, v, mask)[1]):
                    raise AssertionError("the scores are not scaled: divide q @ k^T by sqrt(d_k).")
                if close(weights, _attention(q * d_k ** 0.5 / H ** 0.5, k, v, mask)[1]):
                    raise AssertionError("you divided by sqrt(number of heads); d_k is the width of one head's "
                                         "keys, q.size(-1).")
                if close(weights, _attention(q * d_k ** 0.5 / d_k, k, v, mask)[1]):
                    raise AssertionError("you divided by d_k; divide by its square root, sqrt(d_k).")
                if mask is not None and close(weights, _attention(q, k, v, None)[1]):
                    raise AssertionError("the padding mask is ignored: padded keys must get zero weight.")
                raise AssertionError("the attention weights differ from softmax(q @ k^T / sqrt(d_k)).")
            if not close(out, want_out):
                raise AssertionError("the weights are right but the output is not weights @ v.")
        return trials

    return run_checks("scaled dot-product attention", tests, raise_on_error, fn=fn)


def check_split_heads(fn: Callable[[torch.Tensor, int], torch.Tensor], raise_on_error: bool = True,
                      trials: int = 20) -> bool:
    """Check ``fn(x, num_heads) -> (B, H, T, d_k)``: cut each token vector into heads (notebook 02)."""

    def tests() -> int:
        for t in range(trials):
            B = int(torch.randint(1, 5, ()))
            H = int(torch.randint(2, 6, ()))
            d_k = int(torch.randint(1, 5, ()))
            T = H + d_k + int(torch.randint(1, 4, ()))  # T differs from H and d_k, so a wrong reshape shows
            x = torch.randn(B, T, H * d_k)
            got = call(fn, x, H)
            want = _split_heads(x, H)
            if not isinstance(got, torch.Tensor):
                raise AssertionError(f"return a tensor (B, H, T, d_k), got {type(got).__name__}.")
            if got.shape != want.shape:
                hint = shape_hint(got.shape, ("B", "H", "T", "d_k"), {"B": B, "H": H, "T": T, "d_k": d_k})
                if tuple(got.shape) == (B, T, H, d_k):
                    hint = "that is (B, T, H, d_k): the head axis must come before the token axis, transpose(1, 2)."
                raise AssertionError(f"for x of shape (B, T, H * d_k) and H = {H} heads you returned shape "
                                     f"{tuple(got.shape)}: {hint}")
            if not torch.equal(got, want):
                if torch.equal(got, x.reshape(B, H, T, d_k)):
                    raise AssertionError("reshaping straight to (B, H, T, d_k) mixes tokens between heads: "
                                         "view as (B, T, H, d_k) first, then transpose(1, 2).")
                raise AssertionError("right shape, wrong values: head h must hold features "
                                     "h*d_k .. (h+1)*d_k - 1 of every token.")
        return trials

    return run_checks("split heads", tests, raise_on_error, fn=fn)
