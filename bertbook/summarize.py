"""Summaries with an encoder: pick the sentence of an abstract that best summarises it (notebook 10).

SciTLDR-A (Cachola et al. 2020, "TLDR: Extreme Summarization of Scientific Documents") pairs the abstract of
a paper with one-sentence summaries, TLDRs. An encoder cannot write a new sentence, but it can *choose* one:
extractive summarization as BertSum does it (Liu & Lapata 2019, "Text Summarization with Pretrained
Encoders", section 3.2). Read top to bottom:

1. features: the abstract as ``[CLS] s1 [SEP] [CLS] s2 [SEP] ...``, a [CLS] before every sentence, and
   interval segment ids (``token_type_ids`` 0, 1, 0, 1, ... by sentence) so that neighbouring sentences are
   told apart; sentences past ``tasks.summary_max_length`` tokens are dropped, and counted;
2. the head: the vector of each sentence's [CLS] becomes one score, and a softmax over the document's
   sentences is trained to put the oracle sentence first;
3. the metric: ROUGE-1, -2 and -L F1 against several reference TLDRs, combined as SciTLDR's own evaluation
   script combines them;
4. the baselines that need no training: the first sentence, the sentence closest to the abstract's TF-IDF
   centroid, and the oracle (the best one sentence can do).

The sentence the model picks is the TLDR. A sentence taken word for word from the abstract is not what an
author would write, so even the oracle stays far below a perfect score.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any, Sequence

import numpy as np
import torch
from rouge_score import rouge_scorer
from torch import nn

from .config import Preset
from .data_generation import load_scitldr
from .model import ModelOutput
from .utils import device_of, eval_mode

__all__ = ["ROUGE_TYPES", "MASKED", "task_data", "prepare", "split_sentences", "featurize", "sentence_mask",
           "SentenceHead", "make_head", "sentence_scores", "rouge", "summary_scores", "evaluate", "predict",
           "first_sentence", "tfidf_centroid", "oracle_sentence", "baseline_rows"]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MASKED = -1e4  # the score a padded sentence gets: after the softmax its probability is 0


# ---------------------------------------------------------------------------------------------------------
# 1. The task: data and features
# ---------------------------------------------------------------------------------------------------------

def task_data(P: Preset, task: str = "scitldr") -> dict[str, list[dict]]:
    """The preset's slice of SciTLDR-A (`data_generation.load_scitldr`): ``tasks.summary_train_examples``
    training abstracts, ``tasks.eval_examples`` validation and test abstracts (seeded samples; 0 = all).
    Taught in notebook 10."""
    from .tasks import take

    cfg = P.tasks
    splits = load_scitldr()
    sizes = {"train": cfg.summary_train_examples, "validation": cfg.eval_examples, "test": cfg.eval_examples}
    return {k: take(splits[k], sizes[k], cfg.seed) for k in sizes}


def prepare(encoder, tokenizer, P: Preset, task: str = "scitldr") -> dict:
    """How features are read: ``{"max_length": tasks.summary_max_length}``. The length must fit the encoder's
    position table (notebook 10)."""
    limit = encoder.config.max_position_embeddings
    length = P.tasks.summary_max_length
    if length < 3:
        raise ValueError(f"tasks.summary_max_length={length} cannot hold [CLS], a word and [SEP]: set it to at "
                         f"least 3 (128 or more reads most of an abstract).")
    if length > limit:
        raise ValueError(f"tasks.summary_max_length={length} is longer than the encoder's {limit} positions: "
                         f"set it to at most {limit} (finetune --max-length {limit}, or "
                         f"BERTBOOK_SET=tasks.summary_max_length={limit}).")
    return {"max_length": length}


# a sentence ends at . ! or ? followed by white space and a capital letter; "e.g. the" and "Fig. 3" stay whole
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def split_sentences(text: str) -> list[str]:
    """A plain text cut into sentences: after ``.``, ``!`` or ``?`` when white space and a capital letter
    follow. Simple on purpose (SciTLDR's abstracts come already split): it also cuts after "et al." before a
    name, and keeps "2.5 times" and "e.g. the" whole. Each sentence is returned as written, stripped.
    Notebook 10 uses it for typed abstracts."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def featurize(tokenizer, records: Sequence[dict], info: dict) -> list[dict]:
    """One feature per abstract: ``input_ids`` ``[CLS] s1 [SEP] [CLS] s2 [SEP] ...``, interval
    ``token_type_ids`` (sentence i has segment i mod 2), ``sentence_positions`` (where each [CLS] is),
    ``dropped`` (sentences past ``info["max_length"]``), and, for a record with an ``oracle``, the target
    ``labels``. Taught in notebook 10.

    Sentences are kept whole, in order, while they fit; the first that does not fit and all after it are
    dropped. A first sentence longer than the whole budget is cut to fit, so every abstract keeps one.
    When the oracle sentence is dropped (``oracle_dropped``), the target is the kept sentence with the best
    ROUGE-1 in the record's ``rouge_scores``: the model can only choose among what it reads.
    """
    cls, sep, budget = tokenizer.cls_token_id, tokenizer.sep_token_id, info["max_length"]
    feats = []
    for n, record in enumerate(records):
        sentences = list(record["sentences"])
        if not sentences:
            raise ValueError(f"record {n} has no sentences: give each abstract as a list of its sentences.")
        pieces = tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]
        ids: list[int] = []
        types: list[int] = []
        positions: list[int] = []
        for i, piece in enumerate(pieces):
            room = budget - len(ids) - 2  # tokens left for this sentence between its [CLS] and [SEP]
            if len(piece) > room:
                if i > 0:
                    break
                piece = piece[:max(room, 0)]
            positions.append(len(ids))
            ids += [cls, *piece, sep]
            types += [i % 2] * (len(piece) + 2)
        feat = {"input_ids": ids, "token_type_ids": types, "sentence_positions": positions, "example": n,
                "dropped": len(sentences) - len(positions)}
        if "oracle" in record:
            kept = len(positions)
            feat["oracle_dropped"] = record["oracle"] >= kept
            feat["labels"] = (record["oracle"] if record["oracle"] < kept
                              else int(np.argmax(record["rouge_scores"][:kept])))
        feats.append(feat)
    return feats


# ---------------------------------------------------------------------------------------------------------
# 2. The head: one score per sentence, a softmax over the document
# ---------------------------------------------------------------------------------------------------------

def sentence_mask(sentence_positions: torch.Tensor) -> torch.Tensor:
    """Which entries of padded ``sentence_positions`` ``(B, S)`` are real sentences. `tasks.pad_features`
    pads them with 0, and only the first sentence's [CLS] sits at position 0, so a real entry is the first
    one or one above 0."""
    real = sentence_positions > 0  # (B, S)
    real[:, 0] = True
    return real


class SentenceHead(nn.Module):
    """Each sentence's [CLS] vector, through a tanh layer (like BERT's pooler) and dropout, to one score.

    The loss is the cross-entropy of a softmax over the document's sentences with the oracle sentence as the
    target. BertSum scores every sentence on its own (a sigmoid and binary cross-entropy), because it extracts
    up to three sentences; a TLDR is one sentence, and choosing the best of a document's sentences is what a
    softmax over them models: the scores compete within the document, the prediction is its argmax, and no
    threshold is needed. Padded sentences get the score -10,000, so their probability is 0. Taught in
    notebook 10; the head reads ``last_hidden_state``, so it works on bertbook's and transformers' BERT.
    """

    def __init__(self, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, sentence_positions: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: Any) -> ModelOutput:
        if sentence_positions is None:
            raise ValueError("SentenceHead needs sentence_positions, the index of each sentence's [CLS] "
                             "(summarize.featurize makes them, tasks.pad_features pads them).")
        B, S = sentence_positions.shape
        index = sentence_positions[..., None].expand(B, S, hidden.shape[-1])  # (B, S, D)
        vectors = hidden.gather(1, index)  # (B, S, D): the [CLS] vector of each sentence
        logits = self.scorer(self.dropout(torch.tanh(self.dense(vectors)))).squeeze(-1)  # (B, S)
        logits = logits.masked_fill(~sentence_mask(sentence_positions), MASKED)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits)


def make_head(hidden_size: int, info: dict) -> nn.Module:
    """The task's head for `tasks.TaskModel`: a `SentenceHead` of the encoder's width."""
    return SentenceHead(hidden_size)


@torch.no_grad()
def sentence_scores(model: nn.Module, feats: Sequence[dict], pad_id: int = 0,
                    batch_size: int = 32) -> list[np.ndarray]:
    """The score of every kept sentence, ``(S_i,)`` per feature, in the order of ``feats``."""
    from .finetune import batch_order
    from .tasks import pad_features, to_device

    out: list = [None] * len(feats)
    keys = ("input_ids", "token_type_ids", "sentence_positions")
    with eval_mode(model):
        for idx in batch_order([len(f["input_ids"]) for f in feats], batch_size, shuffle=False):
            batch = pad_features([{k: feats[i][k] for k in keys} for i in idx], pad_id)
            logits = model(**to_device(batch, device_of(model))).logits.float().cpu().numpy()  # (B, S)
            for row, i in enumerate(idx):
                out[i] = logits[row, :len(feats[i]["sentence_positions"])]
    return out


# ---------------------------------------------------------------------------------------------------------
# 3. ROUGE against several references, as SciTLDR scores it
# ---------------------------------------------------------------------------------------------------------

@functools.cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, references: Sequence[str]) -> dict[str, dict[str, float]]:
    """ROUGE-1, -2 and -L F1 (0 to 1) of one summary against its reference TLDRs, with Google's
    ``rouge-score`` (a Python ROUGE-1.5.5; Porter stemming on, lower-cased, punctuation removed).

    Two combinations, both from SciTLDR's own evaluation script (``scripts/cal-rouge.py`` of
    github.com/allenai/scitldr, ``_get_rouge``): ``"max"`` takes the reference whose ROUGE-1 is highest (the
    first such) and reports all three scores against *that* reference, not the best of each score separately;
    ``"mean"`` averages each score over the references. The repository's significance tests
    (``analysis/significance_tests.csv``) compare systems on the ``multi.max`` and ``author`` views, so
    ``"max"`` is the main one here. The first reference is the author's own TLDR. SciTLDR itself runs the Perl
    ROUGE-1.5.5 (through ``files2rouge``), so its published numbers and these differ a little. Notebook 10."""
    if not references:
        raise ValueError("no reference TLDRs: give at least one reference summary to score against.")
    scores = [{t: s.fmeasure for t, s in _scorer().score(ref, prediction).items()} for ref in references]
    best = max(range(len(scores)), key=lambda k: (scores[k]["rouge1"], -k))  # the first of equal ROUGE-1
    mean = {t: float(np.mean([s[t] for s in scores])) for t in ROUGE_TYPES}
    return {"max": scores[best], "mean": mean}


def summary_scores(predictions: Sequence[str], records: Sequence[dict]) -> dict[str, float]:
    """Mean ROUGE over abstracts, in percent as the SciTLDR paper prints them: ``rouge1``, ``rouge2``,
    ``rougeL`` (the ``"max"`` view of `rouge`) and ``rouge1_mean``, ... (the ``"mean"`` view)."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} summaries for {len(records)} abstracts: give one per abstract.")
    if not records:
        raise ValueError("no abstracts to score.")
    each = [rouge(p, r["targets"]) for p, r in zip(predictions, records)]
    out = {t: 100 * float(np.mean([e["max"][t] for e in each])) for t in ROUGE_TYPES}
    out.update({f"{t}_mean": 100 * float(np.mean([e["mean"][t] for e in each])) for t in ROUGE_TYPES})
    return out


# ---------------------------------------------------------------------------------------------------------
# 4. Evaluating, and summarising a typed abstract
# ---------------------------------------------------------------------------------------------------------

def evaluate(model: nn.Module, tokenizer, records: Sequence[dict], feats: Sequence[dict], info: dict) -> dict:
    """ROUGE of the chosen sentences (`summary_scores`); ``score`` is ROUGE-1 F1 with the ``"max"`` view, the
    number SciTLDR's script picks the reference by, and the kind of score its oracle labels come from. Also how
    much truncation hid: ``truncated`` abstracts lost ``dropped_sentences`` in all, and in ``oracle_dropped``
    of them the oracle sentence was among the lost. ``predictions`` are the chosen sentences, ``chosen``
    their indices. Taught in notebook 10."""
    scores = sentence_scores(model, feats, tokenizer.pad_token_id or 0)
    chosen = [int(np.argmax(s)) for s in scores]
    predictions = [r["sentences"][c] for r, c in zip(records, chosen)]
    out = summary_scores(predictions, records)
    return {**out, "score": out["rouge1"], "truncated": sum(f["dropped"] > 0 for f in feats),
            "dropped_sentences": sum(f["dropped"] for f in feats),
            "oracle_dropped": sum(bool(f.get("oracle_dropped")) for f in feats),
            "predictions": predictions, "chosen": chosen}


def predict(model: nn.Module, tokenizer, info: dict, text: str) -> dict:
    """The one-sentence summary of an abstract given as plain text (cut by `split_sentences`):
    ``{"summary", "chosen", "sentences": [{"text", "score", "probability"}], "dropped"}``. Every sentence comes
    back as written; one past ``info["max_length"]`` tokens was not read and has score and probability None.
    Taught in notebook 10."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text is empty: paste an abstract, a few sentences that end in '.', '!' or '?'.")
    sentences = split_sentences(text)
    feat = featurize(tokenizer, [{"sentences": sentences}], info)[0]
    scores = sentence_scores(model, [feat], tokenizer.pad_token_id or 0)[0]
    probs = np.exp(scores - scores.max())
    probs = probs / probs.sum()
    chosen = int(np.argmax(scores))
    read = len(scores)
    return {"summary": sentences[chosen], "chosen": chosen,
            "sentences": [{"text": s, "score": float(scores[i]) if i < read else None,
                           "probability": float(probs[i]) if i < read else None} for i, s in enumerate(sentences)],
            "dropped": feat["dropped"]}


# ---------------------------------------------------------------------------------------------------------
# 5. Baselines that need no training
# ---------------------------------------------------------------------------------------------------------

def first_sentence(record: dict) -> int:
    """Lead-1: the abstract's first sentence (index 0), often its problem statement."""
    return 0


def tfidf_centroid(records: Sequence[dict], fit_records: Sequence[dict]) -> list[int]:
    """For each abstract, the sentence closest by cosine to the abstract's centroid, the mean of its
    sentences' TF-IDF vectors (centroid-based summarization, Radev et al. 2004). The vocabulary and the IDF
    weights are learned from the sentences of ``fit_records`` (the training abstracts); English stop words
    are left out. Ties go to the earlier sentence."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # scikit-learn is slow to import: only here

    vectorizer = TfidfVectorizer(stop_words="english").fit([s for r in fit_records for s in r["sentences"]])
    chosen = []
    for r in records:
        X = vectorizer.transform(r["sentences"])  # (S, V), each row of length 1 (or 0: no known word)
        centroid = np.asarray(X.mean(axis=0)).ravel()  # (V,)
        cosine = X @ centroid / (np.linalg.norm(centroid) or 1.0)  # (S,)
        chosen.append(int(np.argmax(cosine)))
    return chosen


def oracle_sentence(record: dict) -> int:
    """The sentence with the best ROUGE-1 (`rouge`, ``"max"`` view) against the record's references: the
    ROUGE-1 no one-sentence extractive summary can beat. (The record's own ``oracle`` is scored against the
    first TLDR only, with SciTLDR's formula; this one sees every reference, as the evaluation does.) Its
    ROUGE-2 and -L are those of the same sentence, not the best possible of each."""
    r1 = [rouge(s, record["targets"])["max"]["rouge1"] for s in record["sentences"]]
    return int(np.argmax(r1))


def baseline_rows(P: Preset, splits: dict | None = None) -> list[dict]:
    """The three baselines on the preset's test abstracts (`task_data`), as rows: ``{"task", "name",
    "preset", "rouge1", "rouge2", "rougeL", "examples", "seconds"}``, ROUGE in percent (`summary_scores`).
    They read whole abstracts; a trained model only reads the sentences within ``tasks.summary_max_length``
    tokens. Taught in notebook 10."""
    splits = splits or task_data(P)
    test = splits["test"]
    choosers = {"first sentence": lambda: [first_sentence(r) for r in test],
                "tf-idf centroid": lambda: tfidf_centroid(test, splits["train"]),
                "oracle": lambda: [oracle_sentence(r) for r in test]}
    rows = []
    for name, choose in choosers.items():
        t0 = time.perf_counter()
        scores = summary_scores([r["sentences"][i] for r, i in zip(test, choose())], test)
        rows.append({"task": "scitldr", "name": name, "preset": P.name,
                     **{t: scores[t] for t in ROUGE_TYPES}, "examples": len(test),
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows
