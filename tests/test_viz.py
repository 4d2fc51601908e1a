"""bertbook.attention_maps, viz, views and widgets: head analysis on attention whose answer is known, plots,
offline bertviz views, the bundled JavaScript, and the explorer's logic."""

import dataclasses
import hashlib
import json
import math
import re

import pytest
import torch

from bertbook import attention_maps, viz, widgets
from bertbook import views as views_lib  # 'views' is a fixture below
from bertbook.config import get_preset
from bertbook import exercises

# ---------------------------------------------------------------------------------------------- helpers

TOKENS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]", "it", "purred", "[SEP]"]
T = len(TOKENS)


def head(kind: str, T: int = T, sep=(8, 11)) -> torch.Tensor:
    """A (T, T) attention matrix that does exactly one thing."""
    a = torch.zeros(T, T)
    for i in range(T):
        if kind == "previous":
            a[i, max(i - 1, 0)] = 1.0
        elif kind == "next":
            a[i, min(i + 1, T - 1)] = 1.0
        elif kind == "self":
            a[i, i] = 1.0
        elif kind == "[CLS]":
            a[i, 0] = 1.0
        elif kind == "[SEP]":
            for j in sep:
                a[i, j] = 1.0 / len(sep)
        elif kind == "broad":
            a[i] = 1.0 / T
        elif kind == "mixed":  # 45% previous, 35% next, 20% itself: no target reaches half, and peaked
            a[i, max(i - 1, 0)] += 0.45
            a[i, min(i + 1, T - 1)] += 0.35
            a[i, i] += 0.2
    return a


def synthetic(kinds: list[list[str]]) -> attention_maps.AttentionData:
    a = torch.stack([torch.stack([head(k) for k in row]) for row in kinds])  # (L, H, T, T)
    return attention_maps.AttentionData(tokens=list(TOKENS), attentions=a, name="synthetic")


def tiny_tokenizer():
    """A WordPiece tokenizer over a few words, built in memory (no training, no files)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", ".", "it",
             "purred", "a", "dog", "<", ">", "/", "script", "##s"]
    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def tiny_model():
    from bertbook.model import BertForPreTraining

    tok = tiny_tokenizer()
    cfg = dataclasses.replace(get_preset("ci").model, vocab_size=len(tok))
    torch.manual_seed(0)
    return BertForPreTraining(cfg).eval(), tok


@pytest.fixture(scope="module")
def minilm():
    from bertbook.minilm import load_minilm

    return load_minilm()


# ------------------------------------------------------------------------------------ head analysis


def test_each_pure_head_gets_its_class():
    kinds = [["previous", "next", "self", "[CLS]"], ["[SEP]", "broad", "mixed", "previous"]]
    classes = attention_maps.classify_heads(synthetic(kinds))
    assert classes.labels == kinds
    assert classes.count() == {"[CLS]": 1, "[SEP]": 1, "previous": 2, "next": 1, "self": 1, "broad": 1,
                               "mixed": 1}
    assert "L0 H0  previous" in classes.table()


def test_scores_of_a_previous_token_head():
    scores = attention_maps.head_scores(synthetic([["previous"]]))
    assert float(scores["previous"][0, 0]) == pytest.approx(1.0)  # every query 1..T-1 looks at i-1
    assert float(scores["next"][0, 0]) == pytest.approx(0.0)
    assert float(scores["self"][0, 0]) == pytest.approx(1 / T)  # only query 0, which has no previous token
    assert float(scores["broad"][0, 0]) == pytest.approx(0.0, abs=1e-6)


def test_thresholds_move_heads_between_classes():
    data = synthetic([["mixed"]])
    assert attention_maps.classify_heads(data).labels == [["mixed"]]
    assert float(attention_maps.head_scores(data)["previous"][0, 0]) == pytest.approx(0.45)
    assert attention_maps.classify_heads(data, threshold=0.4).labels == [["previous"]]
    assert float(attention_maps.head_scores(data)["broad"][0, 0]) < 0.45  # entropy of (0.45, 0.35, 0.2) / log 12
    assert attention_maps.classify_heads(data, broad_entropy=0.3).labels == [["broad"]]
    with pytest.raises(ValueError, match="threshold"):
        attention_maps.classify_heads(data, threshold=1.5)


def test_classify_averages_over_texts():
    a, b = synthetic([["previous"]]), synthetic([["broad"]])
    avg = attention_maps.classify_heads([a, a, b])  # previous share (1 + 1 + 1/T) / 3 > 0.5
    assert avg.labels == [["previous"]]
    assert float(avg.scores["previous"][0, 0]) == pytest.approx((2 + 1 / T) / 3)
    with pytest.raises(ValueError, match="one model"):
        attention_maps.classify_heads([a, synthetic([["broad", "broad"]])])


def test_head_stats_known_values():
    stats = attention_maps.head_stats(synthetic([["broad", "self", "previous"]]))
    assert float(stats.entropy[0, 0]) == pytest.approx(math.log(T), rel=1e-5)
    assert float(stats.normalized_entropy[0, 0]) == pytest.approx(1.0, rel=1e-5)
    assert float(stats.entropy[0, 1]) == pytest.approx(0.0, abs=1e-5)
    assert float(stats.mean_distance[0, 1]) == 0.0
    assert float(stats.mean_distance[0, 2]) == pytest.approx((T - 1) / T)  # distance 1 except query 0
    # uniform attention over T positions: mean |i - j| = (T^2 - 1) / (3T)
    assert float(stats.mean_distance[0, 0]) == pytest.approx((T * T - 1) / (3 * T), rel=1e-5)


def test_cls_attention_is_the_first_row():
    data = synthetic([["previous", "[CLS]"]])
    c = attention_maps.cls_rows(data)
    assert c.shape == (1, 2, T)
    torch.testing.assert_close(c.sum(-1), torch.ones(1, 2))
    assert float(c[0, 1, 0]) == 1.0


def test_inputs_as_model_output_tuple():
    data = synthetic([["previous", "next"], ["self", "broad"]])
    per_layer = tuple(data.attentions[i].unsqueeze(0) for i in range(2))  # what a model returns: (1, H, T, T)
    torch.testing.assert_close(attention_maps.head_stats(per_layer).entropy, attention_maps.head_stats(data).entropy)
    with pytest.raises(ValueError, match="layers, heads, T, T"):
        attention_maps.head_stats(torch.zeros(3, T, T))
    with pytest.raises(ValueError, match="tokens"):
        attention_maps.AttentionData(tokens=TOKENS[:-1], attentions=data.attentions)


def test_attention_change():
    a = synthetic([["previous", "broad"]])
    b = synthetic([["self", "broad"]])
    change = attention_maps.attention_change(a, b)
    assert float(change[0, 1]) == 0.0
    assert float(change[0, 0]) == pytest.approx((T - 1) / T)  # disjoint except query 0 (both look at itself)
    assert float(attention_maps.attention_change(a, synthetic([["next", "broad"]]))[0, 0]) == 1.0
    with pytest.raises(ValueError, match="same tokens"):
        attention_maps.attention_change(a, synthetic([["previous"]]))


def test_class_fractions():
    classes = attention_maps.classify_heads(synthetic([["previous", "broad"], ["broad", "self"]]))
    f = attention_maps.class_fractions({"x": classes})
    assert f["x"]["broad"] == 0.5 and f["x"]["previous"] == 0.25 and sum(f["x"].values()) == pytest.approx(1)


def test_plots_return_figures():
    import matplotlib.pyplot as plt

    data = synthetic([["previous", "next"], ["[SEP]", "broad"]])
    classes = attention_maps.classify_heads(data)
    figs = [viz.plot_attention_grid(data), viz.plot_head(data, 1, 0), viz.plot_cls_attention(data),
            viz.plot_head_stats(attention_maps.head_stats(data)), viz.plot_head_classes(classes),
            viz.plot_class_comparison({"a": classes, "b": classes}),
            viz.plot_attention_change(attention_maps.attention_change(data, data))]
    assert len(figs[0].axes) == 4  # 2 layers x 2 heads
    assert figs[1].axes[0].get_title() == "synthetic: layer 1, head 0"
    with pytest.raises(ValueError, match="head 2 does not exist"):
        viz.plot_head(data, 0, 2)
    for fig in figs:
        plt.close(fig)


# ---------------------------------------------------------------------------- attention from models


def test_attention_data_bertbook_queries_keys_reproduce_attention(tiny_model):
    model, tok = tiny_model
    data = attention_maps.attention_data(model, tok, "The cat sat on the mat.", "It purred.", queries_and_keys=True)
    assert data.tokens == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]", "it", "purred", ".",
                           "[SEP]"]
    assert data.sentence_b_start == 9
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    assert data.attentions.shape == (L, H, 13, 13)
    d_k = data.queries.shape[-1]
    scores = data.queries @ data.keys.transpose(-1, -2) / math.sqrt(d_k)  # (L, H, T, T)
    torch.testing.assert_close(scores.softmax(-1), data.attentions, atol=1e-5, rtol=1e-4)
    assert model.training is False


def test_attention_data_minilm_queries_keys_reproduce_attention(minilm):
    model, tok = minilm
    data = attention_maps.attention_data(model, tok, "The cat sat on the mat.", queries_and_keys=True, name="MiniLM")
    assert data.attentions.shape == (6, 12, 9, 9) and data.queries.shape == (6, 12, 9, 32)
    scores = data.queries @ data.keys.transpose(-1, -2) / math.sqrt(32)  # (L, H, T, T)
    torch.testing.assert_close(scores.softmax(-1), data.attentions, atol=1e-5, rtol=1e-4)


def test_attention_data_errors(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="non-empty"):
        attention_maps.attention_data(model, tok, "  ")
    long = attention_maps.attention_data(model, tok, "the cat " * 200, max_length=20)
    assert len(long.tokens) == 20 and long.tokens[-1] == "[SEP]"


def test_sdpa_model_gets_a_clear_message():
    from bertbook.minilm import load_minilm

    model, tok = load_minilm(attn_implementation="sdpa")
    with pytest.raises(ValueError, match="eager"):
        attention_maps.attention_data(model, tok, "The cat sat.")


# ------------------------------------------------------------------------------------ offline views

SCRIPT_OR_STYLE_URL = re.compile(
    r"""<script[^>]*\bsrc\s*=|<link[^>]*\bhref\s*=\s*["']?https?:|url\(\s*["']?https?:|@import|"""
    r"""require\.config|requirejs\(|https?://cdn|cdnjs|unpkg|jsdelivr|googleapis""", re.IGNORECASE)


def network_references(page: str) -> list[str]:
    """Every place where HTML could make the browser fetch something from the network."""
    refs = [m.group(0) for m in SCRIPT_OR_STYLE_URL.finditer(page)]
    # http(s) strings elsewhere are only allowed as the SVG/XML namespace names and licence comments
    allowed = ("http://www.w3.org/", "https://d3js.org v5.7.0", "http://www.apache.org/licenses/",
               "https://github.com/tensorflow/tensor2tensor")
    for m in re.finditer(r"https?://[^\s\"'<>)]+", page):
        if not any(page.startswith(a, m.start()) for a in allowed):
            refs.append(m.group(0))
    return refs


@pytest.fixture(scope="module")
def views(tiny_model):
    model, tok = tiny_model
    pair = attention_maps.attention_data(model, tok, "The cat sat on the mat.", "It purred.", queries_and_keys=True)
    return [views_lib.head_view(model, tok, "The cat sat."), views_lib.head_view(pair, layer=1, heads=[0]),
            views_lib.model_view(pair), views_lib.neuron_view(pair, layer=1, head=1),
            views_lib.neuron_view(model, tok, "A dog sat.")]


def test_views_reference_no_network(views):
    for view in views:
        assert network_references(view.html) == [], view.kind
        # the libraries are inside the view itself
        assert "window.bertbookViz.d3 = " in view.html and "window.bertbookViz.jquery = " in view.html
        assert view._repr_html_() is view.html


def test_views_have_unique_roots_and_their_parameters(views):
    roots = [re.search(r'<div id="(bertviz-[a-z]+-[0-9a-f]{32})"', v.html).group(1) for v in views]
    assert len(set(roots)) == len(roots)
    for view, root in zip(views, roots):
        assert f"window.bertbookViz.run(\"{root}\", function ($, d3) {{" in view.html
        assert f'"root_div_id":"{root}"' in view.html
        assert "window.bertviz_params" not in view.html and 'd3.select("#vis")' not in view.html
    assert '>Sentence A -&gt; Sentence B</option>' in views[1].html and '"heads":[0]' in views[1].html
    assert '"queries":' in views[3].html and '"ab":' in views[3].html


def test_view_text_cannot_break_out_of_its_script():
    data = synthetic([["previous"]])
    data.tokens[3] = "</script><script>alert(1)</script>"
    view = views_lib.head_view(data)
    tokens_json = view.html.split('"left_text":', 1)[1][:300]
    assert "</script" not in tokens_json and "\\u003c/script\\u003e" in tokens_json


def test_view_errors(views, tiny_model, monkeypatch):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        views_lib.head_view(model, tok, "The cat.", layer=5)
    data = attention_maps.attention_data(model, tok, "The cat.")
    with pytest.raises(ValueError, match="queries and keys"):
        views_lib.neuron_view(data)
    with pytest.raises(ValueError, match="tokenizer and a text"):
        views_lib.model_view(model)
    monkeypatch.setattr(views_lib, "_template", lambda view: "requirejs(['d3'], function (d3) {});")
    with pytest.raises(RuntimeError, match="changed"):
        views_lib.head_view(data)


def test_save_html_is_one_offline_page(views, tmp_path):
    path = views_lib.save_html(views, tmp_path / "views" / "attention.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('class="bertbook-view"') == len(views)
    assert network_references(page) == []
    assert [p.name for p in path.parent.iterdir()] == ["attention.html"]  # no temporary file left


def test_bundled_files_match_manifest():
    libs = views_lib.bundled_libraries()
    assert {name: e["version"] for name, e in libs.items()} == {"d3": "5.7.0", "jquery": "3.7.1"}
    for entry in libs.values():
        data = (views_lib.STATIC / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
        licence = (views_lib.STATIC / entry["license_file"]).read_text()
        assert "Permission" in licence or "Redistribution" in licence
    assert json.loads((views_lib.STATIC / "manifest.json").read_text())["libraries"]


# ---------------------------------------------------------------------------------------- widgets


def test_check_selection_and_summary():
    data = synthetic([["previous", "broad"]])
    assert widgets.check_selection(data, 0, 1) is None
    assert widgets.check_selection(data, 1, 0) == ("Layer 1 does not exist in synthetic: it has 1 layers, "
                                                   "numbered 0 to 0.")
    assert "each layer has 2 heads, numbered 0 to 1" in widgets.check_selection(data, 0, 2)
    line = widgets.head_summary(data, 0, 0)
    assert line.startswith("synthetic, layer 0, head 0: previous (largest share: previous 1.00)")
    assert "mean distance 0.9 tokens" in line
    assert widgets.head_summary(data, 0, 7).startswith("Head 7 does not exist")


def test_explorer_state_messages(tiny_model):
    state = widgets.ExplorerState({"tiny": tiny_model}, max_tokens=8)
    data, line = state.view("tiny", "The cat sat on the mat.", 0, 1)
    assert data is not None and line.startswith("tiny, layer 0, head 1:")
    assert state.view("tiny", "The cat sat on the mat.", 0, 1)[0] is data  # cached
    assert state.view("tiny", "   ", 0, 0) == (None, "Type a sentence (or pick one from the list) to see its "
                                                     "attention.")
    assert state.view("tiny", "The cat.", 9, 0)[1].startswith("Layer 9 does not exist in tiny")
    assert state.view("tiny", "the cat " * 20, 0, 0)[1].endswith("(text truncated to 8 tokens)")
    with pytest.raises(ValueError, match="Unknown model"):
        state.data("other", "The cat.")


def test_explorer_widget_follows_the_model(tiny_model, minilm):
    import matplotlib.pyplot as plt

    ex = widgets.attention_explorer({"MiniLM": minilm, "tiny": tiny_model}, ["The cat sat on the mat."])
    assert ex.layer.options == tuple(range(6)) and ex.head.options == tuple(range(12))
    ex.layer.value, ex.head.value = 5, 11
    assert ex.summary.value.startswith("<b>MiniLM, layer 5, head 11:")
    ex.model.value = "tiny"  # 2 layers, 2 heads: the choices shrink and fall back to 0
    assert ex.layer.options == (0, 1) and (ex.layer.value, ex.head.value) == (0, 0)
    assert ex.summary.value.startswith("<b>tiny, layer 0, head 0:")
    ex.head.value = 1
    assert ex.summary.value.startswith("<b>tiny, layer 0, head 1:")
    ex.sentence.value = ""
    assert "Type a sentence" in ex.summary.value
    plt.close("all")


# ---------------------------------------------------------------------------------------- exercises


def test_checkers_accept_solutions_and_explain_mistakes(capsys):
    assert exercises.check_previous_token_share(exercises.solutions.previous_token_share)
    assert exercises.check_next_token_head(exercises.solutions.next_token_head)
    next_share = lambda a: a.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1)  # noqa: E731
    with pytest.raises(AssertionError, match="that is the next token"):
        exercises.check_previous_token_share(next_share)
    with pytest.raises(AssertionError, match="queries that have a previous token"):
        exercises.check_previous_token_share(lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / a.shape[-1])
    assert exercises.check_previous_token_share(lambda a: None, raise_on_error=False) is False
    assert "returned None" in capsys.readouterr().out
    swapped = lambda d: exercises.solutions.next_token_head(d)[::-1]  # noqa: E731
    with pytest.raises(AssertionError, match="swapped|is \\("):
        exercises.check_next_token_head(swapped)


def test_notebook_10_views_escape_text_and_check_their_shapes():
    V = views_lib
    hostile = "<script>alert(1)</script>"
    page = V.sentences_html([hostile, "Second."], [0.5, 2.0], chosen=1)
    assert "<script>" not in page and "&lt;script&gt;" in page and page.count("2px solid") == 1
    unread = V.sentences_html(["Read.", "Not read."], [1.0, None], chosen=0)
    assert "not read" in unread and unread.count("<sub") == 1
    with pytest.raises(ValueError, match="one score per sentence"):
        V.sentences_html(["a", "b"], [1.0], chosen=0)
    ranked = V.ranking_html([{"text": hostile, "score": 3.0}, {"text": "Sure.", "score": 1.0}], true="Sure.")
    assert "<script>" not in ranked and ranked.index("&lt;script") < ranked.index("Sure. ✓")
    assert V.ranking_html([]) == "<p>no candidates to rank.</p>"
    table = V.cross_attention_html(["the", hostile], ["猫", "<"], [[0.2, 0.8], [1.0, 0.0]])
    assert "<script>" not in table and table.count("<tr>") == 3 and "猫" in table
    with pytest.raises(ValueError, match="written characters, source pieces"):
        V.cross_attention_html(["a"], ["b", "c"], [[1.0]])
