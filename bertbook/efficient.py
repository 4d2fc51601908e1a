"""Fine-tuning a fraction of the weights: LoRA, bottleneck adapters and prefix tuning.

Taught in notebook 09. Full fine-tuning (notebook 06) changes every weight and must save a whole model per
task. The methods here freeze the pretrained encoder and train a few new weights beside it, so that one
frozen base serves many tasks, each stored in a file of kilobytes to a few megabytes:

* **LoRA** (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen linear layer
  W x gets a trainable low-rank update, W x + (alpha / r) B A x, with A (r x d_in), B (d_out x r) and B = 0
  at the start, so training starts from the pretrained function. After training, B A merges into W: no extra
  cost at inference.
* **Bottleneck adapters** (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"): a small
  two-layer network h + W_up f(W_down h) after the attention and after the feed-forward block of every layer,
  W_up = 0 at the start (the identity); the LayerNorms train too, as in the paper.
* **Prefix tuning** (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"):
  trainable key and value vectors prepended in every layer's attention, which every real token may attend to.
  It cannot start from the pretrained function: the prefix takes a share of every softmax from the first step.

Read top to bottom: 1. LoRA; 2. adapters; 3. prefixes; 4. choosing a method, freezing, counting;
5. saving only what was trained (plus a reference to the base) and loading it. The check against the
`peft` library and AdaLoRA's rank allocation (Zhang et al. 2023) are in `bertbook.peft_check`; whole runs
and the comparison table (``scripts/laptop_peft.py``) in `bertbook.results`; peak memory in `bertbook.bench`.

Every method here edits a bertbook model (MiniLM is converted to one with `bertbook.hf.from_hf`), by
replacing modules with wrappers that hold the frozen original: ``model.bert.layers[0].attention.query``
becomes a `LoRALinear` whose ``.base`` is the old layer.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import fused_attention, scaled_dot_product_attention
from .checkpoint import check_files, read_json_file
from .classifier import EFFICIENT_SETTINGS, build_classifier
from .config import LORA_TARGETS, Preset, get_preset
from .registry import sha256_file
from .hf import from_hf
from .utils import jsonable, replace_folder

__all__ = [
    "METHODS", "LoRALinear", "add_lora", "lora_parameters", "merge_lora", "unmerge_lora", "Adapter", "AdaptedAttention",
    "AdaptedFeedForward", "add_adapters", "PrefixAttention", "add_prefix", "Method", "method_from_preset",
    "apply_method", "freeze", "count_parameters", "trainable_state", "save_efficient", "load_efficient",
    "is_efficient", "build_base", "lora_layers",
]

METHODS = ("full", "head", "lora", "adapter", "prefix")  # what fine-tuning trains (see Method)
SETTINGS_NAME = EFFICIENT_SETTINGS  # what a saved folder holds besides the trained weights
WEIGHTS_NAME = "trained.safetensors"
HEAD_MODULES = ("classifier",)  # the task head: always trained, it is new


# ---------------------------------------------------------------------------------------------------------
# 1. LoRA
# ---------------------------------------------------------------------------------------------------------

class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = W x + b + (alpha / r) B A x.

    A (r, d_in) starts as PyTorch's default Linear init (Kaiming-uniform, as in `peft`), B (d_out, r) at zero,
    so the layer computes exactly the base layer until B moves. ``merge()`` adds (alpha / r) B A into W
    (inference then costs nothing extra); ``unmerge()`` takes it out again.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}: r = 1 is the smallest update "
                             f"(try 4 or 8).")
        if r > min(base.in_features, base.out_features):
            raise ValueError(f"LoRA rank r={r} is larger than the layer allows ({base.out_features} x "
                             f"{base.in_features}): a rank above {min(base.in_features, base.out_features)} adds "
                             f"parameters but no expressiveness. Choose a smaller r.")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))  # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))  # (d_out, r): zero, so delta W = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, the (d_out, d_in) change to W."""
        return self.scaling * (self.lora_B @ self.lora_A)  # (d_out, r) @ (r, d_in) -> (d_out, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., d_out): W x + b
        if self.merged:
            return y  # B A is inside W already
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T  # (..., d_in) -> (..., r) -> (..., d_out)
        return y + self.scaling * update

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def _targets(targets: Sequence[str] | str) -> tuple[str, ...]:
    """Target names, checked: 'all' means every Linear layer of every encoder layer."""
    if isinstance(targets, str):
        targets = LORA_TARGETS if targets == "all" else tuple(t.strip() for t in targets.split(",") if t.strip())
    targets = tuple(targets)
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if not targets or unknown:
        raise ValueError(f"unknown LoRA target {', '.join(unknown) or '(none given)'}: choose among "
                         f"{', '.join(LORA_TARGETS)} (query, key, value and out are the attention's "
                         f"projections, fc1 and fc2 the feed-forward layers), or 'all'.")
    return targets


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    bert = getattr(model, "bert", None)
    if bert is None or not hasattr(bert, "layers"):
        raise TypeError(f"expected a bertbook model (with .bert.layers), got {type(model).__name__}. Convert a "
                        f"transformers BERT first: bertbook.hf.from_hf(model).")
    return bert.layers


def _linear_of(layer: nn.Module, target: str) -> tuple[nn.Module, str]:
    """The module holding a target Linear inside one encoder layer, and the Linear's attribute name."""
    attention = getattr(layer.attention, "attention", layer.attention)  # inside a wrapper, if any
    ffn = getattr(layer.ffn, "ffn", layer.ffn)
    return (ffn, target) if target in ("fc1", "fc2") else (attention, target)


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, targets: Sequence[str] | str = ("query", "value"),
             dropout: float = 0.0) -> nn.Module:
    """Replace the ``targets`` Linear layers of every encoder layer by `LoRALinear` (in place; returns the model).

    Freezing the rest is `freeze`'s job (`apply_method` does both).
    """
    for layer in _encoder_layers(model):
        for target in _targets(targets):
            owner, name = _linear_of(layer, target)
            linear = getattr(owner, name)
            if isinstance(linear, LoRALinear):
                raise ValueError(f"{target} already has LoRA: build a fresh model to apply another setting.")
            setattr(owner, name, LoRALinear(linear, r, alpha, dropout))
    return model.train(model.training)  # new modules take the model's mode (eval: no dropout)


def lora_parameters(config, r: int, targets: Sequence[str] | str) -> int:
    """LoRA's new parameters for a model config, from the shapes alone: r (d_in + d_out) per target and layer.

    query, key, value and out are (D x D), fc1 is (D -> FFN) and fc2 (FFN -> D). The widget of notebook 09
    shows this count as the sliders move, before anything is built."""
    D, I = config.hidden_size, config.intermediate_size
    sizes = {"query": 2 * D, "key": 2 * D, "value": 2 * D, "out": 2 * D, "fc1": D + I, "fc2": I + D}
    return config.num_hidden_layers * sum(r * sizes[t] for t in _targets(targets))


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its frozen weight: the model then runs at the base model's speed."""
    for m in lora_layers(model):
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every merged LoRA update out of its weight again (to keep training, or to swap tasks)."""
    for m in lora_layers(model):
        m.unmerge()
    return model


# ---------------------------------------------------------------------------------------------------------
# 2. Bottleneck adapters
# ---------------------------------------------------------------------------------------------------------

class Adapter(nn.Module):
    """h + W_up GELU(W_down h): a bottleneck of width m with a skip connection (Houlsby et al. 2019, fig. 2).

    W_up starts at zero, so a new adapter is the identity and the model starts as the pretrained one.
    """

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        if not isinstance(bottleneck, int) or bottleneck < 1:
            raise ValueError(f"adapter bottleneck width must be a positive integer, got {bottleneck!r} (try 16 to 64).")
        self.down = nn.Linear(hidden_size, bottleneck)  # (D -> m)
        self.up = nn.Linear(bottleneck, hidden_size)  # (m -> D), zero: the identity at the start
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))  # (B, T, D) -> (B, T, m) -> (B, T, D)


class AdaptedAttention(nn.Module):
    """The attention block followed by an adapter, before the residual connection adds it back."""

    def __init__(self, attention: nn.Module, bottleneck: int) -> None:
        super().__init__()
        self.attention = attention
        self.adapter = Adapter(attention.out.out_features, bottleneck)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, output_attentions: bool = False):
        out, weights = self.attention(x, mask, output_attentions)  # (B, T, D), (B, H, T, T) or None
        return self.adapter(out), weights


class AdaptedFeedForward(nn.Module):
    """The feed-forward block followed by an adapter."""

    def __init__(self, ffn: nn.Module, bottleneck: int) -> None:
        super().__init__()
        self.ffn = ffn
        self.adapter = Adapter(ffn.fc2.out_features, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.ffn(x))  # (B, T, D)


def add_adapters(model: nn.Module, bottleneck: int = 32) -> nn.Module:
    """Put an adapter after the attention and after the feed-forward block of every layer (in place)."""
    for layer in _encoder_layers(model):
        if isinstance(layer.attention, (AdaptedAttention, PrefixAttention)):
            raise ValueError("this model's attention is already wrapped: build a fresh model for another method.")
        layer.attention = AdaptedAttention(layer.attention, bottleneck)
        layer.ffn = AdaptedFeedForward(layer.ffn, bottleneck)
    return model.train(model.training)


# ---------------------------------------------------------------------------------------------------------
# 3. Prefix tuning
# ---------------------------------------------------------------------------------------------------------

class PrefixAttention(nn.Module):
    """Self-attention whose keys and values start with P trainable vectors (Li & Liang 2021).

    Every query attends to the P prefix positions and the T real tokens: keys (B, H, P + T, d_k). The prefix
    is never padding, so the mask gets P "may attend" columns in front. The queries are still the T tokens, so
    the output keeps its shape. The weights returned (``output_attentions``) are those over the T real tokens,
    (B, H, T, T) as every attention view expects; each row sums to 1 minus the share that went to the prefix.
    """

    def __init__(self, attention: nn.Module, length: int) -> None:
        super().__init__()
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"prefix length must be a positive integer, got {length!r} (try 4 to 32).")
        self.attention = attention
        D = attention.out.in_features
        self.prefix_key = nn.Parameter(torch.randn(length, D) * 0.02)  # (P, D), all heads at once
        self.prefix_value = nn.Parameter(torch.randn(length, D) * 0.02)  # (P, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, output_attentions: bool = False):
        att, B, P = self.attention, x.size(0), self.prefix_key.size(0)
        q, k, v = att.project_qkv(x)  # each (B, H, T, d_k)
        pk = att.split_heads(self.prefix_key.expand(B, -1, -1))  # (B, P, D) -> (B, H, P, d_k)
        pv = att.split_heads(self.prefix_value.expand(B, -1, -1))  # (B, H, P, d_k)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # (B, H, P + T, d_k)
        if mask is not None:  # (B, 1, 1, T) -> (B, 1, 1, P + T): the prefix may always be attended to
            mask = F.pad(mask, (P, 0), value=True if mask.dtype == torch.bool else 0.0)
        p = att.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:
            heads, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)  # weights (B, H, T, P + T)
            weights = weights[..., P:]  # (B, H, T, T): the real tokens' share
        else:
            heads = fused_attention(q, k, v, mask, dropout_p=p)  # (B, H, T, d_k)
        return att.out(att.merge_heads(heads)), weights  # (B, T, D)


def add_prefix(model: nn.Module, length: int = 16) -> nn.Module:
    """Give every layer's attention ``length`` trainable key/value vectors (in place)."""
    for layer in _encoder_layers(model):
        if isinstance(layer.attention, (AdaptedAttention, PrefixAttention)):
            raise ValueError("this model's attention is already wrapped: build a fresh model for another method.")
        layer.attention = PrefixAttention(layer.attention, length)
    return model.train(model.training)


# ---------------------------------------------------------------------------------------------------------
# 4. Choosing a method, freezing, counting
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """What fine-tuning trains: ``kind`` is one of METHODS, with that kind's settings (the others unused)."""

    kind: str = "lora"
    r: int = 8  # LoRA rank
    alpha: float = 16.0  # LoRA scale alpha (the update is multiplied by alpha / r)
    targets: tuple[str, ...] = ("query", "value")  # LoRA target layers
    dropout: float = 0.0  # LoRA dropout
    bottleneck: int = 32  # adapter width
    prefix_length: int = 16  # prefix vectors per layer

    def __post_init__(self) -> None:
        if self.kind not in METHODS:
            raise ValueError(f"unknown method {self.kind!r}: choose one of {', '.join(METHODS)}.")
        if self.kind == "lora":
            object.__setattr__(self, "targets", _targets(self.targets))
            if not isinstance(self.r, int) or self.r < 1:
                raise ValueError(f"LoRA rank must be a positive integer, got {self.r!r} (--lora-r 8, say).")
            if not self.alpha > 0:
                raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r} (often 2 r).")

    @property
    def label(self) -> str:
        """A short name for tables and plots: 'LoRA r=8 (query,value)', 'adapters m=32', ..."""
        if self.kind == "lora":
            return f"LoRA r={self.r} ({','.join(self.targets)})"
        return {"full": "full fine-tuning", "head": "head only", "adapter": f"adapters m={self.bottleneck}",
                "prefix": f"prefix P={self.prefix_length}"}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}


def method_from_preset(P: Preset, kind: str, **changes: Any) -> Method:
    """The preset's settings for ``kind`` (``P.efficient``), with keyword changes (``r=4``)."""
    e = P.efficient
    return Method(kind=kind, **{"r": e.lora_r, "alpha": e.lora_alpha, "targets": e.lora_targets,
                                "dropout": e.lora_dropout, "bottleneck": e.adapter_size,
                                "prefix_length": e.prefix_length, **changes})


def freeze(model: nn.Module, train_names: Callable[[str], bool]) -> nn.Module:
    """requires_grad only for the parameters whose name ``train_names`` accepts."""
    for name, p in model.named_parameters():
        p.requires_grad_(bool(train_names(name)))
    return model


def _is_head(name: str) -> bool:
    return name.split(".")[0] in HEAD_MODULES


def apply_method(model: nn.Module, method: Method) -> nn.Module:
    """Add the method's weights to a bertbook classifier and freeze everything it does not train.

    full: everything trains. head: only the classifier. lora: the LoRA matrices and the classifier (as
    `peft` does for sequence classification). adapter: the adapters, every LayerNorm (Houlsby et al.) and the
    classifier. prefix: the prefixes and the classifier.
    """
    if method.kind == "lora":
        add_lora(model, method.r, method.alpha, method.targets, method.dropout)
        return freeze(model, lambda n: _is_head(n) or ".lora_" in n)
    if method.kind == "adapter":
        add_adapters(model, method.bottleneck)
        return freeze(model, lambda n: _is_head(n) or ".adapter." in n or "norm" in n.split(".")[-2])
    if method.kind == "prefix":
        add_prefix(model, method.prefix_length)
        return freeze(model, lambda n: _is_head(n) or ".prefix_" in n)
    if method.kind == "head":
        return freeze(model, _is_head)
    return freeze(model, lambda n: True)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable": ..., "total": ...}``; total counts frozen and new weights together."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in params)}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors fine-tuning changed (requires_grad), by name: all that must be saved."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------------------
# 5. Saving what was trained, with a reference to the base
# ---------------------------------------------------------------------------------------------------------

def base_reference(info: dict) -> dict:
    """How to find the frozen base again: MiniLM, or a pretraining checkpoint folder and its checksum."""
    if info.get("init") == "minilm":
        return {"init": "minilm"}
    if info.get("init") == "random":
        raise ValueError("a model fine-tuned from random weights has no base to refer to: save it whole with "
                         "classifier.save_finetuned, or fine-tune from --init pretrained|minilm|CHECKPOINT.")
    folder = Path(info["checkpoint"])
    return {"init": "checkpoint", "checkpoint": str(folder.resolve()),
            "sha256": sha256_file(folder / "model.safetensors")}


def save_efficient(out: str | os.PathLike, model: nn.Module, info: dict, method: Method,
                   overwrite: bool = False) -> Path:
    """Save only the trained tensors (``trained.safetensors``) and ``efficient.json`` (method, base, info).

    Written to a temporary folder and renamed into place; a folder with files is replaced only with
    ``overwrite=True``. The tokenizer is the base's and is not copied.
    """
    import tempfile

    from safetensors.torch import save_file

    out = Path(out)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} already holds files; choose another --out, or pass --overwrite "
                              f"(overwrite=True) to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"method": method.to_dict(), "base": base_reference(info), "info": info,
                "parameters": count_parameters(model)}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent, ignore_cleanup_errors=True) as tmp:
        save_file(trainable_state(model), str(Path(tmp) / WEIGHTS_NAME), metadata={"format": "pt"})
        (Path(tmp) / SETTINGS_NAME).write_text(json.dumps(settings, indent=2, default=jsonable) + "\n")
        replace_folder(tmp, out)  # the finished folder takes the old one's place by renames
    return out


def is_efficient(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a model saved by `save_efficient`."""
    return (Path(folder) / SETTINGS_NAME).is_file()


def build_base(P: Preset, init: str | os.PathLike, verbose: bool = False) -> tuple[nn.Module, Any, dict]:
    """`classifier.build_classifier`, with MiniLM converted to a bertbook model so that every method applies."""
    model, tokenizer, info = build_classifier(P, init, verbose=verbose)
    if info["kind"] == "transformers":
        device = next(model.parameters()).device
        model = from_hf(model).to(device)
        model.pooling = P.finetune.pooling  # the converted classifier reads the text vector the preset asks for
        info.update(kind="bertbook", base_kind="transformers")  # the same network, with bertbook's module names
    info["pooling"] = model.pooling
    return model, tokenizer, info


def load_efficient(folder: str | os.PathLike) -> tuple[nn.Module, Any, dict]:
    """Rebuild the base, apply the saved method and load the trained tensors: ``(model, tokenizer, info)``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    remedy = f"Fine-tune it again (python -m bertbook finetune ... --peft METHOD --out {folder} --overwrite)."
    check_files(folder, [SETTINGS_NAME, WEIGHTS_NAME], remedy)
    settings = read_json_file(folder / SETTINGS_NAME, remedy)
    info, base = settings["info"], settings["base"]
    P = get_preset(info["preset"], **{"finetune.pooling": info["pooling"]})
    if base["init"] == "checkpoint":
        ckpt = Path(base["checkpoint"])
        if not (ckpt / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"{folder} holds only the weights trained on top of the base model {ckpt}, which is missing. "
                f"Put that pretraining checkpoint back (notebook 05, or python -m bertbook pretrain --preset "
                f"{P.name} --out {ckpt.parent}), then fine-tune again: a new pretraining run is another base.")
        if sha256_file(ckpt / "model.safetensors") != base["sha256"]:
            raise ValueError(f"The base model {ckpt} has changed since {folder} was trained on it (its checksum "
                             f"differs), so the trained weights no longer fit it. Fine-tune again on the new base.")
        init: str | Path = ckpt
    else:
        init = "minilm"
    model, tokenizer, _ = build_base(P, init)
    apply_method(model, Method(**{**settings["method"], "targets": tuple(settings["method"]["targets"])}))
    state = load_file(str(folder / WEIGHTS_NAME))
    expected = set(trainable_state(model))
    if set(state) != expected:
        raise ValueError(f"{folder / WEIGHTS_NAME} does not match its method: {sorted(set(state) ^ expected)[:4]} "
                         f"differ. {remedy}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    return model.eval(), tokenizer, info
