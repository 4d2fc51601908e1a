"""Checking bertbook's LoRA against the `peft` library, and AdaLoRA's rank allocation (notebook 09).

`compare_with_peft` copies our LoRA weights into `peft`'s LoRA on the same `transformers` model and reports
the largest difference of the outputs; `adalora_experiment` trains `peft`'s AdaLoRA (Zhang et al. 2023,
"Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning") and reads back where it put its ranks.
`peft` is imported only here, so the rest of the package runs without it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from .config import LORA_TARGETS, Preset
from .efficient import LoRALinear, _targets, count_parameters, lora_layers, merge_lora, unmerge_lora
from .classifier import build_classifier
from .finetune import encode, evaluate_classifier, fine_tune
from .hf import hf_name, to_hf
from .results import comparison_preset, task_data

__all__ = ["peft_target_modules", "peft_lora", "copy_lora_to_peft", "compare_with_peft", "adalora_ranks",
           "adalora_experiment", "plot_ranks"]


def peft_target_modules(model: nn.Module) -> list[str]:
    """The `transformers` names of the Linear layers our LoRA wraps, for ``peft.LoraConfig(target_modules=)``."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    return [hf_name(f"{n}.weight").removesuffix(".weight") for n in names]


def peft_lora(model: nn.Module, r: int, alpha: float, target_modules: list[str], dropout: float = 0.0):
    """The bertbook classifier converted to `transformers` and given `peft`'s LoRA (same targets)."""
    import peft

    config = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=target_modules)
    return peft.get_peft_model(to_hf(model), config)


@torch.no_grad()
def copy_lora_to_peft(ours: nn.Module, theirs: nn.Module) -> int:
    """Copy our A and B (and the classifier) into the `peft` model; returns how many tensors were copied."""
    target = dict(theirs.named_parameters())
    copied = 0
    for name, p in ours.named_parameters():
        if not p.requires_grad:
            continue
        if ".lora_" in name:
            module, which = name.rsplit(".", 1)  # '...query', 'lora_A'
            key = f"base_model.model.{hf_name(module + '.base.weight').removesuffix('.base.weight')}"
            key = f"{key}.{which}.default.weight"
        else:  # the classifier: peft trains a copy of it under modules_to_save
            key = f"base_model.model.{hf_name(name).replace('classifier.', 'classifier.modules_to_save.default.')}"
        target[key].copy_(p)
        copied += 1
    return copied


@torch.no_grad()
def compare_with_peft(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """Our LoRA model against `peft`'s on one batch, with the same weights: trainable counts, and the largest
    logit difference unmerged, merged (ours) and merged (both). ``model`` must have LoRA applied; its
    LoRA B should be non-zero (train a step, or fill it) so that the check means something."""
    layers = lora_layers(model)
    if not layers or any(m.merged for m in layers):
        raise ValueError("compare_with_peft needs an unmerged LoRA model: apply_method(model, Method('lora')).")
    if model.config.layer_norm_position != "post" or getattr(model, "pooling", "cls") != "cls":
        raise ValueError("the check runs peft on transformers' BertForSequenceClassification, which is "
                         "post-LayerNorm and reads the pooled [CLS]: use such a model (MiniLM converted with "
                         "bertbook.hf.from_hf, or a post-LayerNorm config with pooling='cls').")
    r, alpha = layers[0].r, layers[0].alpha
    base_copy = _without_lora(model)
    theirs = peft_lora(base_copy, r, alpha, peft_target_modules(model))
    copy_lora_to_peft(model, theirs)
    counts = {"trainable_ours": count_parameters(model)["trainable"],
              "trainable_peft": sum(p.numel() for p in theirs.parameters() if p.requires_grad)}
    model.eval(), theirs.eval()
    ours_out = model(**batch).logits  # (B, num_labels)
    theirs_out = theirs(**batch).logits
    merge_lora(model)
    ours_merged = model(**batch).logits
    unmerge_lora(model)
    theirs_merged = theirs.merge_and_unload()(**batch).logits  # peft folds B A into W and drops the branch
    return {**counts, "unmerged": float((ours_out - theirs_out).abs().max()),
            "merged_ours": float((ours_merged - theirs_out).abs().max()),
            "merged_both": float((ours_merged - theirs_merged).abs().max())}


def _without_lora(model: nn.Module) -> nn.Module:
    """A copy of the model with every LoRALinear replaced by its base Linear (the frozen pretrained weights)."""
    import copy

    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.base)
    return clone.requires_grad_(True)


def adalora_ranks(peft_model: nn.Module) -> dict[str, list[int]]:
    """The ranks AdaLoRA allocated to each target, by target name, one number per layer (Zhang et al. 2023).

    AdaLoRA writes each update as P diag(lambda) Q (a singular-value form) and, during training, zeroes the
    least important singular values. Its final allocation (``rank_pattern``: which entries of each lambda
    survive) is read when training has fixed it; before that, the non-zero entries of lambda are counted.
    """
    import re

    pattern = peft_model.peft_config["default"].rank_pattern or {}
    kept = {name.removesuffix(".lora_E"): int(sum(mask)) for name, mask in pattern.items()}
    ranks: dict[str, dict[int, int]] = {}
    for name, module in peft_model.named_modules():
        lam = getattr(module, "lora_E", None)
        if not isinstance(lam, nn.ParameterDict) or "default" not in lam:
            continue
        layer = int(re.search(r"layer\.(\d+)\.", name).group(1))
        target = next(t for t, hf in HF_TARGETS.items() if name.endswith(f"{layer}.{hf}"))
        key = next((k for k in kept if name.endswith(k) or k.endswith(name)), None)  # with or without prefixes
        ranks.setdefault(target, {})[layer] = kept[key] if key is not None else int((lam["default"] != 0).sum())
    return {t: [d[i] for i in sorted(d)] for t, d in ranks.items()}


HF_TARGETS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
              "out": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"}


def adalora_experiment(P: Preset, task: str = "sst2", init_r: int = 8, target_r: int = 2,
                       targets: Sequence[str] = LORA_TARGETS, verbose: bool = False) -> dict:
    """Fine-tune MiniLM with `peft`'s AdaLoRA (Zhang et al. 2023) on the comparison's slice of ``task`` and
    return the rank each target ended with in each layer (`adalora_ranks`), the test accuracy and the budget.

    Every target starts at rank ``init_r``; after a warm-up (10% of the steps) the total budget shrinks
    smoothly to ``target_r`` per target on average, taking rank from the updates whose singular values matter
    least (sensitivity times uncertainty), and stays fixed for the last 20% of the steps.
    """
    import re

    import peft


    P = comparison_preset(P)
    model, tokenizer, info = build_classifier(P, "minilm", verbose=False)  # a transformers model
    splits = task_data(P, task)
    L, pad = info["max_length"], tokenizer.pad_token_id or 0
    enc = {k: encode(tokenizer, t, y, L, info["truncation"]) for k, (t, y) in splits.items() if k != "ood"}
    total = math.ceil(len(enc["train"]) / P.finetune.batch_size) * P.finetune.epochs
    pattern = r".*layer\.\d+\.(" + "|".join(re.escape(HF_TARGETS[t]) for t in _targets(tuple(targets))) + ")$"
    config = peft.AdaLoraConfig(task_type=peft.TaskType.SEQ_CLS, init_r=init_r, target_r=target_r,
                                lora_alpha=2 * init_r, target_modules=pattern, total_step=total,
                                modules_to_save=["classifier", "pooler"],  # the [CLS] pooler learns too
                                tinit=max(1, total // 10), tfinal=max(1, total // 5), deltaT=1)
    wrapped = peft.get_peft_model(model, config)
    cfg = replace(P.finetune, learning_rate=P.efficient.lora_learning_rate)
    fine_tune(wrapped, enc["train"], enc["validation"], cfg, pad_id=pad, verbose=verbose,
              after_step=lambda step: wrapped.base_model.update_and_allocate(step))
    test = evaluate_classifier(wrapped, enc["test"], P.finetune.batch_size * 2, pad)
    ranks = adalora_ranks(wrapped)
    return {"ranks": ranks, "accuracy": test["accuracy"], "init_r": init_r, "target_r": target_r,
            "steps": total, "budget": target_r * len(ranks) * len(next(iter(ranks.values()))),
            "total_rank": sum(map(sum, ranks.values()))}


def plot_ranks(ranks: dict[str, list[int]], init_r: int | None = None, ax=None, title: str = "AdaLoRA's final ranks"):
    """Targets (rows) by layer (columns), each cell the rank AdaLoRA left there."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(ranks)
    grid = np.array([ranks[n] for n in names])  # (targets, layers)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.6 * grid.shape[1], 0.8 + 0.4 * len(names)))
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=init_r or grid.max())
    ax.grid(False)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, str(grid[i, j]), ha="center", va="center",
                    color="white" if grid[i, j] > (init_r or grid.max()) / 2 else "black")
    ax.set_xticks(range(grid.shape[1]), [str(j) for j in range(grid.shape[1])])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("layer")
    ax.set_title(title, fontsize=9)
    return ax


