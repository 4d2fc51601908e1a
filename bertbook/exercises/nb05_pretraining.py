"""Notebook 05's exercises: warmup + linear decay, and which parameters get no weight decay."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from torch import nn

from ..config import ModelConfig
from ..model import BertForMaskedLM
from .harness import call, run_checks

__all__ = ['check_warmup_linear', 'check_no_decay', 'solutions']


# Reference solutions (try first!)

def _warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.LayerNorm) or name == "bias":
                names.add(f"{module_name}.{name}" if module_name else name)
    return names


solutions = SimpleNamespace(warmup_linear=_warmup_linear, no_decay_names=_no_decay_names)


def check_warmup_linear(fn: Callable[[int, int, int], float], raise_on_error: bool = True) -> bool:
    """Check ``fn(step, warmup_steps, total_steps) -> factor``: linear warmup from 0 to 1, then linear decay
    to 0 at ``total_steps`` (notebook 05, exercise 1)."""
    def tests() -> int:
        n = 0
        for warmup, total in ((10, 100), (1, 7), (0, 20), (30, 31)):
            for step in range(total + 1):
                got, want = call(fn, step, warmup, total), _warmup_linear(step, warmup, total)
                n += 1
                if got is None:
                    raise AssertionError("your function returned None: return a float between 0 and 1.")
                if abs(float(got) - want) > 1e-9:
                    raise AssertionError(f"at step {step} of {total} with {warmup} warmup steps the factor is "
                                         f"{want:.4f}, got {float(got):.4f}"
                                         + (" (warmup_steps=0 means no warmup)" if warmup == 0 else "") + ".")
        return n

    return run_checks("warmup + linear decay", tests, raise_on_error)


def check_no_decay(fn: Callable[[nn.Module], set], raise_on_error: bool = True) -> bool:
    """Check ``fn(model) -> set of parameter names`` that get no weight decay: every bias and every
    LayerNorm parameter (notebook 05, exercise 2)."""

    def tests() -> int:
        model = BertForMaskedLM(ModelConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=16,
                                            max_position_embeddings=16))
        got, want = call(fn, model), _no_decay_names(model)
        if got is None:
            raise AssertionError("your function returned None: return a set of names from "
                                 "model.named_parameters().")
        got = set(got)
        missing, extra = sorted(want - got), sorted(got - want)
        if missing:
            raise AssertionError(f"{len(missing)} parameters should not decay but are missing, e.g. {missing[0]}.")
        if extra:
            raise AssertionError(f"{len(extra)} weight matrices would lose their decay, e.g. {extra[0]}.")
        return len(want)

    return run_checks("no-decay parameters", tests, raise_on_error)
