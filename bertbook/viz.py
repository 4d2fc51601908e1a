"""Looking inside the model: attention weights, bertviz views that work offline, and what heads do.

Taught in notebook 07. The module reads top to bottom in four parts:

1. **Attention out of a model.** ``attention_data(model, tokenizer, text, text_pair=None)`` runs a bertbook
   model or a ``transformers`` BERT (loaded with ``attn_implementation="eager"``) on one text and returns an
   ``AttentionData``: the tokens, the weights ``(L, H, T, T)`` and, on request, every head's queries and keys.
2. **bertviz views, offline.** ``head_view``, ``model_view`` and ``neuron_view`` (Vig 2019, "A Multiscale
   Visualization of Attention in the Transformer Model") render with bertviz's own JavaScript templates, but
   instead of fetching require.js, d3 and jQuery from a CDN, every view carries the copies bundled in
   ``bertbook/static/`` (see its README for versions and licences). A view is one self-contained HTML
   fragment: it works in JupyterLab, the classic notebook, VS Code and a saved ``.html`` file, with no network,
   and any number of views can share a page. ``save_html`` writes views to a standalone file.
3. **What heads do**, after Clark et al. 2019 ("What Does BERT Look At? An Analysis of BERT's Attention"):
   ``cls_rows``, ``head_stats`` (entropy and mean distance), ``head_scores`` and ``classify_heads``
   (mostly to [CLS], to [SEP], previous token, next token, itself, broad, or mixed), ``class_fractions`` and
   ``attention_change`` (the same heads before and after fine-tuning).
4. **Plots** (matplotlib), each returning a Figure: ``plot_attention_grid``, ``plot_head``,
   ``plot_cls_attention``, ``plot_head_stats``, ``plot_head_classes``, ``plot_class_comparison``,
   ``plot_attention_change``.
5. **Exercise checkers** for notebook 07: ``check_previous_token_share``, ``check_next_token_head``; reference
   solutions in ``solutions``.

Every analysis function takes the weights in any of the usual forms: an ``AttentionData``, a tensor
``(L, H, T, T)``, or the per-layer tuple a model returns (each ``(1, H, T, T)``).
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .utils import atomic_write, device_of, eval_mode

__all__ = [
    "AttentionData",
    "attention_data",
    "head_view",
    "model_view",
    "neuron_view",
    "save_html",
    "bundled_libraries",
    "cls_rows",
    "HeadStats",
    "head_stats",
    "HEAD_CLASSES",
    "head_scores",
    "HeadClasses",
    "classify_heads",
    "class_fractions",
    "attention_change",
    "plot_attention_grid",
    "plot_head",
    "plot_cls_attention",
    "plot_head_stats",
    "plot_head_classes",
    "plot_class_comparison",
    "plot_attention_change",
    "plot_fonts",
    "readable_labels",
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
    from .model import attention_modules

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


def _as_attentions(x: Any) -> torch.Tensor:
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


# ----------------------------------------------------------------------------------------------------------
# 2. bertviz views, offline
# ----------------------------------------------------------------------------------------------------------
# bertviz's views are a JavaScript template each (head_view.js, model_view.js, neuron_view.js) that starts
# with ``require.config({paths: {d3: 'https://cdnjs...', jquery: 'https://cdnjs...'}})`` and runs its body in
# ``requirejs(['jquery', 'd3'], function ($, d3) { ... })``. We keep the body and replace that header with
# ``window.bertbookViz.run(rootId, function ($, d3) { ... })``, where ``window.bertbookViz`` holds d3 and jQuery
# evaluated from the bundled files. They are evaluated as CommonJS modules inside a function, so they never
# touch a page's own ``define``/``require`` or ``$``: no require.js is needed, and the classic notebook's own
# require.js and jQuery are left alone.

STATIC = Path(__file__).resolve().parent / "static"  # the bundled libraries, their licences and manifest.json

_RUNNER_JS = """
(function () {
  var viz = window.bertbookViz = window.bertbookViz || {};
  viz.run = viz.run || function (rootId, draw) {
    // Draw once the view's root element is in the document (an output may be attached after its scripts run).
    var tries = 0;
    (function attempt() {
      if (document.getElementById(rootId)) { draw(viz.jquery, viz.d3); }
      else if (tries++ < 400) { setTimeout(attempt, 25); }
    })();
  };
})();
"""


def bundled_libraries() -> dict[str, dict[str, str]]:
    """The JavaScript libraries every view carries, from ``static/manifest.json``: name -> {version, file,
    licence, licence file, source, sha256} (notebook 07). d3 5.7.0 is what bertviz 1.4 asks for (its code uses
    the d3 v5 event API); bertviz asks for jQuery 2.0.0 and we ship 3.7.1, which has the same API for what
    bertviz uses and none of 2.x's known security issues."""
    manifest = json.loads((STATIC / "manifest.json").read_text(encoding="utf-8"))
    return {entry["name"]: entry for entry in manifest["libraries"]}


@functools.lru_cache(maxsize=1)
def _libraries_script() -> str:
    """One <script> that defines window.bertbookViz.{d3, jquery, run}, evaluating each library once a page."""
    parts = [_RUNNER_JS]
    for name, entry in bundled_libraries().items():
        source = (STATIC / entry["file"]).read_text(encoding="utf-8")
        if "</script" in source.lower():
            raise ValueError(f"{entry['file']} contains '</script' and cannot be inlined in HTML.")
        parts.append(
            f"if (!window.bertbookViz.{name}) {{\n"
            f"  window.bertbookViz.{name} = (function () {{\n"
            f"    var module = {{exports: {{}}}};\n"
            f"    (function (module, exports, define) {{\n{source}\n"
            f"    }}).call(window, module, module.exports, undefined);\n"
            f"    return module.exports;\n  }})();\n"
            f"  window.bertbookViz.versions = window.bertbookViz.versions || {{}};\n"
            f"  window.bertbookViz.versions.{name} = {json.dumps(entry['version'])};\n}}")
    return "<script type=\"text/javascript\">\n" + "\n".join(parts) + "\n</script>\n"


# The header every bertviz template starts with: the CDN paths for require.js, then the call that loads
# them. Each text change below must match exactly once, so a changed bertviz template fails loudly.
_HEADER = re.compile(r"require\.config\(\{.*?\}\);\s*"
                     r"requirejs\(\s*\['jquery',\s*'d3'\],\s*function\s*\(\$,\s*d3\)\s*\{", re.DOTALL)


def _template(view: str) -> str:
    import bertviz

    return (Path(bertviz.__file__).resolve().parent / f"{view}.js").read_text(encoding="utf-8")


def _safe_json(value: Any) -> str:
    """JSON that can sit inside a <script> element (no '</script>' from a token can end it)."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _patch(source: str, pattern: str | re.Pattern, replacement: str, view: str) -> str:
    regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
    new, count = regex.subn(lambda _: replacement, source)
    if count != 1:
        from importlib.metadata import version

        raise RuntimeError(f"bertviz {version('bertviz')} {view}.js changed: expected one "
                           f"match of {regex.pattern[:60]!r}, found {count}. bertbook.viz supports bertviz 1.4; "
                           f"install it with: pip install 'bertviz>=1.4,<1.5'.")
    return new


def _view_script(view: str, root_id: str, params: dict) -> str:
    js = _template(view)
    js = _patch(js, _HEADER, f"window.bertbookViz.run({_safe_json(root_id)}, function ($, d3) {{", view)
    if view == "neuron_view":
        # The neuron view reads its parameters from a page-wide global (two views on a page would share it),
        # and one selection forgets its view's root element; give each view its own.
        js = _patch(js, "const params = window.bertviz_params", f"const params = {_safe_json(params)}", view)
        js = _patch(js, 'var svg = d3.select("#vis");', "var svg = d3.select(`#${config.rootDivId} #vis`);", view)
    else:
        js = _patch(js, "const params = PYTHON_PARAMS;", f"const params = {_safe_json(params)};", view)
    return f"<script type=\"text/javascript\">\n{js}\n</script>\n"


class View:
    """An offline bertviz view: displays itself in a notebook; ``.html`` is the self-contained fragment."""

    def __init__(self, fragment: str, kind: str, name: str = "") -> None:
        self.html = fragment
        self.kind = kind
        self.name = name

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<bertbook {self.kind} of {self.name or 'a model'}: {len(self.html) // 1024} KiB of HTML>"


def _round(t: torch.Tensor, decimals: int) -> list:
    """Nested lists of rounded floats (float32 -> float64 first, or 0.1 prints as 0.10000000149011612)."""
    return torch.round(t.double(), decimals=decimals).tolist()


def _display_tokens(tokens: list[str]) -> list[str]:
    return [t.replace("Ġ", " ").replace("▁", " ") for t in tokens]


def _data_for(source: Any, tokenizer: Any, text: str | None, text_pair: str | None,
              queries_and_keys: bool, name: str = "") -> AttentionData:
    if isinstance(source, AttentionData):
        if queries_and_keys and source.queries is None:
            raise ValueError("The neuron view needs queries and keys: make the data with "
                             "attention_data(..., queries_and_keys=True), or pass model, tokenizer and text.")
        return source
    if tokenizer is None or text is None:
        raise ValueError("Pass an AttentionData, or a model with its tokenizer and a text: "
                         "head_view(model, tokenizer, 'The cat sat on the mat.').")
    return attention_data(source, tokenizer, text, text_pair, queries_and_keys=queries_and_keys, name=name)


def _pair_slices(data: AttentionData) -> list[tuple[str, str, slice, slice]]:
    """(key, label, rows, columns) for the whole input and, for a pair, the four sentence blocks (as bertviz)."""
    T = len(data.tokens)
    whole = [("all", "All", slice(0, T), slice(0, T))]
    b = data.sentence_b_start
    if b is None:
        return whole
    a_, b_ = slice(0, b), slice(b, T)
    return whole + [("aa", "Sentence A -> Sentence A", a_, a_), ("bb", "Sentence B -> Sentence B", b_, b_),
                    ("ab", "Sentence A -> Sentence B", a_, b_), ("ba", "Sentence B -> Sentence A", b_, a_)]


def _root(kind: str) -> str:
    return f"bertviz-{kind}-{uuid.uuid4().hex}"


def _attention_blocks(data: AttentionData, layers: list[int], heads: list[int] | None) -> list[dict]:
    a = data.attentions[layers]  # (L', H, T, T)
    if heads is not None:
        a = a[:, heads]  # (L', H', T, T)
    tokens = _display_tokens(data.tokens)
    return [{"name": label if data.sentence_b_start is not None else None,
             "attn": _round(a[:, :, rows, cols], 3),  # (L', H', rows, cols)
             "left_text": tokens[rows], "right_text": tokens[cols]}
            for _, label, rows, cols in _pair_slices(data)]


def _filter_select(blocks: list[dict], element_id: str = "filter") -> str:
    if len(blocks) < 2:
        return ""
    options = "".join(f'<option value="{i}">{html.escape(b["name"])}</option>' for i, b in enumerate(blocks))
    return f'Attention: <select id="{element_id}">{options}</select>'


def _check_index(kind: str, value: int | None, count: int) -> None:
    if value is not None and not 0 <= value < count:
        raise ValueError(f"{kind} {value} does not exist: this model has {count} {kind}s (0 to {count - 1}).")


_FONT = "font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;"


def head_view(source: Any, tokenizer: Any = None, text: str | None = None, text_pair: str | None = None, *,
              layer: int | None = None, heads: list[int] | None = None, name: str = "") -> View:
    """bertviz's head view, offline: one layer's heads as coloured lines between tokens (notebook 07).

    ``source`` is a model (then give ``tokenizer`` and ``text``, optionally ``text_pair``) or an
    ``AttentionData``. ``layer`` selects the layer shown first; ``heads`` the heads switched on; ``name``
    labels the model (default: its class).
    """
    data = _data_for(source, tokenizer, text, text_pair, queries_and_keys=False, name=name)
    _check_index("layer", layer, data.num_layers)
    for h in heads or []:
        _check_index("head", h, data.num_heads)
    layers = list(range(data.num_layers))
    blocks = _attention_blocks(data, layers, None)
    root = _root("head")
    params = {"attention": blocks, "default_filter": "0", "root_div_id": root, "layer": layer,
              "heads": heads, "include_layers": layers}
    fragment = (f'<div id="{root}" class="bertbook-view" style="{_FONT}">'
                f'<span style="user-select:none">Layer: <select id="layer"></select> {_filter_select(blocks)}'
                f"</span><div id='vis'></div></div>\n")
    return View(_libraries_script() + fragment + _view_script("head_view", root, params), "head view", data.name)


def model_view(source: Any, tokenizer: Any = None, text: str | None = None, text_pair: str | None = None, *,
               layers: list[int] | None = None, heads: list[int] | None = None,
               display_mode: str = "light", name: str = "") -> View:
    """bertviz's model view, offline: a thumbnail of every head of every layer; click one to enlarge it
    (notebook 07). ``layers``/``heads`` keep a subset (long texts draw faster)."""
    data = _data_for(source, tokenizer, text, text_pair, queries_and_keys=False, name=name)
    layers = list(range(data.num_layers)) if layers is None else list(layers)
    heads_kept = list(range(data.num_heads)) if heads is None else list(heads)
    for i in layers:
        _check_index("layer", i, data.num_layers)
    for h in heads_kept:
        _check_index("head", h, data.num_heads)
    if display_mode not in ("light", "dark"):
        raise ValueError(f"display_mode must be 'light' or 'dark', got {display_mode!r}.")
    blocks = _attention_blocks(data, layers, heads_kept)
    root = _root("model")
    params = {"attention": blocks, "default_filter": "0", "display_mode": display_mode, "root_div_id": root,
              "include_layers": layers, "include_heads": heads_kept, "total_heads": data.num_heads}
    fragment = (f'<div id="{root}" class="bertbook-view" style="{_FONT}">'
                f'<span style="user-select:none">{_filter_select(blocks)}</span>'
                f"<div id='vis'></div></div>\n")
    return View(_libraries_script() + fragment + _view_script("model_view", root, params), "model view", data.name)


def _neuron_params(data: AttentionData) -> dict:
    """The data bertviz's neuron view reads (format of ``bertviz.neuron_view.get_attention``)."""
    tokens = _display_tokens(data.tokens)
    out = {}
    for key, _, rows, cols in _pair_slices(data):  # queries come from the rows' sentence, keys from the columns'
        out[key] = {
            "attn": _round(data.attentions[:, :, rows, cols], 3),  # (L, H, rows, cols)
            "left_text": tokens[rows],
            "right_text": tokens[cols],
            "queries": _round(data.queries[:, :, rows], 2),  # (L, H, rows, d_k)
            "keys": _round(data.keys[:, :, cols], 2),  # (L, H, cols, d_k)
        }
    return out


def neuron_view(source: Any, tokenizer: Any = None, text: str | None = None, text_pair: str | None = None, *,
                layer: int = 0, head: int = 0, display_mode: str = "light", name: str = "") -> View:
    """bertviz's neuron view, offline: for one head, how a query vector meets every key vector, their
    elementwise product, the dot product and the softmax (notebook 07). Hover over a token on the left, then
    click the "+" that appears to expand the computation.
    """
    data = _data_for(source, tokenizer, text, text_pair, queries_and_keys=True, name=name)
    _check_index("layer", layer, data.num_layers)
    _check_index("head", head, data.num_heads)
    if display_mode not in ("light", "dark"):
        raise ValueError(f"display_mode must be 'light' or 'dark', got {display_mode!r}.")
    root = _root("neuron")
    params = {"attention": _neuron_params(data), "default_filter": "all", "root_div_id": root,
              "bidirectional": True, "display_mode": display_mode, "layer": layer, "head": head}
    pair_select = ""
    if data.sentence_b_start is not None:
        options = "".join(f'<option value="{key}">{html.escape(label)}</option>'
                          for key, label, _, _ in _pair_slices(data))
        pair_select = f'<span class="dropdown-label">Attention: </span><select id="filter">{options}</select>'
    fragment = (f'<div id="{root}" class="bertbook-view" style="padding:8px;{_FONT}">'
                f'<span style="user-select:none"><span class="dropdown-label">Layer: </span>'
                f'<select id="layer"></select> <span class="dropdown-label">Head: </span>'
                f'<select id="att_head"></select> {pair_select}</span><div id=\'vis\'></div></div>\n')
    return View(_libraries_script() + fragment + _view_script("neuron_view", root, params), "neuron view",
                data.name)


def save_html(views: View | Sequence[View], path: str | os.PathLike, title: str = "bertbook attention") -> Path:
    """Write one or more views into a standalone HTML file that works offline (written atomically)."""
    views = [views] if isinstance(views, View) else list(views)
    body = "\n<hr>\n".join(f"<h2>{html.escape(v.kind)}: {html.escape(v.name)}</h2>\n{v.html}" for v in views)
    doc = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>\n"
           f"<body style=\"{_FONT}\">\n{body}\n</body></html>\n")
    return atomic_write(path, doc)


# ----------------------------------------------------------------------------------------------------------
# 3. What heads do (after Clark et al. 2019)
# ----------------------------------------------------------------------------------------------------------

def cls_rows(attentions: Any) -> torch.Tensor:
    """How the [CLS] token (position 0) spreads its attention over the tokens: ``(L, H, T)``, each row sums to
    1 (notebook 07). A classifier reads the [CLS] vector, so this is what the last layers feed it."""
    a = _as_attentions(attentions)  # (L, H, T, T)
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
    a = _as_attentions(attentions)  # (L, H, T, T)
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
    a = _as_attentions(data)  # (L, H, T, T)
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
    a, b = _as_attentions(before), _as_attentions(after)
    if a.shape != b.shape:
        raise ValueError(f"Compare attention of the same architecture on the same tokens: shapes {tuple(a.shape)} "
                         f"and {tuple(b.shape)} differ (same tokenizer and text for both models?).")
    if isinstance(before, AttentionData) and isinstance(after, AttentionData) and before.tokens != after.tokens:
        raise ValueError("The two AttentionData hold different tokens: use the same tokenizer and text.")
    return 0.5 * (a - b).abs().sum(-1).mean(-1)  # (L, H, T, T) -> (L, H)


# ----------------------------------------------------------------------------------------------------------
# 4. Plots (matplotlib); each returns a Figure
# ----------------------------------------------------------------------------------------------------------

# Fonts with Chinese, Japanese and Korean glyphs, in order of preference (Linux, macOS, Windows). Matplotlib's
# own DejaVu Sans has none: without one of these, a CJK token shows as a box.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "PingFang SC", "Hiragino Sans GB",
             "Microsoft YaHei", "SimHei", "Arial Unicode MS")


@functools.lru_cache(maxsize=1)
def _fonts() -> tuple[tuple[str, frozenset], ...]:
    """(family, the code points it draws) for matplotlib's sans-serif font and each installed CJK font."""
    from matplotlib import font_manager, ft2font

    paths = {"sans-serif": font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))}
    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    paths.update((name, installed[name]) for name in CJK_FONTS if name in installed)
    fonts = []
    for name, path in paths.items():
        try:
            fonts.append((name, frozenset(ft2font.FT2Font(path).get_charmap())))
        except (OSError, RuntimeError):  # an unreadable font file: leave it out
            continue
    return tuple(fonts)


def plot_fonts() -> list[str]:
    """The font families for plots: matplotlib's sans-serif, then every installed font with CJK glyphs.
    Matplotlib takes each glyph from the first family that has it; ``start()`` sets this list."""
    return [name for name, _ in _fonts()]


def readable_labels(labels: Sequence[str]) -> tuple[list[str], str]:
    """``labels`` with every character that no plot font can draw replaced by a box, and a note saying
    which characters and how to get a font for them ("" when all can be drawn). Matplotlib would draw the
    same boxes, with a warning per character under the plot (notebooks 02 and 07)."""
    drawable = frozenset().union(*(points for _, points in _fonts()))
    missing = sorted({ch for label in labels for ch in label if not ch.isspace() and ord(ch) not in drawable})
    if not missing:
        return list(labels), ""
    box = "\u25a1" if 0x25A1 in drawable else "?"
    gone = set(missing)
    shown = ["".join(box if ch in gone else ch for ch in label) for label in labels]
    listed = "".join(missing[:12]) + ("..." if len(missing) > 12 else "")
    note = (f"No font installed here has the characters {listed}, so the plot shows {box} in their place. For "
            f"Chinese, Japanese or Korean install Noto Sans CJK (Debian/Ubuntu: apt install fonts-noto-cjk), "
            f"delete matplotlib's font cache (~/.cache/matplotlib) and restart the kernel.")
    return shown, note


def _tokens_of(x: Any, tokens: Sequence[str] | None) -> list[str] | None:
    if tokens is not None:
        return list(tokens)
    return list(x.tokens) if isinstance(x, AttentionData) else None


def _title(x: Any, default: str) -> str:
    return f"{x.name}: {default}" if isinstance(x, AttentionData) and x.name else default


def plot_attention_grid(attentions: Any, tokens: Sequence[str] | None = None, *,
                        layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                        show_tokens: bool | None = None, cell_size: float = 1.6):
    """A layer x head grid of attention heatmaps (rows: queries, columns: keys). Notebook 07."""
    import matplotlib.pyplot as plt

    a = _as_attentions(attentions)  # (L, H, T, T)
    tokens = _tokens_of(attentions, tokens)
    layers = list(range(a.shape[0])) if layers is None else list(layers)
    heads = list(range(a.shape[1])) if heads is None else list(heads)
    for i in layers:
        _check_index("layer", i, a.shape[0])
    for h in heads:
        _check_index("head", h, a.shape[1])
    if show_tokens is None:
        show_tokens = tokens is not None and len(heads) <= 4 and a.shape[-1] <= 24
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False,
                             figsize=(cell_size * len(heads) + 1, cell_size * len(layers) + 0.6))
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(a[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
            if show_tokens:
                ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
                ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
            if r == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    fig.suptitle(_title(attentions, "attention of every head (rows: queries, columns: keys)"), fontsize=10)
    fig.tight_layout()
    return fig


def plot_head(attentions: Any, layer: int, head: int, tokens: Sequence[str] | None = None, ax=None):
    """One head's attention as a heatmap with the tokens on both axes (notebook 07)."""
    import matplotlib.pyplot as plt

    a = _as_attentions(attentions)  # (L, H, T, T)
    _check_index("layer", layer, a.shape[0])
    _check_index("head", head, a.shape[1])
    tokens = _tokens_of(attentions, tokens)
    fig = None
    if ax is None:
        size = min(1.2 + 0.28 * a.shape[-1], 8.0)
        fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(a[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.grid(False)
    if tokens is not None:
        tokens, _ = readable_labels(tokens)  # a box for a character no font has, instead of a warning
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(_title(attentions, f"layer {layer}, head {head}"), fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if fig is not None:
        fig.tight_layout()
    return ax.figure


def plot_cls_attention(attentions: Any, tokens: Sequence[str] | None = None):
    """Where [CLS] looks: one row per head (layer.head), one column per token (notebook 07)."""
    import matplotlib.pyplot as plt

    c = cls_rows(attentions)  # (L, H, T)
    L, H, T = c.shape
    tokens = _tokens_of(attentions, tokens)
    rows = c.reshape(L * H, T)  # (L*H, T)
    fig, ax = plt.subplots(figsize=(1.5 + 0.35 * T, 1.0 + 0.18 * L * H))
    im = ax.imshow(rows.numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_yticks(range(L * H), [f"L{layer}.H{head}" for layer in range(L) for head in range(H)],
                  fontsize=6 if L * H > 24 else 8)
    if tokens is not None:
        ax.set_xticks(range(T), tokens, rotation=90, fontsize=8)
    for layer in range(1, L):
        ax.axhline(layer * H - 0.5, color="white", linewidth=0.8)
    ax.set_title(_title(attentions, "attention from [CLS] to each token"), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def _annotate(ax, values: np.ndarray, fmt: str, vmin: float | None = None, vmax: float | None = None) -> None:
    """Write each value on its cell (small grids only), white on the darkest cells of the colour scale."""
    if values.size > 48:
        return
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    for (i, j), v in np.ndenumerate(values):
        dark = hi > lo and (v - lo) / (hi - lo) > 0.6
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color="white" if dark else "black")


def plot_head_stats(stats: HeadStats, title: str = ""):
    """Two layer x head maps: attention entropy (normalized) and mean attention distance (notebook 07)."""
    import matplotlib.pyplot as plt

    L, H = stats.entropy.shape
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 2 * (0.45 * H + 1), 1.5 + 0.45 * L))
    panels = ((stats.normalized_entropy, "entropy / log T (1 = uniform)", ".2f", "Blues"),
              (stats.mean_distance, "mean distance (tokens)", ".1f", "Oranges"))
    for ax, (values, label, fmt, cmap) in zip(axes, panels):
        v = values.numpy()
        im = ax.imshow(v, cmap=cmap, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(label, fontsize=9)
        _annotate(ax, v, fmt)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


_CLASS_COLORS = {"[CLS]": "#d62728", "[SEP]": "#9467bd", "previous": "#1f77b4", "next": "#17becf",
                 "self": "#2ca02c", "broad": "#ff7f0e", "mixed": "#c7c7c7"}


def plot_head_classes(classes: HeadClasses, title: str = ""):
    """A layer x head map coloured by what each head mostly does (notebook 07)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    L, H = len(classes.labels), len(classes.labels[0])
    index = np.array([[HEAD_CLASSES.index(c) for c in row] for row in classes.labels])  # (L, H)
    cmap = ListedColormap([_CLASS_COLORS[c] for c in HEAD_CLASSES])
    fig, ax = plt.subplots(figsize=(2.8 + 0.5 * H, 1.2 + 0.45 * L))
    ax.imshow(index, cmap=cmap, vmin=-0.5, vmax=len(HEAD_CLASSES) - 0.5, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if L * H <= 24:
        for (i, j), c in np.ndenumerate(np.array(classes.labels, dtype=object)):
            ax.text(j, i, c, ha="center", va="center", fontsize=7)
    used = [c for c in HEAD_CLASSES if any(c in row for row in classes.labels)]
    ax.legend(handles=[Patch(color=_CLASS_COLORS[c], label=c) for c in used], bbox_to_anchor=(1.02, 1),
              loc="upper left", fontsize=7, frameon=False)
    ax.set_title(title or f"{classes.name}: what each head mostly attends to".lstrip(": "), fontsize=10)
    fig.tight_layout()
    return fig


def plot_class_comparison(classes: dict[str, HeadClasses], title: str = "share of heads in each class"):
    """Grouped bars: for each model, the fraction of its heads in each class (notebook 07)."""
    import matplotlib.pyplot as plt

    fractions = class_fractions(classes)
    n = len(fractions)
    width = 0.8 / max(n, 1)
    x = np.arange(len(HEAD_CLASSES))
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for i, (name, f) in enumerate(fractions.items()):
        heads = sum(classes[name].count().values())
        ax.bar(x + (i - (n - 1) / 2) * width, [f[c] for c in HEAD_CLASSES], width,
               label=f"{name} ({heads} heads)")
    ax.set_xticks(x, HEAD_CLASSES)
    ax.set_ylabel("fraction of heads")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_attention_change(change: torch.Tensor, title: str = "attention change per head"):
    """A layer x head map of ``attention_change`` (0: unchanged, 1: completely different). Notebook 07."""
    import matplotlib.pyplot as plt

    v = torch.as_tensor(change).numpy()
    L, H = v.shape
    vmax = max(0.05, float(v.max()))
    fig, ax = plt.subplots(figsize=(2.5 + 0.5 * H, 1.3 + 0.45 * L))
    im = ax.imshow(v, cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    _annotate(ax, v, ".3f", 0.0, vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="total variation distance")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig






