"""Dialogue with an encoder: choosing the next turn among candidates (notebook 10).

An encoder does not write replies, but it can choose one. Response selection on DailyDialog (Li et al. 2017):
given the last few turns of a conversation, rank the true next turn among 10 candidates, the 9 others
being turns of other dialogues of the same split (`data_generation.response_selection`). The scores are
Recall@1 of 10 (how often the true turn comes first) and the mean reciprocal rank (MRR: 1 for first, 1/2
for second, ...). Read top to bottom:

1. data: validation and test dialogues that repeat a training dialogue word for word are removed first
   (84 and 109 of them, `data_generation.drop_repeated_dialogues`), so that a model cannot score by
   remembering; then the preset's seeded samples of examples;
2. reading a dialogue: every turn is tokenized apart and turns are joined with [SEP], the boundary BERT
   already knows; a context that is too long loses its oldest tokens first;
3. the cross-encoder: context and candidate in one input, ``[CLS] context [SEP] candidate [SEP]``, segment
   ids 0 and 1 (the sentence pair of notebook 04), and a head that gives the pair one score from the mean
   of its token vectors. Every pair attends across both texts, so 10 candidates cost 10 encoder passes;
4. the bi-encoder: context and candidate encoded apart, each the mean of its token vectors, scored by
   their cosine; it is trained with in-batch negatives, the other examples' replies (Henderson et al.
   2019; Humeau et al. 2020, who name the two designs). Candidates can be encoded once, ahead of time;
5. the metrics (ties broken fairly), and the baselines on the same test examples: chance, and the TF-IDF
   cosine between context and candidate;
6. ranking your own candidates (:func:`rank`, :func:`predict`).

Both designs start from the same encoders (bertbook's, random or pretrained, and MiniLM): choose one with
the task option ``encoder_kind="cross"`` or ``"bi"`` (``finetune --task dailydialog --encoder-kind bi``).
Published DailyDialog response-selection numbers use other candidate sets and keep the repeated dialogues,
so none is quoted here: the baselines below are the yardstick.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .config import Preset
from .finetune import batch_order
from .model import ModelOutput, mean_pool
from .tasks import TaskModel, pad_features, take, to_device
from .utils import device_of, eval_mode, machine

__all__ = ["ENCODER_KINDS", "CANDIDATES", "TRAIN_NEGATIVES", "TEMPERATURE", "TURN_SEPARATOR", "DialogueSplits",
           "task_data", "prepare", "featurize", "PairHead", "make_head", "BiEncoder", "make_model",
           "score_candidates", "ranking_scores", "chance_mrr", "evaluate", "tfidf_scores", "baseline_rows",
           "rank", "split_turns", "predict"]

ENCODER_KINDS = ("cross", "bi")  # the task option encoder_kind: one input per pair, or two texts encoded apart
CANDIDATES = 10  # the true next turn and 9 others: Recall@1 of 10
TRAIN_NEGATIVES = 1  # cross-encoder: wrong candidates paired with each context in training, beside the true one
TEMPERATURE = 0.05  # bi-encoder: cosines are divided by it before the softmax (SimCSE's value, Gao et al. 2021)
TURN_SEPARATOR = "|"  # between the turns of a context typed on the command line: "Hi! | Hello, how are you?"


# ---------------------------------------------------------------------------------------------------------
# 1. Data: dialogues without repeats, response-selection examples
# ---------------------------------------------------------------------------------------------------------

class DialogueSplits(dict):
    """``{"train", "validation", "test"}`` -> examples, and ``removed``: how many validation and test
    dialogues were dropped because they repeat a training dialogue (``{"validation": 84, "test": 109}``)."""

    def __init__(self, splits: dict[str, list[dict]], removed: dict[str, int]) -> None:
        super().__init__(splits)
        self.removed = removed


@lru_cache(maxsize=1)
def _dialogues() -> tuple[dict[str, list[dict]], dict[str, int]]:
    """DailyDialog's splits without the repeated dialogues, and how many went (read once per process)."""
    from .data_generation import drop_repeated_dialogues, load_dailydialog

    return drop_repeated_dialogues(load_dailydialog())


@lru_cache(maxsize=2)
def _examples(context_turns: int, seed: int) -> dict[str, list[dict]]:
    """Every response-selection example of each split (every turn after the first is a response)."""
    from .data_generation import response_selection

    dialogues, _ = _dialogues()
    return {split: response_selection(d, context_turns=context_turns, negatives=CANDIDATES - 1, seed=seed)
            for split, d in dialogues.items()}


def task_data(P: Preset, task: str = "dailydialog") -> DialogueSplits:
    """The preset's slice: ``tasks.dialogue_train_examples`` training examples (0 = all 76,052),
    ``tasks.eval_examples`` validation and test examples (of 6,503 and 6,129), seeded samples.

    An example is ``{"dialogue_id", "turn", "context": [the last tasks.dialogue_context_turns turns],
    "candidates": [10 turns], "label": index of the true one}``. The result's ``removed`` says how many
    validation and test dialogues were dropped as repeats of training dialogues before sampling.
    """
    cfg = P.tasks
    _, removed = _dialogues()
    examples = _examples(cfg.dialogue_context_turns, cfg.seed)
    sizes = {"train": cfg.dialogue_train_examples, "validation": cfg.eval_examples, "test": cfg.eval_examples}
    return DialogueSplits({k: take(examples[k], sizes[k], cfg.seed) for k in sizes}, dict(removed))


def prepare(encoder, tokenizer, P: Preset, task: str = "dailydialog", encoder_kind: str = "cross") -> dict:
    """How this model reads dialogues: ``encoder_kind`` ("cross": one input per context and candidate;
    "bi": the two encoded apart), the token budget, the turns of context, and the kind's training setting."""
    if encoder_kind not in ENCODER_KINDS:
        raise ValueError(f"encoder_kind must be 'cross' (context and candidate in one input) or 'bi' (encoded "
                         f"apart, compared by cosine), got {encoder_kind!r}.")
    cfg = P.tasks
    positions = encoder.config.max_position_embeddings
    if not 8 <= cfg.dialogue_max_length <= positions:
        raise ValueError(f"tasks.dialogue_max_length={cfg.dialogue_max_length} must be between 8 and the "
                         f"encoder's {positions} positions: set it in that range.")
    kind = {"negatives": TRAIN_NEGATIVES} if encoder_kind == "cross" else {"temperature": TEMPERATURE}
    return {"encoder_kind": encoder_kind, "max_length": cfg.dialogue_max_length,
            "context_turns": cfg.dialogue_context_turns, **kind}


# ---------------------------------------------------------------------------------------------------------
# 2. Reading a dialogue: turns joined with [SEP], the oldest tokens cut first
# ---------------------------------------------------------------------------------------------------------

def _token_ids(tokenizer, texts: Sequence[str]) -> dict[str, list[int]]:
    """Every distinct text's token ids, without [CLS] or [SEP] (one call of the tokenizer for all)."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return {}
    ids = tokenizer(distinct, add_special_tokens=False, verbose=False)["input_ids"]  # long turns are cut later
    return dict(zip(distinct, ids))


def _context(turns: Sequence[str], ids: dict[str, list[int]], sep: int, budget: int) -> list[int]:
    """``t1 [SEP] t2 [SEP] t3``: the turns' ids joined with [SEP]. Over ``budget`` tokens the oldest go
    first: the oldest turn kept may lose its beginning, and a [SEP] left in front is dropped."""
    joined: list[int] = []
    for n, turn in enumerate(turns):
        joined += ([sep] if n else []) + ids[turn]
    joined = joined[max(0, len(joined) - budget):]
    return joined[1:] if joined and joined[0] == sep else joined


def _pair(turns: Sequence[str], candidate: str, ids: dict[str, list[int]], tokenizer,
          max_length: int) -> dict:
    """The cross-encoder's input ``[CLS] context [SEP] candidate [SEP]``, segment ids 0 then 1.

    The candidate stays whole when it fits beside the context, or when it is at most half of the budget;
    a longer one keeps its first half of the budget. The context fills the rest, cut from its oldest turn.
    """
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    budget = max_length - 3  # [CLS], the [SEP] after the context, the [SEP] after the candidate
    whole = ids[candidate]
    context_alone = max(0, sum(len(ids[t]) + 1 for t in turns) - 1)  # with the [SEP]s between turns
    cand = whole[:max(budget // 2, budget - context_alone)]
    context = _context(turns, ids, sep, budget - len(cand))
    return {"input_ids": [cls] + context + [sep] + cand + [sep],
            "token_type_ids": [0] * (len(context) + 2) + [1] * (len(cand) + 1)}


def _single(ids: list[int], tokenizer, max_length: int) -> list[int]:
    """A candidate alone for the bi-encoder: ``[CLS] candidate [SEP]``, its end cut beyond ``max_length``."""
    return [tokenizer.cls_token_id] + ids[:max_length - 2] + [tokenizer.sep_token_id]


def _context_alone(turns: Sequence[str], ids: dict[str, list[int]], tokenizer, max_length: int) -> list[int]:
    """A context alone for the bi-encoder: ``[CLS] t1 [SEP] t2 [SEP] t3 [SEP]``, the oldest tokens cut."""
    sep = tokenizer.sep_token_id
    return [tokenizer.cls_token_id] + _context(turns, ids, sep, max_length - 2) + [sep]


def featurize(tokenizer, examples: Sequence[dict], info: dict) -> list[dict]:
    """Training features of the examples.

    Cross-encoder: the true pair (``labels`` 1) and ``info["negatives"]`` wrong pairs (``labels`` 0, the
    first wrong candidates of the example, already in random order), each ``[CLS] context [SEP] candidate
    [SEP]`` with ``token_type_ids``. Bi-encoder: one feature per example, the context as ``input_ids`` and
    the true reply as ``candidate_ids``; the other examples of a batch supply the wrong replies. Every
    feature keeps its ``example`` index. Evaluation scores all candidates afresh (:func:`score_candidates`).
    """
    ids = _token_ids(tokenizer, [t for ex in examples for t in (*ex["context"], *ex["candidates"])])
    feats = []
    for n, ex in enumerate(examples):
        true = ex["candidates"][ex["label"]]
        if info["encoder_kind"] == "bi":
            feats.append({"input_ids": _context_alone(ex["context"], ids, tokenizer, info["max_length"]),
                          "candidate_ids": _single(ids[true], tokenizer, info["max_length"]), "example": n})
            continue
        wrong = [c for k, c in enumerate(ex["candidates"]) if k != ex["label"]][:info["negatives"]]
        for candidate, label in [(true, 1)] + [(c, 0) for c in wrong]:
            feats.append({**_pair(ex["context"], candidate, ids, tokenizer, info["max_length"]),
                          "labels": label, "example": n})
    return feats


# ---------------------------------------------------------------------------------------------------------
# 3. The cross-encoder: one score per pair
# ---------------------------------------------------------------------------------------------------------

class PairHead(nn.Module):
    """The pair ``[CLS] context [SEP] candidate [SEP]`` as one vector, the mean of its token vectors over
    real tokens, through a tanh layer, dropout and a linear layer to one score: does the candidate continue
    the context? Every token has attended to both texts, so the mean carries what they share. It is the
    mean rather than [CLS] because neither starting encoder trained [CLS] to sum up a pair: MiniLM learnt
    sentence vectors as token means, bertbook's encoder only masked-word prediction (the laptop preset's
    classifier of notebook 06 reads the mean too, chosen on validation).

    The loss is pointwise: binary cross-entropy of each pair against its label, 1 for the true reply and 0
    for a wrong one (the passage re-ranker of Nogueira & Cho 2019). Each pair is one sequence, so the loop
    batches pairs like any sentence pair; a listwise softmax over an example's 10 candidates would need them
    kept together in one batch. In training each context meets its true reply and ``TRAIN_NEGATIVES`` (1)
    wrong one, half positives, and two encoder passes per example, as many as the bi-encoder's two texts.
    """

    def __init__(self, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                **_: Any) -> ModelOutput:
        vector = torch.tanh(self.dense(mean_pool(hidden, attention_mask)))  # (B, T, D) -> (B, D)
        logits = self.score(self.dropout(vector)).squeeze(-1)  # (B, 1) -> (B,)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return ModelOutput(loss=loss, logits=logits)


def make_head(hidden_size: int, info: dict) -> nn.Module:
    """The cross-encoder's `PairHead`; the bi-encoder has no head (it compares two vectors)."""
    if info.get("encoder_kind", "cross") != "cross":
        raise ValueError("the bi-encoder has no head: it compares the mean vectors of two texts. Build it with "
                         "dialogue.make_model(encoder, info).")
    return PairHead(hidden_size)


# ---------------------------------------------------------------------------------------------------------
# 4. The bi-encoder: two texts encoded apart, in-batch negatives
# ---------------------------------------------------------------------------------------------------------

class BiEncoder(nn.Module):
    """One encoder reads the context and the candidate apart; each becomes the unit-length mean of its token
    vectors, and a pair's score is their cosine.

    Training uses in-batch negatives (Henderson et al. 2019; Humeau et al. 2020): in a batch of B examples,
    context i is scored against all B replies, ``logits[i, j] = cos(c_i, r_j) / temperature``, and the loss
    is the cross-entropy of the softmax of each row with the true reply, the diagonal, as target. B - 1
    wrong replies per context at the cost of encoding each text once. A reply that appears twice in the
    batch ("Thank you.") is not counted as wrong for the other context. ``temperature`` (0.05) sharpens
    cosines in [-1, 1] into logits a softmax can make confident.
    """

    def __init__(self, encoder: nn.Module, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature

    save_pretrained = TaskModel.save_pretrained  # the weights as model.safetensors, like every task model

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length text vectors ``(B, D)``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)  # (B, D)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, candidate_ids: torch.Tensor,
                candidate_attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> ModelOutput:
        """``logits`` ``(B, B)``: scaled cosines of every context (rows) with every candidate (columns); the
        loss takes ``labels`` (the column of each row's true reply) or, by default, the diagonal.
        ``token_type_ids`` are ignored: each text is a single segment."""
        context = self.encode(input_ids, attention_mask)  # (B, D)
        reply = self.encode(candidate_ids, candidate_attention_mask)  # (B, D)
        logits = context @ reply.T / self.temperature  # (B, D) @ (D, B) -> (B, B)
        if labels is None:
            labels = torch.arange(logits.shape[0], device=logits.device)  # (B,): the diagonal
        same = (candidate_ids[:, None, :] == candidate_ids[None, :, :]).all(dim=-1)  # (B, B): identical replies
        same[torch.arange(len(labels)), labels] = False  # the true reply itself stays
        loss = nn.functional.cross_entropy(logits.masked_fill(same, float("-inf")), labels)
        return ModelOutput(loss=loss, logits=logits)


def make_model(encoder: nn.Module, info: dict) -> nn.Module:
    """The model of ``info["encoder_kind"]``: ``tasks.TaskModel(encoder, PairHead)`` for "cross", a
    `BiEncoder` for "bi" (both hold the encoder as ``.encoder``)."""
    if info.get("encoder_kind", "cross") == "bi":
        return BiEncoder(encoder, info.get("temperature", TEMPERATURE))
    return TaskModel(encoder, make_head(encoder.config.hidden_size, info))


@torch.no_grad()
def _run(model: nn.Module, feats: Sequence[dict], pad_id: int, step: Callable[[dict], torch.Tensor],
         batch_size: int = 64) -> list[np.ndarray]:
    """``step(batch)`` on batches of similar length, in eval mode; its rows in the order of ``feats``."""
    out: list = [None] * len(feats)
    with eval_mode(model):
        for idx in batch_order([len(f["input_ids"]) for f in feats], batch_size, shuffle=False):
            batch = to_device(pad_features([feats[i] for i in idx], pad_id), device_of(model))
            rows = step(batch).float().cpu().numpy()
            for row, i in zip(rows, idx):
                out[i] = row
    return out


def _vectors(model: "BiEncoder", id_lists: Sequence[list[int]], pad_id: int) -> np.ndarray:
    """The bi-encoder's unit vectors of texts given as token ids, ``(N, D)``."""
    rows = _run(model, [{"input_ids": ids} for ids in id_lists], pad_id,
                lambda batch: model.encode(batch["input_ids"], batch["attention_mask"]))
    return np.stack(rows)  # N x (D,) -> (N, D)


def score_candidates(model: nn.Module, tokenizer, info: dict, contexts: Sequence[Sequence[str]],
                     candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """One score per candidate of each context (higher = a better next turn): the cross-encoder's logit
    for each pair, or the bi-encoder's cosine between the context's and the candidate's vectors. Each
    context keeps its last ``info["context_turns"]`` turns, as in training."""
    contexts = [list(turns)[-info["context_turns"]:] for turns in contexts]
    ids = _token_ids(tokenizer, [t for turns in contexts for t in turns] + [c for cs in candidates for c in cs])
    pad_id, L = tokenizer.pad_token_id or 0, info["max_length"]
    if info["encoder_kind"] == "cross":
        pairs = [_pair(turns, c, ids, tokenizer, L) for turns, cs in zip(contexts, candidates) for c in cs]
        flat = np.array(_run(model, pairs, pad_id, lambda batch: model(**batch).logits))  # (all pairs,)
        return np.split(flat, np.cumsum([len(cs) for cs in candidates])[:-1])  # one (C,) per context
    texts = list(dict.fromkeys(c for cs in candidates for c in cs))  # each distinct candidate encoded once
    where = {t: k for k, t in enumerate(texts)}
    replies = _vectors(model, [_single(ids[t], tokenizer, L) for t in texts], pad_id)  # (U, D)
    rows = _vectors(model, [_context_alone(turns, ids, tokenizer, L) for turns in contexts], pad_id)  # (N, D)
    return [replies[[where[c] for c in cs]] @ rows[n] for n, cs in enumerate(candidates)]  # (C, D) @ (D,) -> (C,)


# ---------------------------------------------------------------------------------------------------------
# 5. Recall@1 and MRR, and the baselines
# ---------------------------------------------------------------------------------------------------------

def ranking_scores(scores: np.ndarray, labels: Sequence[int]) -> dict:
    """Recall@1 and MRR of scores ``(N, C)`` whose true candidates are ``labels``, with ``ranks``: the rank
    of each true candidate (1 = first).

    Ties are broken at random, in expectation: a true candidate tied with t others, below g, is equally
    likely at ranks g+1 ... g+1+t, so it counts 1/(t+1) toward Recall@1 when g = 0, the mean of 1/r over
    those ranks toward MRR, and its rank is g + 1 + t/2. A scorer that gives every candidate the same score
    thus scores exactly chance, never better.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores must be (examples, candidates) with one label per example; got shape "
                         f"{scores.shape} and {len(labels)} labels.")
    true = scores[np.arange(len(scores)), np.asarray(labels)]  # (N,)
    above = (scores > true[:, None]).sum(axis=1)  # (N,): candidates scored higher
    tied = (scores == true[:, None]).sum(axis=1) - 1  # (N,): others with the same score
    hits = np.where(above == 0, 1.0 / (tied + 1), 0.0)
    reciprocal = [np.mean(1.0 / np.arange(g + 1, g + t + 2)) for g, t in zip(above, tied)]
    return {"recall_at_1": float(hits.mean()), "mrr": float(np.mean(reciprocal)),
            "ranks": [float(g + 1 + t / 2) for g, t in zip(above, tied)]}


def chance_mrr(candidates: int = CANDIDATES) -> float:
    """The MRR of a random ranking: the true candidate is at each rank with probability 1/n, so
    MRR = (1/n) (1 + 1/2 + ... + 1/n), 0.2929 for 10 candidates (Recall@1 is 1/n)."""
    return sum(1.0 / r for r in range(1, candidates + 1)) / candidates


def evaluate(model: nn.Module, tokenizer, examples: Sequence[dict], feats: Sequence[dict], info: dict) -> dict:
    """Recall@1 of 10 (``score``), MRR and the rank of every true reply. All candidates of every example
    are scored afresh (`score_candidates`), so ``feats`` (the training features) are not read."""
    scores = score_candidates(model, tokenizer, info, [ex["context"] for ex in examples],
                              [ex["candidates"] for ex in examples])
    result = ranking_scores(np.stack(scores), [ex["label"] for ex in examples])
    return {"score": result["recall_at_1"], **result}


def tfidf_scores(contexts: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
                 fit_texts: Sequence[str]) -> np.ndarray:
    """The TF-IDF baseline: the cosine between the context (its turns as one text) and each candidate,
    as vectors of word counts weighted by inverse document frequency over ``fit_texts``. ``(N, C)``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True).fit(fit_texts)
    C = len(candidates[0])
    rows = vectorizer.transform([" ".join(turns) for turns in contexts])  # (N, V), rows of unit length
    replies = vectorizer.transform([c for cs in candidates for c in cs])  # (N * C, V)
    repeated = rows[np.repeat(np.arange(len(contexts)), C)]  # (N * C, V): each context once per candidate
    cosines = np.asarray(replies.multiply(repeated).sum(axis=1)).ravel()  # (N * C,)
    return cosines.reshape(len(contexts), C)  # (N, C)


def baseline_rows(P: Preset) -> list[dict]:
    """Chance and TF-IDF on the preset's test examples, as results rows. Chance is exact: Recall@1 = 1/10 and
    MRR = `chance_mrr`, what a scorer with no preference gets in expectation. TF-IDF's document frequencies
    come from the turns of the training dialogues (it reads no labels)."""
    test = task_data(P)["test"]

    def row(model: str, recall_at_1: float, mrr: float, seconds: float) -> dict:
        return {"task": "dailydialog", "model": model, "preset": P.name, "train_examples": 0,
                "test_examples": len(test), "score": recall_at_1, "recall_at_1": recall_at_1, "mrr": mrr,
                "seconds": round(seconds, 1), "machine": machine()}

    t0 = time.perf_counter()
    dialogues, _ = _dialogues()
    turns = sorted({t["text"] for d in dialogues["train"] for t in d["turns"]})
    scores = tfidf_scores([ex["context"] for ex in test], [ex["candidates"] for ex in test], turns)
    tfidf = ranking_scores(scores, [ex["label"] for ex in test])
    return [row("chance", 1 / CANDIDATES, chance_mrr(CANDIDATES), 0.0),
            row("tf-idf", tfidf["recall_at_1"], tfidf["mrr"], time.perf_counter() - t0)]


# ---------------------------------------------------------------------------------------------------------
# 6. Ranking your own candidates
# ---------------------------------------------------------------------------------------------------------

def rank(model: nn.Module, tokenizer, info: dict, context_turns: Sequence[str],
         candidates: Sequence[str]) -> list[dict]:
    """The candidates as ``[{"text", "score"}, ...]``, best first, for a context given as its turns (the
    last ``info["context_turns"]`` are read). The score is the cross-encoder's logit or the bi-encoder's
    cosine: compare scores of one context, not across models."""
    turns = [t.strip() for t in context_turns]
    if not turns or not any(turns):
        raise ValueError("The context is empty: give the dialogue so far, one string per turn "
                         "(e.g. ['Hi, how are you?', 'Fine, thanks. And you?']).")
    if not all(turns):
        raise ValueError(f"turn {turns.index('') + 1} of the context is empty: leave it out, or write what was said.")
    if not candidates:
        raise ValueError("No candidates to rank: pass the possible next turns as a list of strings "
                         "(on the command line, --candidates FILE with one per line).")
    empty = [n + 1 for n, c in enumerate(candidates) if not c or not c.strip()]
    if empty:
        raise ValueError(f"candidate {empty[0]} of {len(candidates)} is empty: every candidate needs some words.")
    scores = score_candidates(model, tokenizer, info, [turns], [list(candidates)])[0]
    order = sorted(range(len(candidates)), key=lambda k: -scores[k])
    return [{"text": candidates[k], "score": float(scores[k])} for k in order]


def split_turns(text: str) -> list[str]:
    """A context typed as one line, turns separated by ``|``: "Hi! | Hello, how are you?" -> ["Hi!",
    "Hello, how are you?"]. A turn cannot contain ``|``; an empty turn is refused."""
    turns = [t.strip() for t in text.split(TURN_SEPARATOR)]
    if not any(turns):
        raise ValueError("The context is empty: type the dialogue so far, turns separated by ' | ' "
                         "(e.g. \"Hi, how are you? | Fine, thanks. And you?\").")
    if not all(turns):
        raise ValueError(f"turn {turns.index('') + 1} of the context {text!r} is empty: separate turns with "
                         f"' | ' and write something between the bars.")
    return turns


def predict(model: nn.Module, tokenizer, info: dict, text: str, candidates: Sequence[str] | None = None) -> dict:
    """The best next turn for a context typed as one line, its turns separated by " | " ("Hi! | Hello, how
    are you?"), among ``candidates`` (a list of strings): ``{"response", "score", "ranking"}``, the ranking
    being `rank`'s list, best first."""
    turns = split_turns(text or "")
    ranking = rank(model, tokenizer, info, turns, list(candidates or []))
    return {"response": ranking[0]["text"], "score": ranking[0]["score"], "ranking": ranking}
