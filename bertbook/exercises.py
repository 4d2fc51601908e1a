"""Exercises with checkers for notebooks 01-03.

A checker calls your function on fresh random inputs, compares it with a reference and says what is wrong
in words (not just "assert failed"). It prints a tick and returns True when all tests pass; otherwise it
raises an AssertionError with the diagnosis, or, with ``raise_on_error=False``, prints it and returns False.

    from bertbook import exercises
    exercises.check_masked_softmax(my_masked_softmax)

Reference solutions live in ``exercises.solutions``; ``exercises.show_solution("masked_softmax")`` prints
one. Try first!
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import SimpleNamespace

import torch

from .config import ModelConfig

__all__ = ["check_wordpiece", "check_masked_softmax", "check_attention", "check_split_heads",
           "check_param_count", "solutions", "show_solution"]


# ----------------------------------------------------------------------------------------------------------
# Reference solutions (kept out of the notebooks' way)
# ----------------------------------------------------------------------------------------------------------

def _wordpiece(word: str, vocab) -> list[str]:
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:  # try the longest candidate first
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]  # a word with an unknown part becomes a single [UNK]
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_shortest(word: str, vocab, prefix: str = "##") -> list[str]:
    """A typical mistake, for the checker's diagnosis: the shortest match instead of the longest."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_no_prefix(word: str, vocab) -> list[str]:
    """Another typical mistake: looking up every piece without the '##' continuation prefix."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and word[start:end] not in vocab:
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(word[start:end])
        start = end
    return pieces


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


def _param_count(cfg: ModelConfig) -> int:
    D, I = cfg.hidden_size, cfg.intermediate_size
    embeddings = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * D + 2 * D  # + LayerNorm
    attention = 4 * (D * D + D)  # W_Q, W_K, W_V, W_O and their biases
    ffn = D * I + I + I * D + D  # W_1, b_1, W_2, b_2
    norms = 2 * 2 * D  # two LayerNorms per layer, each a scale and a shift
    pooler = D * D + D
    return embeddings + cfg.num_hidden_layers * (attention + ffn + norms) + pooler


solutions = SimpleNamespace(wordpiece=_wordpiece, masked_softmax=_masked_softmax, attention=_attention,
                            split_heads=_split_heads, param_count=_param_count)


def show_solution(name: str) -> None:
    """Print the reference solution of an exercise (``wordpiece``, ``masked_softmax``, ``attention``,
    ``split_heads``, ``param_count``)."""
    fn = getattr(solutions, name, None)
    if fn is None:
        raise ValueError(f"No solution called {name!r}; choose one of {', '.join(vars(solutions))}.")
    print(inspect.getsource(fn))


# ----------------------------------------------------------------------------------------------------------
# The checkers
# ----------------------------------------------------------------------------------------------------------

def _run(name: str, tests: Callable[[], int], raise_on_error: bool) -> bool:
    try:
        n = tests()
    except AssertionError as exc:
        if raise_on_error:
            raise
        print(f"✗ {name}: {exc}")
        return False
    print(f"✓ {name}: passed {n} random tests.")
    return True


def _call(fn: Callable, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the learner's code failed: say so as a check failure, with the cause
        raise AssertionError(f"your function raised {type(exc).__name__}: {exc}") from exc


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)


def check_wordpiece(fn: Callable[[str, set], list[str]], raise_on_error: bool = True, trials: int = 200) -> bool:
    """Check ``fn(word, vocab) -> pieces``: greedy longest-match-first WordPiece (notebook 01)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        letters = "abcde"
        for t in range(trials):
            words = ["".join(letters[i] for i in torch.randint(0, 5, (int(n),), generator=g))
                     for n in torch.randint(1, 4, (40,), generator=g)]
            vocab = {w for w in words[:20]} | {"##" + w for w in words[20:]}
            vocab |= set("abcd")  # every letter but "e" may start a word
            vocab |= {"##" + c for c in "abc"}
            word = "".join(letters[i] for i in torch.randint(0, 5, (int(torch.randint(1, 8, (), generator=g)),),
                                                           generator=g))
            want, got = _wordpiece(word, vocab), _call(fn, word, vocab)
            if not isinstance(got, list):
                raise AssertionError(f"return a list of pieces, got {type(got).__name__}.")
            if got == want:
                continue
            hint = ""
            if got == _wordpiece_shortest(word, vocab):
                hint = " Try the longest candidate first (shrink it from the right), not the shortest."
            elif got == _wordpiece_no_prefix(word, vocab):
                hint = " Pieces after the first start with '##' and must be looked up with that prefix."
            elif "[UNK]" in want and got != ["[UNK]"]:
                hint = " When some part of the word matches nothing, the whole word becomes ['[UNK]']."
            raise AssertionError(f"for the word {word!r} with vocabulary {sorted(vocab)} you gave {got}, "
                                 f"expected {want}.{hint}")
        return trials

    return _run("wordpiece", tests, raise_on_error)


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
            got = _call(fn, scores.clone(), mask)
            want = _masked_softmax(scores, mask)
            if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise AssertionError(f"for scores of shape {tuple(scores.shape)} the weights must have the same "
                                     f"shape, got {shape}.")
            if torch.isnan(got).any():
                raise AssertionError("the weights contain NaN: fill masked scores with a very negative number "
                                     "(torch.finfo(dtype).min), not -inf minus -inf.")
            if (got.masked_select(~mask.expand_as(got)).abs() > 1e-6).any():
                raise AssertionError("padded keys (mask False) still get weight: fill their scores with a very "
                                     "negative number before the softmax.")
            if not torch.allclose(got.sum(-1), torch.ones(B, H, T), atol=1e-5):
                if _close(got, torch.softmax(scores, -1) * mask):
                    raise AssertionError("zeroing the padded weights after the softmax leaves rows that no longer "
                                         "sum to 1: mask the scores before the softmax instead.")
                raise AssertionError("each row of weights must sum to 1: take the softmax over the last axis "
                                     "(dim=-1), the keys.")
            if not _close(got, want):
                raise AssertionError("the weights of real keys differ from softmax(scores) over the real keys.")
        return trials

    return _run("masked softmax", tests, raise_on_error)


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
            got = _call(fn, q, k, v, mask)
            if not (isinstance(got, tuple) and len(got) == 2):
                raise AssertionError("return a pair (output, weights).")
            out, weights = got
            want_out, want_w = _attention(q, k, v, mask)
            if weights.shape != want_w.shape:
                raise AssertionError(f"weights must be (B, H, T, T) = {tuple(want_w.shape)}, got "
                                     f"{tuple(weights.shape)}: compare every query with every key, q @ k^T.")
            if out.shape != want_out.shape:
                raise AssertionError(f"output must be (B, H, T, d_k) = {tuple(want_out.shape)}, got "
                                     f"{tuple(out.shape)}: multiply the weights by v.")
            if not _close(weights, want_w):
                if _close(weights, _attention(q * d_k ** 0.5, k, v, mask)[1]):
                    raise AssertionError("the scores are not scaled: divide q @ k^T by sqrt(d_k).")
                if _close(weights, _attention(q * d_k ** 0.5 / H ** 0.5, k, v, mask)[1]):
                    raise AssertionError("you divided by sqrt(number of heads); d_k is the width of one head's "
                                         "keys, q.size(-1).")
                if _close(weights, _attention(q * d_k ** 0.5 / d_k, k, v, mask)[1]):
                    raise AssertionError("you divided by d_k; divide by its square root, sqrt(d_k).")
                if mask is not None and _close(weights, _attention(q, k, v, None)[1]):
                    raise AssertionError("the padding mask is ignored: padded keys must get zero weight.")
                raise AssertionError("the attention weights differ from softmax(q @ k^T / sqrt(d_k)).")
            if not _close(out, want_out):
                raise AssertionError("the weights are right but the output is not weights @ v.")
        return trials

    return _run("scaled dot-product attention", tests, raise_on_error)


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
            got = _call(fn, x, H)
            want = _split_heads(x, H)
            if got.shape != want.shape:
                raise AssertionError(f"for x of shape {tuple(x.shape)} and {H} heads the result must be "
                                     f"(B, H, T, d_k) = {tuple(want.shape)}, got {tuple(got.shape)}.")
            if not torch.equal(got, want):
                if torch.equal(got, x.reshape(B, H, T, d_k)):
                    raise AssertionError("reshaping straight to (B, H, T, d_k) mixes tokens between heads: "
                                         "view as (B, T, H, d_k) first, then transpose(1, 2).")
                raise AssertionError("right shape, wrong values: head h must hold features "
                                     "h*d_k .. (h+1)*d_k - 1 of every token.")
        return trials

    return _run("split heads", tests, raise_on_error)


def check_param_count(fn: Callable[[ModelConfig], int], raise_on_error: bool = True, trials: int = 10) -> bool:
    """Check ``fn(config) -> int``: the parameters of a BertModel with pooler, from the config alone
    (notebook 03). Compared with a real ``bertbook.model.BertModel`` of random small shapes."""
    from .model import BertModel

    def tests() -> int:
        for t in range(trials):
            H = int(torch.randint(1, 4, ()))
            D = H * int(torch.randint(2, 9, ()))
            cfg = ModelConfig(vocab_size=int(torch.randint(20, 200, ())), hidden_size=D,
                              num_hidden_layers=int(torch.randint(1, 4, ())), num_attention_heads=H,
                              intermediate_size=int(torch.randint(4, 40, ())),
                              max_position_embeddings=int(torch.randint(8, 64, ())))
            got = _call(fn, cfg)
            want = sum(p.numel() for p in BertModel(cfg).parameters())
            if got == want:
                continue
            diff = want - got
            L, I = cfg.num_hidden_layers, cfg.intermediate_size
            candidates = [  # (how many parameters, what they are)
                (L * (4 * D + I + D) + D, "the biases (every Linear has one, as long as its output)"),
                (L * 4 * D + 2 * D, "the LayerNorms (each has a scale and a shift of width D)"),
                (L * 4 * D, "the two LayerNorms inside each layer"),
                (D * D + D, "the pooler (a D x D Linear on [CLS])"),
                (cfg.max_position_embeddings * D, "the position embeddings"),
                (cfg.type_vocab_size * D, "the segment (token type) embeddings"),
                (L * (D * D + D), "the attention output projection W_O"),
            ]
            hints = [what for n, what in candidates if n == diff]
            raise AssertionError(f"for {cfg.num_hidden_layers} layers, D={D}, intermediate {I}, vocabulary "
                                 f"{cfg.vocab_size}, {cfg.max_position_embeddings} positions you counted {got:,}; "
                                 f"the model has {want:,} ({diff:+,})."
                                 + (f" Missing: {' or '.join(hints)}." if hints and diff > 0 else ""))
        return trials

    return _run("parameter count", tests, raise_on_error)
