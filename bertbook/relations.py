"""Relations: one label for a sentence and two marked nominals in it (notebook 08).

SemEval-2010 Task 8 (Hendrickx et al. 2010) asks which of nine relations holds between two nominals, and
in which direction: "The <e1>author</e1> of a keygen uses a <e2>disassembler</e2>" is
``Instrument-Agency(e2,e1)``. Read top to bottom:

1. entity markers: the tags become four new special tokens, ``[E1] author [/E1]``, whose embedding rows are
   added to the vocabulary and trained (Baldini Soares et al. 2019, "Matching the Blanks");
2. the head: the sentence vector is either [CLS] (as in notebook 06) or the two start markers' vectors side
   by side, the "entity start" representation that Baldini Soares et al. found best;
3. the official metric: macro-averaged F1 over the nine relations, direction taken into account, Other
   excluded (the task's scorer), beside plain accuracy, and the confusion matrix.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import Preset
from .data import label_names
from .model import ModelOutput

__all__ = ["MARKERS", "RELATIONS", "mark", "task_data", "prepare", "RelationHead", "make_head", "featurize",
           "predict_proba", "relation_of", "semeval_scores", "evaluate", "predict"]

MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
_TAG = re.compile(r"</?e[12]>")


def mark(text: str) -> str:
    """``<e1>`` ... ``</e2>`` become the marker tokens, with spaces around them:
    "the <e1>author</e1> of" -> "the [E1] author [/E1] of". A sentence must mark each nominal once."""
    for tag in ("<e1>", "</e1>", "<e2>", "</e2>"):
        if text.count(tag) != 1:
            raise ValueError(f"mark the two nominals once each with <e1>...</e1> and <e2>...</e2>, e.g. "
                             f"'The <e1>author</e1> of a keygen uses a <e2>disassembler</e2>.'; got {text!r}.")
    marked = _TAG.sub(lambda m: " [" + m.group().strip("<>").upper() + "] ", text)
    return re.sub(r"\s+", " ", marked).strip()


def relation_of(label: str) -> str:
    """The relation without its direction: "Cause-Effect(e2,e1)" -> "Cause-Effect"."""
    return label.split("(")[0]


# ---------------------------------------------------------------------------------------------------------
# 1. The task: data, markers, head, features
# ---------------------------------------------------------------------------------------------------------

def task_data(P: Preset, task: str = "semeval") -> dict[str, list[dict]]:
    """The preset's slice: ``tasks.relation_train_examples`` training sentences, ``tasks.eval_examples``
    validation and test sentences (seeded samples; 0 = all)."""
    from . import data
    from .tasks import take

    cfg = P.tasks
    splits = data.load_semeval(seed=cfg.seed)
    sizes = {"train": cfg.relation_train_examples, "validation": cfg.eval_examples, "test": cfg.eval_examples}
    return {k: take(v, sizes[k], cfg.seed) for k, v in splits.items()}


def prepare(encoder, tokenizer, P: Preset, task: str = "semeval", pooling: str = "markers") -> dict:
    """Add the four markers to the tokenizer and the embedding table; say how the head reads the sentence."""
    from . import data
    from .tasks import add_special_tokens

    if pooling not in ("markers", "cls"):
        raise ValueError(f"pooling must be 'markers' (the [E1] and [E2] vectors) or 'cls', got {pooling!r}.")
    add_special_tokens(encoder, tokenizer, MARKERS, seed=P.tasks.seed)
    return {"label_names": data.label_names("semeval2010-task8"), "max_length": P.tasks.max_length,
            "pooling": pooling}


class RelationHead(nn.Module):
    """The sentence as one vector, then dropout and a linear layer to the 19 labels.

    ``pooling="markers"``: the vectors of [E1] and [E2] concatenated, ``(B, 2D)``; ``"cls"``: the [CLS]
    vector, ``(B, D)`` (through a tanh layer, like BERT's pooler).
    """

    def __init__(self, hidden_size: int, num_labels: int, pooling: str = "markers", dropout: float = 0.1) -> None:
        super().__init__()
        self.pooling = pooling
        width = 2 * hidden_size if pooling == "markers" else hidden_size
        self.dense = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_labels)

    def forward(self, hidden: torch.Tensor, markers: torch.Tensor, labels: torch.Tensor | None = None,
                **_: Any) -> ModelOutput:
        if self.pooling == "markers":
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            vector = torch.cat([hidden[rows, markers[:, 0]], hidden[rows, markers[:, 1]]], dim=-1)  # (B, 2D)
        else:
            vector = hidden[:, 0]  # (B, D): [CLS]
        logits = self.classifier(self.dropout(torch.tanh(self.dense(vector))))  # (B, C)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits)


def make_head(hidden_size: int, info: dict) -> nn.Module:
    return RelationHead(hidden_size, len(info["label_names"]), info.get("pooling", "markers"))


def _window(ids: list[int], first: int, last: int, budget: int) -> list[int]:
    """``budget`` consecutive ids that keep positions first..last (the two nominals) whenever they fit."""
    if len(ids) <= budget:
        return ids
    span = last - first + 1
    start = first if span >= budget else max(0, min(first - (budget - span) // 2, len(ids) - budget))
    return ids[start:start + budget]


def featurize(tokenizer, examples: Sequence[dict], info: dict) -> list[dict]:
    """Token ids of the marked sentence ([CLS] ... [SEP]), the positions of [E1] and [E2], the label id.
    A long sentence keeps a window around its nominals."""
    index = {name: i for i, name in enumerate(info["label_names"])}
    e1, e2 = tokenizer.convert_tokens_to_ids(["[E1]", "[E2]"])
    ends = tokenizer.convert_tokens_to_ids(["[/E1]", "[/E2]"])
    feats = []
    for ex in examples:
        label = ex.get("label", info["label_names"][-1])
        if label not in index:
            raise ValueError(f"label {label!r} is not one of the {len(index)} SemEval-2010 Task 8 labels "
                             f"({', '.join(info['label_names'][:3])}, ..., Other).")
        ids = tokenizer(mark(ex["text"]), add_special_tokens=False)["input_ids"]
        spots = [i for i, t in enumerate(ids) if t in (e1, e2, *ends)]
        ids = _window(ids, spots[0], spots[-1], info["max_length"] - 2)
        ids = [tokenizer.cls_token_id] + ids + [tokenizer.sep_token_id]
        markers = [ids.index(e1) if e1 in ids else 0, ids.index(e2) if e2 in ids else 0]
        feats.append({"input_ids": ids, "markers": markers, "labels": index[label]})
    return feats


@torch.no_grad()
def predict_proba(model: nn.Module, feats: Sequence[dict], batch_size: int = 64, pad_id: int = 0) -> np.ndarray:
    """Label probabilities ``(N, 19)`` in the order of ``feats``."""
    from .finetune import batch_order
    from .tasks import pad_features, to_device
    from .utils import device_of, eval_mode

    out = None
    with eval_mode(model):
        for idx in batch_order([len(f["input_ids"]) for f in feats], batch_size, shuffle=False):
            batch = pad_features([feats[i] for i in idx], pad_id)
            batch.pop("labels")
            probs = torch.softmax(model(**to_device(batch, device_of(model))).logits.float(), -1).cpu().numpy()
            if out is None:
                out = np.zeros((len(feats), probs.shape[1]), dtype=np.float32)
            out[idx] = probs
    return out


# ---------------------------------------------------------------------------------------------------------
# 2. The official metric
# ---------------------------------------------------------------------------------------------------------

# the nine relations, without direction and without Other
RELATIONS = tuple(dict.fromkeys(relation_of(x) for x in label_names("semeval2010-task8") if x != "Other"))


def semeval_scores(true: Sequence[str], pred: Sequence[str]) -> dict:
    """SemEval-2010 Task 8's official score: for each of the nine relations (Other left out), precision =
    right label *and* direction / predictions of that relation (either direction), recall = right / gold of
    that relation, F1 from them (0 when undefined); the score is their unweighted mean over all nine
    (macro-F1). Accuracy is over all 19 labels."""
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} gold labels but {len(pred)} predictions.")
    per_relation = {}
    relations = RELATIONS
    for r in relations:
        right = sum(1 for t, p in zip(true, pred) if t == p and relation_of(t) == r)
        predicted = sum(1 for p in pred if relation_of(p) == r)
        gold = sum(1 for t in true if relation_of(t) == r)
        precision = right / predicted if predicted else 0.0
        recall = right / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_relation[r] = {"precision": precision, "recall": recall, "f1": f1, "support": gold}
    macro = float(np.mean([v["f1"] for v in per_relation.values()]))
    accuracy = float(np.mean([t == p for t, p in zip(true, pred)])) if len(true) else 0.0
    return {"macro_f1": macro, "accuracy": accuracy, "per_relation": per_relation}


def evaluate(model: nn.Module, tokenizer, examples: Sequence[dict], feats: Sequence[dict], info: dict) -> dict:
    """The official macro-F1 (``score``), accuracy, the confusion matrix over the 19 labels, the predictions."""
    from .finetune import confusion_matrix

    names = info["label_names"]
    probs = predict_proba(model, feats, pad_id=tokenizer.pad_token_id or 0)
    pred = [names[i] for i in probs.argmax(axis=1)]
    true = [ex["label"] for ex in examples]
    scores = semeval_scores(true, pred)
    cm = confusion_matrix([names.index(t) for t in true], probs.argmax(axis=1), len(names))
    return {**scores, "score": scores["macro_f1"], "confusion": cm.tolist(), "predictions": pred}


def predict(model: nn.Module, tokenizer, info: dict, text: str) -> dict:
    """The relation in one sentence with its nominals marked: ``{"label", "probability", "top"}``."""
    if not text or not text.strip():
        raise ValueError("The text is empty: type a sentence with <e1>...</e1> and <e2>...</e2> around two nominals.")
    feats = featurize(tokenizer, [{"text": text}], info)
    probs = predict_proba(model, feats, pad_id=tokenizer.pad_token_id or 0)[0]
    order = np.argsort(-probs)[:3]
    names = info["label_names"]
    return {"label": names[int(order[0])], "probability": float(probs[order[0]]),
            "top": [(names[int(i)], float(probs[i])) for i in order]}
