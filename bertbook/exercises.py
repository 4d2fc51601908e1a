"""Exercises with checkers for notebooks 00-03 and 06.

A checker calls your function on fresh random inputs, compares it with a reference and says what is wrong
in words (not just "assert failed"). It prints a tick and returns True when all tests pass; otherwise it
raises an AssertionError with the diagnosis, or, with ``raise_on_error=False``, prints it and returns False.

    from bertbook import exercises
    exercises.check_masked_softmax(my_masked_softmax)

Reference solutions live in ``exercises.solutions``; ``exercises.show_solution("masked_softmax")`` prints
one. Try first! (Notebooks 04, 05 and 07 keep their checkers next to the code they teach: ``masking``,
``train`` and ``viz``, built on the same harness.)
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from .config import ModelConfig

__all__ = ["check_bert_large", "check_wordpiece", "check_masked_softmax", "check_attention", "check_split_heads",
           "check_param_count", "check_f1_from_confusion", "check_tail_only", "solutions", "show_solution"]


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


def _bert_large_parameters() -> int:
    V, T, S, H, I, L = 30522, 512, 2, 1024, 4096, 24  # vocabulary, positions, segments, width, FFN, layers
    embeddings = (V + T + S) * H + 2 * H  # three tables and their LayerNorm (scale and shift)
    per_layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # Q, K, V, O; LN; FFN; LN
    pooler = H * H + H
    return embeddings + L * per_layer + pooler


def _f1_from_confusion(cm) -> float:
    tp, fp, fn = cm[1][1], cm[0][1], cm[1][0]  # cm[true][predicted]; class 1 is the positive one
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))  # = 2PR / (P + R)


def _tail_only(ids, budget: int) -> list:
    return list(ids[len(ids) - budget:]) if len(ids) > budget else list(ids)


solutions = SimpleNamespace(bert_large_parameters=_bert_large_parameters, wordpiece=_wordpiece,
                            masked_softmax=_masked_softmax, attention=_attention, split_heads=_split_heads,
                            param_count=_param_count, f1_from_confusion=_f1_from_confusion, tail_only=_tail_only)


def show_solution(name: str) -> None:
    """Print the reference solution of an exercise (``bert_large_parameters``, ``wordpiece``,
    ``masked_softmax``, ``attention``, ``split_heads``, ``param_count``, ``f1_from_confusion``,
    ``tail_only``)."""
    fn = getattr(solutions, name, None)
    if fn is None:
        raise ValueError(f"No solution called {name!r}; choose one of {', '.join(vars(solutions))}.")
    print(inspect.getsource(fn))


# ----------------------------------------------------------------------------------------------------------
# The checkers
# ----------------------------------------------------------------------------------------------------------

def _run(name: str, tests: Callable[[], int], raise_on_error: bool, passed: str = "passed {n} random tests.") -> bool:
    try:
        n = tests()
    except AssertionError as exc:
        if raise_on_error:
            raise
        print(f"✗ {name}: {exc}")
        return False
    print(f"✓ {name}: {passed.format(n=n)}")
    return True


def _call(fn: Callable, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the learner's code failed: say so as a check failure, with the cause
        raise AssertionError(f"your function raised {type(exc).__name__}: {exc}") from exc


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)


def check_bert_large(fn: Callable[[], int], raise_on_error: bool = True) -> bool:
    """Check ``fn() -> int``: BERT-large's parameter count (with pooler) written as a formula (notebook 00).
    Compared with ``ModelConfig(24 layers, 1024 wide, 16 heads, FFN 4096).num_parameters()``."""

    large = ModelConfig(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
    want = large.num_parameters()

    def tests() -> int:
        got = _call(fn)
        if got is None:
            raise AssertionError("your function returned None: return the count, a whole number.")
        if isinstance(got, bool) or not isinstance(got, int):
            raise AssertionError(f"return a whole number (int), got {type(got).__name__} {got!r}.")
        if got == want:
            return 1
        H, I, L = large.hidden_size, large.intermediate_size, large.num_hidden_layers
        diff = want - got
        parts = {  # parts a count often forgets, in parameters
            "the layers' biases (one per Linear, as long as its output)": L * (4 * H + I + H),
            "the layers' LayerNorms (two per layer, a scale and a shift each)": L * 4 * H,
            "the embeddings' LayerNorm (or the segment embeddings: 2 x H as well)": 2 * H,
            "the pooler (H x H and a bias)": H * H + H,
            "the position embeddings (512 x H)": large.max_position_embeddings * H,
            "the attention output projection W_O": L * H * H,
        }
        hint = ""
        for size in range(1, len(parts) + 1):  # the fewest forgotten parts that explain the difference exactly
            found = [" and ".join(c) for c in itertools.combinations(parts, size)
                     if sum(parts[name] for name in c) == diff]
            if found:
                hint = "missing: " + "; or ".join(found) + "."
                break
        if not hint:
            hint = ("off by a multiple of the layer count: check one layer's parts." if diff % L == 0 else
                    "check the embeddings (three tables and a LayerNorm) and the pooler.")
        raise AssertionError(f"your count {got:,} differs from {want:,} by {-diff:+,}: {hint}")

    return _run("BERT-large parameter count", tests, raise_on_error,
                passed=f"{want:,} parameters, correct (the paper rounds it to 340 M).")


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
            got = _call(fn, cm.copy())
            if got is None:
                raise AssertionError("your function returned None: return the F1, a number between 0 and 1.")
            try:
                got = float(got)
            except (TypeError, ValueError):
                raise AssertionError(f"return one number, got {type(got).__name__}.") from None
            if math.isclose(got, want, abs_tol=1e-9):
                continue
            precision, recall = reference_parts(cm)
            hint = ""
            if math.isnan(got):
                hint = " With no true positives, precision and recall are 0 / 0 or 0: return 0.0, not NaN."
            elif math.isclose(got, _f1_from_confusion(cm[::-1, ::-1]), abs_tol=1e-9):
                hint = " That is the F1 of class 0; the positive class is index 1."
            elif math.isclose(got, (precision + recall) / 2, abs_tol=1e-9):
                hint = " That is the arithmetic mean of precision and recall; F1 is their harmonic mean."
            elif math.isclose(got, (cm[0, 0] + cm[1, 1]) / cm.sum(), abs_tol=1e-9):
                hint = " That is the accuracy."
            raise AssertionError(f"for cm = {cm.tolist()} (rows: true class, columns: predicted) the F1 is "
                                 f"{want:.4f}, you returned {got:.4f}.{hint}")
        return len(cases)

    return _run("F1 from a confusion matrix", tests, raise_on_error, passed="passed {n} tests.")


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
            got = _call(fn, list(ids), budget)
            if got is None:
                raise AssertionError("your function returned None: return the list of kept token ids.")
            got = list(got)
            if got == want:
                continue
            if got == ids[:budget]:
                hint = " You kept the head; keep the last tokens."
            elif len(ids) <= budget:
                hint = " A sequence that already fits must come back unchanged."
            elif len(got) != budget:
                hint = f" Keep exactly {budget} tokens (you kept {len(got)})."
            else:
                hint = ""
            raise AssertionError(f"for {len(ids)} tokens and a budget of {budget} the result is ...{want[-3:]} "
                                 f"({len(want)} tokens); you returned {got[:3]}...{got[-3:]} ({len(got)} tokens)."
                                 f"{hint}")
        return len(cases)

    return _run("tail-only truncation", tests, raise_on_error, passed="passed {n} tests.")
