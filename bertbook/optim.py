"""The optimizer and the learning-rate schedule of BERT's recipe, shared by pretraining and fine-tuning.

Taught in notebook 05; fine-tuning (notebook 06 on) uses the same two functions. The recipe is BERT's
(Devlin et al. 2019, appendix A.2) with the later fixes that make small budgets work (Liu et al. 2019,
RoBERTa; Geiping & Goldstein 2023, Cramming): AdamW (Loshchilov & Hutter 2019) with weight decay on the
weight matrices only, never on biases and LayerNorm parameters; a learning rate that warms up linearly
from 0, then decays linearly (or with a cosine) to 0. A run bounded by wall-clock time feeds the same
schedule its progress on the clock instead of its step (see ``train``). Every training step of the package
(pretraining, fine-tuning, task heads) clips and checks its gradients with the two helpers at the end.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import SCHEDULES

__all__ = ["param_groups", "make_optimizer", "TRIANGLE_START", "lr_factor", "make_scheduler", "TrainingDiverged",
           "clip_gradients", "check_finite"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight matrices (decayed) and biases + LayerNorm parameters (not decayed).

    Decay pulls weights towards 0; for a bias or a LayerNorm gain that is only harm (BERT's optimizer
    excludes them too). Parameters that are frozen (``requires_grad=False``) are left out. Notebook 05.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # a tied matrix (embeddings = output layer) once
                continue
            seen.add(id(p))
            if isinstance(module, nn.LayerNorm) or name.endswith("bias") or p.dim() < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (notebook 05). Uses the fused kernel on CUDA."""
    fused = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=1e-8,
                             fused=fused or None)


TRIANGLE_START = 0.25  # the triangle schedule starts at this fraction of the peak (Cramming)


def lr_factor(progress: float, warmup_frac: float, kind: str = "linear") -> float:
    """The learning rate as a fraction of its peak, ``progress`` in [0, 1] of the run (notebook 05).

    Linear warmup over the first ``warmup_frac``, then ``linear`` decay to 0, ``cosine`` decay to 0, or
    ``constant``. ``triangle`` is Cramming's budget-shaped schedule (Geiping & Goldstein 2023): no warmup
    from 0, but a linear rise from 25% of the peak to the peak at ``warmup_frac`` (they use 0.75), then
    linearly to 0 at the end of the budget. Both step-based and time-based runs use it: progress is
    step/total or seconds/budget.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}.")
    progress = min(max(progress, 0.0), 1.0)
    if warmup_frac > 0 and progress < warmup_frac:
        start = TRIANGLE_START if kind == "triangle" else 0.0
        return start + (1.0 - start) * progress / warmup_frac
    if kind == "constant":
        return 1.0
    rest = (progress - warmup_frac) / max(1e-12, 1.0 - warmup_frac)  # 0 -> 1 over the decay
    return 0.5 * (1.0 + math.cos(math.pi * rest)) if kind == "cosine" else 1.0 - rest


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                   kind: str = "linear") -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup for ``warmup_steps`` then decay to 0 at ``total_steps``; call ``.step()`` after every
    optimizer step (notebook 05). ``kind``: 'linear', 'cosine', 'constant' or 'triangle' (see
    :func:`lr_factor`; its peak is at ``warmup_steps``)."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"Need 0 <= warmup_steps <= total_steps and total_steps > 0, got warmup_steps="
                         f"{warmup_steps}, total_steps={total_steps}.")
    lr_factor(0.0, 0.0, kind)  # validates kind now rather than at the first step
    warmup_frac = warmup_steps / total_steps

    def factor(step: int) -> float:
        return lr_factor(step / total_steps, warmup_frac, kind)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# One rule for every step: clip (0 turns clipping off), then refuse non-finite numbers before the weights move.

class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; the message says what and, in pretraining, where the
    last good checkpoint is."""

    def __init__(self, message: str, what: str = "loss", value: float = float("nan"), lr: float = 0.0) -> None:
        super().__init__(message)
        self.what, self.value, self.lr = what, value, lr  # which number, its value, the learning rate


def clip_gradients(model: nn.Module, max_grad_norm: float) -> torch.Tensor:
    """Scale the gradients down to a global norm of ``max_grad_norm`` when they exceed it and return the norm
    measured before; ``max_grad_norm = 0`` turns clipping off (the norm is still measured and returned).
    (``clip_grad_norm_(params, 0)`` itself would zero every gradient, hence ``or inf``.)"""
    return nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))


def check_finite(loss: torch.Tensor, grad_norm: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Raise `TrainingDiverged` (the gradients dropped, the weights untouched) if the loss or the gradient norm
    is NaN or infinite. One device sync."""
    pair = torch.stack([loss.detach().float().reshape(()), grad_norm.detach().float().reshape(())])
    if bool(torch.isfinite(pair).all()):
        return
    optimizer.zero_grad(set_to_none=True)
    what = "loss" if not math.isfinite(float(pair[0])) else "gradient norm"
    value, lr = float(pair[0] if what == "loss" else pair[1]), optimizer.param_groups[0]["lr"]
    raise TrainingDiverged(f"The {what} became {value} (learning rate {lr:.3g})", what=what, value=value, lr=lr)
