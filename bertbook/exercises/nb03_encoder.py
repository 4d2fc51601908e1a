"""Notebook 03's exercise: a model's parameter count from its config."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch

from ..config import ModelConfig
from .harness import call, direction, register_references, run_checks, whole_number

__all__ = ['check_param_count', 'solutions']


# Reference solutions (try first!)

def _param_count(cfg: ModelConfig) -> int:
    D, I = cfg.hidden_size, cfg.intermediate_size
    embeddings = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * D + 2 * D  # + LayerNorm
    attention = 4 * (D * D + D)  # W_Q, W_K, W_V, W_O and their biases
    ffn = D * I + I + I * D + D  # W_1, b_1, W_2, b_2
    norms = 2 * 2 * D  # two LayerNorms per layer, each a scale and a shift
    pooler = D * D + D
    return embeddings + cfg.num_hidden_layers * (attention + ffn + norms) + pooler


solutions = register_references(SimpleNamespace(param_count=_param_count))


def check_param_count(fn: Callable[[ModelConfig], int], raise_on_error: bool = True, trials: int = 10) -> bool:
    """Check ``fn(config) -> int``: the parameters of a BertModel with pooler, from the config alone
    (notebook 03). Compared with a real ``bertbook.model.BertModel`` of random small shapes."""
    from ..model import BertModel

    def tests() -> int:
        for t in range(trials):
            H = int(torch.randint(1, 4, ()))
            D = H * int(torch.randint(2, 9, ()))
            cfg = ModelConfig(vocab_size=int(torch.randint(20, 200, ())), hidden_size=D,
                              num_hidden_layers=int(torch.randint(1, 4, ())), num_attention_heads=H,
                              intermediate_size=int(torch.randint(4, 40, ())),
                              max_position_embeddings=int(torch.randint(8, 64, ())))
            got = call(fn, cfg)
            want = sum(p.numel() for p in BertModel(cfg).parameters())
            if got is None:
                raise AssertionError("your function returned None: return the count, a whole number.")
            got = whole_number(got)
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
            hints = [what for n, what in candidates if n == abs(diff)]
            if hints and diff > 0:
                hint = f" Missing: {' or '.join(hints)}."
            elif hints:
                hint = f" One part too many: {' or '.join(hints)} (counted twice?)."
            elif diff % L == 0 and L > 1:
                hint = " The difference is a multiple of the layer count: check the parts of one layer."
            else:
                hint = (" Count per layer: four D x D projections with biases, two LayerNorms, the two "
                        "feed-forward Linears with biases; then the embeddings and the pooler.")
            raise AssertionError(f"for {cfg.num_hidden_layers} layers, D={D}, intermediate {I}, vocabulary "
                                 f"{cfg.vocab_size}, {cfg.max_position_embeddings} positions you counted {got:,}, "
                                 f"{direction(got, want, factor=not hints)}." + hint)
        return trials

    return run_checks("parameter count", tests, raise_on_error, fn=fn)
