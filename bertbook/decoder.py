"""A Transformer decoder: the half of an encoder-decoder that writes (notebook 10).

An encoder reads with full attention: every token sees every other. A decoder writes one token at a time, so
each position may look only at the positions before it (causal self-attention, `attention.causal_mask`), and,
in an encoder-decoder, across at the encoder's token vectors (cross-attention, Vaswani et al. 2017, section
3.2.3). Read top to bottom:

1. the decoder: `MultiHeadCrossAttention` (the course's attention with queries from one sequence and keys
   and values from another), `DecoderLayer` and `Decoder`, built from the encoder's own pieces
   (`model.Embeddings`, `model.FeedForward`, `model.MaskedLMHead`);
2. the proof: the decoder equals transformers' ``BertLMHeadModel`` (post-LN; pre-LN:
   ``RobertaPreLayerNormForCausalLM``), and the course's encoder with it equals ``EncoderDecoderModel``, to
   1e-5, converted both ways (`decoder_parity_report`).

`bertbook.translate` puts it on an encoder to translate English into Chinese characters.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (MultiHeadSelfAttention, causal_mask, extended_attention_mask, fused_attention,
                        scaled_dot_product_attention)
from .checkpoint import CheckpointError
from .config import ModelConfig
from .model import IGNORE_INDEX, Embeddings, FeedForward, MaskedLMHead, ModelOutput, _init_weights
from .utils import device_of

__all__ = ["PAD_ID", "MultiHeadCrossAttention", "DecoderLayer", "Decoder", "decoder_hf_name", "decoder_to_hf",
           "decoder_from_hf", "to_hf_encoder_decoder", "PARITY_DIRECTIONS", "decoder_parity_report"]

PAD_ID = 0  # the padding id of a decoder's vocabulary (translate.SPECIALS starts with [PAD])


# ---------------------------------------------------------------------------------------------------------
# 1. The decoder
# ---------------------------------------------------------------------------------------------------------

class MultiHeadCrossAttention(MultiHeadSelfAttention):
    """Attention from one sequence to another: the queries come from the decoder's vectors x (B, T, D), the
    keys and values from the encoder's token vectors (B, S, D), so every Chinese position reads the English
    sentence. The weights W^Q, W^K, W^V, W^O are those of `attention.MultiHeadSelfAttention`."""

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(output (B, T, D), weights (B, H, T, S) or None)``; ``mask`` (B, 1, 1, S) hides padding."""
        q = self.split_heads(self.query(x))  # (B, H, T, d_k)
        k = self.split_heads(self.key(memory))  # (B, H, S, d_k)
        v = self.split_heads(self.value(memory))  # (B, H, S, d_k)
        p = self.attention_dropout if self.training else 0.0
        if output_attentions:
            heads, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)  # (B, H, T, d_k), (B, H, T, S)
        else:
            heads, weights = fused_attention(q, k, v, mask, dropout_p=p), None  # (B, H, T, d_k)
        return self.out(self.merge_heads(heads)), weights  # (B, T, D)


class DecoderLayer(nn.Module):
    """One decoder layer: causal self-attention, cross-attention over the encoder, feed-forward.

    Post-LayerNorm (BERT, transformers' ``BertLMHeadModel``):
        x = LN(x + SelfAttn(x, causal));  x = LN(x + CrossAttn(x, h_enc));  x = LN(x + FFN(x))
    Pre-LayerNorm (the default here):
        x = x + SelfAttn(LN(x), causal);  x = x + CrossAttn(LN(x), h_enc);  x = x + FFN(LN(x))
    The encoder's vectors h_enc are read as they are: the encoder normalised them already.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D, H, p = config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob
        self.self_attention = MultiHeadSelfAttention(D, H, p)
        self.self_attention_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.cross_attention = MultiHeadCrossAttention(D, H, p)
        self.cross_attention_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)  # on each sub-layer's output
        self.pre_norm = config.layer_norm_position == "pre"

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor,
                memory_mask: torch.Tensor | None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, D), memory (B, S, D), additive masks (B, 1, T, T) and (B, 1, 1, S) -> (B, T, D) and the
        cross-attention weights (B, H, T, S) when asked."""
        if self.pre_norm:
            a, _ = self.self_attention(self.self_attention_norm(x), self_mask)  # (B, T, D)
            x = x + self.dropout(a)
            c, weights = self.cross_attention(self.cross_attention_norm(x), memory, memory_mask, output_attentions)
            x = x + self.dropout(c)  # (B, T, D)
            return x + self.dropout(self.ffn(self.ffn_norm(x))), weights
        a, _ = self.self_attention(x, self_mask)  # (B, T, D)
        x = self.self_attention_norm(x + self.dropout(a))
        c, weights = self.cross_attention(x, memory, memory_mask, output_attentions)  # (B, T, D)
        x = self.cross_attention_norm(x + self.dropout(c))
        return self.ffn_norm(x + self.dropout(self.ffn(x))), weights  # (B, T, D)


class Decoder(nn.Module):
    """The translation head: a Transformer decoder that writes Chinese characters (notebook 10).

        decoder_input_ids (B, T): [BOS] and the characters so far
          -> Embeddings: character + position (+ one segment vector), LayerNorm, dropout       (B, T, D)
          -> L x DecoderLayer: causal self-attention, cross-attention over the encoder, FFN     (B, T, D)
             (pre-LayerNorm: one final LayerNorm after the last layer)
          -> output layer: LN(GELU(W x)) E^T + b                                                (B, T, V)

    The pieces are the encoder's (`model.Embeddings`, `model.FeedForward`, `attention.MultiHeadSelfAttention`);
    the output layer is BERT's masked-LM head (`model.MaskedLMHead`), its matrix E **tied** to the decoder's
    character embeddings (Press & Wolf 2017): the same vector reads a character and scores writing it, and
    transformers' decoder ties them the same way. The decoder never sees the encoder's vocabulary: its width
    is the encoder's (D), and its vocabulary is the characters. One segment (``type_vocab_size=1``) makes the
    segment table a single learned vector added everywhere, exactly what transformers holds.

    LayerNorm placement is ``config.layer_norm_position``. "post" is BERT's and equals transformers'
    ``BertLMHeadModel(BertConfig(is_decoder=True, add_cross_attention=True))`` to 1e-5 (`decoder_parity_report`).
    "pre" moves each LayerNorm inside its residual branch and adds one after the last layer: the same weights
    in other places, so the two are different networks, not conversions of each other. It is the course's
    recipe for training from scratch (Xiong et al. 2020: gradients reach the first layers undiminished, so a
    high learning rate needs no long warm-up), the default here to match the course's encoders; on the laptop
    slice the two placements train alike. The pre-LN decoder equals transformers'
    ``RobertaPreLayerNormForCausalLM`` fed ``position_ids = 0..T-1``.

    As a task head, ``forward(hidden, attention_mask, decoder_input_ids, decoder_attention_mask, labels)``
    returns ``ModelOutput(loss, logits (B, T, V), last_hidden_state, attentions)``; the loss is the mean
    cross-entropy over the labels that are not -100, and ``attentions`` holds the cross-attention weights
    (B, H, T, S) of every layer when ``output_attentions=True``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.layer_norm_position == "pre" else None)
        self.lm_head = MaskedLMHead(config)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_attentions: bool = False) -> ModelOutput:
        if decoder_input_ids is None:
            raise ValueError("The decoder needs decoder_input_ids (batch, length): [BOS] and the characters "
                             "written so far. translate.featurize builds them, tasks.pad_features pads them.")
        B, T = decoder_input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"decoder_input_ids hold {T} tokens, more than the {self.config.max_position_embeddings} "
                             f"positions of the decoder (tasks.translation_max_length): cut the targets with "
                             f"teacher_forcing(target, max_length).")
        if hidden.shape[-1] != self.config.hidden_size:
            raise ValueError(f"the encoder's vectors are {hidden.shape[-1]} wide but the decoder is "
                             f"{self.config.hidden_size}: build the decoder with prepare(encoder, ...).")
        if decoder_attention_mask is None:
            decoder_attention_mask = torch.ones_like(decoder_input_ids)  # (B, T)
        ids = decoder_input_ids.masked_fill(decoder_attention_mask == 0, PAD_ID)  # padding may hold another id
        x = self.embeddings(ids)  # (B, T, D)
        # position t sees positions 0..t (causal) that are real characters (padding)
        causal = causal_mask(T, device=x.device)  # (T, T)
        keep = causal[None, None] & decoder_attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
        self_mask = torch.where(keep, 0.0, torch.finfo(x.dtype).min).to(x.dtype)  # (B, 1, T, T): additive
        # the English padding is hidden from every query: (B, 1, 1, S), additive
        memory_mask = None if attention_mask is None else extended_attention_mask(attention_mask, x.dtype)
        cross = []
        for layer in self.layers:
            x, weights = layer(x, hidden, self_mask, memory_mask, output_attentions)  # (B, T, D), (B, H, T, S)
            cross.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)  # (B, T, D)
        logits = self.lm_head(x, self.embeddings.word_embeddings.weight)  # (B, T, D) @ (V, D)^T -> (B, T, V)
        loss = None
        if labels is not None:
            if labels.shape != (B, T):
                raise ValueError(f"labels have shape {tuple(labels.shape)} but decoder_input_ids have {(B, T)}: "
                                 f"labels are the decoder inputs shifted left by one (teacher_forcing).")
            loss = F.cross_entropy(logits.reshape(B * T, -1), labels.reshape(B * T), ignore_index=IGNORE_INDEX)
        return ModelOutput(loss=loss, logits=logits, last_hidden_state=x,
                           attentions=tuple(cross) if output_attentions else None)


# ---------------------------------------------------------------------------------------------------------
# 2. Proof: the decoder equals transformers' decoder
# ---------------------------------------------------------------------------------------------------------

# bertbook decoder name -> transformers name, for post-LN (BertLMHeadModel, prefix "bert.") and pre-LN
# (RobertaPreLayerNormForCausalLM, prefix "roberta_prelayernorm."); the first matching rule wins. transformers
# keeps a layer's LayerNorm with the sub-layer's output (post-LN) or with its input (pre-LN).
_LAYER = r"^layers\.(\d+)\."
_SHARED_RULES = [
    (r"^embeddings\.layer_norm\.", r"{p}embeddings.LayerNorm."),
    (r"^embeddings\.", r"{p}embeddings."),
    (_LAYER + r"self_attention\.(query|key|value)\.", r"{p}encoder.layer.\1.attention.self.\2."),
    (_LAYER + r"self_attention\.out\.", r"{p}encoder.layer.\1.attention.output.dense."),
    (_LAYER + r"cross_attention\.(query|key|value)\.", r"{p}encoder.layer.\1.crossattention.self.\2."),
    (_LAYER + r"cross_attention\.out\.", r"{p}encoder.layer.\1.crossattention.output.dense."),
    (_LAYER + r"ffn\.fc1\.", r"{p}encoder.layer.\1.intermediate.dense."),
    (_LAYER + r"ffn\.fc2\.", r"{p}encoder.layer.\1.output.dense."),
]
_POST_LN_RULES = [
    (_LAYER + r"self_attention_norm\.", r"bert.encoder.layer.\1.attention.output.LayerNorm."),
    (_LAYER + r"cross_attention_norm\.", r"bert.encoder.layer.\1.crossattention.output.LayerNorm."),
    (_LAYER + r"ffn_norm\.", r"bert.encoder.layer.\1.output.LayerNorm."),
    (r"^lm_head\.transform\.", "cls.predictions.transform.dense."),
    (r"^lm_head\.layer_norm\.", "cls.predictions.transform.LayerNorm."),
    (r"^lm_head\.bias$", "cls.predictions.bias"),
    *[(a, b.replace("{p}", "bert.")) for a, b in _SHARED_RULES],
]
_PRE_LN_RULES = [
    (_LAYER + r"self_attention_norm\.", r"roberta_prelayernorm.encoder.layer.\1.attention.LayerNorm."),
    (_LAYER + r"cross_attention_norm\.", r"roberta_prelayernorm.encoder.layer.\1.crossattention.LayerNorm."),
    (_LAYER + r"ffn_norm\.", r"roberta_prelayernorm.encoder.layer.\1.intermediate.LayerNorm."),
    (r"^final_norm\.", "roberta_prelayernorm.LayerNorm."),
    (r"^lm_head\.transform\.", "lm_head.dense."),
    (r"^lm_head\.layer_norm\.", "lm_head.layer_norm."),
    (r"^lm_head\.bias$", "lm_head.bias"),
    *[(a, b.replace("{p}", "roberta_prelayernorm.")) for a, b in _SHARED_RULES],
]
_HF_DECODERS = {"post": "BertLMHeadModel", "pre": "RobertaPreLayerNormForCausalLM"}


def decoder_hf_name(name: str, layer_norm_position: str = "post") -> str:
    """The transformers name of a decoder parameter, e.g. 'layers.0.cross_attention.query.weight' ->
    'bert.encoder.layer.0.crossattention.self.query.weight' (post-LN, ``BertLMHeadModel``)."""
    for pattern, repl in _POST_LN_RULES if layer_norm_position == "post" else _PRE_LN_RULES:
        if re.search(pattern, name):
            return re.sub(pattern, repl, name)
    raise KeyError(f"decoder parameter {name!r} has no transformers name.")


def _output_names(layer_norm_position: str) -> tuple[str, str, str]:
    """transformers' output matrix, the embedding table it is tied to, and the output bias."""
    if layer_norm_position == "post":
        return "cls.predictions.decoder", "bert.embeddings.word_embeddings.weight", "cls.predictions.bias"
    return "lm_head.decoder", "roberta_prelayernorm.embeddings.word_embeddings.weight", "lm_head.bias"


def decoder_to_hf(decoder: Decoder, attn_implementation: str = "eager") -> nn.Module:
    """The same decoder as transformers' ``BertLMHeadModel`` (post-LN) or ``RobertaPreLayerNormForCausalLM``
    (pre-LN), with ``is_decoder=True, add_cross_attention=True``: every tensor renamed, none reshaped. Call it
    with ``encoder_hidden_states`` and ``encoder_attention_mask``; the pre-LN model also needs
    ``position_ids = 0..T-1`` (RoBERTa would count from ``pad_token_id + 1``)."""
    import transformers

    from .hf import to_hf_config

    where = decoder.config.layer_norm_position
    hf_config = to_hf_config(decoder.config, is_decoder=True, add_cross_attention=True)
    hf_config._attn_implementation = attn_implementation
    hf = getattr(transformers, _HF_DECODERS[where])(hf_config)
    theirs = hf.state_dict()
    state = {}
    for name, tensor in decoder.state_dict().items():
        target = decoder_hf_name(name, where)
        if target not in theirs or theirs[target].shape != tensor.shape:
            raise CheckpointError(f"decoder tensor {name} ({tuple(tensor.shape)}) has no counterpart {target} of "
                                  f"the same shape in transformers.{type(hf).__name__}.")
        state[target] = tensor.detach()
    output, embeddings, bias = _output_names(where)
    state[f"{output}.weight"], state[f"{output}.bias"] = state[embeddings], state[bias]  # tied
    missing = [k for k in theirs if k not in state]
    if missing:
        raise CheckpointError(f"transformers.{type(hf).__name__} expects tensors the decoder does not have: "
                              f"{', '.join(missing[:5])}.")
    hf.load_state_dict(state, strict=True)
    return hf.to(device_of(decoder)).train(decoder.training)


def decoder_from_hf(hf_model: nn.Module) -> Decoder:
    """A `Decoder` equal to a transformers ``BertLMHeadModel`` or ``RobertaPreLayerNormForCausalLM`` built with
    ``is_decoder=True, add_cross_attention=True`` and an output matrix tied to its embeddings."""
    kind = type(hf_model).__name__
    where = {v: k for k, v in _HF_DECODERS.items()}.get(kind)
    if where is None:
        raise TypeError(f"decoder_from_hf converts transformers {' or '.join(_HF_DECODERS.values())}; got {kind}.")
    c = hf_model.config
    if not (c.is_decoder and c.add_cross_attention):
        raise ValueError(f"this {kind} is not a decoder with cross-attention: build it from a config with "
                         f"is_decoder=True, add_cross_attention=True.")
    fields = {k: getattr(c, k) for k in ModelConfig().to_dict() if k != "layer_norm_position"}
    fields["pad_token_id"] = fields["pad_token_id"] or 0
    ours = Decoder(ModelConfig(**fields, layer_norm_position=where))
    theirs = hf_model.state_dict()
    output, embeddings, _ = _output_names(where)
    if not torch.equal(theirs[f"{output}.weight"], theirs[embeddings]):
        raise CheckpointError(f"this {kind}'s output matrix is not tied to its embeddings; the Decoder ties them.")
    state = {name: theirs[decoder_hf_name(name, where)].detach().clone() for name in ours.state_dict()}
    unused = set(theirs) - {decoder_hf_name(n, where) for n in state} - {f"{output}.weight", f"{output}.bias"}
    if unused:
        raise CheckpointError(f"transformers.{kind} holds tensors the Decoder would drop: "
                              f"{', '.join(sorted(unused)[:5])}.")
    ours.load_state_dict(state, strict=True)
    return ours.to(device_of(hf_model)).train(hf_model.training)


def to_hf_encoder_decoder(model: nn.Module, attn_implementation: str = "eager") -> nn.Module:
    """A translation model (encoder + `Decoder`) as transformers' ``EncoderDecoderModel``: the encoder
    converted by `bertbook.hf.to_hf` (MiniLM is already a transformers model), the decoder by `decoder_to_hf`.
    Its ``labels`` are ours (not shifted inside); pre-LN halves need ``position_ids`` and
    ``decoder_position_ids`` = 0..T-1."""
    import transformers

    from .hf import to_hf
    from .model import BertModel

    encoder = to_hf(model.encoder, attn_implementation) if isinstance(model.encoder, BertModel) else model.encoder
    return transformers.EncoderDecoderModel(encoder=encoder, decoder=decoder_to_hf(model.head, attn_implementation))


def _perturb(model: nn.Module, seed: int) -> None:
    """Move every bias and LayerNorm off its initial 0 or 1, so that a bias or LayerNorm mapped to the wrong
    place shows up as a difference."""
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.device))


def _parity_batch(vocab: int, D: int, padding: bool, seed: int, B: int = 3, S: int = 10, T: int = 7):
    """Encoder vectors (B, S, D) and source ids, their mask, decoder inputs, their mask and labels; with padding
    the sources keep 10, 7, 4 tokens and the targets 7, 5, 3."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, S, D, generator=g)  # (B, S, D)
    source = torch.randint(5, 100, (B, S), generator=g)  # (B, S)
    target = torch.randint(4, vocab, (B, T), generator=g)  # (B, T)
    src_mask, dec_mask = torch.ones(B, S, dtype=torch.long), torch.ones(B, T, dtype=torch.long)
    if padding:
        for i, (s, t) in enumerate(zip((10, 7, 4), (7, 5, 3))):
            src_mask[i, s:], dec_mask[i, t:] = 0, 0
    target[:, 0] = 1  # [BOS]
    target = target.masked_fill(dec_mask == 0, PAD_ID)
    following = torch.cat([target[:, 1:], torch.full((B, 1), PAD_ID)], dim=1)  # (B, T): the next input
    next_real = torch.cat([dec_mask[:, 1:], torch.zeros(B, 1, dtype=torch.long)], dim=1)  # (B, T)
    labels = torch.where(next_real == 1, following, 2).masked_fill(dec_mask == 0, IGNORE_INDEX)  # (B, T); 2: [EOS]
    return hidden, source.masked_fill(src_mask == 0, 0), src_mask, target, dec_mask, labels


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.detach().double() - b.detach().double()).abs().max())


PARITY_DIRECTIONS = ("bertbook -> transformers", "transformers -> bertbook", "bertbook -> transformers (pre-LN)",
                     "encoder-decoder")


def _parity_models(direction: str, cfg: ModelConfig, seed: int) -> tuple[nn.Module, nn.Module, bool]:
    """``(ours, theirs, round_trip)`` for one row of `decoder_parity_report`: a `Decoder` and the transformers
    decoder it was converted to or from, or (encoder-decoder) a `tasks.TaskModel` and its EncoderDecoderModel."""
    import transformers

    from .model import BertModel
    from .tasks import TaskModel

    torch.manual_seed(seed)
    if direction == "transformers -> bertbook":
        hf = transformers.BertLMHeadModel(_hf_decoder_config(cfg)).eval()
        _perturb(hf, seed)
        ours = decoder_from_hf(hf).eval()
        back = decoder_to_hf(ours).state_dict()
        return ours, hf, all(torch.equal(v, back[k]) for k, v in hf.state_dict().items())
    ours = Decoder(dataclasses.replace(cfg, layer_norm_position="pre" if "pre-LN" in direction else "post")).eval()
    _perturb(ours, seed)
    hf = decoder_to_hf(ours).eval()
    back = decoder_from_hf(hf).state_dict()
    exact = all(torch.equal(v, back[k]) for k, v in ours.state_dict().items())
    if direction != "encoder-decoder":
        return ours, hf, exact
    encoder = BertModel(dataclasses.replace(cfg, vocab_size=100, type_vocab_size=2, max_position_embeddings=32))
    _perturb(encoder, seed + 1)
    pair = TaskModel(encoder, ours).eval()
    return pair, to_hf_encoder_decoder(pair).eval(), exact


@torch.no_grad()
def decoder_parity_report(seed: int = 0, config: ModelConfig | None = None) -> list[dict[str, Any]]:
    """One row per (conversion, padding) with the largest absolute difference of the logits, of each layer's
    cross-attention weights and, for the whole model, of the loss; ``round_trip`` says that converting back
    gives every tensor bit for bit. The conversions (`PARITY_DIRECTIONS`):

    - ``bertbook -> transformers``: a random post-LN `Decoder` as ``BertLMHeadModel``;
    - ``transformers -> bertbook``: a random ``BertLMHeadModel`` as a `Decoder`;
    - ``bertbook -> transformers (pre-LN)``: a pre-LN `Decoder` as ``RobertaPreLayerNormForCausalLM``;
    - ``encoder-decoder``: a post-LN course encoder and a post-LN decoder as ``EncoderDecoderModel``
      (`to_hf_encoder_decoder`), from token ids to logits and loss, with transformers' own labels convention.

    With padding, the three sources keep 10, 7 and 4 tokens and the targets 7, 5 and 3. Biases and LayerNorms
    are moved off their initial values first, so that a misplaced one shows. float32 on the CPU; the
    tolerance of `bertbook.hf` is 1e-5."""
    cfg = config or ModelConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=16, type_vocab_size=1)
    rows = []
    for direction in PARITY_DIRECTIONS:
        ours, hf, exact = _parity_models(direction, cfg, seed)
        pre = "pre-LN" in direction
        for padding in (False, True):
            hidden, source, src_mask, target, dec_mask, labels = _parity_batch(cfg.vocab_size, cfg.hidden_size,
                                                                               padding, seed)
            row = {"direction": direction, "model": type(hf).__name__, "layer_norm": "pre" if pre else "post",
                   "padding": padding, "round_trip": exact}
            if direction == "encoder-decoder":
                a = ours(source, attention_mask=src_mask, decoder_input_ids=target, decoder_attention_mask=dec_mask,
                         labels=labels, output_attentions=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # a note about transformers 4.12's loss change
                    b = hf(input_ids=source, attention_mask=src_mask, decoder_input_ids=target,
                           decoder_attention_mask=dec_mask, labels=labels, output_attentions=True)
                row["loss"] = _diff(a.loss, b.loss)
            else:
                a = ours(hidden, attention_mask=src_mask, decoder_input_ids=target, decoder_attention_mask=dec_mask,
                         output_attentions=True)
                positions = {"position_ids": torch.arange(target.shape[1]).expand_as(target)} if pre else {}
                b = hf(input_ids=target, attention_mask=dec_mask, encoder_hidden_states=hidden,
                       encoder_attention_mask=src_mask, output_attentions=True, **positions)
            row["logits"] = _diff(a.logits, b.logits)
            row["cross_attentions"] = [_diff(x, y) for x, y in zip(a.attentions, b.cross_attentions, strict=True)]
            row["worst"] = max([row["logits"], *row["cross_attentions"], row.get("loss", 0.0)])
            rows.append(row)
    return rows


def _hf_decoder_config(cfg: ModelConfig):
    """A transformers BertConfig for a decoder of ``cfg``'s shape (eager attention, to return weights)."""
    from .hf import to_hf_config

    hf_config = to_hf_config(dataclasses.replace(cfg, layer_norm_position="post"), is_decoder=True,
                             add_cross_attention=True)
    hf_config._attn_implementation = "eager"
    return hf_config
