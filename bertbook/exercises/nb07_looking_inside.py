"""Notebook 07's exercises: the previous-token share of every head, and the next-token head."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch

from ..attention_maps import AttentionData, as_attentions
from .harness import call, register_references, run_checks, shape_hint

__all__ = ['check_previous_token_share', 'check_next_token_head', 'solutions']


# Reference solutions (try first!)

def _previous_token_share(attentions: torch.Tensor) -> torch.Tensor:
    a = as_attentions(attentions)  # (L, H, T, T)
    return a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # entries a[i, i-1]: (L, H, T-1) -> (L, H)


def _next_token_head(data: AttentionData) -> tuple[int, int]:
    share = as_attentions(data).diagonal(offset=1, dim1=-2, dim2=-1).mean(-1)  # a[i, i+1]: (L, H)
    layer, head = divmod(int(share.argmax()), share.shape[1])
    return layer, head


solutions = register_references(SimpleNamespace(previous_token_share=_previous_token_share,
                                                next_token_head=_next_token_head))


def _random_attention(g: torch.Generator, L: int, H: int, T: int) -> torch.Tensor:
    return (torch.randn(L, H, T, T, generator=g) * 2).softmax(-1)  # (L, H, T, T), rows sum to 1


def check_previous_token_share(fn: Callable[[torch.Tensor], torch.Tensor], raise_on_error: bool = True,
                               trials: int = 20) -> bool:
    """Check ``fn(attentions (L, H, T, T)) -> (L, H)``: for every head, the attention a query gives to the token
    just before it, averaged over the queries that have one (notebook 07, exercise 1)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        for _ in range(trials):
            L, H, T = (int(x) for x in torch.randint(1, 5, (3,), generator=g))
            T += 2
            a = _random_attention(g, L, H, T)
            got, want = call(fn, a.clone()), _previous_token_share(a)
            if got is None:
                raise AssertionError("your function returned None: return a tensor of shape (L, H).")
            try:
                got = torch.as_tensor(got).float()
            except (TypeError, ValueError, RuntimeError):
                raise AssertionError(f"return a tensor of shape (L, H), got {type(got).__name__}.") from None
            if got.shape != want.shape:
                hint = shape_hint(got.shape, ("L", "H"), {"L": L, "H": H, "T": T})
                raise AssertionError(f"return one number per head, an (L, H) tensor; you returned shape "
                                     f"{tuple(got.shape)}: {hint} Average over the queries (the last axis left "
                                     "after taking the diagonal).")
            if torch.allclose(got, want, atol=1e-5):
                continue
            if torch.allclose(got, a.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1), atol=1e-5):
                raise AssertionError("that is the next token: row i (the query) looks at column i - 1 "
                                     "(use diagonal offset -1).")
            if torch.allclose(got, want * (T - 1) / T, atol=1e-5):
                raise AssertionError(f"average over the {T - 1} queries that have a previous token, not all {T}.")
            if torch.allclose(got, a.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1), atol=1e-5):
                raise AssertionError("take the mean over the queries, not the sum.")
            raise AssertionError("the shares differ from the average of a[l, h, i, i-1] over i = 1 .. T-1.")
        return trials

    return run_checks("previous-token share", tests, raise_on_error, fn=fn)


def check_next_token_head(fn: Callable[[AttentionData], tuple[int, int]], raise_on_error: bool = True,
                          trials: int = 20) -> bool:
    """Check ``fn(data) -> (layer, head)``: the head that gives the most attention, on average, to the next
    token (notebook 07, exercise 2)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        for _ in range(trials):
            L, H = (int(x) for x in torch.randint(2, 6, (2,), generator=g))
            T = int(torch.randint(5, 12, (), generator=g))
            a = _random_attention(g, L, H, T)
            layer, head = (int(x) for x in torch.randint(0, 100, (2,), generator=g))
            layer, head = layer % L, head % H
            nxt = torch.zeros(T, T)
            for i in range(T):
                nxt[i, min(i + 1, T - 1)] = 1.0
            a[layer, head] = 0.3 * a[layer, head] + 0.7 * nxt  # this head mostly looks one token ahead
            ahead = a.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1)  # (L, H)
            ahead[layer, head] = 0.0
            while float(ahead.max()) > 0.5:  # a short random head may look ahead too: damp it, one answer only
                other = divmod(int(ahead.argmax()), H)
                a[other] = (0.5 * a[other] + 0.5 / T)  # halfway to uniform: rows still sum to 1
                ahead[other] = a[other].diagonal(offset=1).mean()
            tokens = ["[CLS]"] + [f"w{i}" for i in range(T - 2)] + ["[SEP]"]
            data = AttentionData(tokens=tokens, attentions=a, name="random")
            got = call(fn, data)
            try:
                got = tuple(int(x) for x in got)
            except (TypeError, ValueError, RuntimeError):
                raise AssertionError(f"return a pair (layer, head), got {got!r}.") from None
            if len(got) != 2:
                raise AssertionError(f"return a pair (layer, head), got {len(got)} numbers.")
            if got == (layer, head):
                continue
            if got == (head, layer):
                raise AssertionError("layer and head are swapped: return (layer, head).")
            if not (0 <= got[0] < L and 0 <= got[1] < H):
                raise AssertionError(f"for a model of {L} layers x {H} heads you returned {got}, which does not "
                                     "exist: layers count from 0 to L - 1, heads from 0 to H - 1 (divmod the flat "
                                     "index of the argmax by the number of heads).")
            full = as_attentions(data)
            share = {offset: full.diagonal(offset=offset, dim1=-2, dim2=-1).mean(-1) for offset in (-1, 0)}
            if got == divmod(int(share[-1].argmax()), H):
                raise AssertionError("that head looks at the previous token: the next token of query i is "
                                     "key i + 1 (diagonal offset +1).")
            if got == divmod(int(share[0].argmax()), H):
                raise AssertionError("that head looks at the token itself (the main diagonal): the next token "
                                     "of query i is key i + 1 (diagonal offset +1).")
            raise AssertionError(f"in a model of {L} layers x {H} heads you returned {got}, but another head "
                                 "gives more attention to the next token: average a[l, h, i, i + 1] over the "
                                 "queries i and take the head with the largest average.")
        return trials

    return run_checks("next-token head", tests, raise_on_error, fn=fn)
