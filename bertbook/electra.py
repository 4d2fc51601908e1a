"""ELECTRA: learn from every token, not only the masked ones (notebook 11).

Clark et al., ICLR 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators".
BERT's masked LM learns from the 15% of the tokens it masks. ELECTRA trains two encoders together: a small
*generator*, an ordinary masked LM, fills the masked positions with tokens *sampled* from its softmax; the
*discriminator*, the encoder we keep, reads the result and says for every token whether it is the original
or a replacement (replaced-token detection, RTD). Every token of every sequence is now a training signal.
Read it top to bottom:

    original ids (B, T)
      -> MLM masking (the pretraining pipeline's)                     masked ids (B, T), labels (B, T)
      -> generator: shared embeddings (B, T, D) -> embeddings_project (B, T, D_g)
                    -> L small encoder layers (B, T, D_g) -> MLM head at the N masked positions (N, V)
      -> x_hat ~ softmax(generator logits), one token per masked position, no gradient       (N,)
      -> corrupted ids: the original text with the N samples put in                          (B, T)
      -> discriminator: BertModel (B, T, D) -> dense, activation, dense -> one logit a token (B, T)
      loss = MLM(generator) + lambda * RTD(discriminator)      (RTD: binary cross-entropy over every real token)

What the paper found, and this module follows:

- a sampled token that happens to equal the original is labelled *original* (it is not a replacement);
- the discriminator's loss is not back-propagated into the generator (sampling is not differentiable);
  the generator learns from its MLM loss alone, and lambda = 50 balances the two losses (``rtd_weight``);
- a small generator works best, 1/4 to 1/2 of the discriminator's size (``generator_size`` scales its hidden
  size, FFN width and heads; the same number of layers); the paper suspects that a generator too strong
  poses the discriminator too hard a task;
- generator and discriminator share their embeddings (token and position; here the whole embedding layer,
  segments and its LayerNorm too), the size of the discriminator's hidden states. A narrower generator reads
  them through a projection to its own width, ``embeddings_project`` as in `transformers`' ElectraModel, and
  its MLM head projects back to that width to score against the shared token table;
- at comparable compute, ELECTRA-Small reaches 79.9 on the GLUE dev set against 75.1 for BERT-Small.

After pretraining, the discriminator is the encoder that gets fine-tuned; the generator is thrown away. Its
encoder is ``model.bert``, a plain `bertbook.model.BertModel` (no pooler) saved under the ``bert.`` names of
every bertbook model, so the fine-tuning path loads it unchanged: ``classifier.load_encoder(folder)`` or
``build_classifier(P, init=folder)``, ``folder`` being what ``Electra.save_pretrained`` or
``python -m bertbook pretrain --set pretrain.objective=electra`` wrote (the run's ``checkpoint/``).

Checked against `transformers`: the discriminator converts to ``ElectraForPreTraining`` and the generator
(with the shared embeddings and its ``embeddings_project``) to ``ElectraForMaskedLM``, both ways
(:func:`to_hf`, :func:`to_hf_generator`, :func:`from_hf`); :func:`parity_report` compares logits, hidden
states, attentions and losses (``python -m bertbook parity --weights electra``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import extended_attention_mask
from .checkpoint import CheckpointError, load_exact
from .config import ConfigError, ModelConfig
from .hf import _ENCODER_RULES, _batch, _max_diff, from_hf_config
from .model import (IGNORE_INDEX, BertModel, BertWithHead, EncoderLayer, ModelOutput, _activation, _check_config,
                    _init_weights, check_inputs)
from .utils import autocast, eval_mode

__all__ = ["RTD_WEIGHT", "GENERATOR_SIZE", "generator_config", "Generator", "GeneratorHead", "DiscriminatorHead",
           "ElectraDiscriminator", "Electra", "ElectraOutput", "sample_replacements", "rtd_labels", "rtd_loss",
           "rtd_accuracies", "evaluate_electra", "hf_electra_name", "to_hf_config", "to_hf", "to_hf_generator",
           "from_hf", "parity_report"]

RTD_WEIGHT = 50.0  # lambda in MLM + lambda * RTD (Clark et al. 2020)
GENERATOR_SIZE = 0.25  # the generator's width as a fraction of the discriminator's (1/4 to 1/2 works best)


# ----------------------------------------------------------------------------------------------------------
# 1. The generator: the same encoder at a fraction of the width
# ----------------------------------------------------------------------------------------------------------

def generator_config(config: ModelConfig, generator_size: float = GENERATOR_SIZE) -> ModelConfig:
    """The generator's shape: the discriminator's hidden size, FFN width and head count times
    ``generator_size`` (one multiplier for all three, as in the paper), the same number of layers, vocabulary
    and positions. Each is rounded and kept >= 1; the head count is lowered until it divides the width.
    The laptop model (H=256, FFN 1024, 4 heads) at 1/4: H=64, FFN 256, 1 head, the width of ELECTRA-Small's."""
    if not isinstance(generator_size, (int, float)) or not 0.0 < generator_size <= 1.0:
        raise ConfigError(f"generator_size must be a fraction in (0, 1] of the discriminator's width (the paper "
                          f"finds 1/4 to 1/2 best), got {generator_size!r}.")
    hidden = max(1, round(config.hidden_size * generator_size))  # D_g
    heads = max(1, round(config.num_attention_heads * generator_size))
    while hidden % heads:  # every head needs the same width d_k = D_g / heads
        heads -= 1
    ffn = max(1, round(config.intermediate_size * generator_size))
    return dataclasses.replace(config, hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn)


class GeneratorHead(nn.Module):
    """The generator's MLM head: dense to the embedding width, GELU, LayerNorm, then scores against the shared
    token table (tied, as BERT's MLM head); only the bias of size V is its own. `transformers`' generator uses
    the exact GELU here whatever ``hidden_act`` says, and so does this head."""

    def __init__(self, config: ModelConfig, embedding_size: int) -> None:
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, embedding_size)  # (D_g -> D)
        self.layer_norm = nn.LayerNorm(embedding_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # (V,)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.layer_norm(F.gelu(self.transform(hidden)))  # (..., D_g) -> (..., D)
        return F.linear(h, word_embeddings, self.bias)  # (..., D) @ (V, D)^T + (V,) -> (..., V)


class Generator(nn.Module):
    """A small masked LM that reads the discriminator's embeddings (it has none of its own).

    ``embeddings_project`` maps the shared embeddings (width D) to the generator's width D_g when they differ;
    then come L encoder layers at width D_g (the course's ``EncoderLayer``, post- or pre-LayerNorm as the
    config says) and the head, which projects back to D to score every token of the shared table.
    """

    def __init__(self, config: ModelConfig, embedding_size: int) -> None:
        super().__init__()
        self.config = config
        D_g = config.hidden_size
        self.embeddings_project = nn.Linear(embedding_size, D_g) if embedding_size != D_g else None  # D -> D_g
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = (nn.LayerNorm(D_g, eps=config.layer_norm_eps)
                           if config.layer_norm_position == "pre" else None)
        self.head = GeneratorHead(config, embedding_size)
        self.apply(lambda m: _init_weights(m, config.initializer_range))

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor | None = None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> ModelOutput:
        """``embedded``: the shared embedding layer's output (B, T, D); ``mask``: the additive (B, 1, 1, T)
        padding mask. Returns the generator's hidden states (B, T, D_g) in a ModelOutput, without logits."""
        x = embedded if self.embeddings_project is None else self.embeddings_project(embedded)  # (B, T, D_g)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, mask, output_attentions)  # (B, T, D_g), (B, H_g, T, T) or None
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)  # (B, T, D_g)
            if output_hidden_states:
                hidden_states[-1] = x
        return ModelOutput(last_hidden_state=x,
                           hidden_states=tuple(hidden_states) if hidden_states is not None else None,
                           attentions=tuple(attentions) if attentions is not None else None)


# ----------------------------------------------------------------------------------------------------------
# 2. Replaced-token detection: sample, label, score
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_replacements(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of the generator's (N, V) logits, drawn from softmax(logits) (temperature 1), not
    its argmax: the discriminator must face plausible alternatives, not always the generator's best guess.
    No gradient flows through a draw. ``generator``: a seeded ``torch.Generator`` on the logits' device for
    reproducible draws (default: torch's global generator, which a pretraining checkpoint saves)."""
    if logits.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=logits.device)
    probs = logits.detach().float().softmax(dim=-1)  # (N, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)


def rtd_labels(original: torch.Tensor, corrupted: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The discriminator's targets (B, T): 1 where ``corrupted`` differs from ``original`` (replaced), 0 where
    it equals it, including a masked position whose sampled token happens to be the original one, and -100
    on padding (``attention_mask == 0``), which the loss skips."""
    labels = (corrupted != original).long()  # (B, T)
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return labels


def rtd_loss(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of "replaced" over every scored token: the mean over positions whose label is not
    -100 (and, if given, whose ``attention_mask`` is 1, as `transformers`' ElectraForPreTraining)."""
    active = labels != IGNORE_INDEX  # (B, T)
    if attention_mask is not None:
        active = active & (attention_mask != 0)
    return F.binary_cross_entropy_with_logits(logits[active].float(), labels[active].float())  # (M,) -> ()


@torch.no_grad()
def rtd_accuracies(generator_logits: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor,
                   labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the plots of notebook 11 need, as 0-d tensors (no device sync): the generator's MLM accuracy
    (argmax = original at the N masked positions), the discriminator's accuracy over every real token, its
    accuracy on the replaced tokens alone (those a model that always answers "original" misses), and the
    share of real tokens that were replaced."""
    active = labels != IGNORE_INDEX  # (B, T)
    said_replaced = (logits > 0)[active]  # (M,)
    replaced = labels[active] == 1  # (M,)
    n_replaced = replaced.sum()
    nan = torch.full((), float("nan"), device=logits.device)
    return {"generator_accuracy": (generator_logits.argmax(-1) == targets).float().mean(),
            "rtd_accuracy": (said_replaced == replaced).float().mean(),
            "replaced_accuracy": torch.where(n_replaced > 0, (said_replaced & replaced).sum() / n_replaced.clamp(min=1),
                                             nan),
            "replaced_fraction": replaced.float().mean()}


# ----------------------------------------------------------------------------------------------------------
# 3. The discriminator, and the whole ELECTRA model
# ----------------------------------------------------------------------------------------------------------

class DiscriminatorHead(nn.Module):
    """One logit per token, > 0 for "replaced": dense, activation, dense to 1 (`transformers`'
    ElectraDiscriminatorPredictions)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # (D -> D)
        self.act = _activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)  # (D -> 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)  # (B, T, D) -> (B, T)


class ElectraDiscriminator(BertWithHead):
    """The discriminator alone: the course's encoder (``self.bert``, no pooler) and a per-token binary head;
    `transformers`' ElectraForPreTraining. ``labels`` are 1 (replaced), 0 (original) or -100 (skipped); the
    loss is :func:`rtd_loss`. Its ``logits`` are (B, T)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = _check_config(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.discriminator_head = DiscriminatorHead(config)
        self.discriminator_head.apply(lambda m: _init_weights(m, config.initializer_range))

    def head(self, out: ModelOutput, labels: torch.Tensor | None, attention_mask: torch.Tensor | None) -> ModelOutput:
        out.logits = self.discriminator_head(out.last_hidden_state)  # (B, T, D) -> (B, T)
        if labels is not None:
            if labels.shape != out.logits.shape:
                raise ValueError(f"RTD labels must hold one 0/1 per token, shape {tuple(out.logits.shape)}, got "
                                 f"{tuple(labels.shape)} (make them with bertbook.electra.rtd_labels).")
            out.loss = rtd_loss(out.logits, labels, attention_mask)
        return out

    def discriminate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                     output_attentions: bool = False, output_hidden_states: bool = False) -> ModelOutput:
        """Which tokens of ``input_ids`` look replaced: ``logits`` (B, T), > 0 for "replaced"; with RTD
        ``labels``, the loss too."""
        return BertWithHead.forward(self, input_ids, attention_mask, token_type_ids, labels,
                                    output_attentions=output_attentions, output_hidden_states=output_hidden_states)


@dataclass
class ElectraOutput(ModelOutput):
    """What ``Electra`` returns. ``loss`` = ``mlm_loss`` + rtd_weight x ``rtd_loss``; ``logits`` (B, T) are the
    discriminator's (as in `transformers`), ``last_hidden_state``, ``hidden_states`` and ``attentions`` too."""

    rtd_loss: torch.Tensor | None = None  # the discriminator's binary cross-entropy over every real token
    generator_logits: torch.Tensor | None = None  # (N, V): the generator's scores at the N masked positions
    corrupted_ids: torch.Tensor | None = None  # (B, T): what the discriminator read
    rtd_labels: torch.Tensor | None = None  # (B, T): 1 replaced, 0 original, -100 padding
    generator_accuracy: torch.Tensor | None = None  # the generator's MLM accuracy at the masked positions
    rtd_accuracy: torch.Tensor | None = None  # the discriminator's accuracy over every real token
    replaced_accuracy: torch.Tensor | None = None  # ... over the replaced tokens alone (nan if none)
    replaced_fraction: torch.Tensor | None = None  # share of the real tokens that were replaced


class Electra(ElectraDiscriminator):
    """Generator and discriminator, trained together (notebook 11); built by `train.build_model` when
    ``pretrain.objective="electra"``.

    ``forward`` takes the pretraining batch (``input_ids`` masked, ``labels`` the original ids at the masked
    positions, -100 elsewhere: what `bertbook.masking.mask_tokens` makes) and returns an `ElectraOutput`.
    The generator reads that masked batch; the discriminator reads the original text with the generator's
    samples at every masked position. Without ``labels`` only the discriminator runs, on ``input_ids`` as
    they are. ``generator``: a seeded ``torch.Generator`` for the draws (default: torch's global one).
    The discriminator's encoder is ``self.bert``: ``model.load_encoder(folder)`` on any bertbook model loads
    it from a saved ``Electra``.
    """

    def __init__(self, config: ModelConfig, generator_size: float = GENERATOR_SIZE,
                 rtd_weight: float = RTD_WEIGHT) -> None:
        super().__init__(config)
        if not isinstance(rtd_weight, (int, float)) or rtd_weight < 0:
            raise ConfigError(f"rtd_weight must be a number >= 0 (the paper uses {RTD_WEIGHT:g}), got {rtd_weight!r}.")
        self.generator_size, self.rtd_weight = float(generator_size), float(rtd_weight)
        self.generator = Generator(generator_config(config, generator_size), embedding_size=config.hidden_size)

    def _head_kwargs(self) -> dict[str, Any]:
        return {"generator_size": self.generator_size, "rtd_weight": self.rtd_weight}

    @classmethod
    def _head_keys(cls) -> tuple[str, ...]:
        return ("generator_size", "rtd_weight")

    def generator_mlm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                      masked_only: bool = False, output_attentions: bool = False,
                      output_hidden_states: bool = False) -> ModelOutput:
        """The generator as a masked LM: ``logits`` (B, T, V), or (N, V) at the positions where ``labels`` is
        not -100 with ``masked_only``; ``loss`` the cross-entropy of the original tokens there. Hidden states
        and attentions are the generator's (width D_g)."""
        check_inputs(self.config, input_ids, attention_mask, token_type_ids,
                     values=input_ids.device.type == "cpu" or not self.bert._values_checked)
        x = self.bert.embeddings(input_ids, token_type_ids)  # the shared embeddings: (B, T, D)
        mask = None if attention_mask is None else extended_attention_mask(attention_mask, x.dtype)  # (B, 1, 1, T)
        out = self.generator(x, mask, output_attentions, output_hidden_states)  # (B, T, D_g)
        table = self.bert.embeddings.word_embeddings.weight  # (V, D): the shared token table
        if masked_only:
            if labels is None:
                raise ValueError("masked_only=True needs labels (-100 where nothing is predicted).")
            picked = labels != IGNORE_INDEX  # (B, T)
            out.logits = self.generator.head(out.last_hidden_state[picked], table)  # (N, D_g) -> (N, V)
            out.loss = F.cross_entropy(out.logits, labels[picked])
            return out
        out.logits = self.generator.head(out.last_hidden_state, table)  # (B, T, V)
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False, masked_only: bool = True,
                generator: torch.Generator | None = None) -> ElectraOutput | ModelOutput:
        """One ELECTRA step's forward pass. ``masked_only`` is accepted so that the pretraining loop calls
        every model alike; the generator always scores the masked positions only (for every position, call
        ``generator_mlm(..., masked_only=False)``)."""
        if labels is None:  # nothing masked: the discriminator alone judges input_ids
            return self.discriminate(input_ids, attention_mask, token_type_ids, None, output_attentions,
                                     output_hidden_states)
        if not masked_only:
            raise ValueError("Electra's generator scores the masked positions only; for logits at every position "
                             "call model.generator_mlm(..., masked_only=False).")
        picked = labels != IGNORE_INDEX  # (B, T): the positions the generator fills
        original = torch.where(picked, labels, input_ids)  # (B, T): the text before masking
        # 1. the generator: a small masked LM on the masked text, logits at the N masked positions only
        gen = self.generator_mlm(input_ids, attention_mask, token_type_ids, labels, masked_only=True)  # (N, V)
        # 2. sample a replacement at every masked position from the generator's softmax (no gradient)
        corrupted = original.clone()  # (B, T)
        corrupted[picked] = sample_replacements(gen.logits, generator)  # (N,) into the masked positions
        targets = rtd_labels(original, corrupted, attention_mask)  # (B, T): 1 replaced, 0 original, -100 pad
        # 3. the discriminator: replaced or original, for every real token
        out = self.discriminate(corrupted, attention_mask, token_type_ids, targets, output_attentions,
                                output_hidden_states)  # logits (B, T), loss = RTD
        result = ElectraOutput(**vars(out))
        result.mlm_loss, result.rtd_loss = gen.loss, out.loss
        result.loss = gen.loss + self.rtd_weight * out.loss  # MLM + lambda * RTD
        result.generator_logits, result.corrupted_ids, result.rtd_labels = gen.logits, corrupted, targets
        for name, value in rtd_accuracies(gen.logits, labels[picked], out.logits, targets).items():
            setattr(result, name, value)
        return result


# ----------------------------------------------------------------------------------------------------------
# 4. Held-out scores during pretraining
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_electra(model: Electra, batches: list[dict[str, torch.Tensor]], device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None, seed: int = 0) -> dict[str, float]:
    """Held-out scores of an ELECTRA run on fixed masked batches (`corpus.eval_batches`).

    The generator is a masked LM, scored as `evaluate.evaluate_mlm` scores one (``loss``, ``accuracy``,
    ``perplexity``, ``tokens``: the masked tokens); the discriminator adds ``rtd_loss``, ``rtd_accuracy`` (over
    every real token), ``replaced_accuracy`` (over the replaced ones) and ``replaced_fraction``. The
    replacements are drawn from a generator seeded with ``seed``, so that two evaluations of one model give the
    same numbers and the training run's random state is left untouched. Token-weighted over all batches.
    """
    device = torch.device(device)
    draws = torch.Generator(device=device).manual_seed(seed)
    s = dict.fromkeys(("mlm", "mlm_right", "masked", "rtd", "rtd_right", "real", "replaced", "replaced_right"), 0.0)
    with eval_mode(model):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()
                     if k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
            with autocast(device, dtype):
                out = model(**batch, generator=draws)
            target = batch["labels"][batch["labels"] != IGNORE_INDEX]  # (N,)
            logits = out.generator_logits.float()  # (N, V)
            s["mlm"] += float(F.cross_entropy(logits, target, reduction="sum"))
            s["mlm_right"] += int((logits.argmax(-1) == target).sum())
            s["masked"] += int(target.numel())
            active = out.rtd_labels != IGNORE_INDEX  # (B, T)
            z, y = out.logits.float()[active], out.rtd_labels[active]  # (M,), (M,)
            s["rtd"] += float(F.binary_cross_entropy_with_logits(z, y.float(), reduction="sum"))
            s["rtd_right"] += int(((z > 0) == (y == 1)).sum())
            s["real"] += int(y.numel())
            s["replaced"] += int((y == 1).sum())
            s["replaced_right"] += int(((z > 0) & (y == 1)).sum())
    loss = s["mlm"] / max(s["masked"], 1)
    return {"loss": loss, "accuracy": s["mlm_right"] / max(s["masked"], 1), "perplexity": math.exp(min(loss, 50.0)),
            "tokens": int(s["masked"]), "rtd_loss": s["rtd"] / max(s["real"], 1),
            "rtd_accuracy": s["rtd_right"] / max(s["real"], 1),
            "replaced_accuracy": s["replaced_right"] / s["replaced"] if s["replaced"] else float("nan"),
            "replaced_fraction": s["replaced"] / max(s["real"], 1)}


# ----------------------------------------------------------------------------------------------------------
# 5. Checked against transformers: ElectraForPreTraining (discriminator), ElectraForMaskedLM (generator)
# ----------------------------------------------------------------------------------------------------------
#
# `transformers`' ELECTRA is post-LayerNorm, as BERT: parity is checked on a post-LN config. The presets train
# pre-LayerNorm (the short-budget recipe); that moves the LayerNorms exactly as in BertModel, whose pre-LN form
# bertbook.hf checks against RobertaPreLayerNorm, and nothing else: the discriminator's encoder of a pre-LN run
# converts with bertbook.hf.to_hf(model.bert), but transformers has no pre-LN ELECTRA head to put on it.
# The names map as bertbook.hf's (same encoder rules), under ELECTRA's prefix and heads.

_HEAD_RULES = [
    (r"^discriminator_head\.", "discriminator_predictions."),
    (r"^generator\.embeddings_project\.", "electra.embeddings_project."),
    (r"^generator\.head\.transform\.", "generator_predictions.dense."),
    (r"^generator\.head\.layer_norm\.", "generator_predictions.LayerNorm."),
    (r"^generator\.head\.bias$", "generator_lm_head.bias"),
]
_TIED = "generator_lm_head.weight"  # transformers' generator output matrix: the shared token table


def hf_electra_name(name: str) -> str:
    """The `transformers` name of an ELECTRA tensor: the discriminator's in ElectraForPreTraining, the
    generator's (and the shared embeddings) in ElectraForMaskedLM. E.g. 'bert.layers.0.ffn.fc1.weight' and
    'generator.layers.0.ffn.fc1.weight' -> 'electra.encoder.layer.0.intermediate.dense.weight'."""
    for pattern, repl in _HEAD_RULES:
        if re.search(pattern, name):
            return re.sub(pattern, repl, name)
    prefix, _, rest = name.partition(".")
    if prefix not in ("bert", "generator"):
        raise KeyError(f"{name} is not a tensor of an ELECTRA model.")
    for pattern, repl in _ENCODER_RULES:
        if re.search(pattern, rest):
            return "electra." + re.sub(pattern, repl, rest)
    return "electra." + rest


def to_hf_config(config: ModelConfig, embedding_size: int | None = None, attn_implementation: str = "eager"):
    """A `transformers.ElectraConfig` with the same fields; ``embedding_size`` defaults to the hidden size."""
    from transformers import ElectraConfig

    if config.layer_norm_position != "post":
        raise ValueError("transformers' ELECTRA is post-LayerNorm; this config is pre-LayerNorm. Convert the "
                         "encoder alone with bertbook.hf.to_hf(model.bert) (RobertaPreLayerNorm), or check parity "
                         "on dataclasses.replace(config, layer_norm_position='post').")
    fields = {k: v for k, v in config.to_dict().items() if k != "layer_norm_position"}
    hf_config = ElectraConfig(**fields, embedding_size=embedding_size or config.hidden_size)
    hf_config._attn_implementation = attn_implementation
    return hf_config


def _load(hf: nn.Module, state: dict[str, torch.Tensor], like: nn.Module) -> nn.Module:
    theirs = hf.state_dict()
    wrong = [k for k, v in state.items() if k not in theirs or theirs[k].shape != v.shape]
    missing = [k for k in theirs if k not in state]
    if wrong or missing:
        raise CheckpointError(f"transformers.{type(hf).__name__} does not fit these tensors: "
                              f"{', '.join((wrong + missing)[:5])}.")
    hf.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)  # copies
    return hf.to(next(like.parameters()).device).train(like.training)


def to_hf(model: ElectraDiscriminator, attn_implementation: str = "eager"):
    """The discriminator (of an ``Electra`` or an ``ElectraDiscriminator``) as `transformers`'
    ElectraForPreTraining, weights copied: the form in which ELECTRA discriminators are published."""
    import transformers

    hf = transformers.ElectraForPreTraining(to_hf_config(model.config, attn_implementation=attn_implementation))
    state = {hf_electra_name(k): v for k, v in model.state_dict().items() if not k.startswith("generator.")}
    return _load(hf, state, model)


def to_hf_generator(model: Electra, attn_implementation: str = "eager"):
    """The generator, with the shared embeddings, as `transformers`' ElectraForMaskedLM: ``embedding_size`` is
    the discriminator's width, ``hidden_size`` the generator's, and ``embeddings_project`` maps one to the other."""
    import transformers

    hf_config = to_hf_config(model.generator.config, model.config.hidden_size, attn_implementation)
    hf = transformers.ElectraForMaskedLM(hf_config)
    state = {hf_electra_name(k): v for k, v in model.state_dict().items()
             if k.startswith(("generator.", "bert.embeddings."))}
    state[_TIED] = state["electra.embeddings.word_embeddings.weight"]
    return _load(hf, state, model)


def from_hf(discriminator: nn.Module, generator: nn.Module | None = None) -> ElectraDiscriminator | Electra:
    """A bertbook model equal to `transformers`' ElectraForPreTraining: an ``ElectraDiscriminator``; with its
    ElectraForMaskedLM ``generator`` (whose embeddings must equal the discriminator's: ELECTRA shares them), a
    whole ``Electra``, its ``generator_size`` read from the two widths."""
    if type(discriminator).__name__ != "ElectraForPreTraining":
        raise TypeError(f"from_hf converts a transformers ElectraForPreTraining (the discriminator), got "
                        f"{type(discriminator).__name__}.")
    hc = discriminator.config
    if hc.embedding_size != hc.hidden_size:
        raise CheckpointError(f"This discriminator has {hc.embedding_size}-wide embeddings under a "
                              f"{hc.hidden_size}-wide encoder (an embeddings_project, as ELECTRA-Small's). "
                              f"bertbook's encoder keeps its embeddings at its own width (the paper's choice when "
                              f"the generator is the smaller one), so it has no bertbook form; a discriminator with "
                              f"embedding_size == hidden_size (ELECTRA-Base's and -Large's shape) converts.")
    config = from_hf_config(hc)
    theirs = {f"d:{k}": v for k, v in discriminator.state_dict().items()}
    ignored: set[str] = set()  # transformers tensors bertbook holds once: the generator's copy of the embeddings
    if generator is None:
        with torch.device("meta"):  # shapes only: every tensor is replaced below
            ours = ElectraDiscriminator(config)
    else:
        gc = generator.config
        with torch.device("meta"):
            ours = Electra(config, generator_size=gc.hidden_size / hc.hidden_size)
        g = ours.generator.config
        if (gc.embedding_size, gc.num_hidden_layers, gc.num_attention_heads, gc.intermediate_size) != \
                (hc.hidden_size, g.num_hidden_layers, g.num_attention_heads, g.intermediate_size):
            raise CheckpointError(f"The generator (H={gc.hidden_size}, {gc.num_attention_heads} heads, FFN "
                                  f"{gc.intermediate_size}, {gc.num_hidden_layers} layers, embeddings "
                                  f"{gc.embedding_size}) is not the discriminator scaled by one fraction with the "
                                  f"discriminator's embeddings (expected {g.num_attention_heads} heads, FFN "
                                  f"{g.intermediate_size}, {g.num_hidden_layers} layers, embeddings {hc.hidden_size}).")
        theirs.update({f"g:{k}": v for k, v in generator.state_dict().items()})
        shared = [k[2:] for k in theirs if k.startswith("g:electra.embeddings.")]  # the generator's copy
        if not all(torch.equal(theirs[f"g:{k}"], theirs[f"d:{k}"]) for k in shared):
            raise CheckpointError("The generator's embeddings differ from the discriminator's; ELECTRA shares them, "
                                  "so one bertbook Electra cannot hold both. Convert the discriminator alone.")
        ignored = {"g:" + _TIED, *(f"g:{k}" for k in shared)}
    state, used = {}, set()
    for name in ours.state_dict():
        source = ("g:" if name.startswith("generator.") else "d:") + hf_electra_name(name)
        if source not in theirs:
            raise CheckpointError(f"transformers' ELECTRA has no tensor {source[2:]} for bertbook's {name}.")
        state[name] = theirs[source].detach().clone()  # our own copy: the two models share nothing
        used.add(source)
    unused = [k[2:] for k in theirs if k not in used and k not in ignored]
    if unused:
        raise CheckpointError(f"transformers' ELECTRA holds tensors bertbook would drop: {', '.join(unused[:5])}.")
    load_exact(ours, state, "weights converted from transformers' ELECTRA", assign=True)
    return ours.train(discriminator.training)


def _perturb(model: nn.Module, seed: int) -> None:
    """Move every weight off its initial value (biases start at 0, LayerNorms at identity), so that a tensor
    mapped to the wrong place, or a LayerNorm applied in the wrong place, shows up as a difference."""
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device))


@torch.no_grad()
def compare(ours: Electra, hf: nn.Module, padding: bool, seed: int = 0) -> dict[str, Any]:
    """Largest absolute differences between bertbook's ELECTRA and `transformers`' on one batch: the
    discriminator against an ElectraForPreTraining, the generator against an ElectraForMaskedLM."""
    kind = type(hf).__name__
    device = next(ours.parameters()).device
    ids, mask, types, mlm_labels = _batch(ours.config, padding, seed, device)
    ours.eval()
    hf.eval()
    kw = {"attention_mask": mask, "token_type_ids": types, "output_attentions": True, "output_hidden_states": True}
    row: dict[str, Any] = {"model": kind, "padding": padding}
    if kind == "ElectraForPreTraining":
        g = torch.Generator().manual_seed(seed + 1)
        replaced = (torch.rand(ids.shape, generator=g) < 0.15).long().to(device)  # (B, T) 0/1
        a = ours.discriminate(ids, labels=replaced.masked_fill(mask == 0, IGNORE_INDEX), **kw)
        b = hf(input_ids=ids, labels=replaced, **kw)
        fused = ours.discriminate(ids, mask, types).last_hidden_state
    else:
        a = ours.generator_mlm(ids, labels=mlm_labels, **kw)
        b = hf(input_ids=ids, labels=mlm_labels, **kw)
        c = ours.generator_mlm(ids, mask, types, labels=mlm_labels, masked_only=True)
        row["masked_only_loss"] = _max_diff(c.loss, a.loss)
        fused = ours.generator_mlm(ids, mask, types).last_hidden_state
    row["hidden_states"] = max(_max_diff(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
    row["logits"] = _max_diff(a.logits, b.logits)
    row["loss"] = _max_diff(a.loss, b.loss)
    row["attentions"] = [_max_diff(x, y) for x, y in zip(a.attentions, b.attentions, strict=True)]
    row["fused"] = _max_diff(fused, b.hidden_states[-1])  # the fused attention kernel gives the same output
    return row


def parity_report(device: str = "cpu", seed: int = 0, config: ModelConfig | None = None,
                  generator_size: float = GENERATOR_SIZE) -> list[dict[str, Any]]:
    """Rows in `bertbook.hf.format_report`'s shape, with and without padding, for the discriminator
    (ElectraForPreTraining) and the generator (ElectraForMaskedLM, with ``embeddings_project``).

    ``electra``: a bertbook ``Electra`` with random weights converted to `transformers`; ``electra-hf``: a pair
    of random `transformers` models (sharing their embeddings) converted to bertbook. Every weight is moved off
    its initial value first. ``round_trip``: converting back reproduces every tensor exactly.
    """
    import transformers

    cfg = config or ModelConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64)
    rows = []
    for source in ("electra", "electra-hf"):
        torch.manual_seed(seed)
        if source == "electra":  # bertbook -> transformers
            ours = Electra(cfg, generator_size=generator_size).to(device)
            _perturb(ours, seed)
            hf_d, hf_g = to_hf(ours), to_hf_generator(ours)
            back = from_hf(hf_d, hf_g)
            b_state = back.state_dict()
            exact = all(torch.equal(v, b_state[k]) for k, v in ours.state_dict().items())
        else:  # transformers -> bertbook
            g_cfg = generator_config(cfg, generator_size)
            hf_d = transformers.ElectraForPreTraining(to_hf_config(cfg)).to(device)
            hf_g = transformers.ElectraForMaskedLM(to_hf_config(g_cfg, cfg.hidden_size)).to(device)
            _perturb(hf_d, seed)
            _perturb(hf_g, seed + 1)
            hf_g.electra.embeddings.load_state_dict(hf_d.electra.embeddings.state_dict())  # shared, as ELECTRA's
            ours = from_hf(hf_d, hf_g)
            exact = True
            for original, back in ((hf_d, to_hf(ours)), (hf_g, to_hf_generator(ours))):
                a_state, b_state = original.state_dict(), back.state_dict()
                exact = exact and all(torch.equal(v, b_state[k]) for k, v in a_state.items())
        for hf in (hf_d, hf_g):
            for padding in (False, True):
                rows.append({**compare(ours, hf, padding, seed), "weights": source, "round_trip": exact})
    return rows
