"""The attention explorer of notebook 07: choose a model, a sentence, a layer and a head; the views update.

The logic is plain functions that tests call (`check_selection`, `head_summary`, `ExplorerState`); the
`AttentionExplorer` class only wires ipywidgets to them. (Other notebooks keep their panels in their own
modules.)
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Sequence

from .viz import (AttentionData, attention_data, classify_heads, cls_attention, head_scores, head_stats, plot_head,
                  readable_labels)

__all__ = ["check_selection", "head_summary", "ExplorerState", "AttentionExplorer", "attention_explorer"]


def check_selection(data: AttentionData, layer: int, head: int) -> str | None:
    """None if ``layer`` and ``head`` exist in the model that made ``data``, else a message saying what does."""
    name = data.name or "this model"
    if not isinstance(layer, int) or not 0 <= layer < data.num_layers:
        return (f"Layer {layer} does not exist in {name}: it has {data.num_layers} layers, numbered 0 to "
                f"{data.num_layers - 1}.")
    if not isinstance(head, int) or not 0 <= head < data.num_heads:
        return (f"Head {head} does not exist in {name}: each layer has {data.num_heads} heads, numbered 0 to "
                f"{data.num_heads - 1}.")
    return None


def head_summary(data: AttentionData, layer: int, head: int) -> str:
    """One line on what a head does on this text: its class, entropy, reach and where [CLS] looks."""
    problem = check_selection(data, layer, head)
    if problem:
        return problem
    one = AttentionData(tokens=data.tokens, attentions=data.attentions[layer:layer + 1, head:head + 1],
                        name=data.name)  # (1, 1, T, T)
    label = classify_heads(one).labels[0][0]
    scores = head_scores(one)
    stats = head_stats(one)
    share = {k: float(v[0, 0]) for k, v in scores.items() if k != "broad"}
    top = max(share, key=share.get)
    cls_row = cls_attention(one)[0, 0]  # (T,)
    j = int(cls_row.argmax())
    return (f"{data.name or 'model'}, layer {layer}, head {head}: {label} "
            f"(largest share: {top} {share[top]:.2f}); entropy {float(stats.normalized_entropy[0, 0]):.2f} of "
            f"uniform; mean distance {float(stats.mean_distance[0, 0]):.1f} tokens; "
            f"[CLS] looks most at {data.tokens[j]!r} ({float(cls_row[j]):.2f}).")


@dataclass
class ExplorerState:
    """The explorer's choices and a cache of attention per (model, sentence); no widgets involved."""

    models: dict[str, tuple[Any, Any]]  # name -> (model, tokenizer)
    max_tokens: int = 48  # longer texts are truncated so the heatmap stays readable

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("The explorer needs at least one model: {'name': (model, tokenizer)}.")
        self._cache: dict[tuple[str, str], AttentionData] = {}

    def data(self, model_name: str, sentence: str) -> AttentionData:
        if model_name not in self.models:
            raise ValueError(f"Unknown model {model_name!r}; choose one of {', '.join(self.models)}.")
        key = (model_name, sentence)
        if key not in self._cache:
            model, tokenizer = self.models[model_name]
            self._cache[key] = attention_data(model, tokenizer, sentence, max_length=self.max_tokens,
                                              name=model_name)
        return self._cache[key]

    def sizes(self, model_name: str) -> tuple[int, int]:
        """(layers, heads) of a model, read from its config."""
        cfg = self.models[model_name][0].config
        return cfg.num_hidden_layers, cfg.num_attention_heads

    def view(self, model_name: str, sentence: str, layer: int, head: int) -> tuple[AttentionData | None, str]:
        """The data to plot (or None) and the line to show above it; problems become messages."""
        if not isinstance(sentence, str) or not sentence.strip():
            return None, "Type a sentence (or pick one from the list) to see its attention."
        data = self.data(model_name, sentence.strip())
        problem = check_selection(data, layer, head)
        if problem:
            return None, problem
        note = ""
        if len(data.tokens) >= self.max_tokens:
            note = f" (text truncated to {len(data.tokens)} tokens)"
        _, fonts = readable_labels(data.tokens)
        return data, head_summary(data, layer, head) + note + (f" {fonts}" if fonts else "")


class AttentionExplorer:
    """Dropdowns for model, layer and head and a box for the sentence; shows the head's heatmap and summary.

    ``explorer.widget`` is the panel; the controls are ``model``, ``sentence``, ``layer`` and ``head``.
    """

    def __init__(self, models: dict[str, tuple[Any, Any]], sentences: Sequence[str], max_tokens: int = 48):
        import ipywidgets as W

        if not sentences:
            raise ValueError("Give the explorer at least one sentence to start from.")
        self.state = ExplorerState(dict(models), max_tokens=max_tokens)
        names = list(self.state.models)
        self.model = W.Dropdown(options=names, value=names[0], description="model")
        self.sentence = W.Combobox(options=list(sentences), value=sentences[0], description="sentence",
                                   placeholder="type a sentence and press Enter", ensure_option=False,
                                   continuous_update=False, layout=W.Layout(width="640px"))
        layers, heads = self.state.sizes(names[0])
        self.layer = W.Dropdown(options=list(range(layers)), value=0, description="layer")
        self.head = W.Dropdown(options=list(range(heads)), value=0, description="head")
        self.summary = W.HTML()
        self.summary.add_class("bertbook-explorer-summary")
        self.plot = W.Output()
        self.widget = W.VBox([W.HBox([self.model, self.layer, self.head]), self.sentence, self.summary, self.plot])
        self.widget.add_class("bertbook-attention-explorer")
        self.model.observe(self._on_model, names="value")
        self._quiet = False  # True while the model change rewrites the layer and head choices
        for control in (self.sentence, self.layer, self.head):
            control.observe(lambda _change: None if self._quiet else self.render(), names="value")
        self.render()

    def _on_model(self, _change: Any) -> None:
        # Offer only the layers and heads this model has, keeping the current choice where it still exists.
        layers, heads = self.state.sizes(self.model.value)
        layer, head = self.layer.value, self.head.value
        self._quiet = True
        try:
            self.layer.options = list(range(layers))
            self.head.options = list(range(heads))
            self.layer.value = layer if layer is not None and layer < layers else 0
            self.head.value = head if head is not None and head < heads else 0
        finally:
            self._quiet = False
        self.render()

    def render(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        data, message = self.state.view(self.model.value, self.sentence.value, self.layer.value, self.head.value)
        self.summary.value = f"<b>{html.escape(message)}</b>"
        with self.plot:
            self.plot.clear_output(wait=True)
            if data is not None:
                fig = plot_head(data, self.layer.value, self.head.value)
                display(fig)
                plt.close(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def attention_explorer(models: dict[str, tuple[Any, Any]], sentences: Sequence[str],
                       max_tokens: int = 48) -> AttentionExplorer:
    """The "try it" panel of notebook 07: ``attention_explorer({"MiniLM": (model, tok)}, ["A sentence."])``."""
    return AttentionExplorer(models, sentences, max_tokens=max_tokens)
