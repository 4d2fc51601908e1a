"""Notebook 05's exercises: warmup + linear decay, and which parameters get no weight decay."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

from torch import nn

from ..config import ModelConfig
from ..model import BertForMaskedLM
from .harness import call, one_number, register_references, run_checks

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


def _uniform_perplexity(vocab_size: int) -> float:
    """Exercise 3: the perplexity of a model that spreads its probability evenly over the vocabulary."""
    loss = math.log(vocab_size)  # -log(1 / |V|) at every position
    return round(math.exp(loss), 6)  # perplexity = exp(loss) = exp(log |V|) = |V|


solutions = register_references(SimpleNamespace(warmup_linear=_warmup_linear, no_decay_names=_no_decay_names,
                                                uniform_perplexity=_uniform_perplexity))


def check_warmup_linear(fn: Callable[[int, int, int], float], raise_on_error: bool = True) -> bool:
    """Check ``fn(step, warmup_steps, total_steps) -> factor``: linear warmup from 0 to 1, then linear decay
    to 0 at ``total_steps`` (notebook 05, exercise 1)."""
    def tests() -> int:
        n = 0
        for warmup, total in ((10, 100), (1, 7), (0, 20), (30, 31)):
            for step in range(total + 1):
                try:
                    got = call(fn, step, warmup, total)
                except AssertionError as exc:
                    if warmup == 0:  # dividing by warmup_steps when there is no warmup
                        raise AssertionError(f"{exc} (at step {step} of {total} with warmup_steps=0: zero warmup "
                                             "steps means no warmup, the factor starts at 1).") from exc
                    raise
                want = _warmup_linear(step, warmup, total)
                n += 1
                got = one_number(got, "a float between 0 and 1")
                if abs(got - want) > 1e-9:
                    raise AssertionError(f"at step {step} of {total} with {warmup} warmup steps you returned "
                                         f"{got:.4f}, {'too high' if got > want else 'too low'}: "
                                         f"{_warmup_hint(step, warmup, total, got)}")
        return n

    return run_checks("warmup + linear decay", tests, raise_on_error, passed="passed {n} tests.", fn=fn)


def _warmup_hint(step: int, warmup: int, total: int, got: float) -> str:
    """Why the factor at ``step`` is wrong, in words (not the expected factor)."""
    if warmup == 0:
        return "warmup_steps=0 means no warmup: the factor starts at 1 and falls linearly to 0 at total_steps."
    if step < warmup:
        return "during warmup the factor rises linearly from 0 at step 0 to 1 at step warmup_steps."
    if step == total and got != 0:
        return "at total_steps the factor must have fallen to 0."
    if step > warmup and math.isclose(got, 1.0):
        return "after warmup the factor must fall linearly, reaching 0 at total_steps, not stay at 1."
    if math.isclose(got, (total - step) / total):
        return ("the decay counts from step 0; it starts at warmup_steps, so divide by the steps left after "
                "warmup (total_steps - warmup_steps).")
    if got < 0:
        return "the factor never goes below 0."
    return "after warmup the factor falls linearly from 1 at warmup_steps to 0 at total_steps."


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
        try:
            got = set(got)
        except TypeError:
            raise AssertionError(f"return a set of names, got {type(got).__name__}.") from None
        missing, extra = want - got, sorted(got - want)
        if missing:
            kinds = {"the LayerNorm scales (their weight)": set(), "the LayerNorm shifts (their bias)": set(),
                     "the biases of the Linear layers": set(), "a bias that is a parameter of its own module": set()}
            for module_name, module in model.named_modules():
                for name, _ in module.named_parameters(recurse=False):
                    full = f"{module_name}.{name}" if module_name else name
                    if full not in missing:
                        continue
                    if isinstance(module, nn.LayerNorm):
                        kinds["the LayerNorm scales (their weight)" if name == "weight" else
                              "the LayerNorm shifts (their bias)"].add(full)
                    elif isinstance(module, nn.Linear):
                        kinds["the biases of the Linear layers"].add(full)
                    else:
                        kinds["a bias that is a parameter of its own module"].add(full)
            named = [kind for kind, names in kinds.items() if names]
            raise AssertionError("some parameters that should not decay are missing from your set: "
                                 + ", ".join(named) + ". Every bias and every LayerNorm parameter is exempt "
                                 "from weight decay.")
        if extra:
            raise AssertionError(f"{len(extra)} weight matrices would lose their decay, e.g. {extra[0]}: only "
                                 "biases and LayerNorm parameters are exempt.")
        return len(want)

    return run_checks("no-decay parameters", tests, raise_on_error, passed="the right set of parameters.", fn=fn)
