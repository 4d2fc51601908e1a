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
5. saving only what was trained (plus a reference to the base) and loading it; 6. the check against the
`peft` library and AdaLoRA's rank allocation (Zhang et al. 2023); 7. peak memory on a CPU; 8. whole runs
and the comparison table (``scripts/laptop_peft.py``).

Every method here edits a bertbook model (MiniLM is converted to one with `bertbook.hf.from_hf`), by
replacing modules with wrappers that hold the frozen original: ``model.bert.layers[0].attention.query``
becomes a `LoRALinear` whose ``.base`` is the old layer.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import fused_attention, scaled_dot_product_attention
from .config import LORA_TARGETS, Preset

__all__ = [
    "METHODS", "LoRALinear", "add_lora", "lora_parameters", "merge_lora", "unmerge_lora", "Adapter", "AdaptedAttention",
    "AdaptedFeedForward", "add_adapters", "PrefixAttention", "add_prefix", "Method", "method_from_preset",
    "apply_method", "freeze", "count_parameters", "trainable_state", "save_efficient", "load_efficient",
    "is_efficient", "peft_target_modules", "peft_lora", "copy_lora_to_peft", "compare_with_peft",
    "adalora_ranks", "adalora_experiment", "plot_ranks", "PeakRSS", "run_efficient", "comparison_methods",
    "comparison_row", "render_comparison",
]

METHODS = ("full", "head", "lora", "adapter", "prefix")  # what fine-tuning trains (see Method)
SETTINGS_NAME = "efficient.json"  # what a saved folder holds besides the trained weights
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

def _file_sha256(path: Path) -> str:
    from .data import _sha256

    return _sha256(path)


def base_reference(info: dict) -> dict:
    """How to find the frozen base again: MiniLM, or a pretraining checkpoint folder and its checksum."""
    if info.get("init") == "minilm":
        return {"init": "minilm"}
    if info.get("init") == "random":
        raise ValueError("a model fine-tuned from random weights has no base to refer to: save it whole with "
                         "finetune.save_finetuned, or fine-tune from --init pretrained|minilm|CHECKPOINT.")
    folder = Path(info["checkpoint"])
    return {"init": "checkpoint", "checkpoint": str(folder.resolve()),
            "sha256": _file_sha256(folder / "model.safetensors")}


def save_efficient(out: str | os.PathLike, model: nn.Module, info: dict, method: Method,
                   overwrite: bool = False) -> Path:
    """Save only the trained tensors (``trained.safetensors``) and ``efficient.json`` (method, base, info).

    Written to a temporary folder and renamed into place; a folder with files is replaced only with
    ``overwrite=True``. The tokenizer is the base's and is not copied.
    """
    import tempfile

    from safetensors.torch import save_file

    from .utils import replace_folder

    out = Path(out)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} already holds files; choose another --out, or pass --overwrite "
                              f"(overwrite=True) to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"method": method.to_dict(), "base": base_reference(info), "info": info,
                "parameters": count_parameters(model)}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-", dir=out.parent, ignore_cleanup_errors=True) as tmp:
        save_file(trainable_state(model), str(Path(tmp) / WEIGHTS_NAME), metadata={"format": "pt"})
        (Path(tmp) / SETTINGS_NAME).write_text(json.dumps(settings, indent=2, default=_jsonable) + "\n")
        replace_folder(tmp, out)  # the finished folder takes the old one's place by renames
    return out


def is_efficient(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a model saved by `save_efficient`."""
    return (Path(folder) / SETTINGS_NAME).is_file()


def _jsonable(x: Any) -> Any:
    from .finetune import jsonable

    return jsonable(x)


def build_base(P: Preset, init: str | os.PathLike, verbose: bool = False) -> tuple[nn.Module, Any, dict]:
    """`finetune.build_classifier`, with MiniLM converted to a bertbook model so that every method applies."""
    from .finetune import build_classifier
    from .hf import from_hf

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

    from .config import get_preset
    from .checkpoint import check_files, read_json_file

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
        if _file_sha256(ckpt / "model.safetensors") != base["sha256"]:
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


# ---------------------------------------------------------------------------------------------------------
# 6. Checking against peft; AdaLoRA's rank allocation
# ---------------------------------------------------------------------------------------------------------

def peft_target_modules(model: nn.Module) -> list[str]:
    """The `transformers` names of the Linear layers our LoRA wraps, for ``peft.LoraConfig(target_modules=)``."""
    from .hf import hf_name

    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    return [hf_name(f"{n}.weight").removesuffix(".weight") for n in names]


def peft_lora(model: nn.Module, r: int, alpha: float, target_modules: list[str], dropout: float = 0.0):
    """The bertbook classifier converted to `transformers` and given `peft`'s LoRA (same targets)."""
    import peft

    from .hf import to_hf

    config = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=target_modules)
    return peft.get_peft_model(to_hf(model), config)


@torch.no_grad()
def copy_lora_to_peft(ours: nn.Module, theirs: nn.Module) -> int:
    """Copy our A and B (and the classifier) into the `peft` model; returns how many tensors were copied."""
    from .hf import hf_name

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

    from .finetune import build_classifier, encode, evaluate_classifier, fine_tune, task_data

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


# ---------------------------------------------------------------------------------------------------------
# 7. Measuring: peak memory
# ---------------------------------------------------------------------------------------------------------

class PeakRSS:
    """Peak resident memory (RSS) of this process while the block runs, sampled every ``every_s`` seconds.

    ``with PeakRSS() as mem: ...`` then ``mem.peak_mb`` (the highest RSS seen) and ``mem.extra_mb`` (that
    peak minus the RSS at the start: what the block needed on top). RSS counts everything the process holds
    (Python, torch, the data), not only tensors; freed memory the allocator keeps is still counted.
    """

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.start_mb = self.peak_mb = 0.0
        self._stop = None

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:  # not Linux: the lifetime peak is the best we can read
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> "PeakRSS":
        import threading

        self.start_mb = self.peak_mb = self.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())

    @property
    def extra_mb(self) -> float:
        return self.peak_mb - self.start_mb


# ---------------------------------------------------------------------------------------------------------
# 8. Whole runs and the comparison table
# ---------------------------------------------------------------------------------------------------------

def learning_rate(P: Preset, info: dict, method: Method) -> float:
    """Peak learning rate for a method: full fine-tuning keeps notebook 06's rate for its starting point; the
    others train few, freshly started weights and take larger rates (``P.efficient``)."""
    from .finetune import learning_rate_for

    e = P.efficient
    if method.kind == "full":
        return learning_rate_for(P.finetune, {**info, "kind": info.get("base_kind", info["kind"])})
    return {"head": e.head_learning_rate, "lora": e.lora_learning_rate, "adapter": e.adapter_learning_rate,
            "prefix": e.prefix_learning_rate}[method.kind]


def comparison_preset(P: Preset) -> Preset:
    """The preset with the comparison's sizes (``P.efficient.train_examples``, ``val_examples``, ``test_examples``)
    and mean pooling: a frozen encoder must hand the head a useful text vector, and neither ours (pretrained by
    MLM alone, notebook 06) nor all-MiniLM-L6-v2 (trained as a mean-pooled sentence encoder, Reimers & Gurevych
    2019) has trained its [CLS] pooler for it."""
    e = P.efficient
    return P.override(**{"finetune.train_examples": e.train_examples, "finetune.val_examples": e.val_examples,
                         "finetune.test_examples": e.test_examples, "finetune.pooling": "mean"})


def run_efficient(P: Preset, task: str, init: str | os.PathLike, method: Method, *, data: dict | None = None,
                  out: str | os.PathLike | None = None, overwrite: bool = False, tracker=None,
                  verbose: bool = True) -> dict:
    """Fine-tune with ``method`` and measure it: test accuracy, trainable and total parameters, seconds per
    epoch (training and validation), peak memory while training (RSS above its start, `PeakRSS`) and the size
    of what must be saved. Taught in
    notebook 09; the ``finetune --peft`` command runs it. Returns the record; the run's objects (model,
    tokenizer, info, the `FineTuneResult`) are in ``record["_run"]``."""
    from . import data as data_lib
    from .course import machine, set_seed
    from .finetune import encode, evaluate_classifier, fine_tune, task_data

    set_seed(P.finetune.seed)
    splits = dict(data if data is not None else task_data(P, task))
    splits.pop("ood", None)  # the comparison tests in domain only
    model, tokenizer, info = build_base(P, init, verbose=False)
    apply_method(model, method)
    info.update(task=task, label_names=list(data_lib.label_names(task)), method=method.to_dict())
    L, pad = info["max_length"], tokenizer.pad_token_id or 0
    enc = {k: encode(tokenizer, t, y, L, info["truncation"]) for k, (t, y) in splits.items()}
    cfg = replace(P.finetune, learning_rate=learning_rate(P, info, method))
    with PeakRSS() as mem:  # training only: gradients, optimizer state, activations
        result = fine_tune(model, enc["train"], enc["validation"], cfg, pad_id=pad, verbose=verbose, tracker=tracker)
    test = evaluate_classifier(model, enc["test"], P.finetune.batch_size * 2, pad)
    counts = count_parameters(model)
    record = {"task": task, "model": info["init"], "method": method.kind, "label": method.label,
              "preset": P.name, "seed": P.finetune.seed, "train_examples": len(enc["train"]), "max_length": L,
              "epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "pooling": info["pooling"], **counts,
              "accuracy": test["accuracy"], "f1": test["f1"], "val_accuracy": result.best["val_accuracy"],
              "test_examples": test["n"], "seconds_per_epoch": round(result.seconds / cfg.epochs, 1),
              "seconds": round(result.seconds, 1), "peak_rss_mb": round(mem.peak_mb),
              "extra_rss_mb": round(mem.extra_mb), "saved_bytes": _saved_bytes(model), "machine": machine()}
    info["metrics"] = {k: v for k, v in record.items()}
    if out is not None and method.kind != "full" and info["init"] != "random":
        record["path"] = str(save_efficient(out, model, info, method, overwrite=overwrite))
    record["_run"] = {"model": model, "tokenizer": tokenizer, "info": info, "result": result}
    return record


def _saved_bytes(model: nn.Module) -> int:
    """Bytes of the safetensors file that holds the trained tensors (what each task must store)."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        save_file(trainable_state(model), f"{d}/w.safetensors")
        return os.path.getsize(f"{d}/w.safetensors")


def comparison_methods(P: Preset) -> list[Method]:
    """The comparison's rows: full, head only, LoRA at ``P.efficient.lora_ranks`` (alpha = 2 r), adapters, prefix."""
    lora = [method_from_preset(P, "lora", r=r, alpha=2.0 * r) for r in P.efficient.lora_ranks]
    return [method_from_preset(P, "full"), method_from_preset(P, "head"), *lora,
            method_from_preset(P, "adapter"), method_from_preset(P, "prefix")]


def comparison_row(P: Preset, task: str, init: str, method: Method, seeds: int | None = None,
                   data: dict | None = None, verbose: bool = False) -> dict:
    """One row of the comparison: ``seeds`` runs on the same examples, mean and spread (`summarize_seeds`)."""
    from .finetune import summarize_seeds, task_data

    P = comparison_preset(P)
    data = data if data is not None else task_data(P, task)
    runs = []
    for k in range(seeds or P.efficient.seeds):
        rec = run_efficient(P.override(**{"finetune.seed": P.finetune.seed + k}), task, init, method, data=data,
                            verbose=verbose)
        rec.pop("_run")
        runs.append(rec)
        if verbose:
            print(f"    {method.label}, seed {rec['seed']}: test accuracy {rec['accuracy']:.3f}", flush=True)
    row = summarize_seeds(runs)
    row["seconds_per_epoch"] = round(sum(r["seconds_per_epoch"] for r in runs) / len(runs), 1)
    for key in ("peak_rss_mb", "extra_rss_mb"):  # the first run's is the largest: later ones reuse freed memory
        row[key] = max(r[key] for r in runs)
    row["runs"] = [{**r0, "seconds_per_epoch": r["seconds_per_epoch"], "extra_rss_mb": r["extra_rss_mb"]}
                   for r0, r in zip(row["runs"], runs)]
    return row


def render_comparison(rows: Sequence[dict]) -> str:
    """The comparison as a markdown table."""
    lines = ["| task | model | method | trainable | of total | test accuracy | s / epoch | extra RSS | saved |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = f" ± {100 * r['accuracy_std']:.1f}" if r.get("accuracy_std") is not None else ""
        lines.append(f"| {r['task']} | {r['model']} | {r['label']} | {r['trainable']:,} "
                     f"| {100 * r['trainable'] / r['total']:.2f}% | {100 * r['accuracy']:.1f}%{spread} "
                     f"| {r['seconds_per_epoch']:.0f} | {r['extra_rss_mb']:.0f} MB | {_size(r['saved_bytes'])} |")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"
