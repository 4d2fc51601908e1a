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

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadSelfAttention, extended_attention_mask
from .config import ModelConfig

__all__ = [
    "ModelOutput",
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
    "attention_modules",
    "count_parameters",
    "CheckpointError",
    "MissingFileError",
    "checkpoint_config",
    "file_error",
    "read_json_file",
    "read_weights_file",
    "check_files",
    "load_or_explain",
]

IGNORE_INDEX = -100  # label value that the losses skip (as in transformers)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint does not fit the model it is loaded into, or one of its files is damaged; the message says
    what differs (or which file) and what to do."""


class MissingFileError(CheckpointError, FileNotFoundError):
    """A file that a checkpoint, tokenizer or fine-tuned model folder needs is not there."""


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
# Input checks: errors a learner can act on
# ----------------------------------------------------------------------------------------------------------

def check_inputs(config: ModelConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 token_type_ids: torch.Tensor | None) -> None:
    """Raise a ValueError that says what to do when the inputs do not fit the model."""
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
    if torch.compiler.is_compiling() or input_ids.numel() == 0:
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
# Saving and loading (shared by every model class)
# ----------------------------------------------------------------------------------------------------------

def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Damaged files. A run killed while writing, a full disk or a bad copy leaves a truncated or garbled file; the
# libraries then fail with messages such as "invalid header length". Every loader goes through these helpers,
# so the error names the file, says what is wrong with it and what to do (``remedy``: by default, re-run
# what wrote the folder or delete it).

def _remedy(folder: Path, remedy: str | None) -> str:
    return remedy or (f"Re-run the command that wrote {folder} (or save it again with save_pretrained), "
                      f"or delete that folder.")


def _problem(exc: BaseException) -> str:
    """An exception as one short line, for a message that stays one paragraph."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def file_error(path: str | os.PathLike, problem: str | None, remedy: str | None = None,
               cause: BaseException | None = None) -> CheckpointError:
    """The error for a file that cannot be used: which file, what is wrong (``None``: it is missing; ``cause``:
    the library's exception, added in one line) and what to do (``remedy``)."""
    path = Path(path)
    if problem is None:
        return MissingFileError(f"{path} is missing. {_remedy(path.parent, remedy)}")
    if cause is not None:
        problem = f"{problem}: {_problem(cause)}"
    return CheckpointError(f"{path} is damaged ({problem}). {_remedy(path.parent, remedy)}")


def read_json_file(path: str | os.PathLike, remedy: str | None = None) -> dict[str, Any]:
    """A JSON object read from ``path``; a missing, truncated or non-JSON file raises a `CheckpointError`
    that names it and says what to do (``remedy``)."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, None, remedy)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise file_error(path, "not valid JSON", remedy, exc) from None
    if not isinstance(data, dict):
        raise file_error(path, f"a JSON {type(data).__name__} where an object was expected", remedy)
    return data


def read_weights_file(path: str | os.PathLike, remedy: str | None = None,
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or garbled one raises a `CheckpointError` that
    names it and says what to do (``remedy``)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise file_error(path, None, remedy)
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors reports a truncated file as SafetensorError ("incomplete metadata")
        raise file_error(path, "not a readable safetensors file", remedy, exc) from None


def _first_file_error(folder: Path, names: list[str], remedy: str | None) -> CheckpointError | None:
    from safetensors import safe_open

    for name in names:
        path = folder / name
        if not path.is_file():
            return file_error(path, None, remedy)
        try:
            if name.endswith(".json"):
                read_json_file(path, remedy)
            elif name.endswith(".safetensors"):
                with safe_open(str(path), framework="pt"):  # reads the header and checks the file's length
                    pass
        except CheckpointError as err:
            return err
        except Exception as exc:
            return file_error(path, "not a readable safetensors file", remedy, exc)
    return None


def check_files(folder: str | os.PathLike, names: list[str], remedy: str | None = None) -> None:
    """Raise the `CheckpointError` of the first of ``names`` in ``folder`` that is missing or unreadable (JSON
    parsed, a safetensors header read and its length checked; other files only need to exist)."""
    err = _first_file_error(Path(folder), list(names), remedy)
    if err is not None:
        raise err


def load_or_explain(load, folder: str | os.PathLike, names: list[str], remedy: str | None = None,
                    suspect: str | None = None):
    """``load()`` (a library's loader reading ``folder``); if it fails, a `CheckpointError` that names the
    missing or damaged file among ``names``, else ``suspect`` (the file the library was reading) or the folder."""
    folder = Path(folder)
    try:
        return load()
    except Exception as exc:
        err = _first_file_error(folder, list(names), remedy)
        if err is None and suspect is not None:
            err = file_error(folder / suspect, "unreadable", remedy, exc)
        if err is None:
            err = CheckpointError(f"Could not load {folder} ({_problem(exc)}). {_remedy(folder, remedy)}")
        raise err from exc


def _read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    folder = Path(path)
    if not (folder / CONFIG_NAME).is_file() and not (folder / WEIGHTS_NAME).is_file():
        raise MissingFileError(f"{folder} is not a bertbook checkpoint: it needs {CONFIG_NAME} and "
                               f"{WEIGHTS_NAME}, written by model.save_pretrained(folder). For a transformers "
                               f"model use bertbook.hf.from_hf.")
    meta = read_json_file(folder / CONFIG_NAME)
    return meta, read_weights_file(folder / WEIGHTS_NAME)


def checkpoint_config(folder: str | os.PathLike) -> ModelConfig:
    """The ModelConfig a checkpoint folder was saved with (to build a model of its shape)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: is {folder} a folder written by save_pretrained?")
    return ModelConfig.from_dict(read_json_file(path))


SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size", "layer_norm_position")


def _shape_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    return [f"{f}: checkpoint {getattr(a, f)} vs model {getattr(b, f)}" for f in SHAPE_FIELDS
            if getattr(a, f) != getattr(b, f)]


def _check_state(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped tensors (nothing is loaded)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("different shapes: " + "; ".join(shapes[:5]))
        if missing:
            parts.append("missing: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        advice = ("Build the model from the checkpoint's own config (Class.from_pretrained(folder), "
                  "bertbook.model.checkpoint_config(folder)) or load only the encoder with model.load_encoder(folder).")
        if not shapes and unexpected and all("bert." + k in own for k in unexpected):
            advice = "These are the weights of a bare encoder: load them with model.bert.load_state_dict(state)."
        raise CheckpointError(f"The {where} does not fit this {type(module).__name__}: " + " | ".join(parts)
                              + ". " + advice)


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], where: str, assign: bool = False) -> None:
    """load_state_dict(strict) with a message that lists missing, unexpected and mis-shaped tensors
    (``assign=True`` takes the tensors themselves, for a model built on the meta device)."""
    _check_state(module, state, where)
    nn.Module.load_state_dict(module, state, strict=True, assign=assign)


class _PretrainedMixin:
    """save_pretrained / from_pretrained / load_encoder for every model class (notebooks 05 and 06)."""

    config: ModelConfig

    def _head_kwargs(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's load_state_dict; with ``strict`` (the default) a state dict of another shape is refused
        with a message that lists what differs, before any weight is touched."""
        if strict:
            _check_state(self, state_dict, "state dict passed to load_state_dict")
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (each file atomically)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"architecture": type(self).__name__, "format": "bertbook", **self.config.to_dict(),
                **self._head_kwargs()}
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        _atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        _atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Build the model from a folder written by ``save_pretrained`` of the same class."""
        meta, state = _read_checkpoint(folder)
        arch = meta.get("architecture")
        if arch != cls.__name__:
            raise CheckpointError(f"{folder} holds a {arch}, not a {cls.__name__}. To start a "
                                  f"{cls.__name__} from its encoder, build it and call "
                                  f"model.load_encoder({str(folder)!r}); or load it with {arch}.from_pretrained.")
        config = ModelConfig.from_dict(meta)
        model = cls(config, **{k: meta[k] for k in cls._head_keys() if k in meta})
        _load_exact(model, state, f"checkpoint in {folder}")
        return model.to(map_location)

    @classmethod
    def _head_keys(cls) -> tuple[str, ...]:
        return ()

    def load_encoder(self, folder: str | os.PathLike) -> list[str]:
        """Load only the encoder (``.bert``) from a checkpoint of any bertbook model class (notebook 06).

        The head keeps its fresh initialisation. A checkpoint without a pooler (a masked-LM model) leaves the
        pooler as initialised; the names of such encoder tensors are returned (and printed). A checkpoint of
        another shape is refused with a message naming the differences.
        """
        meta, state = _read_checkpoint(folder)
        diffs = _shape_differences(ModelConfig.from_dict(meta), self.config)
        if diffs:
            raise CheckpointError(f"The checkpoint in {folder} has another shape than this model ("
                                  + "; ".join(diffs) + "). Build the model with the checkpoint's own config, "
                                  "bertbook.model.checkpoint_config(folder).")
        prefix = "" if meta.get("architecture") == "BertModel" else "bert."
        enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = self.bert.state_dict()
        not_found = [k for k in own if k not in enc]
        if any(not k.startswith("pooler.") for k in not_found):
            raise CheckpointError(f"The checkpoint in {folder} lacks encoder tensors: {', '.join(not_found[:5])}.")
        enc = {k: v for k, v in enc.items() if k in own}
        merged = {**own, **enc}
        _load_exact(self.bert, merged, f"checkpoint in {folder}")
        if not_found:
            print(f"load_encoder: {folder} has no pooler weights (a {meta.get('architecture')}); "
                  f"the pooler keeps its fresh initialisation.")
        return not_found


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

class BertModel(_PretrainedMixin, nn.Module):
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
        check_inputs(self.config, input_ids, attention_mask, token_type_ids)
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


class BertForMaskedLM(_PretrainedMixin, nn.Module):
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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        masked_only: bool = False,
    ) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
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


class BertForPreTraining(_PretrainedMixin, nn.Module):
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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        sentence_label: torch.Tensor | None = None,
        masked_only: bool = False,
    ) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
        out.logits, out.mlm_loss = _mlm_logits_and_loss(self.mlm, self.bert, out.last_hidden_state, labels,
                                                        masked_only)
        out.sentence_logits = self.sentence_classifier(out.pooler_output)  # (B, num_sentence_labels)
        if sentence_label is not None:
            out.sentence_loss = F.cross_entropy(out.sentence_logits, sentence_label.view(-1))
        losses = [x for x in (out.mlm_loss, out.sentence_loss) if x is not None]
        out.loss = sum(losses[1:], losses[0]) if losses else None
        return out


class _Classifier(_PretrainedMixin, nn.Module):
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
        if attention_mask is None:
            return h.mean(dim=1)  # (B, D)
        m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1): 1 for real tokens
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, D)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
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
