"""Views: the HTML the course shows, from highlighted text to bertviz's interactive attention views.

Concept modules return data; this module turns it into HTML that a notebook displays and a test can read as
a string (as bertviz's ``html_action='return'`` does). Read top to bottom in two parts:

1. **Highlighted text.** ``mask_preview`` masks one text and shows the chosen tokens in ``MASK_COLOURS``
   (notebook 04; ``mask_legend`` names the colours); ``attention_html`` shades words by a weight (notebook
   06); ``answer_html`` highlights an answer in its paragraph (notebook 08); ``sentences_html``,
   ``ranking_html`` and ``cross_attention_html`` show a chosen sentence, ranked replies and which source
   pieces each written character looked at (notebook 10).
2. **bertviz views, offline** (notebook 07). ``head_view``, ``model_view`` and ``neuron_view`` (Vig 2019, "A
   Multiscale Visualization of Attention in the Transformer Model") render with bertviz's own JavaScript
   templates, but instead of fetching require.js, d3 and jQuery from a CDN, every view carries the copies
   bundled in ``bertbook/static/`` (see its README for versions and licences; ``bundled_libraries`` lists
   them). A view is one self-contained HTML fragment: it works in JupyterLab, the classic notebook, VS Code
   and a saved ``.html`` file, with no network, and any number of views can share a page. ``save_html``
   writes views to a standalone file.

The attention the views draw comes from :mod:`bertbook.attention_maps`; the interactive panels that show
these views live in :mod:`bertbook.widgets`.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Sequence

import torch

from .attention_maps import AttentionData, attention_data, check_index
from .masking import IGNORE_INDEX, MaskVocab, check_mask_prob, mask_tokens
from .utils import atomic_write

__all__ = [
    "MASK_COLOURS",
    "MAX_SEED",
    "mask_preview",
    "mask_legend",
    "answer_html",
    "attention_html",
    "sentences_html",
    "ranking_html",
    "cross_attention_html",
    "View",
    "head_view",
    "model_view",
    "neuron_view",
    "save_html",
    "bundled_libraries",
]


# ----------------------------------------------------------------------------------------------------------
# 1. Highlighted text
# ----------------------------------------------------------------------------------------------------------

# What BERT's 80/10/10 rule did to a chosen token, and its colour wherever a view shows it
MASK_COLOURS = {"mask": "#d62728", "random": "#ff7f0e", "kept": "#2ca02c"}
MAX_SEED = 2**32 - 1  # the mask widget's seeds: 0 .. 4,294,967,295, as NumPy allows


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"The seed must be a whole number from 0 to {MAX_SEED:,} (2**32 - 1); got {seed!r}. "
                         f"Any number in that range gives its own masks, the same ones every time.")
    return seed


def mask_preview(text: str, tokenizer, mask_prob: float = 0.15, whole_word: bool = False, seed: int = 0,
                 html_output: bool = False) -> dict:
    """Mask one text and describe the result (the logic behind ``widgets.mask_widget``, notebook 04).

    Returns ``{"tokens", "masked", "kind", "n_tokens", "n_chosen", "text"}`` where ``kind[i]`` is
    ``"mask"``, ``"random"``, ``"kept"`` (chosen but unchanged) or ``""``. ``text`` shows chosen tokens as
    ``[MASK]``, ``~random~`` or ``_kept_`` (HTML in ``MASK_COLOURS`` when ``html_output``).
    """
    check_mask_prob(mask_prob)
    _check_seed(seed)
    vocab = MaskVocab.from_tokenizer(tokenizer)
    # verbose=False: a long text is fine here (it is masked, never fed to a model), so no length warning
    ids = torch.tensor([tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]],
                       dtype=torch.long)  # (1, T)
    if ids.shape[1] == 0:
        raise ValueError("The text is empty: type a sentence to mask.")
    g = torch.Generator().manual_seed(seed)
    corrupted, labels = mask_tokens(ids, vocab, mask_prob, whole_word, g)
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    masked = tokenizer.convert_ids_to_tokens(corrupted[0].tolist())
    kind = []
    for orig, new, lab in zip(ids[0].tolist(), corrupted[0].tolist(), labels[0].tolist()):
        kind.append("" if lab == IGNORE_INDEX else "mask" if new == vocab.mask_token_id
                    else "kept" if new == orig else "random")
    pieces = []
    for tok, new, k in zip(tokens, masked, kind):
        shown = {"mask": "[MASK]", "random": f"~{new}~", "kept": f"_{tok}_", "": tok}[k]
        if html_output:
            shown = html.escape(shown)
            if k:
                shown = (f"<b style='color:{MASK_COLOURS[k]}' title='original: {html.escape(tok)}'>"
                         f"{shown}</b>")
        pieces.append(shown)
    return {"tokens": tokens, "masked": masked, "kind": kind, "n_tokens": len(tokens),
            "n_chosen": sum(1 for k in kind if k), "text": " ".join(pieces)}


def mask_legend() -> str:
    """The key to ``mask_preview``'s colours, as HTML: [MASK], ~random~ and _kept_, each in its colour."""
    names = {"mask": "[MASK]", "random": "~random~", "kept": "_kept_"}
    return ", ".join(f"<b style='color:{MASK_COLOURS[k]}'>{names[k]}</b>" for k in MASK_COLOURS)


def attention_html(words: Sequence[str], weights: Sequence[float]) -> str:
    """Words on a background whose strength is the weight (the largest weight is full colour): the [CLS]
    token's attention over a review in notebook 06's "try it" panel."""
    import numpy as np

    weights = np.asarray(weights, dtype=float)
    top = weights.max() if len(weights) and weights.max() > 0 else 1.0
    spans = [f'<span title="{w:.3f}" style="background: rgba(214, 39, 40, {w / top:.2f}); padding: 1px 2px; '
             f'margin: 1px; border-radius: 3px; display: inline-block">{html.escape(t)}</span>'
             for t, w in zip(words, weights)]
    return '<div style="line-height: 1.9; font-family: sans-serif">' + " ".join(spans) + "</div>"


def answer_html(context: str, result: dict) -> str:
    """The paragraph with the answer highlighted and its score (``result`` from ``qa.predict``, notebook 08)."""
    a, b = result["start"], result["end"]
    colour = "#c7e9c0" if result.get("answered", True) else "#fdd0a2"
    return ('<div style="line-height: 1.7; font-family: sans-serif">' + html.escape(context[:a])
            + f'<span style="background: {colour}; padding: 1px 3px; border-radius: 3px" title="score '
              f'{result["score"]:.2f}">' + html.escape(context[a:b]) + "</span>" + html.escape(context[b:]) + "</div>")


def sentences_html(sentences: Sequence[str], scores: Sequence[float | None], chosen: int) -> str:
    """An abstract as its sentences, each shaded by its share of a softmax over the sentence scores, the
    chosen one outlined, every score in a tooltip and its share after the sentence (notebook 10's summary
    panel). A sentence whose score is None was not read (past the model's length) and is shown in grey."""
    import numpy as np

    if len(sentences) != len(scores):
        raise ValueError(f"one score per sentence: {len(sentences)} sentences, {len(scores)} scores.")
    read = np.asarray([s for s in scores if s is not None], dtype=float)
    weights = np.exp(read - read.max()) if len(read) else read
    shares = iter(weights / weights.sum() if len(read) else weights)
    parts = []
    for i, (sentence, score) in enumerate(zip(sentences, scores)):
        if score is None:
            parts.append(f'<span title="not read: past the model\'s length" style="color: #999">'
                         f"{html.escape(sentence)}</span>")
            continue
        p = next(shares)
        border = "2px solid #2ca02c" if i == chosen else "1px solid transparent"
        parts.append(f'<span title="score {score:.2f}, share {p:.2f}" style="background: rgba(44, 160, 44, '
                     f'{0.6 * p:.2f}); border: {border}; padding: 1px 3px; border-radius: 3px">'
                     f'{html.escape(sentence)}</span> <sub style="color: #666">{p:.2f}</sub>')
    return '<div style="line-height: 1.8; font-family: sans-serif">' + " ".join(parts) + "</div>"


def ranking_html(ranked: Sequence[dict], true: str | None = None) -> str:
    """Candidate replies best first, each with a bar for its score (``ranked``: dicts with ``text`` and
    ``score``, as `dialogue.rank` returns them); ``true``, when given, is marked (notebook 10's reply panel)."""
    if not ranked:
        return "<p>no candidates to rank.</p>"
    scores = [float(r["score"]) for r in ranked]
    low, high = min(scores), max(scores)
    rows = []
    for n, (r, score) in enumerate(zip(ranked, scores), 1):
        width = 100 * (score - low) / (high - low) if high > low else 100
        mark = " ✓" if true is not None and r["text"] == true else ""
        rows.append(f'<tr><td style="text-align: right; padding-right: 6px">{n}</td><td style="width: 120px">'
                    f'<div style="background: #1f77b4; height: 10px; width: {width:.0f}%"></div></td>'
                    f'<td style="padding-left: 6px">{score:.3f}</td><td style="padding-left: 8px; text-align: left">'
                    f'{html.escape(r["text"])}{mark}</td></tr>')
    return '<table style="font-family: sans-serif">' + "".join(rows) + "</table>"


def cross_attention_html(source: Sequence[str], target: Sequence[str], weights) -> str:
    """A heatmap as an HTML table: one row per written character (``target``), one column per source piece
    (``source``), each cell shaded by the weight the character gave that piece (``weights``, (T_out, S)), so
    the browser's own fonts draw the Chinese (notebook 10's translation panel)."""
    import numpy as np

    w = np.asarray(weights, dtype=float)
    if w.shape != (len(target), len(source)):
        raise ValueError(f"weights must be (written characters, source pieces) = ({len(target)}, {len(source)}), "
                         f"got {w.shape}.")
    head = "".join(f'<th style="writing-mode: vertical-rl; font-weight: normal; padding: 2px">{html.escape(t)}</th>'
                   for t in source)
    rows = []
    for char, row in zip(target, w):
        top = row.max() if row.size and row.max() > 0 else 1.0
        cells = "".join(f'<td title="{x:.3f}" style="background: rgba(31, 119, 180, {x / top:.2f}); width: 18px; '
                        f'height: 18px"></td>' for x in row)
        rows.append(f'<tr><th style="padding-right: 4px">{html.escape(char)}</th>{cells}</tr>')
    return ('<table style="border-collapse: collapse; font-family: sans-serif"><tr><th></th>' + head + "</tr>"
            + "".join(rows) + "</table>")


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
                           f"match of {regex.pattern[:60]!r}, found {count}. bertbook.views supports bertviz 1.4; "
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


_FONT = "font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;"


def head_view(source: Any, tokenizer: Any = None, text: str | None = None, text_pair: str | None = None, *,
              layer: int | None = None, heads: list[int] | None = None, name: str = "") -> View:
    """bertviz's head view, offline: one layer's heads as coloured lines between tokens (notebook 07).

    ``source`` is a model (then give ``tokenizer`` and ``text``, optionally ``text_pair``) or an
    ``AttentionData``. ``layer`` selects the layer shown first; ``heads`` the heads switched on; ``name``
    labels the model (default: its class).
    """
    data = _data_for(source, tokenizer, text, text_pair, queries_and_keys=False, name=name)
    check_index("layer", layer, data.num_layers)
    for h in heads or []:
        check_index("head", h, data.num_heads)
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
        check_index("layer", i, data.num_layers)
    for h in heads_kept:
        check_index("head", h, data.num_heads)
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
    check_index("layer", layer, data.num_layers)
    check_index("head", head, data.num_heads)
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
