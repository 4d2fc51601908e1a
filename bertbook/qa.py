"""Answers: the span of a paragraph that answers a question (notebook 08).

SQuAD v1.1 (Rajpurkar et al. 2016): every answer is a piece of the paragraph. The model reads the question
and the paragraph as a pair, ``[CLS] question [SEP] paragraph [SEP]``, and scores every token as the
answer's start and as its end (Devlin et al. 2019, section 4.2). Read top to bottom:

1. data: the dev set is all there is offline, so it is split *by article* into train, validation and test
   with a fixed seed (questions about one paragraph share it, so a split by question would leak); with
   the official training set downloaded, training uses it and the whole dev set is the test;
2. windows: a paragraph longer than the model's length is read in overlapping windows (``stride`` tokens
   shared), never cut off; the answer is searched in every window;
3. the head and the best legal span: start before end, at most ``max_answer_tokens`` long, inside the
   paragraph; a window where the answer is not scores [CLS] as start and end;
4. the official metrics: exact match and F1 over the answer's words, after SQuAD's normalisation, the best
   over the reference answers (the official ``evaluate-v1.1.py``);
5. the baseline: the sentence sharing the most words with the question, and its best-matching span; and
   asking a question of a trained model (:func:`predict`). The answer shown highlighted in its paragraph is
   ``views.answer_html``.
"""

from __future__ import annotations

import collections
import random
import re
import string
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from . import data
from .config import Preset
from .model import ModelOutput
from .registry import DataError
from .utils import device_of, eval_mode

__all__ = ["squad_splits", "task_data", "prepare", "make_head", "SpanHead", "windows", "featurize",
           "best_span", "answer", "normalize_answer", "exact_match", "f1_score", "squad_scores", "evaluate",
           "overlap_answer", "overlap_row", "predict"]

TEST_ARTICLES = 10  # of the dev set's 48 articles, held out for testing when the train set is absent
VALIDATION_ARTICLES = 4  # ... and for choosing the epoch


# ---------------------------------------------------------------------------------------------------------
# 1. Data
# ---------------------------------------------------------------------------------------------------------

def _questions(articles: Sequence[dict]) -> list[dict]:
    """One item per question: ``{"id", "title", "question", "context", "answers": [{"text", "answer_start"}]}``."""
    return [{"id": qa["id"], "title": a["title"], "question": qa["question"], "context": p["context"],
             "answers": qa["answers"]} for a in articles for p in a["paragraphs"] for qa in p["qas"]]


def squad_splits(seed: int = 0, use_train: bool | None = None) -> dict[str, Any]:
    """Questions for ``{"train", "validation", "test"}`` and where they come from (``"source"``).

    Offline (no official training set): the 48 dev articles are shuffled with ``seed``; 10 are the test,
    4 the validation, 34 the training articles. Scores on this split are *not* comparable with published
    SQuAD dev numbers. With ``train-v1.1.json`` present (``use_train=None`` looks for it): training uses the
    official training set minus 20 articles kept for validation, and the test is the whole dev set.
    """
    dev = data.load_squad("dev")
    train_articles = None
    if use_train is not False:
        try:
            train_articles = data.load_squad("train")
        except DataError:
            if use_train:
                raise
    rng = random.Random(seed)
    if train_articles is not None:
        order = list(range(len(train_articles)))
        rng.shuffle(order)
        val = set(order[:20])
        return {"train": _questions([a for i, a in enumerate(train_articles) if i not in val]),
                "validation": _questions([train_articles[i] for i in sorted(val)]), "test": _questions(dev),
                "source": "official split: SQuAD v1.1 train (less 20 articles for validation), tested on dev"}
    order = list(range(len(dev)))
    rng.shuffle(order)
    test, val = set(order[:TEST_ARTICLES]), set(order[TEST_ARTICLES:TEST_ARTICLES + VALIDATION_ARTICLES])
    return {"train": _questions([a for i, a in enumerate(dev) if i not in test | val]),
            "validation": _questions([dev[i] for i in sorted(val)]), "test": _questions([dev[i] for i in sorted(test)]),
            "source": f"SQuAD v1.1 dev only, split by article with seed {seed}: {len(dev) - len(test) - len(val)} "
                      f"train, {len(val)} validation, {len(test)} test articles"}


def task_data(P: Preset, task: str = "squad") -> dict[str, list[dict]]:
    """The preset's slice: ``tasks.qa_train_examples`` training questions, ``tasks.eval_examples`` validation
    and test questions, seeded samples of `squad_splits`."""
    from .tasks import take

    cfg = P.tasks
    splits = squad_splits(cfg.seed)
    sizes = {"train": cfg.qa_train_examples, "validation": cfg.eval_examples, "test": cfg.eval_examples}
    return {k: take(splits[k], sizes[k], cfg.seed) for k in sizes}


def prepare(encoder, tokenizer, P: Preset, task: str = "squad") -> dict:
    cfg = P.tasks
    return {"max_length": cfg.qa_max_length, "stride": cfg.qa_stride, "max_answer_tokens": cfg.max_answer_tokens,
            "max_question_tokens": 64}


# ---------------------------------------------------------------------------------------------------------
# 2. Windows over long paragraphs, and the head
# ---------------------------------------------------------------------------------------------------------

def windows(tokenizer, question: str, context: str, max_length: int, stride: int,
            max_question_tokens: int = 64) -> list[dict]:
    """``[CLS] question [SEP] window [SEP]`` for every window of the context. Consecutive windows share
    ``stride`` tokens, so an answer near a window's edge is whole in the next one. Each window keeps
    ``offsets``: the character span of every token in the context (None outside the context).
    A question longer than ``max_question_tokens`` is cut to that many tokens."""
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    if len(q_ids) > max_question_tokens:
        question = tokenizer.decode(q_ids[:max_question_tokens])
    enc = tokenizer(question, context, truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    out = []
    for k in range(len(enc["input_ids"])):
        segments = enc.sequence_ids(k)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][k], segments)]
        out.append({"input_ids": enc["input_ids"][k], "token_type_ids": enc["token_type_ids"][k],
                    "offsets": offsets})
    return out


def _targets(offsets: Sequence, start_char: int, end_char: int) -> tuple[int, int]:
    """The tokens where the answer starts and ends in this window, or (0, 0), [CLS], when it is not whole in it."""
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in inside if offsets[i][1] > start_char)
    end = next(i for i in reversed(inside) if offsets[i][0] < end_char)
    return start, end


def featurize(tokenizer, questions: Sequence[dict], info: dict) -> list[dict]:
    """The windows of every question, each with its question's index (``example``) and, when the question
    has answers, the first answer's start and end tokens (the training target)."""
    feats = []
    for n, q in enumerate(questions):
        for w in windows(tokenizer, q["question"], q["context"], info["max_length"], info["stride"],
                         info.get("max_question_tokens", 64)):
            w["example"] = n
            if q.get("answers"):
                a = q["answers"][0]
                w["start_positions"], w["end_positions"] = _targets(w["offsets"], a["answer_start"],
                                                                    a["answer_start"] + len(a["text"]))
            feats.append(w)
    return feats


class SpanHead(nn.Module):
    """A linear layer from each token vector to two numbers: its start and its end score. The loss is the
    mean of the cross-entropies of the true start and the true end over the window's tokens."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                start_positions: torch.Tensor | None = None, end_positions: torch.Tensor | None = None,
                **_: Any) -> ModelOutput:
        logits = self.qa_outputs(hidden)  # (B, T, 2)
        if attention_mask is not None:
            logits = logits.masked_fill(attention_mask[..., None] == 0, -1e4)  # padding is never an answer
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (nn.functional.cross_entropy(logits[..., 0], start_positions)
                    + nn.functional.cross_entropy(logits[..., 1], end_positions)) / 2
        return ModelOutput(loss=loss, logits=logits)


def make_head(hidden_size: int, info: dict) -> nn.Module:
    return SpanHead(hidden_size)


# ---------------------------------------------------------------------------------------------------------
# 3. The best legal span
# ---------------------------------------------------------------------------------------------------------

def best_span(start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray,
              max_tokens: int) -> tuple[int, int, float]:
    """The span (i, j) that maximises start[i] + end[j] with i <= j < i + max_tokens and both tokens
    ``allowed`` (inside the paragraph). Returns (i, j, score); (-1, -1, -inf) when no token is allowed."""
    T = len(start_logits)
    score = start_logits[:, None] + end_logits[None, :]  # (T, T): start i, end j
    i, j = np.indices((T, T))
    legal = (j >= i) & (j - i < max_tokens) & allowed[:, None] & allowed[None, :]
    if not legal.any():
        return -1, -1, float("-inf")
    score = np.where(legal, score, -np.inf)
    k = int(score.argmax())
    return k // T, k % T, float(score.flat[k])


@torch.no_grad()
def _window_logits(model: nn.Module, feats: Sequence[dict], pad_id: int, batch_size: int = 32) -> list[np.ndarray]:
    """Start and end logits ``(T, 2)`` of every window, in the order of ``feats``."""
    from .finetune import batch_order
    from .tasks import pad_features, to_device

    out: list = [None] * len(feats)
    with eval_mode(model):
        for idx in batch_order([len(f["input_ids"]) for f in feats], batch_size, shuffle=False):
            batch = pad_features([{k: feats[i][k] for k in ("input_ids", "token_type_ids")} for i in idx], pad_id)
            logits = model(**to_device(batch, device_of(model))).logits.float().cpu().numpy()  # (B, T, 2)
            for row, i in enumerate(idx):
                out[i] = logits[row, :len(feats[i]["input_ids"])]
    return out


def _whole_words(context: str, a: int, b: int) -> tuple[int, int]:
    """Widen a character span to whole words: a span that starts or ends inside a word ("##cos" of
    "Broncos") takes the rest of that word."""
    while a > 0 and context[a - 1].isalnum() and context[a].isalnum():
        a -= 1
    while b < len(context) and context[b].isalnum() and context[b - 1].isalnum():
        b += 1
    return a, b


def answer(feats: Sequence[dict], logits: Sequence[np.ndarray], context: str, max_tokens: int) -> dict:
    """The best span over all windows of one question: ``{"text", "start", "end", "score", "probability",
    "null_score", "window"}``. ``probability`` is p(start) p(end) within the window; ``null_score`` is the
    best window's [CLS] score, what the model gives "the answer is not here"."""
    best = {"text": "", "start": 0, "end": 0, "score": float("-inf"), "probability": 0.0,
            "null_score": float("-inf"), "window": -1}
    for w, (f, lg) in enumerate(zip(feats, logits)):
        allowed = np.array([o is not None for o in f["offsets"]])
        i, j, score = best_span(lg[:, 0], lg[:, 1], allowed, max_tokens)
        if i >= 0 and score > best["score"]:
            p_start, p_end = (np.exp(lg[:, c] - lg[:, c].max()) / np.exp(lg[:, c] - lg[:, c].max()).sum()
                              for c in (0, 1))
            a, b = _whole_words(context, f["offsets"][i][0], f["offsets"][j][1])
            best = {"text": context[a:b], "start": a, "end": b, "score": score,
                    "probability": float(p_start[i] * p_end[j]), "null_score": float(lg[0, 0] + lg[0, 1]),
                    "window": w}
    return best


# ---------------------------------------------------------------------------------------------------------
# 4. The official metrics (evaluate-v1.1.py)
# ---------------------------------------------------------------------------------------------------------

def normalize_answer(s: str) -> str:
    """Lower-case, remove punctuation, the articles a/an/the, and extra white space (SQuAD's normalisation)."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    """F1 over the normalised words: the words they share (with repeats) against the words of each."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], questions: Sequence[dict]) -> dict:
    """Exact match and F1 in percent, each the best over a question's reference answers, averaged over the
    questions (an unanswered question scores 0)."""
    if not questions:
        raise ValueError("no questions to score.")
    em = f1 = 0.0
    for q in questions:
        truths = [a["text"] for a in q["answers"]]
        pred = predictions.get(q["id"], "")
        em += max(exact_match(pred, t) for t in truths)
        f1 += max(f1_score(pred, t) for t in truths)
    return {"exact_match": 100 * em / len(questions), "f1": 100 * f1 / len(questions)}


def evaluate(model: nn.Module, tokenizer, questions: Sequence[dict], feats: Sequence[dict], info: dict) -> dict:
    """Exact match and F1 on questions (``score`` = F1), and the predicted answers."""
    logits = _window_logits(model, feats, tokenizer.pad_token_id or 0)
    by_question: dict[int, list[int]] = collections.defaultdict(list)
    for k, f in enumerate(feats):
        by_question[f["example"]].append(k)
    predictions = {}
    for n, q in enumerate(questions):
        ks = by_question[n]
        predictions[q["id"]] = answer([feats[k] for k in ks], [logits[k] for k in ks], q["context"],
                                      info["max_answer_tokens"])["text"]
    scores = squad_scores(predictions, questions)
    return {**scores, "score": scores["f1"], "predictions": predictions}


# ---------------------------------------------------------------------------------------------------------
# 5. The baseline, and asking a question
# ---------------------------------------------------------------------------------------------------------

_STOP = set("a an the of in on at to for by with from and or is are was were be been what which who whom whose "
            "when where why how did do does that this these those it its as".split())


def overlap_answer(question: str, context: str, max_words: int = 5) -> str:
    """The baseline: the sentence that shares the most (non-stop) words with the question; in it, the run of
    at most ``max_words`` words absent from the question that lies closest to the shared words."""
    q_words = {w for w in normalize_answer(question).split() if w not in _STOP}
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", context) if s.strip()] or [context]
    best = max(sentences, key=lambda s: len(q_words & set(normalize_answer(s).split())))
    words = best.split()
    shared = [i for i, w in enumerate(words) if normalize_answer(w) in q_words]
    runs, run = [], []
    for i, w in enumerate(words):
        if normalize_answer(w) in q_words or not normalize_answer(w) or normalize_answer(w) in _STOP and not run:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(i)
    if run:
        runs.append(run)
    if not runs:
        return ""
    centre = np.mean(shared) if shared else 0.0
    chosen = min(runs, key=lambda r: min(abs(i - centre) for i in r))[:max_words]
    return " ".join(words[i] for i in chosen).strip(string.punctuation + " ")


def overlap_row(P: Preset, splits: dict | None = None) -> dict:
    """The baseline's row on the preset's test questions (it needs no training)."""
    from .course import machine

    splits = splits or task_data(P)
    t0 = time.perf_counter()
    test = splits["test"]
    scores = squad_scores({q["id"]: overlap_answer(q["question"], q["context"]) for q in test}, test)
    return {"task": "squad", "model": "overlap", "preset": P.name, "train_examples": 0, "test_examples": len(test),
            **scores, "score": scores["f1"], "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}


def predict(model: nn.Module, tokenizer, info: dict, context: str, question: str) -> dict:
    """The answer to a question about a paragraph: ``{"text", "start", "end", "score", "probability",
    "answered", "windows"}``. ``answered`` is False when the model scores "not here" ([CLS]) above its best
    span in every window: SQuAD v1.1 always has an answer, so the span is still shown, as a guess."""
    if not context or not context.strip():
        raise ValueError("The paragraph is empty: paste the text that should contain the answer.")
    if not question or not question.strip():
        raise ValueError("The question is empty: ask something about the paragraph.")
    feats = windows(tokenizer, question, context, info["max_length"], info["stride"],
                    info.get("max_question_tokens", 64))
    logits = _window_logits(model, feats, tokenizer.pad_token_id or 0)
    best = answer(feats, logits, context, info["max_answer_tokens"])
    nulls = [float(lg[0, 0] + lg[0, 1]) for lg in logits]
    return {**best, "answered": bool(best["text"]) and best["score"] > min(nulls), "windows": len(feats)}
