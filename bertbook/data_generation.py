"""Datasets whose answer is text: sentence pairs to translate, abstracts to summarise, dialogues to continue.

Notebook 10 ("translation, summaries, dialogue with an encoder") reads them. Like :mod:`bertbook.data`, every
reader finds and verifies its files through :mod:`bertbook.registry` first, so a missing or damaged file
raises a ``DataError`` that says where to put the folder or how to download it.

Read top to bottom, a dataset at a time:

- translation, Tatoeba English-Mandarin: :func:`load_tatoeba` (pairs with their attribution, split by
  sentence so that no sentence is on two sides);
- summarization, SciTLDR-A (Cachola et al. 2020): :func:`load_scitldr` (abstract sentences, reference TLDRs,
  per-sentence ROUGE-1 aligned with the sentences) and :func:`tldr_rouge1`, the dataset's own score;
- dialogue, DailyDialog (Li et al. 2017): :func:`load_dailydialog`, :func:`drop_repeated_dialogues` (test and
  validation dialogues that repeat a training dialogue) and :func:`response_selection` (pick the true next
  turn among 10 candidates, the Recall@1-of-10 task).
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import re
import zipfile
from pathlib import Path

from .registry import DataError, info, verified_files

__all__ = [
    "TATOEBA",
    "SCITLDR",
    "DAILYDIALOG",
    "load_tatoeba",
    "load_scitldr",
    "tldr_rouge1",
    "load_dailydialog",
    "drop_repeated_dialogues",
    "response_selection",
]

TATOEBA = "tatoeba-cmn-eng"
SCITLDR = "scitldr"
DAILYDIALOG = "dailydialog"

SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------------------------
# Translation: Tatoeba English-Mandarin sentence pairs

_ATTRIBUTION = re.compile(r"^CC-BY 2\.0 \(France\) Attribution: tatoeba\.org #(\d+) \(.*\) & #(\d+) \(.*\)$")


def _read_tatoeba(path: Path) -> list[dict]:
    """Every line of ``cmn.txt.gz``, in file order (shortest English first)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        columns = line.split("\t")
        match = _ATTRIBUTION.match(columns[-1]) if len(columns) == 3 else None
        if match is None:
            raise DataError(f"{path}, line {number}: expected 'English<TAB>Chinese<TAB>CC-BY 2.0 (France) "
                            f"Attribution: tatoeba.org #id (name) & #id (name)', found {line[:80]!r}. The file is "
                            f"not the manythings.org cmn-eng release of 2021-07-14.", path=path, problem="layout")
        en, zh, attribution = columns
        pairs.append({"en": en, "zh": zh.replace("\u200b", ""), "attribution": attribution,
                      "en_id": int(match.group(1)), "zh_id": int(match.group(2))})
    return pairs


def _sentence_groups(pairs: list[dict]) -> list[list[int]]:
    """Pair indices grouped so that pairs sharing an English or a Chinese sentence are in one group (the
    connected pieces of the graph English sentence -- Chinese sentence), each group in file order, groups in
    order of their first pair."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(node):
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for p in pairs:
        a, b = root(("en", p["en"])), root(("zh", p["zh"]))
        if a != b:
            parent[a] = b
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(root(("en", p["en"])), []).append(i)
    return list(groups.values())


def load_tatoeba(seed: int = 0, validation: float = 0.1, test: float = 0.1) -> dict[str, list[dict]]:
    """Tatoeba English-Mandarin pairs split into train / validation / test (notebook 10: the English -> Chinese
    encoder-decoder, scored with BLEU and chrF).

    Items are ``{"en": "Hi.", "zh": "嗨。", "attribution": "CC-BY 2.0 (France) Attribution: tatoeba.org
    #538123 (CM) & #891077 (Martha)", "en_id": 538123, "zh_id": 891077}``; the attribution is the line's own
    credit, which the CC BY 2.0 FR licence asks to keep with the pair. The Chinese side mixes simplified and
    traditional characters, as the contributors wrote them (BLEU and chrF count 們 and 们 as different); the
    zero-width spaces (U+200B) inside 5 Chinese sentences are removed.

    The release has no split, and 977 English sentences have two or more translations, so pairs are split by
    sentence: all pairs that share an English sentence -- or a Chinese one, which keeps Chinese -> English
    clean too -- go to the same side (23,050 such groups among the 26,388 pairs, at most 16 pairs in one).
    Groups are shuffled with ``seed`` and fill test until it holds the share ``test`` of the pairs, then
    validation (the last group may overshoot by a pair or two), the rest is train; each split is shuffled with
    ``seed`` so that a prefix ``split[:n]`` is a random sample.
    With the defaults (seed 0): train 21,110 / validation 2,639 / test 2,639 pairs.
    """
    for share, what in ((validation, "validation"), (test, "test")):
        if not 0 <= share < 1:
            raise ValueError(f"{what} is a share of the pairs, between 0 and 1; got {share!r}.")
    if validation + test >= 1:
        raise ValueError(f"validation + test must leave pairs for training; got {validation} + {test}.")
    (path,) = verified_files(TATOEBA, info(TATOEBA)["splits"]["all"])
    pairs = _read_tatoeba(path)
    groups = _sentence_groups(pairs)
    rng = random.Random(seed)
    rng.shuffle(groups)
    wanted = {"test": round(test * len(pairs)), "validation": round(validation * len(pairs))}
    splits: dict[str, list[dict]] = {"test": [], "validation": [], "train": []}
    for group in groups:
        side = next((s for s in ("test", "validation") if len(splits[s]) < wanted[s]), "train")
        splits[side].extend(pairs[i] for i in group)
    for split in SPLITS:
        rng.shuffle(splits[split])
    return {split: splits[split] for split in SPLITS}


# ---------------------------------------------------------------------------------------------------------
# Summarization: SciTLDR-A

def tldr_rouge1(sentence: str, reference: str) -> float:
    """The ROUGE-1 F score SciTLDR's ``rouge_scores`` hold: the ``rouge`` Python package's definition, on
    sets of unigrams (each word counted once), case-sensitive, words split at full stops and spaces, no
    stemming, F = 2PR / (P + R + 1e-8). It reproduces every score of the records whose scores line up with
    their sentences exactly (21,473 sentences); it is not rouge-score's ROUGE-1, which notebook 10 reports."""
    def unigrams(text: str) -> set[str]:
        parts = [" ".join(part.split()) for part in text.split(".") if len(part) > 0]
        return set(itertools.chain.from_iterable(part.split(" ") for part in parts))

    hyp, ref = unigrams(sentence), unigrams(reference)
    overlap = len(hyp & ref)
    precision = overlap / len(hyp) if hyp else 0.0
    recall = overlap / len(ref) if ref else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


_SCITLDR_KEYS = {"source", "source_labels", "rouge_scores", "paper_id", "target", "title"}


def _scitldr_record(raw: dict) -> dict:
    sentences = raw["source"]
    scores, oracle = raw["rouge_scores"], raw["source_labels"].index(1)
    recomputed = len(scores) != len(sentences)
    if recomputed:  # the stored scores belong to another sentence split of this abstract: score these sentences
        scores = [tldr_rouge1(s, raw["target"][0]) for s in sentences]
        oracle = scores.index(max(scores))
    return {"paper_id": raw["paper_id"], "title": raw["title"],
            "sentences": [" ".join(s.split()) for s in sentences],
            "targets": [t.strip() for t in raw["target"]],
            "rouge_scores": scores, "oracle": oracle, "recomputed": recomputed}


def load_scitldr() -> dict[str, list[dict]]:
    """SciTLDR-A's official splits (Cachola et al. 2020): train 1,992 / validation 619 (the ``dev`` file) /
    test 618 papers, in file order (notebook 10: extractive summarization as picking a sentence, BertSum-style,
    and ROUGE against the reference TLDRs).

    Items are ``{"paper_id", "title", "sentences": [abstract sentences], "targets": [TLDRs], "rouge_scores":
    [one per sentence], "oracle": index of the sentence closest to the first TLDR, "recomputed": bool}``.
    Training papers have 1 TLDR, validation 1-4, test 2-4 (the author's own first, then ones written from peer
    reviews): score a summary against all of them. Sentences had line breaks from the PDF inside them; their
    spacing is normalised (one train sentence is empty and stays, so that indices line up with the release).

    ``rouge_scores`` is ROUGE-1 F against the first TLDR (see :func:`tldr_rouge1`) and ``oracle`` its first
    maximum, as the release's ``source_labels``. In 126 records (63 train, 19 validation, 44 test) the release's
    scores are 1-9 entries shorter than the sentences: they were computed on another sentence split, and the
    release's oracle label, their maximum, points at the wrong sentence in 64 of them. For those records
    (``recomputed=True``) both are recomputed from the sentences with the dataset's own formula.
    """
    entry = info(SCITLDR)
    splits = {}
    for split in SPLITS:
        (path,) = verified_files(SCITLDR, entry["splits"][split])
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if not line:
                continue
            raw = json.loads(line)
            if set(raw) != _SCITLDR_KEYS or sum(raw["source_labels"]) != 1:
                raise DataError(f"{path}, line {number}: expected a SciTLDR-A record with the keys "
                                f"{sorted(_SCITLDR_KEYS)} and one oracle sentence.", path=path, problem="layout")
            records.append(_scitldr_record(raw))
        splits[split] = records
    return splits


# ---------------------------------------------------------------------------------------------------------
# Dialogue: DailyDialog in ConvLab-3's unified format

_SPEAKERS = {"user": "A", "system": "B"}  # ConvLab's role names; in DailyDialog two people talk


def load_dailydialog() -> dict[str, list[dict]]:
    """DailyDialog's official splits (Li et al. 2017): train 11,118 / validation 1,000 / test 1,000 dialogues,
    in file order (notebook 10: dialogue as response selection).

    Items are ``{"id": "dailydialog-train-0", "topic": "Attitude & Emotion", "turns": [{"speaker": "A",
    "text": "Say, Jim, how about going for a few beers after dinner?", "act": "directive", "emotion":
    "no emotion"}, ...]}``. Speaker "A" opens and the two alternate (ConvLab-3 calls them "user" and "system").
    The text is ConvLab-3's detokenized version of the release. The splits repeat dialogues: see
    :func:`drop_repeated_dialogues` before measuring anything on validation or test.
    """
    (path,) = verified_files(DAILYDIALOG, info(DAILYDIALOG)["splits"]["all"])
    with zipfile.ZipFile(path) as archive:
        dialogues = json.loads(archive.read("data/dialogues.json"))
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for d in dialogues:
        if d.get("data_split") not in splits:
            raise DataError(f"{path}: dialogue {d.get('dialogue_id')!r} has no split train, validation or test; "
                            f"the file is not ConvLab-3's DailyDialog data.zip.", path=path, problem="layout")
        turns = [{"speaker": _SPEAKERS[t["speaker"]], "text": t["utterance"],
                  "act": t["dialogue_acts"]["binary"][0]["intent"], "emotion": t["emotion"]} for t in d["turns"]]
        splits[d["data_split"]].append({"id": d["dialogue_id"], "topic": d["domains"][0], "turns": turns})
    return splits


def _dialogue_text(dialogue: dict, normalize: bool) -> tuple[str, ...]:
    texts = (t["text"] for t in dialogue["turns"])
    return tuple(" ".join(t.lower().split()) for t in texts) if normalize else tuple(texts)


def drop_repeated_dialogues(splits: dict[str, list[dict]], *, normalize: bool = False,
                            against_validation: bool = False) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Remove the validation and test dialogues that repeat a training dialogue; return ``(splits, removed)``
    with ``removed = {"validation": 84, "test": 109}`` for the release (notebook 10 measures response selection
    on what is left, so that a model cannot score by remembering training dialogues).

    A dialogue repeats another when every turn's text is the same. ``normalize=True`` ignores case and spacing
    (then 93 and 123 go). ``against_validation=True`` also removes test dialogues that repeat a validation
    dialogue (4 more), for a model trained on train and validation together. Train is returned unchanged (689 of
    its dialogues repeat another training dialogue, which only weighs them more); the input is not modified.
    """
    seen = {_dialogue_text(d, normalize) for d in splits["train"]}
    out, removed = {"train": list(splits["train"])}, {}
    for split in ("validation", "test"):
        if split == "test" and against_validation:
            seen = seen | {_dialogue_text(d, normalize) for d in splits["validation"]}
        out[split] = [d for d in splits[split] if _dialogue_text(d, normalize) not in seen]
        removed[split] = len(splits[split]) - len(out[split])
    return out, removed


def response_selection(dialogues: list[dict], *, context_turns: int = 3, negatives: int = 9, seed: int = 0,
                       every_turn: bool = True) -> list[dict]:
    """Response-selection examples from one split's dialogues (notebook 10: Recall@1 of 10, bi-encoder vs
    cross-encoder).

    Each example is ``{"dialogue_id", "turn": index of the true response, "context": [the last
    context_turns turns before it], "candidates": [negatives + 1 texts], "label": index of the true response
    among the candidates}``. Every turn after the first is a response (``every_turn=False``: one turn per
    dialogue, chosen with ``seed``). The ``negatives`` other candidates are turns drawn at random, with
    ``seed``, from other dialogues of the same list, so pass one split at a time. A drawn turn whose text equals
    the true response ("Thank you." is common) or an already drawn one is drawn again, so exactly one
    candidate is right and the candidates are distinct; the true one's position is random too.
    """
    if context_turns < 1 or negatives < 1:
        raise ValueError(f"context_turns and negatives must be at least 1; got {context_turns} and {negatives}.")
    pool = [(i, t["text"]) for i, d in enumerate(dialogues) for t in d["turns"]]
    if len({text for _, text in pool}) <= negatives + 1 or len(dialogues) < 2:
        raise ValueError(f"{len(dialogues)} dialogues hold too few distinct turns to draw {negatives} negatives "
                         f"from other dialogues; pass a whole split.")
    rng = random.Random(seed)
    examples = []
    for i, d in enumerate(dialogues):
        turns = [t["text"] for t in d["turns"]]
        if len(turns) < 2:
            continue
        chosen = range(1, len(turns)) if every_turn else [rng.randrange(1, len(turns))]
        for k in chosen:
            true = turns[k]
            picked: list[str] = []
            for _ in range(1000 * negatives):
                j, text = pool[rng.randrange(len(pool))]
                if j != i and text != true and text not in picked:
                    picked.append(text)
                    if len(picked) == negatives:
                        break
            else:
                raise ValueError(f"Could not draw {negatives} distinct negatives for {d['id']!r} turn {k}: the "
                                 f"other dialogues hold too few different turns; pass a whole split.")
            label = rng.randrange(negatives + 1)
            examples.append({"dialogue_id": d["id"], "turn": k, "context": turns[max(0, k - context_turns):k],
                             "candidates": picked[:label] + [true] + picked[label:], "label": label})
    return examples
