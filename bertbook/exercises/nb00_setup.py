"""Notebook 00's exercise: BERT-large's parameter count as a formula."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import SimpleNamespace

from ..config import ModelConfig
from .harness import call, direction, register_references, run_checks, whole_number

__all__ = ['check_bert_large', 'solutions']


# Reference solutions (try first!)

def _bert_large_parameters() -> int:
    V, T, S, H, I, L = 30522, 512, 2, 1024, 4096, 24  # vocabulary, positions, segments, width, FFN, layers
    embeddings = (V + T + S) * H + 2 * H  # three tables and their LayerNorm (scale and shift)
    per_layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # Q, K, V, O; LN; FFN; LN
    pooler = H * H + H
    return embeddings + L * per_layer + pooler


solutions = register_references(SimpleNamespace(bert_large_parameters=_bert_large_parameters))


def check_bert_large(fn: Callable[[], int], raise_on_error: bool = True) -> bool:
    """Check ``fn() -> int``: BERT-large's parameter count (with pooler) written as a formula (notebook 00).
    Compared with ``ModelConfig(24 layers, 1024 wide, 16 heads, FFN 4096).num_parameters()``."""

    large = ModelConfig(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
    want = large.num_parameters()

    def tests() -> int:
        got = call(fn)
        if got is None:
            raise AssertionError("your function returned None: return the count, a whole number.")
        got = whole_number(got)
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
        if diff > 0:  # the fewest forgotten parts that explain the difference exactly
            for size in range(1, len(parts) + 1):
                found = [" and ".join(c) for c in itertools.combinations(parts, size)
                         if sum(parts[name] for name in c) == diff]
                if found:
                    hint = "missing: " + "; or ".join(found) + "."
                    break
        else:  # one part counted twice, or a part BERT-large does not have
            found = [name for name in parts if parts[name] == -diff]
            if found:
                hint = "one part too many: " + " or ".join(found) + " (counted twice?)."
        if not hint:
            if abs(diff) * 2 > want:
                hint = ("far off: check the shapes (a projection is H x H, the feed-forward matrices H x 4H and "
                        "4H x H, one set per layer, not per head).")
            elif abs(diff) < H:
                hint = "off by fewer than H: a small term (a single number or a short bias) is added or left out."
            elif diff % L == 0:
                hint = "off by a multiple of the layer count: check one layer's parts."
            else:
                hint = "check the embeddings (three tables and a LayerNorm) and the pooler."
        raise AssertionError(f"your count, {got:,}, is {direction(got, want)}: {hint}")

    return run_checks("BERT-large parameter count", tests, raise_on_error, fn=fn,
                      passed="your count is right (the paper rounds it to 340 M).")
