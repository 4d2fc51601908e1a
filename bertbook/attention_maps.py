"""Attention maps out of a model, and what each head does with them.

Taught in notebook 07. Read top to bottom in two parts:

1. **Attention out of a model.** ``attention_data(model, tokenizer, text, text_pair=None)`` runs a bertbook
   model or a ``transformers`` BERT (loaded with ``attn_implementation="eager"``) on one text and returns an
   ``AttentionData``: the tokens, the weights ``(L, H, T, T)`` and, on request, every head's queries and keys.
   ``as_attentions`` turns any of the usual forms into ``(L, H, T, T)``; ``check_index`` says when a layer or
   head does not exist.
2. **What heads do**, after Clark et al. 2019 ("What Does BERT Look At? An Analysis of BERT's Attention"):
   ``cls_rows``, ``head_stats`` (entropy and mean distance), ``head_scores`` and ``classify_heads``
   (mostly to [CLS], to [SEP], previous token, next token, itself, broad, or mixed), ``class_fractions`` and
   ``attention_change`` (the same heads before and after fine-tuning).

Every analysis function takes the weights in any of the usual forms: an ``AttentionData``, a tensor
``(L, H, T, T)``, or the per-layer tuple a model returns (each ``(1, H, T, T)``). The pictures of all this
are in :mod:`bertbook.viz` (matplotlib) and :mod:`bertbook.views` (bertviz's interactive views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .model import attention_modules
from .utils import device_of, eval_mode

__all__ = [
    "AttentionData",
    "attention_data",
    "as_attentions",
    "check_index",
    "cls_rows",
    "HeadStats",
    "head_stats",
    "HEAD_CLASSES",
    "head_scores",
    "HeadClasses",
    "classify_heads",
    "class_fractions",
    "attention_change",
]


# ----------------------------------------------------------------------------------------------------------
# 1. Attention out of a model
# ----------------------------------------------------------------------------------------------------------

@dataclass
class AttentionData:
    """Attention of one model on one text (or sentence pair).

    ``attentions`` is ``(L, H, T, T)``: layer, head, query position (row), key position (column); each row
    sums to 1. ``queries`` and ``keys`` are ``(L, H, T, d_k)`` when requested (the neuron view needs them).
    """

    tokens: list[str]
    attentions: torch.Tensor  # (L, H, T, T)
    sentence_b_start: int | None = None  # index of the first token of sentence B, for a pair
    queries: torch.Tensor | None = None  # (L, H, T, d_k)
    keys: torch.Tensor | None = None  # (L, H, T, d_k)
    name: str = ""  # which model, for titles

    def __post_init__(self) -> None:
        a = self.attentions
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attentions must be (layers, heads, T, T), got shape {tuple(a.shape)}.")
        if a.shape[-1] != len(self.tokens):
            raise ValueError(f"attentions cover {a.shape[-1]} positions but there are {len(self.tokens)} "
                             f"tokens: pass the tokens the model saw.")

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]


def _is_transformers_model(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def _queries_keys_transformers(model: Any, hidden_states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Queries and keys of a transformers BERT, each (L, H, T, d_k), from each layer's input."""
    encoder = model.base_model.encoder
    queries, keys = [], []
    for layer, x in zip(encoder.layer, hidden_states):  # x: (1, T, hidden), the input of this layer
        attn = layer.attention.self
        B, T, _ = x.shape
        H, d_k = attn.num_attention_heads, attn.attention_head_size
        queries.append(attn.query(x).view(B, T, H, d_k).transpose(1, 2)[0])  # (H, T, d_k)
        keys.append(attn.key(x).view(B, T, H, d_k).transpose(1, 2)[0])  # (H, T, d_k)
    return torch.stack(queries), torch.stack(keys)  # (L, H, T, d_k) each


def _queries_keys_bertbook(model: Any, hidden_states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Queries and keys of a bertbook model, each (L, H, T, d_k), via ``attention_modules``."""
    queries, keys = [], []
    for layer, module, x in zip(model.bert.layers, attention_modules(model), hidden_states):  # x: (1, T, hidden)
        if getattr(layer, "pre_norm", False):  # pre-LayerNorm: the attention reads the normalised stream
            x = layer.attention_norm(x)
        q, k, _ = module.project_qkv(x)  # each (1, H, T, d_k)
        queries.append(q[0])
        keys.append(k[0])
    return torch.stack(queries), torch.stack(keys)  # (L, H, T, d_k) each


def attention_data(model: Any, tokenizer: Any, text: str, text_pair: str | None = None, *,
                   queries_and_keys: bool = False, max_length: int | None = None,
                   name: str = "") -> AttentionData:
    """Run ``model`` on ``text`` (and ``text_pair``) and collect its attention (notebook 07).

    Works for bertbook models (any head) and ``transformers`` BERT models loaded with
    ``attn_implementation="eager"``. The text is truncated to ``max_length`` tokens (default: the model's
    position table). With ``queries_and_keys=True`` the queries and keys of every head are computed from each
    layer's input, as the layer itself does.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("attention_data needs a non-empty text, e.g. 'The cat sat on the mat.'")
    limit = max_length or getattr(model.config, "max_position_embeddings", 512)
    enc = tokenizer(text, text_pair, return_tensors="pt", truncation=True, max_length=limit)
    device = device_of(model)
    batch = {k: enc[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    with eval_mode(model), torch.no_grad():
        out = model(**batch, output_attentions=True, output_hidden_states=queries_and_keys)
        if not out.attentions or out.attentions[0] is None:
            raise ValueError("The model returned no attention weights. Load transformers models with "
                             "attn_implementation='eager' (the default 'sdpa' keeps no weights).")
        attentions = torch.stack([a[0] for a in out.attentions]).float().cpu()  # L x (H, T, T) -> (L, H, T, T)
        queries = keys = None
        if queries_and_keys:
            layer_inputs = out.hidden_states[:-1]  # the input of layer i is hidden_states[i]
            if _is_transformers_model(model):
                queries, keys = _queries_keys_transformers(model, layer_inputs)
            else:
                queries, keys = _queries_keys_bertbook(model, layer_inputs)
            queries, keys = queries.float().cpu(), keys.float().cpu()
    ids = enc["input_ids"][0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    sentence_b_start = None
    if text_pair is not None:  # the first token that belongs to the second text
        which = enc.sequence_ids(0)  # per token: 0, 1, or None for special tokens
        sentence_b_start = which.index(1) if 1 in which else None
    return AttentionData(tokens=tokens, attentions=attentions, sentence_b_start=sentence_b_start,
                         queries=queries, keys=keys, name=name or type(model).__name__)


def as_attentions(x: Any) -> torch.Tensor:
    """AttentionData, (L, H, T, T) tensor/array, or a per-layer tuple of (1, H, T, T) -> (L, H, T, T)."""
    if isinstance(x, AttentionData):
        return x.attentions
    if isinstance(x, (list, tuple)):
        layers = [torch.as_tensor(a) for a in x]
        layers = [a[0] if a.dim() == 4 else a for a in layers]  # drop the batch axis of (1, H, T, T)
        x = torch.stack(layers)  # (L, H, T, T)
    a = torch.as_tensor(x).float()
    if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"Expected attention weights (layers, heads, T, T), got shape {tuple(a.shape)}. "
                         f"For a batch, pick one example: [a[i] for a in out.attentions].")
    return a


def check_index(kind: str, value: int | None, count: int) -> None:
    """Raise ValueError, saying which exist, when ``value`` (a layer or head number) is not in 0..count-1."""
    if value is not None and not 0 <= value < count:
        raise ValueError(f"{kind} {value} does not exist: this model has {count} {kind}s (0 to {count - 1}).")


# ----------------------------------------------------------------------------------------------------------
# 2. What heads do (after Clark et al. 2019)
# ----------------------------------------------------------------------------------------------------------

def cls_rows(attentions: Any) -> torch.Tensor:
    """How the [CLS] token (position 0) spreads its attention over the tokens: ``(L, H, T)``, each row sums to
    1 (notebook 07). A classifier reads the [CLS] vector, so this is what the last layers feed it."""
    a = as_attentions(attentions)  # (L, H, T, T)
    return a[:, :, 0, :]  # (L, H, T): the query row of position 0


@dataclass
class HeadStats:
    """Per-head summaries, each ``(L, H)``, averaged over the query positions (notebook 07)."""

    entropy: torch.Tensor  # mean entropy of a query's attention, in nats (0 = one token, log T = uniform)
    normalized_entropy: torch.Tensor  # entropy / log T, in [0, 1]: 1 means uniform, "broad" attention
    mean_distance: torch.Tensor  # mean |i - j| weighted by attention: how far a head looks, in tokens


def head_stats(attentions: Any) -> HeadStats:
    """Entropy and mean attention distance of every head (notebook 07; Clark et al. 2019, section 3).

    For query i with attention row p_i: entropy H_i = -sum_j p_ij log p_ij and distance D_i = sum_j p_ij |i - j|;
    both are averaged over the queries.
    """
    a = as_attentions(attentions)  # (L, H, T, T)
    T = a.shape[-1]
    p = a.clamp_min(1e-12)
    entropy = -(a * p.log()).sum(-1).mean(-1) + 0.0  # (L, H, T) -> (L, H); + 0.0 turns -0.0 into 0.0
    pos = torch.arange(T, dtype=a.dtype)
    distance = (pos[:, None] - pos[None, :]).abs()  # (T, T): |i - j|
    mean_distance = (a * distance).sum(-1).mean(-1)  # (L, H, T) -> (L, H)
    normalized = entropy / math.log(T) if T > 1 else torch.zeros_like(entropy)
    return HeadStats(entropy=entropy, normalized_entropy=normalized, mean_distance=mean_distance)


# The behaviours Clark et al. 2019 found in BERT's heads. A head gets the first "target" class whose average
# attention share reaches `threshold`; otherwise "broad" if its normalized entropy reaches `broad_entropy`;
# otherwise "mixed".
HEAD_CLASSES: tuple[str, ...] = ("[CLS]", "[SEP]", "previous", "next", "self", "broad", "mixed")
_TARGETS = HEAD_CLASSES[:5]


def head_scores(data: AttentionData, cls_token: str = "[CLS]", sep_token: str = "[SEP]") -> dict[str, torch.Tensor]:
    """For every head, the average share of a query's attention that goes to each target (notebook 07).

    Returns name -> ``(L, H)``: "[CLS]" and "[SEP]" (all positions holding that token), "previous" (i - 1,
    averaged over queries that have one), "next" (i + 1), "self" (i), and "broad" (normalized entropy).
    """
    a = as_attentions(data)  # (L, H, T, T)
    T = a.shape[-1]
    is_cls = torch.tensor([t == cls_token for t in data.tokens])
    is_sep = torch.tensor([t == sep_token for t in data.tokens])
    scores = {
        "[CLS]": a[..., is_cls].sum(-1).mean(-1),  # (L, H, T, #cls) -> (L, H)
        "[SEP]": a[..., is_sep].sum(-1).mean(-1),  # (L, H, T, #sep) -> (L, H)
        "self": a.diagonal(dim1=-2, dim2=-1).mean(-1),  # (L, H, T) -> (L, H)
    }
    if T > 1:
        scores["previous"] = a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # a[i, i-1], (L, H, T-1) -> (L, H)
        scores["next"] = a.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1)  # a[i, i+1], (L, H, T-1) -> (L, H)
    else:
        scores["previous"] = scores["next"] = torch.zeros_like(scores["self"])
    scores["broad"] = head_stats(a).normalized_entropy
    return {name: scores[name] for name in (*_TARGETS, "broad")}


@dataclass
class HeadClasses:
    """What each head mostly does: ``labels[layer][head]`` is one of ``HEAD_CLASSES`` (notebook 07)."""

    labels: list[list[str]]
    scores: dict[str, torch.Tensor]  # name -> (L, H), averaged over the texts
    threshold: float
    broad_entropy: float
    name: str = ""

    def count(self) -> dict[str, int]:
        """How many heads fall in each class."""
        flat = [label for row in self.labels for label in row]
        return {c: flat.count(c) for c in HEAD_CLASSES}

    def table(self) -> str:
        """A text table: one row per head with its class and its scores."""
        lines = [f"{'head':<7}{'class':<10}" + "".join(f"{n:>10}" for n in self.scores)]
        for layer, row in enumerate(self.labels):
            for head, label in enumerate(row):
                values = "".join(f"{float(s[layer, head]):>10.2f}" for s in self.scores.values())
                lines.append(f"{f'L{layer} H{head}':<7}{label:<10}{values}")
        return "\n".join(lines)


def classify_heads(data: AttentionData | Sequence[AttentionData], *, threshold: float = 0.5,
                   broad_entropy: float = 0.8, cls_token: str = "[CLS]", sep_token: str = "[SEP]") -> HeadClasses:
    """Name what each head mostly does, averaged over one or more texts (notebook 07).

    After Clark et al. 2019: a head is "[CLS]", "[SEP]", "previous", "next" or "self" when on average at
    least ``threshold`` (default 0.5, the paper's "more than half") of a query's attention goes there (the
    largest share wins); otherwise "broad" when its attention entropy is at least ``broad_entropy`` (default
    0.8) of the uniform distribution's; otherwise "mixed". Averaging over several texts (the paper used 1000
    segments) makes the labels less dependent on one sentence.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a share of attention in (0, 1], got {threshold}.")
    if not 0.0 < broad_entropy <= 1.0:
        raise ValueError(f"broad_entropy is a fraction of the uniform entropy in (0, 1], got {broad_entropy}.")
    items = [data] if isinstance(data, AttentionData) else list(data)
    if not items:
        raise ValueError("classify_heads needs at least one AttentionData.")
    shapes = {tuple(d.attentions.shape[:2]) for d in items}
    if len(shapes) != 1:
        raise ValueError(f"All texts must come from one model; got layer x head shapes {sorted(shapes)}.")
    per_text = [head_scores(d, cls_token, sep_token) for d in items]
    scores = {k: torch.stack([s[k] for s in per_text]).mean(0) for k in per_text[0]}  # (N, L, H) -> (L, H)
    target = torch.stack([scores[k] for k in _TARGETS])  # (5, L, H)
    best, which = target.max(0)  # (L, H) each
    L, H = best.shape
    labels = []
    for layer in range(L):
        row = []
        for head in range(H):
            if best[layer, head] >= threshold:
                row.append(_TARGETS[int(which[layer, head])])
            elif scores["broad"][layer, head] >= broad_entropy:
                row.append("broad")
            else:
                row.append("mixed")
        labels.append(row)
    return HeadClasses(labels=labels, scores=scores, threshold=threshold, broad_entropy=broad_entropy,
                       name=items[0].name)


def class_fractions(classes: dict[str, HeadClasses]) -> dict[str, dict[str, float]]:
    """Model name -> class -> fraction of its heads; models of different sizes become comparable (notebook 07)."""
    out = {}
    for name, c in classes.items():
        counts = c.count()
        total = sum(counts.values())
        out[name] = {k: v / total for k, v in counts.items()}
    return out


def attention_change(before: Any, after: Any) -> torch.Tensor:
    """How much each head's attention moved between two models on the same tokens, e.g. before and after
    fine-tuning: the total variation distance 0.5 * sum_j |p_ij - q_ij| averaged over queries i, ``(L, H)``
    in [0, 1] (0: identical, 1: disjoint). Notebook 07; Kovaleva et al. 2019 make the same comparison."""
    a, b = as_attentions(before), as_attentions(after)
    if a.shape != b.shape:
        raise ValueError(f"Compare attention of the same architecture on the same tokens: shapes {tuple(a.shape)} "
                         f"and {tuple(b.shape)} differ (same tokenizer and text for both models?).")
    if isinstance(before, AttentionData) and isinstance(after, AttentionData) and before.tokens != after.tokens:
        raise ValueError("The two AttentionData hold different tokens: use the same tokenizer and text.")
    return 0.5 * (a - b).abs().sum(-1).mean(-1)  # (L, H, T, T) -> (L, H)
