"""The "try it" panels without a browser: their logic, their messages, and where their controls start.

The browser test (test_browser.py) drives the same panels in JupyterLab; these tests pin down what they show.
"""

import math
import warnings

import ipywidgets as W
import pytest
import torch

from bertbook import attention_maps, train, views, viz, widgets
from bertbook.config import get_preset


def _controls(widget):
    """Every widget inside ``widget`` (depth first)."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _controls(child)


def _off_grid(panel) -> list[str]:
    """Sliders whose starting value is not on their step grid: the browser would snap them (and tell the
    kernel) as soon as the panel is drawn, so the panel would not open where the notebook says."""
    bad = []
    for w in _controls(panel):
        if isinstance(w, W.FloatLogSlider):
            value = math.log(w.value, w.base)
        elif isinstance(w, (W.IntSlider, W.FloatSlider)):
            value = w.value
        else:
            continue
        steps = (value - w.min) / w.step
        if abs(steps - round(steps)) > 1e-9:
            bad.append(f"{w.description}={w.value} (min {w.min}, step {w.step})")
    return bad


# ---------------------------------------------------------------------------------- 00: the size panel


def test_size_panel_opens_at_bert_base():
    from bertbook.widgets import size_panel

    panel = size_panel()
    assert _off_grid(panel) == []
    vocab = next(w for w in _controls(panel) if getattr(w, "description", "") == "vocab")
    assert vocab.value == 30522
    assert "109,482,240 parameters" in panel.children[-1].value


def test_start_uses_the_plot_fonts():
    import matplotlib.pyplot as plt

    from bertbook.course import start

    start(verbose=False)
    assert plt.rcParams["font.family"] == viz.plot_fonts() and viz.plot_fonts()[0] == "sans-serif"


# ---------------------------------------------------------------------------------- 02 and 07: glyphs, long texts


def test_readable_labels_without_and_with_a_cjk_font(monkeypatch):
    latin = frozenset(range(0x250)) | {0x25A1}
    monkeypatch.setattr(viz, "_fonts", lambda: (("sans-serif", latin),))
    labels, note = viz.readable_labels(["[CLS]", "中国", "naïve", "[SEP]"])
    assert labels == ["[CLS]", "\u25a1\u25a1", "naïve", "[SEP]"]
    assert "中国" in note and "fonts-noto-cjk" in note
    assert viz.readable_labels(["the", "cat"]) == (["the", "cat"], "")
    cjk = frozenset(range(0x4E00, 0xA000))
    monkeypatch.setattr(viz, "_fonts", lambda: (("sans-serif", latin), ("Noto Sans CJK SC", cjk)))
    assert viz.readable_labels(["中国", "ab"]) == (["中国", "ab"], "")


def test_a_chinese_heatmap_draws_without_glyph_warnings():
    data = attention_maps.AttentionData(tokens=["[CLS]", "中", "国", "[SEP]"],
                                        attentions=torch.full((1, 1, 4, 4), 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns once per glyph it cannot draw
        fig = viz.plot_head(data, 0, 0)
        fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "[CLS]" and len(labels) == 4
    if viz.readable_labels(["中"])[1]:  # no CJK font here: boxes, and the explorer's summary says why
        assert labels[1] == "\u25a1"


def test_explore_attention_keeps_the_first_tokens(artifacts):
    from bertbook.attention import explore_attention
    from bertbook.model import BertForMaskedLM
    from bertbook.tokenizer import get_tokenizer

    P = get_preset("ci")
    tok = get_tokenizer(P)
    torch.manual_seed(0)
    model = BertForMaskedLM(P.model.__class__(**{**P.model.to_dict(), "vocab_size": len(tok)}))
    text = "It is a truth universally acknowledged that a single man must be in want of a wife. " * 4
    full, _ = explore_attention(model, tok, text)
    tokens, weights = explore_attention(model, tok, text, max_length=12)
    assert len(full) > 40 and len(tokens) == 12 and weights.shape == (12, 12)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[1:11] == full[1:11]
    tokens, weights = explore_attention(model, tok, text, max_length=12, pad_to=16)
    assert tokens[12:] == ["[PAD]"] * 4 and weights.shape == (16, 16)
    with pytest.raises(ValueError, match="3 or more"):
        explore_attention(model, tok, text, max_length=2)


@pytest.mark.parametrize("position", ["post", "pre"])
def test_explore_attention_is_the_models_attention(artifacts, position):
    from bertbook.attention import explore_attention
    from bertbook.model import BertForMaskedLM
    from bertbook.tokenizer import get_tokenizer

    P = get_preset("ci")
    tok = get_tokenizer(P)
    torch.manual_seed(0)
    cfg = P.model.__class__(**{**P.model.to_dict(), "vocab_size": len(tok), "layer_norm_position": position})
    model = BertForMaskedLM(cfg).eval()
    text = "It is a truth universally acknowledged."
    with torch.no_grad():
        attentions = model(**tok(text, return_tensors="pt"), output_attentions=True).attentions
    for layer in range(cfg.num_hidden_layers):
        _, weights = explore_attention(model, tok, text, layer=layer, head=1)
        torch.testing.assert_close(weights, attentions[layer][0, 1])
    data = attention_maps.attention_data(model, tok, text, queries_and_keys=True)  # what the neuron view shows
    scores = data.queries @ data.keys.transpose(-1, -2) / data.queries.shape[-1] ** 0.5  # (L, H, T, T)
    torch.testing.assert_close(scores.softmax(-1), data.attentions)


# ---------------------------------------------------------------------------------- 04: the mask widget


def test_mask_seed_is_validated(artifacts, capsys):
    from bertbook.tokenizer import get_tokenizer

    tok = get_tokenizer(get_preset("ci"))
    text = "It is a truth universally acknowledged."
    assert views.mask_preview(text, tok, seed=views.MAX_SEED)["n_tokens"] > 5
    for bad in (-1, views.MAX_SEED + 1, 10**30, 1.5, True):
        with pytest.raises(ValueError, match="from 0 to 4,294,967,295"):
            views.mask_preview(text, tok, seed=bad)
    panel = widgets.mask_widget(tok, text)
    seed = next(w for w in _controls(panel) if isinstance(w, W.IntText))
    assert _off_grid(panel) == []
    capsys.readouterr()
    seed.value = 10**30  # what a learner can type; torch would answer "Overflow when unpacking long long"
    assert "The seed must be a whole number from 0 to 4,294,967,295" in capsys.readouterr().out
    seed.value = 7  # and the panel recovers at the next valid seed
    assert "must be" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------- 05: live plot and panel


def _history(steps: int = 6) -> train.History:
    h = train.History()
    h.train = [{"kind": "train", "step": s, "loss": 7.0 - s / 10, "mlm_loss": 7.0 - s / 10}
               for s in range(1, steps + 1)]
    h.eval = [{"kind": "eval", "step": steps, "name": name, "loss": 6.5} for name in ("gutenberg", "wikitext-2")]
    return h


def test_live_plot_shows_a_finished_run():
    plot = widgets.live_plot("test")
    ax = plot.figure.axes[0]
    assert ax.get_lines() == []  # nothing yet: pretrain() calls no callback for a run loaded finished
    plot.show(_history())
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["training loss", "held-out (gutenberg)", "held-out (wikitext-2)"]
    assert list(lines[0].get_xdata()) == [1, 2, 3, 4, 5, 6]
    plot({"kind": "train", "step": 7, "mlm_loss": 6.2})  # a resumed run goes on from there
    plot.show(_history(7))
    assert list(ax.get_lines()[0].get_xdata()) == list(range(1, 8))


def test_experiment_panel_says_what_it_waits_for(artifacts):
    P = get_preset("ci")
    runs = [{"label": "earlier", "settings": {}, "history": _history()}]
    panel = widgets.experiment_panel(P, runs)
    assert _off_grid(panel) == []
    controls = {getattr(w, "description", ""): w for w in _controls(panel)}
    status = next(w for w in _controls(panel) if "bertbook-experiment-status" in w._dom_classes)
    out = next(w for w in _controls(panel) if isinstance(w, W.Output))
    assert status.value == ""  # earlier runs on show, nothing pending
    controls["sentence obj."].value = "sop"
    assert "Settings changed" in status.value and "earlier runs" in status.value
    controls["heads"].value = next(h for h in range(2, 17) if P.model.hidden_size % h)
    controls["run experiment"].click()  # refused before any training: the width is not divisible
    assert status.value.startswith("Cannot run this experiment") and "not divisible" in status.value
    assert len(runs) == 1 and not controls["run experiment"].disabled
    cleared = []
    out.clear_output = lambda *a, **k: cleared.append(k)  # record how the plot area is cleared
    controls["clear runs"].click()
    assert runs == [] and "No runs yet" in status.value
    assert cleared == [{"wait": False}]  # cleared now: wait=True would keep the old plot until a new one came
    controls["width"].value = 32
    assert "Settings changed" in status.value and "earlier runs" not in status.value


def test_lora_panel_counts_the_trainable_parameters_as_the_sliders_move():
    from bertbook.efficient import lora_parameters

    P = get_preset("ci")
    panel = widgets.lora_panel(P, "sst2", "minilm")
    found = {type(w).__name__: w for w in _walk(panel)}
    rank, count = found["IntSlider"], [w for w in _walk(panel) if isinstance(w, W.HTML)][0]
    config = widgets.build_classifier(P, "minilm", verbose=False)[0].config
    rank.value = 4
    assert f"{lora_parameters(config, 4, P.efficient.lora_targets):,}" in count.value
    found["SelectMultiple"].value = ()
    assert "at least one target" in count.value


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)
