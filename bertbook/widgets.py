"""Every interactive piece of the course in one place: the ipywidgets panels and live plots.

    notebook 00  size_panel           an encoder's parameters, memory and compute from its shape
    notebook 01  tokenizer_explorer   each tokenizer's pieces, ids and unknowns for typed text
    notebook 04  mask_widget          mask rate, strategy and seed; the masked text updates live
    notebook 05  live_plot            the training and held-out loss while pretraining runs
                 experiment_panel     sliders for a short pretraining experiment, curves overlaid
    notebook 06  try_it               type a review, see the label, its probability and [CLS]'s attention
    notebook 07  attention_explorer   a model, a sentence, a layer and a head; the views update
    notebook 09  lora_panel           LoRA's rank, alpha and targets: trainable count at once, a button that
                                      trains and plots accuracy against trainable parameters
    notebook 08  entity_highlighter   type a text, see its entities highlighted with their types
                 answer_finder        paste a paragraph, ask a question, see the answer and its score
    notebook 10  summary_picker       paste an abstract, see the chosen sentence and every sentence's score
                 reply_ranker         type a dialogue and candidate replies, see them ranked
                 translator           type English, see the Chinese and which words each character read

The panels of the task models (notebooks 08 and 10) live in :mod:`bertbook.task_panels` and are imported
here, so that every panel is one ``widgets.`` away.

Each panel only wires widgets to plain functions of the other modules (``views.mask_preview``,
``classifier.describe``, ``experiments.run_experiment``, ...), which the tests call directly. ipywidgets,
matplotlib and IPython are imported inside the panels, so importing this module does not load them.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .attention_maps import AttentionData, attention_data, classify_heads, cls_rows, head_scores, head_stats
from .classifier import build_classifier, describe
from .config import LORA_TARGETS, ConfigError
from .course import size_text
from .efficient import lora_parameters, method_from_preset
from .experiments import plot_runs, run_experiment
from .results import comparison_preset, run_efficient
from .tokenizer import explorer_rows
from .train import History
from .task_panels import answer_finder, entity_highlighter, reply_ranker, summary_picker, translator
from .views import MAX_SEED, mask_legend, mask_preview
from .viz import plot_head, readable_labels

__all__ = ["size_panel", "tokenizer_explorer", "mask_widget", "live_plot", "experiment_panel", "try_it",
           "check_selection", "head_summary", "ExplorerState", "AttentionExplorer", "attention_explorer",
           "entity_highlighter", "answer_finder", "summary_picker", "reply_ranker", "translator"]


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
    cls_row = cls_rows(one)[0, 0]  # (T,)
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


# ----------------------------------------------------------------------------------------------------------
# Notebook 00: how big is an encoder?
# ----------------------------------------------------------------------------------------------------------

def size_panel():
    """Sliders for an encoder's shape that show :func:`size_text` live (notebook 00)."""
    import ipywidgets as w

    controls = {
        "layers": w.IntSlider(12, min=1, max=48, description="layers L"),
        "hidden": w.IntSlider(768, min=64, max=2048, step=64, description="width H"),
        "heads": w.IntSlider(12, min=1, max=32, description="heads A"),
        "ffn_ratio": w.IntSlider(4, min=1, max=8, description="FFN / H"),
        # step 1: a coarser step would snap BERT's 30522 to the grid (31000) when the panel opens
        "vocab": w.IntSlider(30522, min=1000, max=120000, step=1, description="vocab"),
        "million_tokens": w.FloatLogSlider(100, base=10, min=0, max=5, description="M tokens"),
    }
    out = w.HTML()
    out.add_class("bertbook-size-report")

    def update(_=None):
        out.value = f"<pre>{size_text(**{k: c.value for k, c in controls.items()})}</pre>"

    for control in controls.values():
        control.observe(update, names="value")
    update()
    return w.VBox([*controls.values(), out])


# ----------------------------------------------------------------------------------------------------------
# Notebook 01: the tokenizer explorer
# ----------------------------------------------------------------------------------------------------------

def tokenizer_explorer(tokenizers: dict, text: str = "Tokenization splits unbelievably rare words into pieces."):
    """An ipywidgets panel: type text, see each tokenizer's pieces, ids and unknowns (notebook 01)."""
    import html

    import ipywidgets as widgets

    box = widgets.Textarea(value=text, description="text", layout=widgets.Layout(width="95%", height="60px"))
    out = widgets.HTML()

    def update(_=None) -> None:
        cells = "".join(
            f"<tr><td><b>{html.escape(n)}</b></td><td style='text-align:left'>{html.escape(p)}</td>"
            f"<td style='text-align:left;font-size:80%'>{html.escape(i)}</td><td>{html.escape(s)}</td></tr>"
            for n, p, i, s in explorer_rows(tokenizers, box.value))
        out.value = ("<table><tr><th>tokenizer</th><th>word pieces ([UNK] in brackets)</th><th>ids</th>"
                     f"<th></th></tr>{cells}</table>")

    box.observe(update, names="value")
    update()
    return widgets.VBox([box, out])


# ----------------------------------------------------------------------------------------------------------
# Notebook 04: the mask-rate widget
# ----------------------------------------------------------------------------------------------------------

def mask_widget(tokenizer, text: str, mask_prob: float = 0.15):
    """A panel: mask rate, strategy and seed; the masked text updates live (notebook 04)."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    rate = widgets.FloatSlider(value=mask_prob, min=0.01, max=0.99, step=0.01, description="mask rate",
                               readout_format=".0%", continuous_update=True)
    strategy = widgets.ToggleButtons(options=[("word pieces", False), ("whole words", True)],
                                     description="strategy")
    seed = widgets.IntText(value=0, description="seed", tooltip=f"a whole number from 0 to {MAX_SEED:,}")
    box = widgets.Textarea(value=text, layout=widgets.Layout(width="95%", height="60px"))
    out = widgets.Output()

    def refresh(_=None):
        out.clear_output(wait=True)
        with out:
            try:
                r = mask_preview(box.value, tokenizer, rate.value, strategy.value, seed.value, html_output=True)
            except ValueError as exc:
                print(exc)
                return
            display(HTML(f"<p>{r['n_chosen']} of {r['n_tokens']} tokens chosen "
                         f"({r['n_chosen'] / r['n_tokens']:.0%}); {mask_legend()}</p>"
                         f"<p style='line-height:1.8'>{r['text']}</p>"))

    for w in (rate, strategy, seed, box):
        w.observe(refresh, names="value")
    refresh()
    panel = widgets.VBox([box, widgets.HBox([rate, seed]), strategy, out])
    panel.add_class("bertbook-mask-widget")
    return panel


# ----------------------------------------------------------------------------------------------------------
# Notebook 05: the live loss plot and the hyperparameter panel
# ----------------------------------------------------------------------------------------------------------

def live_plot(title: str = "pretraining", every_s: float = 1.0) -> Callable[[dict], None]:
    """A callback for :func:`pretrain` that redraws the training and held-out loss while it runs, at most
    every ``every_s`` seconds and after every evaluation (notebook 05).

    ``callback.show(history)`` draws a whole run from its :class:`History`: call it after ``pretrain``
    returns, so that a run loaded finished from disk (no callback is called then) or resumed after an
    interruption shows all of its curve."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    plt.close(fig)  # shown through the display handle only
    handle = display(fig, display_id=True)
    steps, losses, evals = [], [], {}
    last = [0.0]

    def draw() -> None:
        ax.clear()
        ax.plot(steps, losses, lw=1, alpha=0.8, label="training loss")
        for name, (s, v) in evals.items():
            ax.plot(s, v, "o-", ms=4, label=f"held-out ({name})")
        ax.set_xlabel("step")
        ax.set_ylabel("MLM loss (nats)")
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8)
        if handle is not None:
            handle.update(fig)
        last[0] = time.perf_counter()

    def callback(record: dict) -> None:
        if record["kind"] == "train":
            steps.append(record["step"])
            losses.append(record["mlm_loss"])
            if time.perf_counter() - last[0] >= every_s:
                draw()
        else:
            s, v = evals.setdefault(record["name"], ([], []))
            s.append(record["step"])
            v.append(record["loss"])
            draw()

    def show(history: History) -> None:
        steps[:] = [r["step"] for r in history.train]
        losses[:] = [r["mlm_loss"] for r in history.train]
        evals.clear()
        for r in history.eval:
            s, v = evals.setdefault(r["name"], ([], []))
            s.append(r["step"])
            v.append(r["loss"])
        draw()

    callback.figure, callback.show = fig, show
    return callback


def experiment_panel(preset, runs: list[dict] | None = None):
    """Sliders for learning rate, mask rate, layers, heads, width, steps and sentence objective; the button
    runs a short experiment and overlays its curve on the earlier ones (notebook 05). A line above the
    plot says what the panel is showing: no runs yet, settings changed and waiting for the button, the
    last result, or why an experiment cannot run."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    runs = runs if runs is not None else []
    m, p = preset.model, preset.pretrain
    style = {"description_width": "110px"}
    lr = widgets.FloatLogSlider(value=p.learning_rate, base=10, min=-5, max=-1, step=0.25,
                                description="learning rate", readout_format=".1e", style=style)
    mask = widgets.FloatSlider(value=p.mask_prob, min=0.05, max=0.8, step=0.05, description="mask rate",
                               style=style)
    layers = widgets.IntSlider(value=m.num_hidden_layers, min=1, max=max(12, m.num_hidden_layers),
                               description="layers", style=style)
    heads = widgets.IntSlider(value=m.num_attention_heads, min=1, max=16, description="heads", style=style)
    width = widgets.IntSlider(value=m.hidden_size, min=16, max=max(768, m.hidden_size), step=16,
                              description="width", style=style)
    steps = widgets.IntSlider(value=0, min=0, max=p.max_steps, step=5, description="steps (0: auto)",
                              style=style)  # 0: a tenth of the preset's steps or time budget
    objective = widgets.Dropdown(options=["none", "nsp", "sop", "msc"], value=p.sentence_objective,
                                 description="sentence obj.", style=style)
    button = widgets.Button(description="run experiment", button_style="primary")
    clear = widgets.Button(description="clear runs")
    status = widgets.HTML()
    status.add_class("bertbook-experiment-status")
    out = widgets.Output()
    out.add_class("bertbook-experiment-plot")

    def redraw(message: str = "") -> None:
        if not message and not runs:
            message = "No runs yet: choose the settings and press <b>run experiment</b>."
        status.value = message
        # wait=True keeps the old figure until the new one arrives; with nothing to draw it would stay forever
        out.clear_output(wait=bool(runs))
        if runs:
            with out:
                fig, ax = plt.subplots(figsize=(6.4, 3.6))
                plot_runs(runs, ax)
                display(fig)
                plt.close(fig)

    def on_change(_=None) -> None:
        if not button.disabled:
            status.value = ("<b>Settings changed</b>: press <b>run experiment</b> to train with them "
                            + ("(the curves below are earlier runs)." if runs else "."))

    def on_run(_=None) -> None:
        button.disabled = True
        try:
            status.value = "training ..."
            run = run_experiment(preset, learning_rate=lr.value, mask_prob=mask.value, layers=layers.value,
                                 heads=heads.value, width=width.value, steps=steps.value,
                                 sentence_objective=objective.value)
            runs.append(run)
            ev = run["history"].last_eval("gutenberg")
            redraw(html.escape(f"{run['label']}: held-out loss {ev['loss']:.3f}, accuracy {ev['accuracy']:.1%}"))
        except (ConfigError, ValueError) as exc:
            redraw(html.escape(f"Cannot run this experiment: {exc}"))
        finally:
            button.disabled = False

    def on_clear(_=None) -> None:
        runs.clear()
        redraw()

    for control in (lr, mask, layers, heads, width, steps, objective):
        control.observe(on_change, names="value")
    button.on_click(on_run)
    clear.on_click(on_clear)
    redraw()
    panel = widgets.VBox([widgets.HBox([widgets.VBox([lr, mask, steps, objective]),
                                        widgets.VBox([layers, heads, width])]),
                          widgets.HBox([button, clear]), status, out])
    panel.add_class("bertbook-experiment-panel")
    return panel


# ----------------------------------------------------------------------------------------------------------
# Notebook 06: try the classifier
# ----------------------------------------------------------------------------------------------------------

def try_it(model: torch.nn.Module, tokenizer, info: dict,
           text: str = "A slow start, but the last hour is wonderful and the cast is superb.") -> Any:
    """A text box: type a review, see the predicted label, its probability and the [CLS] attention."""
    import ipywidgets as W

    box = W.Textarea(value=text, layout=W.Layout(width="95%", height="70px"), continuous_update=False)
    button = W.Button(description="classify")
    result = W.HTML()

    def show(*_):
        try:
            d = describe(model, tokenizer, info, box.value)
        except ValueError as exc:
            result.value = f"<b>{html.escape(str(exc))}</b>"
            return
        note = " (truncated to the model's length)" if d["truncated"] else ""
        result.value = (f"<p><b>{d['label']}</b> with probability {d['probability']:.3f}{note}</p>"
                        f"<p>[CLS] attention in the last layer, averaged over heads:</p>{d['html']}")

    box.observe(show, names="value")
    button.on_click(show)
    show()
    return W.VBox([box, button, result])


# ----------------------------------------------------------------------------------------------------------
# Notebook 09: LoRA's rank, alpha and targets; accuracy against trainable parameters
# ----------------------------------------------------------------------------------------------------------

def lora_panel(preset, task: str = "sst2", init: str = "pretrained", reference: Sequence[dict] = (),
               points: list[dict] | None = None):
    """Rank, alpha and target layers of LoRA: the trainable-parameter count updates as they move (from the
    shapes, `efficient.lora_parameters`); the button fine-tunes with them (`results.run_efficient`) and adds
    the run to a plot of test accuracy against trainable parameters, beside the ``reference`` rows (e.g. the
    stored comparison) for the same task and model (notebook 09)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    P = comparison_preset(preset)
    points = points if points is not None else []
    config = build_classifier(P, init, verbose=False)[0].config  # bertbook's or MiniLM's: the same field names
    style = {"description_width": "70px"}
    rank = widgets.IntSlider(value=P.efficient.lora_r, min=1, max=64, description="rank r", style=style)
    alpha = widgets.FloatSlider(value=P.efficient.lora_alpha, min=1, max=128, step=1, description="alpha",
                                style=style)
    targets = widgets.SelectMultiple(options=LORA_TARGETS, value=P.efficient.lora_targets, rows=6,
                                     description="targets", style=style)
    count, status, out = widgets.HTML(), widgets.HTML(), widgets.Output()
    button = widgets.Button(description="train with these", button_style="primary")

    def on_change(_=None) -> None:
        if not targets.value:
            count.value = "<b>Choose at least one target layer.</b>"
            return
        n = lora_parameters(config, rank.value, targets.value)
        count.value = (f"LoRA adds <b>{n:,}</b> trainable parameters (plus the classifier); the update is "
                       f"scaled by alpha / r = {alpha.value / rank.value:.2f}")

    def redraw() -> None:
        out.clear_output(wait=True)
        with out:
            fig, ax = plt.subplots(figsize=(6.0, 3.4))
            rows = [r for r in reference if r["task"] == task and r["model"] == init]
            for r in rows:
                ax.scatter(r["trainable"], r["accuracy"], color="gray")
                ax.annotate(r["label"], (r["trainable"], r["accuracy"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            for r in points:
                ax.scatter(r["trainable"], r["accuracy"], color="tab:red")
                ax.annotate(f"r={r['r']}, a={r['alpha']:g}", (r["trainable"], r["accuracy"]), fontsize=7,
                            xytext=(3, -9), textcoords="offset points", color="tab:red")
            ax.set_xscale("log")
            ax.set_xlabel("trainable parameters")
            ax.set_ylabel("test accuracy")
            ax.set_title(f"{task}, {init}: gray the stored comparison, red your runs", fontsize=9)
            display(fig)
            plt.close(fig)

    def on_run(_=None) -> None:
        button.disabled = True
        try:
            method = method_from_preset(P, "lora", r=rank.value, alpha=alpha.value, targets=tuple(targets.value))
            status.value = f"training {html.escape(method.label)} ..."
            rec = run_efficient(P, task, init, method, verbose=False)
            points.append({**{k: rec[k] for k in ("trainable", "total", "accuracy")}, "r": method.r,
                           "alpha": method.alpha})
            status.value = html.escape(f"{method.label}: test accuracy {rec['accuracy']:.1%} with "
                                       f"{rec['trainable']:,} of {rec['total']:,} parameters trained, "
                                       f"{rec['seconds']:.0f} s")
            redraw()
        except (ConfigError, ValueError) as exc:
            status.value = html.escape(f"Cannot train this: {exc}")
        finally:
            button.disabled = False

    for control in (rank, alpha, targets):
        control.observe(on_change, names="value")
    button.on_click(on_run)
    on_change()
    redraw()
    return widgets.VBox([widgets.HBox([widgets.VBox([rank, alpha]), targets]), count, button, status, out])
