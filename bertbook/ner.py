"""Named entities: a label for every word (notebook 08).

BIO tags (IOB2, Ramshaw & Marcus 1995): ``B-TYPE`` begins an entity, ``I-TYPE`` continues it, ``O`` is
outside every entity, so "New York City" is ``B-LOC I-LOC I-LOC``. Read top to bottom:

1. words to word pieces: the first piece of each word carries its tag, the other pieces and the special
   tokens get -100, which the loss skips (Devlin et al. 2019, section 5.3); predictions are read at the
   first pieces and mapped back to words;
2. the head: a linear layer on every token vector;
3. metrics: entity-level precision, recall and F1 (an entity counts only if its span and type are both
   right) with ``seqeval`` (Nakayama 2018), the conlleval definition of CoNLL-2003 (Tjong Kim Sang & De
   Meulder 2003); the errors split into boundary errors and type errors;
4. the classical baseline: a linear-chain CRF on word-shape features (Lafferty et al. 2001) with
   ``sklearn-crfsuite``;
5. tagging typed text, with its entities highlighted.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import Preset
from .model import IGNORE_INDEX, ModelOutput

__all__ = ["align_labels", "encode_words", "task_data", "prepare", "make_head", "TokenHead", "featurize",
           "predict_tags", "entity_scores", "entity_errors", "evaluate", "word_features", "crf_row",
           "split_words", "predict", "entities_html"]


# ---------------------------------------------------------------------------------------------------------
# 1. Words to word pieces, and back
# ---------------------------------------------------------------------------------------------------------

def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """One label per token: the word's label on its first piece, -100 on later pieces and on special tokens
    (``word_ids`` is None there). ``word_ids[t]`` is the index of the word token t comes from."""
    labels, previous = [], None
    for w in word_ids:
        labels.append(IGNORE_INDEX if w is None or w == previous else int(word_labels[w]))
        previous = w
    return labels


def encode_words(tokenizer, words: Sequence[str], max_length: int) -> tuple[list[int], list[int | None]]:
    """Token ids of a sentence given as words ([CLS] ... [SEP], cut at ``max_length``) and each token's word."""
    enc = tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=max_length)
    return enc["input_ids"], enc.word_ids()


# ---------------------------------------------------------------------------------------------------------
# 2. The task: data, head, features
# ---------------------------------------------------------------------------------------------------------

def task_data(P: Preset, task: str) -> dict[str, list[dict]]:
    """The preset's slice of WikiANN-en or WNUT-17: ``{"train", "validation", "test"}`` of sentences
    ``{"tokens": [...], "tags": [...]}``, a seeded sample of ``tasks.ner_train_examples`` and
    ``tasks.eval_examples``."""
    from . import data
    from .tasks import TASKS, take

    splits = data.load_ner(TASKS[task][1])
    cfg = P.tasks
    sizes = {"train": cfg.ner_train_examples, "validation": cfg.eval_examples, "test": cfg.eval_examples}
    return {k: take(v, sizes[k], cfg.seed) for k, v in splits.items()}


def prepare(encoder, tokenizer, P: Preset, task: str) -> dict:
    """What the head and the features need: the tag set in id order, and the length."""
    from . import data
    from .tasks import TASKS

    return {"label_names": data.label_names(TASKS[task][1]), "max_length": P.tasks.max_length}


class TokenHead(nn.Module):
    """Dropout and a linear layer on every token vector: ``(B, T, D) -> (B, T, C)``; cross-entropy over the
    tokens whose label is not -100."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, **_: Any) -> ModelOutput:
        logits = self.classifier(self.dropout(hidden))  # (B, T, C)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return ModelOutput(loss=loss, logits=logits)


def make_head(hidden_size: int, info: dict) -> nn.Module:
    return TokenHead(hidden_size, len(info["label_names"]))


def featurize(tokenizer, sentences: Sequence[dict], info: dict) -> list[dict]:
    """Token ids, aligned labels and each token's word, per sentence. A tag outside the tag set is refused
    with the sentence and the tags that are allowed."""
    index = {t: i for i, t in enumerate(info["label_names"])}
    feats = []
    for n, s in enumerate(sentences):
        unknown = sorted(set(s.get("tags", [])) - set(index))
        if unknown:
            raise ValueError(f"sentence {n} has tags {unknown} that are not in the tag set "
                             f"{info['label_names']}: relabel it, or train a model on a tag set that has them.")
        ids, word_ids = encode_words(tokenizer, s["tokens"], info["max_length"])
        tags = [index[t] for t in s.get("tags", ["O"] * len(s["tokens"]))]
        feats.append({"input_ids": ids, "labels": align_labels(word_ids, tags), "word_ids": word_ids})
    return feats


@torch.no_grad()
def predict_tags(model: nn.Module, feats: Sequence[dict], label_names: Sequence[str], n_words: Sequence[int],
                 batch_size: int = 64, pad_id: int = 0) -> tuple[list[list[str]], list[list[float]]]:
    """The tag of every word (read at its first piece) and its probability. Words cut off by the length
    limit get ``O`` with probability 0."""
    from .finetune import batch_order
    from .tasks import pad_features, to_device
    from .utils import device_of, eval_mode

    tags = [["O"] * n for n in n_words]
    probs = [[0.0] * n for n in n_words]
    with eval_mode(model):
        for idx in batch_order([len(f["input_ids"]) for f in feats], batch_size, shuffle=False):
            batch = pad_features([feats[i] for i in idx], pad_id)
            batch.pop("labels", None)
            p = torch.softmax(model(**to_device(batch, device_of(model))).logits.float(), -1).cpu()  # (B, T, C)
            for row, i in enumerate(idx):
                previous = None
                for t, w in enumerate(feats[i]["word_ids"]):
                    if w is not None and w != previous:
                        tags[i][w], probs[i][w] = label_names[int(p[row, t].argmax())], float(p[row, t].max())
                    previous = w
    return tags, probs


# ---------------------------------------------------------------------------------------------------------
# 3. Metrics and error analysis
# ---------------------------------------------------------------------------------------------------------

def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision, recall, F1 (all types together, micro-averaged) and the per-type report."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                    "support": int(v["support"])} for k, v in report.items() if not k.endswith(" avg")}
    return {"precision": float(precision_score(true_tags, pred_tags, zero_division=0)),
            "recall": float(recall_score(true_tags, pred_tags, zero_division=0)),
            "f1": float(f1_score(true_tags, pred_tags, zero_division=0)), "per_type": per_type}


def entity_errors(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, int]:
    """Where the entities go wrong. Each gold entity is ``correct`` (span and type), a ``type`` error (same
    span, other type), a ``boundary`` error (overlapping span, same type), ``boundary+type`` (overlapping,
    other type) or ``missed`` (nothing predicted over it); each predicted entity that overlaps no gold entity
    is ``spurious``."""
    from seqeval.metrics.sequence_labeling import get_entities

    counts = dict.fromkeys(("correct", "type", "boundary", "boundary+type", "missed", "spurious"), 0)
    for true, pred in zip(true_tags, pred_tags):
        gold = [(s, e, t) for t, s, e in get_entities(list(true))]  # (start, end inclusive, type)
        found = [(s, e, t) for t, s, e in get_entities(list(pred))]
        for s, e, t in gold:
            overlapping = [(ps, pe, pt) for ps, pe, pt in found if ps <= e and s <= pe]
            same_span = [pt for ps, pe, pt in overlapping if (ps, pe) == (s, e)]
            if t in same_span:
                counts["correct"] += 1
            elif same_span:
                counts["type"] += 1
            elif any(pt == t for *_, pt in overlapping):
                counts["boundary"] += 1
            else:
                counts["boundary+type" if overlapping else "missed"] += 1
        counts["spurious"] += sum(1 for ps, pe, _ in found if not any(ps <= e and s <= pe for s, e, _ in gold))
    return counts


def evaluate(model: nn.Module, tokenizer, sentences: Sequence[dict], feats: Sequence[dict], info: dict) -> dict:
    """Entity-level scores on sentences (``score`` = F1), the error counts and the predicted tags."""
    pred, _ = predict_tags(model, feats, info["label_names"], [len(s["tokens"]) for s in sentences],
                           pad_id=tokenizer.pad_token_id or 0)
    true = [s["tags"] for s in sentences]
    scores = entity_scores(true, pred)
    return {**scores, "score": scores["f1"], "errors": entity_errors(true, pred), "predictions": pred}


# ---------------------------------------------------------------------------------------------------------
# 4. The baseline: a CRF on word shapes
# ---------------------------------------------------------------------------------------------------------

def _shape(word: str) -> str:
    """"Obama" -> "Xx", "2009" -> "d", "iPhone-7" -> "xXx-d": letter case and digit runs, squeezed."""
    shape = "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)
    return re.sub(r"(.)\1+", r"\1", shape)[:6]  # runs squeezed: "Xxxxx" -> "Xx"


def word_features(words: Sequence[str], i: int) -> dict[str, Any]:
    """The features of word i for the CRF: the word lower-cased, its shape, prefixes and suffixes, case
    and digit flags, and the same for its neighbours (Lafferty et al. 2001; the features of sklearn-crfsuite's
    CoNLL tutorial)."""
    w = words[i]
    f: dict[str, Any] = {"bias": 1.0, "lower": w.lower(), "shape": _shape(w), "prefix3": w[:3].lower(),
                         "suffix3": w[-3:].lower(), "suffix2": w[-2:].lower(), "title": w.istitle(),
                         "upper": w.isupper(), "digit": w.isdigit(), "hashtag_or_at": w[:1] in "#@"}
    for offset, name in ((-1, "prev"), (1, "next")):
        j = i + offset
        if 0 <= j < len(words):
            f.update({f"{name}:lower": words[j].lower(), f"{name}:shape": _shape(words[j]),
                      f"{name}:title": words[j].istitle()})
        else:
            f[f"{name}:edge"] = True
    return f


def crf_row(P: Preset, task: str, splits: dict | None = None) -> dict:
    """The baseline row: a CRF (L-BFGS, L1 0.1, L2 0.1, 100 iterations) trained on the same slice."""
    import sklearn_crfsuite

    from .utils import machine

    splits = splits or task_data(P, task)
    t0 = time.perf_counter()
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100)
    features = [[word_features(s["tokens"], i) for i in range(len(s["tokens"]))] for s in splits["train"]]
    crf.fit(features, [s["tags"] for s in splits["train"]])
    test = splits["test"]
    pred = crf.predict([[word_features(s["tokens"], i) for i in range(len(s["tokens"]))] for s in test])
    true = [s["tags"] for s in test]
    scores = entity_scores(true, pred)
    return {"task": task, "model": "crf", "preset": P.name, "train_examples": len(splits["train"]),
            "test_examples": len(test), "precision": scores["precision"], "recall": scores["recall"],
            "f1": scores["f1"], "score": scores["f1"], "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(), "per_type": scores["per_type"], "errors": entity_errors(true, pred)}


# ---------------------------------------------------------------------------------------------------------
# 5. Typed text
# ---------------------------------------------------------------------------------------------------------

# a word, a punctuation mark, or one Chinese or Japanese character (which BERT's tokenizers also split apart)
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]|(?:(?![\u3040-\u30ff\u3400-\u9fff])\w)+(?:[-'’.]\w+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation of a text with their character spans: "Paris, 2024." -> Paris 0-5, "," 5-6 ..."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def predict(model: nn.Module, tokenizer, info: dict, text: str) -> dict:
    """The entities in a text: ``{"words", "tags", "entities": [{"text", "type", "start", "end", "probability"}]}``
    with character spans. A text longer than the model's length is tagged in pieces of whole words."""
    from seqeval.metrics.sequence_labeling import get_entities

    if not text or not text.strip():
        raise ValueError("The text is empty: type a sentence to find its entities.")
    spans = split_words(text)
    words = [w for w, _, _ in spans]
    budget = max(1, info["max_length"] - 2)
    chunks, start, used = [], 0, 0
    for i, w in enumerate(words):  # pieces of whole words that fit the length
        n = max(1, len(tokenizer.tokenize(w)))
        if used + n > budget and i > start:
            chunks.append((start, i))
            start, used = i, 0
        used += n
    chunks.append((start, len(words)))
    tags: list[str] = []
    probs: list[float] = []
    for a, b in chunks:
        feats = featurize(tokenizer, [{"tokens": words[a:b]}], info)
        t, p = predict_tags(model, feats, info["label_names"], [b - a], pad_id=tokenizer.pad_token_id or 0)
        tags += t[0]
        probs += p[0]
    entities = [{"text": text[spans[s][1]:spans[e][2]], "type": kind, "start": spans[s][1], "end": spans[e][2],
                 "probability": float(np.mean(probs[s:e + 1]))} for kind, s, e in get_entities(tags)]
    return {"words": words, "tags": tags, "entities": entities, "pieces": len(chunks)}


_COLOURS = ["#fdd49e", "#c6dbef", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9", "#fee391"]


def entities_html(text: str, entities: Sequence[dict], types: Sequence[str] = ()) -> str:
    """The text with each entity on a coloured background and its type after it."""
    kinds = list(dict.fromkeys([*types, *(e["type"] for e in entities)]))
    out, at = [], 0
    for e in sorted(entities, key=lambda e: e["start"]):
        colour = _COLOURS[kinds.index(e["type"]) % len(_COLOURS)]
        out.append(html.escape(text[at:e["start"]]))
        out.append(f'<span style="background: {colour}; padding: 1px 3px; border-radius: 3px" '
                   f'title="{e["probability"]:.2f}">{html.escape(e["text"])} <b style="font-size: 75%">'
                   f'{html.escape(e["type"])}</b></span>')
        at = e["end"]
    out.append(html.escape(text[at:]))
    return '<div style="line-height: 1.9; font-family: sans-serif">' + "".join(out) + "</div>"
