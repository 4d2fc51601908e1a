"""Panels for the task models of notebooks 08 and 10: type or paste a text, see what the model makes of it.

    notebook 08  entity_highlighter   type a text, see its entities highlighted with their types
                 answer_finder        paste a paragraph, ask a question, see the answer and its score
    notebook 10  summary_picker       paste an abstract, see the chosen sentence and every sentence's score
                 reply_ranker         type a dialogue and candidate replies, see them ranked
                 translator           type English, see the Chinese and which words each character read

Each panel wires text boxes to one plain function of a task module (``ner.predict``, ``qa.predict``,
``summarize.predict``, ``dialogue.rank``, ``translate.predict``) and one view of :mod:`bertbook.views`; the
text a learner types is always shown escaped, and a text the model cannot read (an empty one, say) gets the
task's own message instead of a stale answer. `bertbook.widgets` imports them, so ``widgets.translator``
works as well.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import torch

from .views import answer_html, cross_attention_html, ranking_html, sentences_html

__all__ = ["entity_highlighter", "answer_finder", "summary_picker", "reply_ranker", "translator"]


# ----------------------------------------------------------------------------------------------------------
# 1. Notebook 08: entities in typed text, an answer in a pasted paragraph
# ----------------------------------------------------------------------------------------------------------

def _text_panel(boxes: list, render: Callable[..., str], label: str) -> Any:
    """Text boxes, a button and an HTML result: ``render(*values)`` fills the result whenever a box changes
    or the button is pressed; a ValueError (empty text, ...) is shown as its message."""
    import ipywidgets as W

    button = W.Button(description=label)
    result = W.HTML()

    def show(*_):
        try:
            result.value = render(*(box.value for box in boxes))
        except ValueError as exc:
            result.value = f"<b>{html.escape(str(exc))}</b>"

    for box in boxes:
        box.observe(show, names="value")
    button.on_click(show)
    show()
    return W.VBox([*boxes, button, result])


def entity_highlighter(model: torch.nn.Module, tokenizer, info: dict,
                       text: str = "Angela Merkel met Emmanuel Macron in Paris before flying to Berlin.") -> Any:
    """Type a text, see the entities the model finds, each highlighted with its type (`ner.predict`)."""
    import ipywidgets as W

    from .ner import entities_html, predict

    box = W.Textarea(value=text, layout=W.Layout(width="95%", height="60px"), continuous_update=False)
    types = sorted({t[2:] for t in info["label_names"] if t != "O"})

    def render(value: str) -> str:
        found = predict(model, tokenizer, info, value)
        listing = ", ".join(f"{e['type']} {e['text']!r} ({e['probability']:.2f})" for e in found["entities"])
        return entities_html(value, found["entities"], types) + f"<p>{html.escape(listing or 'no entities found')}</p>"

    return _text_panel([box], render, "find entities")


def answer_finder(model: torch.nn.Module, tokenizer, info: dict, context: str, question: str) -> Any:
    """Paste a paragraph, ask a question: the answer is highlighted with its score (`qa.predict`)."""
    import ipywidgets as W

    from .qa import predict

    paragraph = W.Textarea(value=context, layout=W.Layout(width="95%", height="110px"), continuous_update=False)
    ask = W.Text(value=question, layout=W.Layout(width="95%"), continuous_update=False)

    def render(context_value: str, question_value: str) -> str:
        out = predict(model, tokenizer, info, context_value, question_value)
        verdict = ("" if out["answered"] else " The model scores <i>no answer here</i> higher than this span, so it "
                   "is only a guess.")
        return (f"<p><b>{html.escape(out['text'])}</b>: score {out['score']:.2f}, p(start) p(end) = "
                f"{out['probability']:.2f}, read in {out['windows']} window(s).{verdict}</p>"
                + answer_html(context_value, out))

    return _text_panel([paragraph, ask], render, "answer")


# ----------------------------------------------------------------------------------------------------------
# 2. Notebook 10: the sentence that summarises, the reply that fits, the translation and where it looked
# ----------------------------------------------------------------------------------------------------------

def summary_picker(model: torch.nn.Module, tokenizer, info: dict, text: str) -> Any:
    """Paste an abstract: every sentence shaded by its share of the model's softmax, the chosen one outlined
    (`summarize.predict`)."""
    import ipywidgets as W

    from .summarize import predict

    box = W.Textarea(value=text, layout=W.Layout(width="95%", height="130px"), continuous_update=False)

    def render(value: str) -> str:
        out = predict(model, tokenizer, info, value)
        note = (f" {out['dropped']} sentence(s) past the model's {info['max_length']} tokens were not read (grey)."
                if out["dropped"] else "")
        return (f"<p>Chosen: <b>{html.escape(out['summary'])}</b>{note}</p>"
                + sentences_html([s["text"] for s in out["sentences"]], [s["score"] for s in out["sentences"]],
                                 out["chosen"]))

    return _text_panel([box], render, "summarise")


def reply_ranker(model: torch.nn.Module, tokenizer, info: dict, context: list[str], candidates: list[str]) -> Any:
    """Type a dialogue (one turn per line) and candidate replies (one per line): the candidates ranked by
    the model, best first (`dialogue.rank`)."""
    import ipywidgets as W

    from .dialogue import rank

    turns = W.Textarea(value="\n".join(context), layout=W.Layout(width="95%", height="80px"),
                       continuous_update=False, description="dialogue")
    replies = W.Textarea(value="\n".join(candidates), layout=W.Layout(width="95%", height="110px"),
                         continuous_update=False, description="replies")

    def render(turns_value: str, replies_value: str) -> str:
        lines = [t.strip() for t in turns_value.split("\n") if t.strip()]
        options = [c.strip() for c in replies_value.split("\n") if c.strip()]
        return ranking_html(rank(model, tokenizer, info, lines, options))

    return _text_panel([turns, replies], render, "rank replies")


def translator(model: torch.nn.Module, tokenizer, info: dict, text: str = "Where is the station?") -> Any:
    """Type an English sentence: its Chinese translation (beam search) and the cross-attention of the last layer,
    one row per written character (`translate.predict`)."""
    import ipywidgets as W

    from .translate import predict

    box = W.Text(value=text, layout=W.Layout(width="95%"), continuous_update=False)

    def render(value: str) -> str:
        out = predict(model, tokenizer, info, value)
        note = " (the sentence was cut to the model's length)" if out["truncated"] else ""
        if not out["characters"]:
            return f"<p>The model wrote nothing for this sentence{note}.</p>"
        return (f"<p><b>{html.escape(out['translation'])}</b>{note}</p>"
                + cross_attention_html(out["pieces"], out["characters"], out["attention"]))

    return _text_panel([box], render, "translate")
