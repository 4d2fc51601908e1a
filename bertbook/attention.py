"""Scaled dot-product attention, padding masks and multi-head self-attention.

Taught in notebook 02. The formula (Vaswani et al. 2017, "Attention Is All You Need"):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

where d_k is the width of one head's queries and keys (hidden_size / num_attention_heads), *not* the
number of heads. Dividing by sqrt(d_k) keeps the dot products at unit variance whatever the head width,
so the softmax does not saturate (notebook 02 shows it numerically).

Two paths compute the same thing:

* ``scaled_dot_product_attention`` spells the formula out and returns the attention weights, which
  ``output_attentions=True`` and every attention picture need;
* ``fused_attention`` calls PyTorch's fused kernel (``torch.nn.functional.scaled_dot_product_attention``),
  which never materialises the (T, T) weight matrix: faster and leaner, used when weights are not requested.

Padding: a batch pads short sequences with [PAD]; ``attention_mask`` (B, T) holds 1 for real tokens and 0 for
padding. No query may attend to a padded key, so the scores of padded keys get the most negative float before
the softmax (exactly what `transformers` does), which turns their weights into exact zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .utils import device_of, eval_mode

__all__ = [
    "masked_softmax",
    "padding_mask",
    "extended_attention_mask",
    "scaled_dot_product_attention",
    "fused_attention",
    "causal_mask",
    "MultiHeadSelfAttention",
    "explore_attention",
]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis, giving zero weight where ``mask`` is False (notebook 02).

    ``mask`` is boolean and broadcastable to ``scores`` (True = may attend). A row whose keys are all masked
    gets uniform weights rather than NaN, as in `transformers`.
    """
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor (True = may attend), got dtype {mask.dtype}. "
                            f"Convert a 0/1 attention_mask with padding_mask(attention_mask).")
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1/0 attention mask -> (B, 1, 1, T) boolean mask, True where a key is a real token (notebook 02).

    The two singleton axes broadcast over heads and queries: every query may look at every real key.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (batch, seq_len), got {tuple(attention_mask.shape)}. "
                         f"Pass the tokenizer's attention_mask (1 = real token, 0 = padding).")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: query i may look at keys 0..i only (notebook 10).

    BERT's encoder lets every token see every other (a mask of all True); this one line is what turns the
    same attention into a decoder's, which can be trained to predict each token from the ones before it.
    Broadcasts with `padding_mask` (combine them with ``&``).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}.")
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool, device=device))  # (T, T)


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, T) 1/0 attention mask -> (B, 1, 1, T) additive mask: 0 for real keys, the dtype's minimum for padding.

    Adding it to the scores before the softmax is what BERT and `transformers` do; the result equals
    ``masked_softmax`` with ``padding_mask`` to the last bit.
    """
    keep = padding_mask(attention_mask)  # (B, 1, 1, T)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(keep, zero, torch.finfo(dtype).min)  # (B, 1, 1, T)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: bool = True,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V, spelled out; returns ``(output, weights)`` (notebook 02).

    q, k, v: (..., T, d_k) (usually (B, H, T, d_k)). ``mask``: boolean (True = may attend) or additive float,
    broadcastable to (..., T, T). ``scale=False`` drops the 1/sqrt(d_k) factor (to show why it is there).
    ``dropout_p`` drops attention weights (pass 0.0 at evaluation).
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1)  # (..., T, d_k) @ (..., d_k, T) -> (..., T, T)
    if scale:
        scores = scores * d_k**-0.5  # 1/sqrt(d_k), the same float factor transformers multiplies by
    if mask is not None and mask.dtype == torch.bool:
        weights = masked_softmax(scores, mask)  # (..., T, T)
    else:
        if mask is not None:
            scores = scores + mask  # additive mask: 0 or the dtype's minimum
        weights = torch.softmax(scores, dim=-1)  # (..., T, T), each row sums to 1
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v  # (..., T, T) @ (..., T, d_k) -> (..., T, d_k)
    return out, weights


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The same attention through PyTorch's fused kernel (no weights returned); q, k, v: (B, H, T, d_k).

    ``mask`` as in ``scaled_dot_product_attention`` (prefer the additive one from
    ``extended_attention_mask``: a boolean mask gives NaN for a row with no real key).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, H, T, d_k)


class MultiHeadSelfAttention(nn.Module):
    """h heads of scaled dot-product attention over one sequence, then the output projection W^O (notebook 02).

    Each head sees its own d_k = hidden_size / h slice of the projected queries, keys and values, so h heads
    cost the same as one full-width head. Parameter names follow BERT: ``query``, ``key``, ``value`` and
    ``out`` (W^O; `transformers` calls it ``attention.output.dense``).
    """

    def __init__(self, hidden_size: int, num_attention_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            divisors = [h for h in range(1, min(hidden_size, 64) + 1) if hidden_size % h == 0]
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_attention_heads="
                             f"{num_attention_heads}: each head gets hidden_size / num_attention_heads "
                             f"dimensions. Choose a head count that divides {hidden_size}, e.g. "
                             f"{', '.join(map(str, divisors[-4:]))}.")
        self.num_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads  # d_k
        self.query = nn.Linear(hidden_size, hidden_size)  # W^Q for all heads at once
        self.key = nn.Linear(hidden_size, hidden_size)  # W^K
        self.value = nn.Linear(hidden_size, hidden_size)  # W^V
        self.out = nn.Linear(hidden_size, hidden_size)  # W^O: mixes the concatenated heads
        self.attention_dropout = attention_dropout

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) -> (B, H, T, d_k)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, T, H, d_k) -> (B, H, T, d_k)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d_k) -> (B, T, hidden): concatenate the heads."""
        B, H, T, d_k = x.shape
        return x.transpose(1, 2).reshape(B, T, H * d_k)  # (B, T, H, d_k) -> (B, T, hidden)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of every head, each (B, H, T, d_k), from the layer input x (B, T, hidden)."""
        return self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, hidden); mask: additive (B, 1, 1, T) from ``extended_attention_mask`` (or boolean).

        Returns ``(output (B, T, hidden), weights (B, H, T, T) or None)``. Without ``output_attentions`` the
        fused kernel runs and no weights are kept.
        """
        q, k, v = self.project_qkv(x)  # each (B, H, T, d_k)
        p = self.attention_dropout if self.training else 0.0
        if output_attentions:
            heads, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)  # (B, H, T, d_k), (B, H, T, T)
        else:
            heads, weights = fused_attention(q, k, v, mask, dropout_p=p), None  # (B, H, T, d_k)
        return self.out(self.merge_heads(heads)), weights  # (B, T, hidden)


@torch.no_grad()
def explore_attention(model: nn.Module, tokenizer, text: str, layer: int = 0, head: int = 0, scale: bool = True,
                      use_padding_mask: bool = True, pad_to: int = 0,
                      max_length: int | None = None) -> tuple[list[str], torch.Tensor]:
    """One head's attention weights (T, T) on ``text``, with the scale and the padding mask switchable
    (the notebook 02 widget). ``model`` is a bertbook model; ``pad_to`` appends [PAD] tokens up to that length.
    ``max_length`` keeps only the first tokens ([CLS] and [SEP] included; default: as many as the position
    table holds), so that a long text still gives a heatmap whose labels can be read.

    The layers below ``layer`` run normally (with the mask); only the chosen layer's attention is recomputed
    with your settings, so you see exactly what the switch changes.
    """
    bert = model.bert
    n_layers, n_heads = len(bert.layers), bert.layers[0].attention.num_heads
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: this model has {n_layers} layers (0..{n_layers - 1}).")
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} does not exist: each layer has {n_heads} heads (0..{n_heads - 1}).")
    if not text.strip():
        raise ValueError("type a sentence first: there is nothing to attend to.")
    limit = bert.config.max_position_embeddings
    if max_length is not None:
        if max_length < 3:
            raise ValueError(f"max_length={max_length} leaves no room for a token between [CLS] and [SEP]: "
                             f"use 3 or more.")
        limit = min(limit, max_length)
    enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
    ids, am = enc["input_ids"], enc["attention_mask"]  # (1, T)
    extra = max(0, min(pad_to, bert.config.max_position_embeddings) - ids.size(1))
    if extra:
        ids = torch.cat([ids, torch.full((1, extra), tokenizer.pad_token_id)], dim=1)  # (1, T + extra)
        am = torch.cat([am, torch.zeros(1, extra, dtype=am.dtype)], dim=1)
    device = device_of(model)
    ids, am = ids.to(device), am.to(device)
    with eval_mode(model):
        x = bert(ids, am, output_hidden_states=True).hidden_states[layer]  # (1, T, D): this layer's input
    block = bert.layers[layer]
    if getattr(block, "pre_norm", False):  # pre-LayerNorm: the attention reads the normalised stream
        x = block.attention_norm(x)
    q, k, v = block.attention.project_qkv(x)  # each (1, H, T, d_k)
    mask = padding_mask(am) if use_padding_mask else None  # (1, 1, 1, T)
    _, weights = scaled_dot_product_attention(q, k, v, mask, scale=scale)  # (1, H, T, T)
    return tokenizer.convert_ids_to_tokens(ids[0].tolist()), weights[0, head].cpu()
