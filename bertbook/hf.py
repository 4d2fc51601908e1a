"""Interop with Hugging Face `transformers`: convert configs and weights both ways, and prove equality.

Taught in notebook 03. bertbook's parameter names are its own (``layers.3.ffn.fc1``); `transformers` spells
the same tensor ``encoder.layer.3.intermediate.dense``. ``hf_name`` is the whole mapping, so converting is
renaming: no tensor is reshaped or transposed. ``parity_report`` feeds the same batch to both models (random
weights converted bertbook -> transformers, MiniLM's real weights converted transformers -> bertbook; with and
without padding) and records the largest absolute difference of every output; ``python -m bertbook parity``
prints it and fails above the tolerance (1e-5 in float32).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from torch import nn

from . import model as M
from .checkpoint import CheckpointError, load_exact
from .config import ModelConfig
from .minilm import load_minilm

__all__ = ["hf_name", "hf_prelayernorm_name", "to_hf_config", "from_hf_config", "to_hf", "from_hf", "parity_report",
           "format_report", "TOLERANCE", "MODEL_TYPES"]

TOLERANCE = 1e-5  # largest absolute difference accepted in float32
MODEL_TYPES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
               "BertForTokenClassification")

# bertbook name (encoder part, after an optional "bert." prefix) -> transformers name
_ENCODER_RULES = [
    (r"^embeddings\.layer_norm\.", "embeddings.LayerNorm."),
    (r"^layers\.(\d+)\.attention\.(query|key|value)\.", r"encoder.layer.\1.attention.self.\2."),
    (r"^layers\.(\d+)\.attention\.out\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.attention_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^layers\.(\d+)\.ffn\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.ffn\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.ffn_norm\.", r"encoder.layer.\1.output.LayerNorm."),
]
_HEAD_RULES = [
    (r"^mlm\.transform\.", "cls.predictions.transform.dense."),
    (r"^mlm\.layer_norm\.", "cls.predictions.transform.LayerNorm."),
    (r"^mlm\.bias$", "cls.predictions.bias"),
    (r"^sentence_classifier\.", "cls.seq_relationship."),
]
# pre-LayerNorm models (``layer_norm_position="pre"``) convert to transformers' RobertaPreLayerNorm: BERT's
# names under RoBERTa's prefix and head, except the LayerNorms, named where they are applied (before attention,
# before the feed-forward, and once after the last layer); the first matching rule wins
_PRE_LN_ENCODER_RULES = [
    (r"^layers\.(\d+)\.attention_norm\.", r"encoder.layer.\1.attention.LayerNorm."),
    (r"^layers\.(\d+)\.ffn_norm\.", r"encoder.layer.\1.intermediate.LayerNorm."),
    (r"^final_norm\.", "LayerNorm."),
    *_ENCODER_RULES,
]
_PRE_LN_HEAD_RULES = [
    (r"^mlm\.transform\.", "lm_head.dense."),
    (r"^mlm\.layer_norm\.", "lm_head.layer_norm."),
    (r"^mlm\.bias$", "lm_head.bias"),
]
_PRE_LN_TYPES = {"BertModel": "RobertaPreLayerNormModel", "BertForMaskedLM": "RobertaPreLayerNormForMaskedLM"}
# transformers tensors that bertbook does not store: the MLM decoder is tied to the token embeddings and
# its bias to cls.predictions.bias
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def _rename(name: str, head_rules: list, encoder_rules: list, prefix: str) -> str:
    """Apply the first matching head rule, else the first matching encoder rule to the part after an
    optional "bert." prefix (which becomes ``prefix``)."""
    for pattern, repl in head_rules:
        if re.search(pattern, name):
            return re.sub(pattern, repl, name)
    has_prefix = name.startswith("bert.")
    rest = name[len("bert."):] if has_prefix else name
    for pattern, repl in encoder_rules:
        if re.search(pattern, rest):
            rest = re.sub(pattern, repl, rest)
            break
    return prefix + rest if has_prefix else rest


def hf_name(name: str) -> str:
    """The `transformers` name of a bertbook parameter, e.g. 'bert.layers.0.ffn.fc1.weight' ->
    'bert.encoder.layer.0.intermediate.dense.weight'. Embeddings, pooler and classifier are spelled alike."""
    return _rename(name, _HEAD_RULES, _ENCODER_RULES, "bert.")


def hf_prelayernorm_name(name: str) -> str:
    """The `transformers` RobertaPreLayerNorm name of a pre-LayerNorm bertbook parameter, e.g.
    'bert.layers.0.ffn_norm.weight' -> 'roberta_prelayernorm.encoder.layer.0.intermediate.LayerNorm.weight'."""
    return _rename(name, _PRE_LN_HEAD_RULES, _PRE_LN_ENCODER_RULES, "roberta_prelayernorm.")


# ----------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------

def to_hf_config(config: ModelConfig, **extra: Any):
    """A `transformers.BertConfig` with the same fields (extra keywords, e.g. num_labels, passed through);
    a `RobertaPreLayerNormConfig` for a pre-LayerNorm config."""
    fields = {k: v for k, v in config.to_dict().items() if k != "layer_norm_position"}
    if config.layer_norm_position == "pre":
        from transformers import RobertaPreLayerNormConfig

        return RobertaPreLayerNormConfig(**fields, **extra)
    from transformers import BertConfig

    return BertConfig(**fields, **extra)


def from_hf_config(hf_config) -> ModelConfig:
    """A bertbook ModelConfig from a `transformers.BertConfig` (refuses what bertbook does not implement)."""
    if getattr(hf_config, "is_decoder", False) or getattr(hf_config, "add_cross_attention", False):
        raise ValueError("This BertConfig is a decoder (is_decoder / add_cross_attention); bertbook implements "
                         "the bidirectional encoder only.")
    kind = getattr(hf_config, "position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise ValueError(f"position_embedding_type={kind!r} is not supported: bertbook learns absolute "
                         f"positions as BERT does.")
    if hf_config.hidden_act not in ("gelu", "gelu_new", "relu"):
        raise ValueError(f"hidden_act={hf_config.hidden_act!r} is not supported (gelu, gelu_new, relu).")
    fields = {k: getattr(hf_config, k) for k in ModelConfig().to_dict() if k != "layer_norm_position"}
    if fields["pad_token_id"] is None:
        fields["pad_token_id"] = 0
    return ModelConfig(**fields)


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------

def to_hf(model: nn.Module, attn_implementation: str = "eager"):
    """The same network as a `transformers` model of the matching class, weights copied (notebook 03).

    ``attn_implementation="eager"`` (the default) makes it return attention weights like bertbook does.
    """
    import transformers

    kind = type(model).__name__
    cfg = model.config
    if cfg.layer_norm_position == "pre":
        return _to_hf_prelayernorm(model, attn_implementation)
    if kind == "BertModel":
        hf_cfg = to_hf_config(cfg)
        build = lambda c: transformers.BertModel(c, add_pooling_layer=model.pooler is not None)  # noqa: E731
    elif kind == "BertForMaskedLM":
        hf_cfg, build = to_hf_config(cfg), transformers.BertForMaskedLM
    elif kind == "BertForPreTraining":
        if model.num_sentence_labels != 2:
            raise ValueError(f"transformers' BertForPreTraining has a 2-way sentence classifier; this model "
                             f"has {model.num_sentence_labels}. Convert model.bert (a BertModel) instead.")
        hf_cfg, build = to_hf_config(cfg), transformers.BertForPreTraining
    elif kind in ("BertForSequenceClassification", "BertForTokenClassification"):
        if getattr(model, "pooling", "cls") != "cls":
            raise TypeError("transformers' BertForSequenceClassification reads the pooled [CLS] vector; this "
                            "model averages the tokens (pooling='mean'). Convert its encoder, model.bert.")
        hf_cfg = to_hf_config(cfg, num_labels=model.num_labels, classifier_dropout=model.classifier_dropout)
        build = getattr(transformers, kind)
    else:
        raise TypeError(f"to_hf converts {', '.join(MODEL_TYPES)}; got {kind}.")
    hf_cfg._attn_implementation = attn_implementation
    hf = build(hf_cfg)
    tied = ("cls.predictions.decoder", "bert.embeddings.word_embeddings.weight", "cls.predictions.bias")
    return _copy_weights(model, hf, hf_name, tied)


def _to_hf_prelayernorm(model: nn.Module, attn_implementation: str):
    """A pre-LayerNorm bertbook BertModel or BertForMaskedLM as transformers' RobertaPreLayerNorm model.

    RoBERTa numbers positions from ``pad_token_id + 1`` unless told otherwise: call it with
    ``position_ids=torch.arange(T)`` to get bertbook's positions (``compare`` does).
    """
    import transformers

    kind = type(model).__name__
    if kind not in _PRE_LN_TYPES:
        raise TypeError(f"A pre-LayerNorm {kind} has no transformers class to convert to; convert its encoder "
                        f"(model.bert) or a BertForMaskedLM ({', '.join(_PRE_LN_TYPES)}).")
    hf_cfg = to_hf_config(model.config)
    hf_cfg._attn_implementation = attn_implementation
    if kind == "BertModel":
        hf = transformers.RobertaPreLayerNormModel(hf_cfg, add_pooling_layer=model.pooler is not None)
    else:
        hf = transformers.RobertaPreLayerNormForMaskedLM(hf_cfg)
    tied = ("lm_head.decoder", "roberta_prelayernorm.embeddings.word_embeddings.weight", "lm_head.bias")
    return _copy_weights(model, hf, hf_prelayernorm_name, tied)


def _copy_weights(model: nn.Module, hf: nn.Module, rename, tied: tuple[str, str, str]) -> nn.Module:
    """Copy every bertbook tensor into ``hf`` under its ``rename``d name; ``tied`` names the MLM decoder,
    the token-embedding table it shares and its bias, for a transformers model that keeps its own copy."""
    theirs = hf.state_dict()
    new_state = {}
    for name, tensor in model.state_dict().items():
        target = rename(name)
        if target not in theirs or theirs[target].shape != tensor.shape:
            raise CheckpointError(f"bertbook tensor {name} ({tuple(tensor.shape)}) has no counterpart "
                                  f"{target} of the same shape in transformers.{type(hf).__name__}.")
        new_state[target] = tensor.detach()  # load_state_dict copies it
    decoder, embeddings, bias = tied
    if f"{decoder}.weight" in theirs:  # tied: the decoder is the token-embedding table
        new_state[f"{decoder}.weight"] = new_state[embeddings]
        new_state[f"{decoder}.bias"] = new_state[bias]
    missing = [k for k in theirs if k not in new_state]
    if missing:
        raise CheckpointError(f"transformers.{type(hf).__name__} expects tensors bertbook does not have: "
                              f"{', '.join(missing[:5])}.")
    hf.load_state_dict(new_state, strict=True)
    return hf.to(next(model.parameters()).device).train(model.training)


def from_hf(hf_model: nn.Module) -> nn.Module:
    """A bertbook model equal to a `transformers` BertModel, BertForMaskedLM, BertForPreTraining,
    BertForSequenceClassification or BertForTokenClassification (notebook 03)."""
    kind = type(hf_model).__name__
    if kind not in MODEL_TYPES:
        raise TypeError(f"from_hf converts transformers {', '.join(MODEL_TYPES)}; got {kind}.")
    cfg = from_hf_config(hf_model.config)
    with torch.device("meta"):  # shapes only: every tensor is replaced by a converted one below
        if kind == "BertModel":
            ours = M.BertModel(cfg, add_pooling_layer=hf_model.pooler is not None)
        elif kind in ("BertForSequenceClassification", "BertForTokenClassification"):
            ours = getattr(M, kind)(cfg, num_labels=hf_model.num_labels,
                                    classifier_dropout=hf_model.config.classifier_dropout)
        else:
            ours = getattr(M, kind)(cfg)
    theirs = hf_model.state_dict()
    if "cls.predictions.decoder.weight" in theirs:
        emb = theirs["bert.embeddings.word_embeddings.weight"]
        if not torch.equal(theirs["cls.predictions.decoder.weight"], emb):
            raise CheckpointError("This model's MLM output matrix is not tied to its token embeddings; "
                                    "bertbook ties them as BERT does and cannot represent it.")
    new_state = {}
    for name, tensor in ours.state_dict().items():
        source = hf_name(name)
        if source not in theirs:
            raise CheckpointError(f"transformers.{kind} has no tensor {source} for bertbook's {name}.")
        new_state[name] = theirs[source].detach().clone()  # our own copy: the two models share nothing
    used = {hf_name(n) for n in new_state}
    unused = [k for k in theirs if k not in used and k not in _TIED]
    if unused:
        raise CheckpointError(f"transformers.{kind} holds tensors bertbook would drop: {', '.join(unused[:5])}.")
    load_exact(ours, new_state, f"weights converted from transformers.{kind}", assign=True)
    return ours.train(hf_model.training)


# ----------------------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------------------

def _batch(cfg: ModelConfig, padding: bool, seed: int, device: str, batch: int = 3, length: int = 16):
    """A fixed random batch: ids, attention_mask (padded to lengths T, 2T/3, T/3 when padding), segments."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, cfg.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if padding:
        for i in range(batch):
            mask[i, max(2, length * (batch - i) // batch):] = 0
    ids = ids.masked_fill(mask == 0, cfg.pad_token_id)
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 2:] = 1
    labels = torch.full((batch, length), M.IGNORE_INDEX)
    pick = (torch.rand(batch, length, generator=g) < 0.3) & (mask == 1)
    labels[pick] = torch.randint(0, cfg.vocab_size, (int(pick.sum()),), generator=g)
    labels[0, 1] = int(ids[0, 1])  # at least one position to predict
    move = lambda t: t.to(device)  # noqa: E731
    return move(ids), move(mask), move(types), move(labels)


def _labels_for(kind: str, model: nn.Module, mlm_labels: torch.Tensor, seed: int) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(seed + 1)
    B, T = mlm_labels.shape
    if kind in ("BertForMaskedLM", "BertForPreTraining"):
        return mlm_labels
    if kind == "BertForSequenceClassification":
        return torch.randint(0, model.num_labels, (B,), generator=g).to(mlm_labels.device)
    if kind == "BertForTokenClassification":
        labels = torch.randint(0, model.num_labels, (B, T), generator=g)
        labels[:, 0] = M.IGNORE_INDEX  # [CLS] carries no tag
        return labels.to(mlm_labels.device)
    return None


def _max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:
        raise AssertionError("one model returned an output the other did not")
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.detach().double() - b.detach().double()).abs().max())


@torch.no_grad()
def compare(ours: nn.Module, hf: nn.Module, padding: bool, seed: int = 0) -> dict[str, Any]:
    """Largest absolute differences between a bertbook model and a `transformers` model on one batch."""
    kind = type(ours).__name__
    device = next(ours.parameters()).device
    ids, mask, types, mlm_labels = _batch(ours.config, padding, seed, device)
    labels = _labels_for(kind, ours, mlm_labels, seed)
    ours.eval()
    hf.eval()
    kw = {"attention_mask": mask, "token_type_ids": types}
    a = ours(ids, **kw, labels=labels, output_attentions=True, output_hidden_states=True)
    hf_kw = {"labels": labels} if kind not in ("BertModel", "BertForPreTraining") else {}
    if ours.config.layer_norm_position == "pre":  # RoBERTa would number positions from pad_token_id + 1
        hf_kw["position_ids"] = torch.arange(ids.shape[1], device=device).expand_as(ids)
    b = hf(input_ids=ids, **kw, **hf_kw, output_attentions=True, output_hidden_states=True)
    row: dict[str, Any] = {"model": kind, "padding": padding}
    row["hidden_states"] = max(_max_diff(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
    if kind == "BertModel":
        row["hidden_states"] = max(row["hidden_states"], _max_diff(a.last_hidden_state, b.last_hidden_state))
        if ours.pooler is not None:
            row["pooler"] = _max_diff(a.pooler_output, b.pooler_output)
    else:
        logits_b = b.prediction_logits if kind == "BertForPreTraining" else b.logits
        row["logits"] = _max_diff(a.logits, logits_b)
        if kind == "BertForPreTraining":
            row["logits"] = max(row["logits"], _max_diff(a.sentence_logits, b.seq_relationship_logits))
        if b.get("loss") is not None:
            row["loss"] = _max_diff(a.loss, b.loss)
    if kind in ("BertForMaskedLM", "BertForPreTraining"):  # masked-only logits give the same loss
        c = ours(ids, **kw, labels=mlm_labels, masked_only=True)
        row["masked_only_loss"] = _max_diff(c.mlm_loss if c.mlm_loss is not None else c.loss,
                                            a.mlm_loss if a.mlm_loss is not None else a.loss)
    row["attentions"] = [_max_diff(x, y) for x, y in zip(a.attentions, b.attentions, strict=True)]
    # the fused attention kernel (used when no attentions are requested) gives the same encoder output
    row["fused"] = _max_diff(ours(ids, **kw).last_hidden_state, b.hidden_states[-1])
    return row


def _minilm_hf(kind: str, num_labels: int, _cache: dict = {}):  # noqa: B006 (a deliberate per-process cache)
    """MiniLM's real encoder weights in a `transformers` model of class ``kind`` (heads freshly initialised)."""
    import transformers

    if "base" not in _cache:
        _cache["base"] = load_minilm("base")[0].eval()
    base = _cache["base"]
    config = base.config.__class__(**base.config.to_dict())
    config._attn_implementation = "eager"
    if kind == "BertModel":
        hf = transformers.BertModel(config)
        hf.load_state_dict(base.state_dict())
        return hf
    if "Classification" in kind:
        config.num_labels = num_labels
    hf = getattr(transformers, kind)(config)
    encoder = {k: v for k, v in base.state_dict().items() if hf.bert.pooler is not None or not k.startswith("pooler.")}
    hf.bert.load_state_dict(encoder, strict=True)
    if hasattr(hf, "tie_weights"):
        hf.tie_weights()
    return hf


def parity_report(weights: tuple[str, ...] = ("random", "random-pre-ln", "minilm"),
                  models: tuple[str, ...] = MODEL_TYPES, device: str = "cpu", seed: int = 0,
                  config: ModelConfig | None = None) -> list[dict[str, Any]]:
    """One row per (weights, model, padding) with the largest absolute difference of each output.

    ``random``: a bertbook model with random weights is converted to `transformers` (bertbook -> HF).
    ``minilm``: MiniLM's real weights in `transformers` are converted to bertbook (HF -> bertbook).
    Each conversion is also converted back and must reproduce every tensor exactly (``round_trip``).
    """
    cfg = config or ModelConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64)
    rows = []
    for source in weights:
        for kind in models:
            torch.manual_seed(seed)
            if source == "random-pre-ln":  # pre-LayerNorm, bertbook -> transformers' RobertaPreLayerNorm
                if kind not in _PRE_LN_TYPES:
                    continue
                ours = getattr(M, kind)(dataclasses.replace(cfg, layer_norm_position="pre")).to(device)
                _perturb_norms(ours, seed)
                hf = to_hf(ours)
                h_state = hf.state_dict()
                exact = all(torch.equal(v, h_state[hf_prelayernorm_name(k)]) for k, v in ours.state_dict().items())
                exact = exact and len(h_state) == len(ours.state_dict()) + 2 * ("lm_head.decoder.weight" in h_state)
                for padding in (False, True):
                    rows.append({**compare(ours, hf, padding, seed), "weights": source, "round_trip": exact})
                continue
            if source == "random":
                extra = {"num_labels": 3} if "Classification" in kind else {}
                ours = getattr(M, kind)(cfg, **extra).to(device)
                hf = to_hf(ours)
                back = from_hf(hf)
            elif source == "minilm":
                hf = _minilm_hf(kind, num_labels=3).to(device)
                ours = from_hf(hf)
                back = to_hf(ours)
            else:
                raise ValueError(f"weights must be 'random', 'random-pre-ln' or 'minilm', got {source!r}.")
            a_state, b_state = ours.state_dict(), back.state_dict()
            if source == "random":
                exact = all(torch.equal(v, b_state[k]) for k, v in a_state.items())
            else:
                h_state = hf.state_dict()
                exact = all(torch.equal(v, h_state[k]) for k, v in b_state.items())
            for padding in (False, True):
                row = compare(ours, hf, padding, seed)
                row["weights"] = source
                row["round_trip"] = exact
                rows.append(row)
    return rows


def _perturb_norms(model: nn.Module, seed: int) -> None:
    """Move every LayerNorm away from its identity initialisation, so that a LayerNorm applied in the wrong
    place (or not at all) shows up as a difference."""
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.device))


_COLUMNS = ("hidden_states", "pooler", "logits", "loss", "masked_only_loss", "fused")


def worst(row: dict[str, Any]) -> float:
    """The largest difference in a parity row."""
    values = [row[c] for c in _COLUMNS if c in row] + list(row["attentions"])
    return max(values)


def format_report(rows: list[dict[str, Any]], tolerance: float = TOLERANCE) -> str:
    """The parity table as fixed-width text; '-' where an output does not apply."""
    head = f"{'weights':<13} {'model':<29} {'pad':<3} " + " ".join(f"{c[:11]:>11}" for c in _COLUMNS) \
        + f" {'attentions (per layer)':<26} {'ok':<3}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(f"{r[c]:>11.1e}" if c in r else f"{'-':>11}" for c in _COLUMNS)
        att = " ".join(f"{x:.0e}" for x in r["attentions"])
        ok = "yes" if worst(r) <= tolerance and r["round_trip"] else "NO"
        lines.append(f"{r['weights']:<13} {r['model']:<29} {'yes' if r['padding'] else 'no':<3} {cells} "
                     f"{att:<26} {ok:<3}")
    return "\n".join(lines)


