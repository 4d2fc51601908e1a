"""BERT, the whole forward pass in one file: embeddings, encoder layers, pooler and the task heads.

Taught in notebook 03 (attention itself is in `bertbook.attention`, notebook 02). The architecture is
Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
with the numerics of `transformers`' BertModel (exact erf GELU, post-LayerNorm, LayerNorm epsilon from the
config, padding masked with the dtype's minimum), so that `bertbook.hf` converts weights both ways and the
outputs agree to 1e-5. Read it top to bottom:

    token ids (B, T)
      -> Embeddings: token + position + segment, LayerNorm, dropout            (B, T, D)
      -> L x EncoderLayer: x = LN(x + MHSA(x));  x = LN(x + FFN(x))              (B, T, D)
         (pre-LayerNorm, ``layer_norm_position="pre"``: x = x + MHSA(LN(x)); x = x + FFN(LN(x)),
          and one final LayerNorm after the last layer)
      -> Pooler: tanh(W h_[CLS] + b)                                            (B, D)
      -> a head: masked LM (tied to the token embeddings), pretraining (MLM + sentence classifier),
         sequence classification ([CLS]), token classification (every token)

Every model returns a `ModelOutput`; ``output_attentions=True`` adds one (B, H, T, T) tensor per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadSelfAttention, extended_attention_mask
from .checkpoint import Pretrained
from .config import ModelConfig

__all__ = [
    "ModelOutput",
    "mean_pool",
    "Embeddings",
    "FeedForward",
    "EncoderLayer",
    "Pooler",
    "MaskedLMHead",
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertWithHead",
    "attention_modules",
    "count_parameters",
    "check_inputs",
]

IGNORE_INDEX = -100  # label value that the losses skip (as in transformers)


@dataclass
class ModelOutput:
    """What every bertbook model returns (fields that do not apply stay None)."""

    loss: torch.Tensor | None = None  # the training loss (MLM + sentence loss for pretraining)
    logits: torch.Tensor | None = None  # (B, T, V) MLM, (N, V) masked-only MLM, (B, C) or (B, T, C) classifiers
    last_hidden_state: torch.Tensor | None = None  # (B, T, D): the encoder's output
    pooler_output: torch.Tensor | None = None  # (B, D): tanh(W h_[CLS] + b), None without a pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings output, then each layer's: L+1 x (B, T, D)
    attentions: tuple[torch.Tensor, ...] | None = None  # one (B, H, T, T) per layer, when requested
    sentence_logits: torch.Tensor | None = None  # (B, num_sentence_labels): pretraining's sentence classifier
    mlm_loss: torch.Tensor | None = None  # pretraining: the masked-LM part of the loss
    sentence_loss: torch.Tensor | None = None  # pretraining: the sentence-objective part of the loss


def _activation(name: str):
    if name == "gelu":
        return F.gelu  # exact: x * Phi(x) with the Gaussian CDF via erf (BERT, transformers' "gelu")
    if name == "gelu_new":
        return lambda x: F.gelu(x, approximate="tanh")
    return F.relu


# ----------------------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------------------

class Embeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout (Devlin et al. 2019, figure 2)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, D, padding_idx=config.pad_token_id)  # (V, D)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, D)  # learned, (max_T, D)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, D)  # segment A / B, (2, D)
        self.layer_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device)[None, :]  # (1, T): 0, 1, ..., T-1
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T): everything is sentence A
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, D)
        x = x + self.position_embeddings(positions)  # (B, T, D) + (1, T, D)
        return self.dropout(self.layer_norm(x))  # (B, T, D)


class FeedForward(nn.Module):
    """FFN(x) = GELU(x W1 + b1) W2 + b2, applied to every position on its own (D -> intermediate -> D)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)  # W1: (D -> 4D in BERT)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)  # W2: (4D -> D)
        self.act = _activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, T, D) -> (B, T, 4D) -> (B, T, D)


class EncoderLayer(nn.Module):
    """One Transformer encoder layer, post-LayerNorm as in BERT: x = LN(x + MHSA(x)); x = LN(x + FFN(x)).

    With ``config.layer_norm_position == "pre"`` the LayerNorm moves inside the residual branch:
    x = x + MHSA(LN(x)); x = x + FFN(LN(x)). The residual stream is then never normalised, so gradients
    reach the first layers undiminished and high learning rates need no long warmup (Xiong et al. 2020).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(config.hidden_size, config.num_attention_heads,
                                                config.attention_probs_dropout_prob)
        self.attention_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pre_norm = config.layer_norm_position == "pre"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            a, weights = self.attention(self.attention_norm(x), mask, output_attentions)  # (B, T, D)
            x = x + self.attention_dropout(a)  # residual stream, never normalised: (B, T, D)
            x = x + self.ffn_dropout(self.ffn(self.ffn_norm(x)))  # (B, T, D)
            return x, weights
        a, weights = self.attention(x, mask, output_attentions)  # (B, T, D), (B, H, T, T) or None
        x = self.attention_norm(x + self.attention_dropout(a))  # residual, then LayerNorm: (B, T, D)
        f = self.ffn(x)  # (B, T, D)
        x = self.ffn_norm(x + self.ffn_dropout(f))  # (B, T, D)
        return x, weights


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector that sentence-level heads read (B, D)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, T, D) -> [CLS] (B, D) -> (B, D)


class MaskedLMHead(nn.Module):
    """Predicts the token at each position: GELU(dense) -> LayerNorm -> scores against every token embedding.

    The output matrix is the token-embedding table itself (weight tying, as in BERT); only a bias of size V
    is the head's own. Pass the hidden vectors you want scores for: all (B, T, D) or only the masked (N, D).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # (V,)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.layer_norm(self.act(self.transform(hidden)))  # (..., D)
        return F.linear(h, word_embeddings, self.bias)  # (..., D) @ (V, D)^T + (V,) -> (..., V)


# ----------------------------------------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------------------------------------

def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, LayerNorm at identity."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _check_config(config: Any) -> ModelConfig:
    if not isinstance(config, ModelConfig):
        raise TypeError(f"bertbook models take a bertbook.config.ModelConfig, got {type(config).__name__}. "
                        f"Use P.model from a preset, or bertbook.hf.from_hf_config(bert_config).")
    return config


# ----------------------------------------------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------------------------------------------

class BertModel(Pretrained, nn.Module):
    """The BERT encoder: embeddings, L encoder layers and (optionally) the pooler (notebook 03)."""

    def __init__(self, config: ModelConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = _check_config(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(config.num_hidden_layers)])
        # pre-LayerNorm leaves the residual stream unnormalised: one LayerNorm after the last layer
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.layer_norm_position == "pre" else None)
        self.pooler = Pooler(config) if add_pooling_layer else None
        self.apply(lambda m: _init_weights(m, config.initializer_range))
        self._values_checked = False  # see check_inputs: ids are range-checked on a GPU's first call only

    @property
    def bert(self) -> "BertModel":
        """The encoder itself, so that ``model.bert`` works on every bertbook model."""
        return self

    def _head_kwargs(self) -> dict[str, Any]:
        return {"add_pooling_layer": self.pooler is not None}

    @classmethod
    def _head_keys(cls) -> tuple[str, ...]:
        return ("add_pooling_layer",)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        if labels is not None:
            raise ValueError("BertModel has no head and takes no labels: use BertForMaskedLM, "
                             "BertForSequenceClassification or BertForTokenClassification.")
        check_inputs(self.config, input_ids, attention_mask, token_type_ids,
                     values=input_ids.device.type == "cpu" or not self._values_checked)
        self._values_checked = True
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, D)
        # padding: 0 for real keys, the dtype's minimum for [PAD] keys, broadcast over heads and queries
        mask = None if attention_mask is None else extended_attention_mask(attention_mask, x.dtype)  # (B, 1, 1, T)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, mask, output_attentions)  # (B, T, D), (B, H, T, T) or None
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)  # (B, T, D)
            if output_hidden_states:
                hidden_states[-1] = x  # the last one normalised, as transformers' RobertaPreLayerNorm reports it
        pooled = self.pooler(x) if self.pooler is not None else None  # (B, D)
        return ModelOutput(last_hidden_state=x, pooler_output=pooled,
                           hidden_states=tuple(hidden_states) if hidden_states is not None else None,
                           attentions=tuple(attentions) if attentions is not None else None)


class BertWithHead(Pretrained, nn.Module):
    """A task model: the encoder ``self.bert`` and a head on its output (every model below).

    They share one ``forward``: the encoder runs, then the subclass's ``head(out, labels, attention_mask,
    **head_inputs)`` adds its logits and loss to the encoder's ``ModelOutput``. Keywords that only one head
    knows (``masked_only``, ``sentence_label``) pass through ``head_inputs``.
    """

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False,
                **head_inputs: Any) -> ModelOutput:
        """The same inputs as ``BertModel``; ``head_inputs`` go to this model's ``head``."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
        return self.head(out, labels, attention_mask, **head_inputs)


class BertForMaskedLM(BertWithHead):
    """BERT with the masked-LM head (no pooler), as pretrained in notebook 05.

    ``masked_only=True`` computes the (N, V) logits only where ``labels != -100``: the same loss for a
    fraction of the cost, since the V-wide output layer dominates small models.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = _check_config(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = MaskedLMHead(config)
        self.mlm.apply(lambda m: _init_weights(m, config.initializer_range))

    def head(self, out: ModelOutput, labels: torch.Tensor | None, attention_mask: torch.Tensor | None,
             masked_only: bool = False) -> ModelOutput:
        out.logits, out.loss = _mlm_logits_and_loss(self.mlm, self.bert, out.last_hidden_state, labels, masked_only)
        return out


def _mlm_logits_and_loss(head: MaskedLMHead, bert: BertModel, hidden: torch.Tensor, labels: torch.Tensor | None,
                         masked_only: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (B, T, V), or (N, V) at the N positions to predict; loss = mean cross-entropy over those."""
    table = bert.embeddings.word_embeddings.weight  # (V, D): tied output matrix
    if labels is not None and labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but input_ids have "
                         f"{tuple(hidden.shape[:2])}: MLM labels hold one id per token (-100 = not predicted).")
    if masked_only:
        if labels is None:
            raise ValueError("masked_only=True needs labels (-100 where nothing is predicted) to know which "
                             "positions to score.")
        picked = labels != IGNORE_INDEX  # (B, T) bool
        logits = head(hidden[picked], table)  # (N, D) -> (N, V)
        return logits, F.cross_entropy(logits, labels[picked])
    logits = head(hidden, table)  # (B, T, V)
    loss = None
    if labels is not None:
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=IGNORE_INDEX)
    return logits, loss


class BertForPreTraining(BertWithHead):
    """BERT with both pretraining heads: masked LM and a sentence-level classifier on the pooled [CLS].

    ``num_sentence_labels`` is 2 for next-sentence prediction (Devlin et al. 2019) and sentence-order
    prediction (Lan et al. 2020, ALBERT); notebook 04 builds the objectives. Pass ``sentence_label`` (B,) to
    train it; the loss is the MLM loss plus the sentence loss (each only when its labels are given).
    """

    def __init__(self, config: ModelConfig, num_sentence_labels: int = 2) -> None:
        super().__init__()
        self.config = _check_config(config)
        if not (isinstance(num_sentence_labels, int) and num_sentence_labels >= 2):
            raise ValueError(f"num_sentence_labels must be an integer >= 2, got {num_sentence_labels!r}.")
        self.num_sentence_labels = num_sentence_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        self.mlm = MaskedLMHead(config)
        self.sentence_classifier = nn.Linear(config.hidden_size, num_sentence_labels)
        for m in (self.mlm, self.sentence_classifier):
            m.apply(lambda mod: _init_weights(mod, config.initializer_range))

    def _head_kwargs(self) -> dict[str, Any]:
        return {"num_sentence_labels": self.num_sentence_labels}

    @classmethod
    def _head_keys(cls) -> tuple[str, ...]:
        return ("num_sentence_labels",)

    def head(self, out: ModelOutput, labels: torch.Tensor | None, attention_mask: torch.Tensor | None,
             sentence_label: torch.Tensor | None = None, masked_only: bool = False) -> ModelOutput:
        out.logits, out.mlm_loss = _mlm_logits_and_loss(self.mlm, self.bert, out.last_hidden_state, labels,
                                                        masked_only)
        out.sentence_logits = self.sentence_classifier(out.pooler_output)  # (B, num_sentence_labels)
        if sentence_label is not None:
            out.sentence_loss = F.cross_entropy(out.sentence_logits, sentence_label.view(-1))
        losses = [x for x in (out.mlm_loss, out.sentence_loss) if x is not None]
        out.loss = sum(losses[1:], losses[0]) if losses else None
        return out


class _Classifier(BertWithHead):
    """What the sequence and token classifiers share: the encoder, dropout and a Linear layer to the labels."""

    def __init__(self, config: ModelConfig, num_labels: int, classifier_dropout: float | None,
                 add_pooling_layer: bool) -> None:
        super().__init__()
        self.config = _check_config(config)
        if not (isinstance(num_labels, int) and num_labels >= 1):
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}.")
        self.num_labels = num_labels
        self.classifier_dropout = classifier_dropout
        self.bert = BertModel(config, add_pooling_layer=add_pooling_layer)
        p = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        _init_weights(self.classifier, config.initializer_range)

    def _head_kwargs(self) -> dict[str, Any]:
        return {"num_labels": self.num_labels, "classifier_dropout": self.classifier_dropout}

    @classmethod
    def _head_keys(cls) -> tuple[str, ...]:
        return ("num_labels", "classifier_dropout")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors ``hidden`` (B, T, D) over the real tokens of ``attention_mask`` (B, T)
    (padding left out): a sentence vector (notebooks 06 and 10)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1): 1 for real tokens
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, T, D) -> (B, D)


POOLINGS = ("cls", "mean")  # what a sequence classifier reads: the pooled [CLS] vector, or the mean token


class BertForSequenceClassification(_Classifier):
    """BERT + dropout + Linear on one vector per text: one label per text (notebook 06).

    ``pooling="cls"`` (BERT, and what transformers implements) reads the pooler's tanh(W h_[CLS] + b);
    ``pooling="mean"`` reads the average of the last layer's vectors over the real (unpadded) tokens, which
    suits an encoder pretrained with MLM alone: its [CLS] vector and pooler were never trained for anything
    (Reimers & Gurevych 2019 found mean pooling the better sentence vector for BERT too).
    The softmax comes *after* the Linear, inside the cross-entropy (the source article has them reversed).
    ``num_labels=1`` makes it a regression head (mean squared error), as in transformers.
    """

    def __init__(self, config: ModelConfig, num_labels: int = 2, classifier_dropout: float | None = None,
                 pooling: str = "cls") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}.")
        super().__init__(config, num_labels, classifier_dropout, add_pooling_layer=True)
        self.pooling = pooling

    def _head_kwargs(self) -> dict[str, Any]:
        return {**super()._head_kwargs(), "pooling": self.pooling}

    @classmethod
    def _head_keys(cls) -> tuple[str, ...]:
        return (*super()._head_keys(), "pooling")

    def text_vector(self, out: ModelOutput, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The (B, D) vector the classifier reads: pooled [CLS], or the mean over real tokens."""
        if self.pooling == "cls":
            return out.pooler_output  # (B, D)
        h = out.last_hidden_state  # (B, T, D)
        return h.mean(dim=1) if attention_mask is None else mean_pool(h, attention_mask)  # (B, D)

    def head(self, out: ModelOutput, labels: torch.Tensor | None, attention_mask: torch.Tensor | None) -> ModelOutput:
        out.logits = self.classifier(self.dropout(self.text_vector(out, attention_mask)))  # (B, D) -> (B, labels)
        if labels is not None:
            if self.num_labels == 1:
                out.loss = F.mse_loss(out.logits.squeeze(-1), labels.float().view(-1))
            else:
                if labels.shape != out.logits.shape[:1]:
                    raise ValueError(f"labels must hold one class per text, shape ({out.logits.size(0)},), got "
                                     f"{tuple(labels.shape)}. Token-level labels belong to "
                                     f"BertForTokenClassification.")
                out.loss = F.cross_entropy(out.logits, labels)
        return out


class BertForTokenClassification(_Classifier):
    """BERT + dropout + Linear on every token's vector: one label per token, -100 ignored (NER)."""

    def __init__(self, config: ModelConfig, num_labels: int, classifier_dropout: float | None = None) -> None:
        super().__init__(config, num_labels, classifier_dropout, add_pooling_layer=False)

    def head(self, out: ModelOutput, labels: torch.Tensor | None, attention_mask: torch.Tensor | None) -> ModelOutput:
        out.logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, D) -> (B, T, num_labels)
        if labels is not None:
            if labels.shape != out.logits.shape[:2]:
                raise ValueError(f"labels must hold one tag per token, shape {tuple(out.logits.shape[:2])}, got "
                                 f"{tuple(labels.shape)} (use -100 for [CLS], [SEP], padding and word pieces "
                                 f"after the first).")
            out.loss = F.cross_entropy(out.logits.view(-1, self.num_labels), labels.view(-1),
                                       ignore_index=IGNORE_INDEX)
        return out


# ----------------------------------------------------------------------------------------------------------
# Looking at a model
# ----------------------------------------------------------------------------------------------------------

def attention_modules(model: nn.Module) -> list[MultiHeadSelfAttention]:
    """The attention module of every layer, in order; each has ``project_qkv(x) -> (q, k, v)`` (notebook 07)."""
    bert = getattr(model, "bert", None)
    if not isinstance(bert, BertModel):
        raise TypeError(f"attention_modules needs a bertbook model, got {type(model).__name__}. For a "
                        f"transformers model, convert it with bertbook.hf.from_hf(model).")
    return [layer.attention for layer in bert.layers]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters by component, in reading order (notebook 03). The tied MLM output matrix is counted once,
    with the token embeddings."""
    bert = model.bert
    groups: dict[str, int] = {}

    def add(name: str, module_or_params) -> None:
        params = module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params
        groups[name] = groups.get(name, 0) + sum(p.numel() for p in params)

    e = bert.embeddings
    add("token embeddings", e.word_embeddings)
    add("position embeddings", e.position_embeddings)
    add("segment embeddings", e.token_type_embeddings)
    add("embedding LayerNorm", e.layer_norm)
    for layer in bert.layers:
        add("attention (Q, K, V, O)", layer.attention)
        add("feed-forward", layer.ffn)
        add("LayerNorms in layers", [*layer.attention_norm.parameters(), *layer.ffn_norm.parameters()])
    if bert.pooler is not None:
        add("pooler", bert.pooler)
    if model is not bert:
        seen = {id(p) for p in bert.parameters()}
        head = [p for p in model.parameters() if id(p) not in seen]
        if head:
            add("task head", head)
    return groups


# ----------------------------------------------------------------------------------------------------------
# Input checks: errors a learner can act on
# ----------------------------------------------------------------------------------------------------------

def check_inputs(config: ModelConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 token_type_ids: torch.Tensor | None, values: bool = True) -> None:
    """Raise a ValueError that says what to do when the inputs do not fit the model.

    Shapes and dtypes are always checked (free: no data is read). ``values=True`` also checks that every id
    is inside the vocabulary and the segment table: a min and a max, read back in one transfer. On the CPU
    that costs nothing; on a GPU it would stall every step, so ``BertModel`` checks values there only on
    its first call (a tokenizer that does not match the model shows up on the first batch)."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}: "
                        f"tokenize with return_tensors='pt'.")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}: "
                         f"add a batch axis with input_ids.unsqueeze(0).")
    if input_ids.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"input_ids must hold integer token ids (torch.long), got {input_ids.dtype}.")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length {T} is longer than max_position_embeddings="
                         f"{config.max_position_embeddings} (the position table has that many rows): truncate "
                         f"the input (tokenizer(..., truncation=True, max_length="
                         f"{config.max_position_embeddings})) or build the model with a larger "
                         f"max_position_embeddings.")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and tuple(t.shape) != (B, T):
            raise ValueError(f"{name} has shape {tuple(t.shape)} but input_ids has {(B, T)}: pass the "
                             f"{name} the tokenizer returned for the same batch.")
    if not values or torch.compiler.is_compiling() or input_ids.numel() == 0:
        return  # value checks need the data on the host; skip them inside a compiled graph
    stats = [input_ids.min(), input_ids.max()]
    if token_type_ids is not None:
        stats += [token_type_ids.min(), token_type_ids.max()]
    lo, hi, *types = torch.stack([s.long() for s in stats]).tolist()  # one device sync for all checks
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"input_ids contain the id {bad}, outside the vocabulary of {config.vocab_size} "
                         f"(ids 0..{config.vocab_size - 1}): the tokenizer and the model disagree. Build the "
                         f"model with vocab_size=len(tokenizer), e.g. "
                         f"dataclasses.replace(P.model, vocab_size=len(tok)).")
    if types and (types[0] < 0 or types[1] >= config.type_vocab_size):
        bad = types[0] if types[0] < 0 else types[1]
        raise ValueError(f"token_type_ids contain {bad}, but type_vocab_size={config.type_vocab_size} "
                         f"allows segments 0..{config.type_vocab_size - 1} (0 = sentence A, 1 = sentence B).")
