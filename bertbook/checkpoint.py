"""Saving and loading models: the files of a checkpoint, and errors that say which file and what to do.

Every bertbook model class inherits ``Pretrained`` (``save_pretrained``, ``from_pretrained``,
``load_encoder``, a strict ``load_state_dict``). A checkpoint folder holds ``config.json`` (the
ModelConfig, the class and its head's settings) and ``model.safetensors`` (the tensors: no pickle, so
loading one cannot run code). A missing or damaged file, or a checkpoint of another shape, raises a
``CheckpointError`` whose message names the file or the differences and says what to do; the loaders of
tokenizers, fine-tuned folders and a pretraining run's resumable state (``tokenizer``, ``finetune``,
``runstate``) use the same helpers. Notebooks 05 and 06.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .utils import atomic_write

__all__ = ["CheckpointError", "MissingFileError", "WEIGHTS_NAME", "CONFIG_NAME", "SHAPE_FIELDS", "Pretrained",
           "file_error", "read_json_file", "read_weights_file", "check_files", "load_or_explain", "read_checkpoint",
           "checkpoint_config", "shape_differences", "check_state", "load_exact"]


WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint does not fit the model it is loaded into, or one of its files is damaged; the message says
    what differs (or which file) and what to do."""


class MissingFileError(CheckpointError, FileNotFoundError):
    """A file that a checkpoint, tokenizer or fine-tuned model folder needs is not there."""


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


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
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


def shape_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    return [f"{f}: checkpoint {getattr(a, f)} vs model {getattr(b, f)}" for f in SHAPE_FIELDS
            if getattr(a, f) != getattr(b, f)]


def check_state(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
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
                  "bertbook.checkpoint.checkpoint_config(folder)) or load only the encoder with "
                  "model.load_encoder(folder).")
        if not shapes and unexpected and all("bert." + k in own for k in unexpected):
            advice = "These are the weights of a bare encoder: load them with model.bert.load_state_dict(state)."
        raise CheckpointError(f"The {where} does not fit this {type(module).__name__}: " + " | ".join(parts)
                              + ". " + advice)


def load_exact(module: nn.Module, state: dict[str, torch.Tensor], where: str, assign: bool = False) -> None:
    """load_state_dict(strict) with a message that lists missing, unexpected and mis-shaped tensors
    (``assign=True`` takes the tensors themselves, for a model built on the meta device)."""
    check_state(module, state, where)
    nn.Module.load_state_dict(module, state, strict=True, assign=assign)


class Pretrained:
    """save_pretrained / from_pretrained / load_encoder for every model class (notebooks 05 and 06)."""

    config: ModelConfig

    def _head_kwargs(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's load_state_dict; with ``strict`` (the default) a state dict of another shape is refused
        with a message that lists what differs, before any weight is touched."""
        if strict:
            check_state(self, state_dict, "state dict passed to load_state_dict")
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (each file atomically)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"architecture": type(self).__name__, "format": "bertbook", **self.config.to_dict(),
                **self._head_kwargs()}
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write(folder / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Build the model from a folder written by ``save_pretrained`` of the same class."""
        meta, state = read_checkpoint(folder)
        arch = meta.get("architecture")
        if arch != cls.__name__:
            raise CheckpointError(f"{folder} holds a {arch}, not a {cls.__name__}. To start a "
                                  f"{cls.__name__} from its encoder, build it and call "
                                  f"model.load_encoder({str(folder)!r}); or load it with {arch}.from_pretrained.")
        config = ModelConfig.from_dict(meta)
        model = cls(config, **{k: meta[k] for k in cls._head_keys() if k in meta})
        load_exact(model, state, f"checkpoint in {folder}")
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
        meta, state = read_checkpoint(folder)
        diffs = shape_differences(ModelConfig.from_dict(meta), self.config)
        if diffs:
            raise CheckpointError(f"The checkpoint in {folder} has another shape than this model ("
                                  + "; ".join(diffs) + "). Build the model with the checkpoint's own config, "
                                  "bertbook.checkpoint.checkpoint_config(folder).")
        prefix = "" if meta.get("architecture") == "BertModel" else "bert."
        enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = self.bert.state_dict()
        not_found = [k for k in own if k not in enc]
        if any(not k.startswith("pooler.") for k in not_found):
            raise CheckpointError(f"The checkpoint in {folder} lacks encoder tensors: {', '.join(not_found[:5])}.")
        enc = {k: v for k, v in enc.items() if k in own}
        merged = {**own, **enc}
        load_exact(self.bert, merged, f"checkpoint in {folder}")
        if not_found:
            print(f"load_encoder: {folder} has no pooler weights (a {meta.get('architecture')}); "
                  f"the pooler keeps its fresh initialisation.")
        return not_found
