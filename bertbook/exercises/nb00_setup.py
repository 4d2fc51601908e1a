"""Notebook 00's exercise: BERT-large's parameter count as a formula."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import SimpleNamespace

from ..config import ModelConfig
from .harness import call, run_checks

__all__ = ['check_bert_large', 'solutions']


# Reference solutions (try first!)

def _bert_large_parameters() -> int:
    V, T, S, H, I, L = 30522, 512, 2, 1024, 4096, 24  # vocabulary, positions, segments, width, FFN, layers
    embeddings = (V + T + S) * H + 2 * H  # three tables and their LayerNorm (scale and shift)
    per_layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # Q, K, V, O; LN; FFN; LN
    pooler = H * H + H
    return embeddings + L * per_layer + pooler


solutions = SimpleNamespace(bert_large_parameters=_bert_large_parameters)


def check_bert_large(fn: Callable[[], int], raise_on_error: bool = True) -> bool:
    """Check ``fn() -> int``: BERT-large's parameter count (with pooler) written as a formula (notebook 00).
    Compared with ``ModelConfig(24 layers, 1024 wide, 16 heads, FFN 4096).num_parameters()``."""

    large = ModelConfig(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
    want = large.num_parameters()

    def tests() -> int:
        got = call(fn)
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

    return run_checks("BERT-large parameter count", tests, raise_on_error,
                passed=f"{want:,} parameters, correct (the paper rounds it to 340 M).")
