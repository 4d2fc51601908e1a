"""Datasets as Python objects: the readers of each dataset family.

Taught in notebook 00 (where the data comes from) and used by every later notebook. The course reads only
real, public text: Project Gutenberg novels for pretraining, IMDB / SST-2 / Rotten Tomatoes for sentiment,
WikiText-2 for evaluation, WikiANN / WNUT-17 for named entities, SemEval-2010 Task 8 for relations and
SQuAD v1.1 for question answering. Every file is found and verified against ``data/manifest.json`` by
:mod:`bertbook.registry` before it is read, so a missing or damaged file raises its ``DataError``, which says
how to fix it.

Read top to bottom, a family at a time:

- pretraining corpora: :func:`corpus_files`, :func:`iter_corpus_text`, :func:`load_corpus` (Gutenberg books,
  and IMDB's training reviews as plain text: :func:`review_texts`), :func:`corpus_shards`, :func:`book_corpus`;
- sentence classification: :func:`load_classification`, :func:`label_names`;
- named entities: :func:`load_ner`; relations: :func:`load_semeval`; question answering: :func:`load_squad`;
- evaluation text: :func:`load_wikitext2`.

The datasets whose answer is text (Tatoeba English-Mandarin pairs, SciTLDR-A summaries, DailyDialog
dialogues; notebook 10) have their readers in :mod:`bertbook.data_generation`.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any, Iterator

from . import paths
from .config import CORPORA, CORPUS_CHOICES, REVIEWS
from .registry import DataError, info, sha256_file, verified_files

__all__ = [
    "corpus_files",
    "iter_corpus_text",
    "load_corpus",
    "load_classification",
    "review_texts",
    "corpus_shards",
    "book_corpus",
    "label_names",
    "load_ner",
    "load_semeval",
    "load_squad",
    "load_wikitext2",
]


CLASSIFICATION = ("imdb", "sst2", "rotten-tomatoes")
NER = ("wikiann-en", "wnut17")
RELATIONS = "semeval2010-task8"
SQUAD = "squad-v1.1"

# Label ids, in the order of the Hugging Face versions of these datasets.
_LABELS: dict[str, list[str]] = {
    "imdb": ["neg", "pos"],
    "sst2": ["negative", "positive"],
    "rotten-tomatoes": ["neg", "pos"],
    "wikiann-en": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
    "wnut17": ["O", "B-corporation", "I-corporation", "B-creative-work", "I-creative-work", "B-group",
               "I-group", "B-location", "I-location", "B-person", "I-person", "B-product", "I-product"],
    # 9 relations, each in both directions, then Other (the order of SemEvalWorkshop/sem_eval_2010_task_8)
    "semeval2010-task8": [f"{r}({a},{b})" for r in (
        "Cause-Effect", "Component-Whole", "Content-Container", "Entity-Destination", "Entity-Origin",
        "Instrument-Agency", "Member-Collection", "Message-Topic", "Product-Producer")
        for a, b in (("e1", "e2"), ("e2", "e1"))] + ["Other"],
}

IMDB_VALIDATION = 2_500  # IMDB has no validation split: 10% of train (1,250 per class) is carved out
RT_VALIDATION = 1_066  # Rotten Tomatoes has no split at all: 8,530 / 1,066 / 1,066 as on the HF hub
RT_TEST = 1_066
SEMEVAL_VALIDATION = 800  # SemEval-2010 Task 8 has no validation split: 10% of train is carved out


# Checks every reader makes: the dataset is one this reader reads, the split is one it has.

def _need(name: str, kinds: tuple[str, ...], function: str) -> dict[str, Any]:
    entry = info(name)
    if name not in kinds:
        raise ValueError(f"{function}() reads {', '.join(kinds)}; {name!r} is not one of them.")
    return entry


def _split_files(name: str, split: str, allowed: tuple[str, ...]) -> list[str]:
    if split not in allowed:
        raise ValueError(f"Dataset {name!r} has splits {', '.join(allowed)}; got split={split!r}.")
    return info(name)["splits"][split]


# ---------------------------------------------------------------------------------------------------------
# Pretraining corpora: Project Gutenberg books as plain text

def corpus_files(name: str, split: str = "train", shards: int | None = None) -> list[Path]:
    """The verified text files of a corpus split (.txt, or .txt.gz shards for gutenberg-large).

    ``shards=k`` keeps only the first k files: gutenberg-large has 10 training shards of about 25 M
    characters and one validation shard; gutenberg-small has one file per split. ``imdb-reviews`` reads
    IMDB's training file (both of its splits come from it); a ``a+b`` corpus lists the files of both.
    Notebooks 01 and 05.
    """
    if "+" in name:
        return [f for part in _corpus_parts(name) for f in corpus_files(part, split, shards)]
    if name == REVIEWS:
        if split not in ("train", "validation"):
            raise ValueError(f"Corpus {REVIEWS!r} has splits train and validation; got split={split!r}.")
        return verified_files("imdb", info("imdb")["splits"]["train"])
    _need(name, CORPORA, "corpus_files")
    rels = _split_files(name, split, ("train", "validation"))
    if shards is not None:
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards must be a positive integer (or None for all), got {shards!r}.")
        rels = rels[:shards]
    return verified_files(name, rels)


def corpus_shards(corpus: str, large_shards: int) -> int | None:
    """How many shards to read: ``large_shards`` when the corpus includes gutenberg-large (the only sharded
    one), else None (all files)."""
    return large_shards if "gutenberg-large" in _corpus_parts(corpus) else None


def book_corpus(corpus: str) -> str:
    """The books in a corpus (gutenberg-large or gutenberg-small), for held-out book text; a corpus of
    reviews alone is evaluated on the small corpus's validation book."""
    return "gutenberg-large" if "gutenberg-large" in _corpus_parts(corpus) else "gutenberg-small"


def _corpus_parts(name: str) -> list[str]:
    parts = name.split("+")
    for part in parts:
        if part not in (*CORPORA, REVIEWS):
            raise ValueError(f"Unknown corpus {part!r} in {name!r}: corpora are {', '.join(CORPUS_CHOICES)}.")
    return parts


def review_texts(split: str = "train") -> list[str]:
    """IMDB reviews as plain pretraining text, labels dropped (notebook 05): ``train`` is the 22,500 training
    reviews that fine-tuning may also label, ``validation`` the 2,500 carved off for validation (held-out
    text for MLM evaluation). The carve-off is the one `load_classification("imdb")` makes with seed 0,
    whatever seed a fine-tuning run uses, and the test reviews are never read. (IMDB repeats a few reviews
    word for word: 14 of the validation reviews and 107 test reviews have a twin among the training reviews,
    as they do for any model fine-tuned on IMDB's training labels.)"""
    if split not in ("train", "validation"):
        raise ValueError(f"Corpus {REVIEWS!r} has splits train and validation (the test reviews stay unseen); "
                         f"got split={split!r}.")
    return [ex["text"] for ex in load_classification("imdb", seed=0, clean_html=True)[split]]


def _iter_reviews(split: str, chunk_chars: int) -> Iterator[str]:
    """The reviews, one paragraph each, about ``chunk_chars`` characters at a time."""
    chunk: list[str] = []
    size = 0
    for text in review_texts(split):
        text = re.sub(r"\n\s*\n+", "\n", text.strip())  # a review is one paragraph
        chunk.append(text)
        size += len(text) + 2
        if size >= chunk_chars:
            yield "\n\n".join(chunk) + "\n\n"
            chunk, size = [], 0
    if chunk:
        yield "\n\n".join(chunk) + "\n\n"


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def iter_corpus_text(name: str, split: str = "train", shards: int | None = None,
                     chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Stream a corpus split about ``chunk_chars`` characters at a time, in bounded memory.

    Chunks end at a paragraph break (a blank line) whenever there is one, so no word or paragraph is cut
    in two; joined together they are exactly the text of the files. Notebooks 01 and 05.

    ``imdb-reviews`` yields the reviews (see :func:`review_texts`), a review per paragraph. A corpus ``a+b``
    interleaves the chunks of its parts (one of a, one of b, ...) so that any prefix holds both kinds of text.
    """
    if "+" in name:  # small chunks, so that even a short prefix (a ci slice) holds every part
        streams = [iter_corpus_text(part, split, shards, min(chunk_chars, 1 << 16)) for part in _corpus_parts(name)]
        while streams:
            for stream in list(streams):
                chunk = next(stream, None)
                if chunk is None:
                    streams.remove(stream)
                else:
                    yield chunk if chunk.endswith("\n\n") else chunk + "\n\n"
        return
    if name == REVIEWS:
        yield from _iter_reviews(split, chunk_chars)
        return
    for path in corpus_files(name, split, shards):
        with _open_text(path) as f:
            carry = ""
            while True:
                block = f.read(chunk_chars)
                if not block:
                    break
                text = carry + block
                cut = text.rfind("\n\n")
                if cut < 0 and len(text) >= 4 * chunk_chars:  # one giant paragraph: cut at a line end
                    cut = text.rfind("\n")
                if cut < 0:
                    carry = text
                    continue
                carry = text[cut + 2:] if text.startswith("\n\n", cut) else text[cut + 1:]
                yield text[:len(text) - len(carry)]
            if carry:
                yield carry


def load_corpus(name: str, split: str = "train", max_chars: int = 0, shards: int | None = None) -> str:
    """A corpus split as one string; ``max_chars > 0`` returns exactly its first max_chars characters
    (reading no more than needed). Books are separated by a blank line. Notebooks 01, 04 and 05."""
    if not isinstance(max_chars, int) or max_chars < 0:
        raise ValueError(f"max_chars must be a non-negative integer (0 = all), got {max_chars!r}.")
    parts: list[str] = []
    size = 0
    for chunk in iter_corpus_text(name, split, shards):
        parts.append(chunk)
        size += len(chunk)
        if max_chars and size >= max_chars:
            break
    text = "".join(parts)
    return text[:max_chars] if max_chars else text


# ---------------------------------------------------------------------------------------------------------
# Sentence classification: IMDB, SST-2, Rotten Tomatoes

def label_names(name: str) -> list[str]:
    """The class names of a dataset, indexed by label id (classification) or tag id (NER)."""
    info(name)
    if name not in _LABELS:
        raise ValueError(f"Dataset {name!r} has no labels; label_names() covers "
                         f"{', '.join(_LABELS)}.")
    return list(_LABELS[name])


def _read_imdb(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [{"text": r["text"], "label": int(r["label"])} for r in map(json.loads, f)]


def _read_sst2(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[0] != "sentence\tlabel":
        raise DataError(f"{path} does not start with the header 'sentence<TAB>label'.", path=path,
                        problem="layout")
    out = []
    for line in lines[1:]:
        if line:
            sentence, label = line.rsplit("\t", 1)
            out.append({"text": sentence.strip(), "label": int(label)})
    return out


def _read_rotten_tomatoes(path: Path, label: int) -> list[dict]:
    # Windows-1252 (byte 0x85 is an ellipsis, 0x91/0x92 quotes): split the bytes on b"\n" only, since
    # str.splitlines() would also break at U+0085 had the file been decoded as Latin-1.
    lines = path.read_bytes().split(b"\n")
    return [{"text": line.decode("cp1252").strip(), "label": label} for line in lines if line.strip()]


def _stratified_carve(examples: list[dict], sizes: list[int], seed: int) -> list[list[int]]:
    """Split example indices into ``len(sizes) + 1`` disjoint parts: the first parts get ``sizes[i]``
    examples each, in the same class proportions as the whole; the last part gets the rest.
    Deterministic for a given seed."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex["label"], []).append(i)
    parts: list[list[int]] = [[] for _ in range(len(sizes) + 1)]
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        start = 0
        for p, size in enumerate(sizes):
            take = round(size * len(idx) / len(examples))
            parts[p].extend(idx[start:start + take])
            start += take
        parts[-1].extend(idx[start:])
    return parts


def load_classification(name: str, seed: int = 0, *, clean_html: bool = False) -> dict[str, list[dict]]:
    """Train / validation / test splits of "imdb", "sst2" or "rotten-tomatoes" (notebook 06).

    Returns ``{"train": [...], "validation": [...], "test": [...]}`` with items ``{"text": str,
    "label": int}`` (label names: :func:`label_names`). Every split is shuffled with ``seed``, so a prefix
    ``split[:n]`` is a random sample with both classes. Validation sets:

    - imdb: 2,500 reviews (1,250 per class) carved from the 25,000 training reviews with ``seed``;
      train keeps 22,500; test is the official 25,000. Reviews keep their ``<br />`` tags unless
      ``clean_html=True``, which turns each into a newline.
    - sst2: the files' train 60,614 / dev 6,735 (validation) / test 872 (the GLUE dev set).
    - rotten-tomatoes: no official split; 8,530 / 1,066 / 1,066, stratified, carved with ``seed``.
    """
    _need(name, CLASSIFICATION, "load_classification")
    entry = info(name)
    if name == "imdb":
        train_path, test_path = verified_files(name, entry["splits"]["train"] + entry["splits"]["test"])
        train_all, test = _read_imdb(train_path), _read_imdb(test_path)
        val_idx, train_idx = _stratified_carve(train_all, [IMDB_VALIDATION], seed)
        splits = {"train": [train_all[i] for i in train_idx], "validation": [train_all[i] for i in val_idx],
                  "test": test}
    elif name == "sst2":
        train, dev, test = (_read_sst2(p) for p in verified_files(name, entry["splits"]["train"]
                                                           + entry["splits"]["validation"]
                                                           + entry["splits"]["test"]))
        splits = {"train": train, "validation": dev, "test": test}
    else:
        neg_path, pos_path = verified_files(name, entry["splits"]["all"])
        everything = _read_rotten_tomatoes(neg_path, 0) + _read_rotten_tomatoes(pos_path, 1)
        val_idx, test_idx, train_idx = _stratified_carve(everything, [RT_VALIDATION, RT_TEST], seed)
        splits = {split: [everything[i] for i in idx]
                  for split, idx in (("train", train_idx), ("validation", val_idx), ("test", test_idx))}
    rng = random.Random(seed)
    for split in ("train", "validation", "test"):
        rng.shuffle(splits[split])
    if clean_html:
        splits = {s: [{"text": re.sub(r"<br\s*/?>", "\n", ex["text"]), "label": ex["label"]} for ex in items]
                  for s, items in splits.items()}
    return splits


# ---------------------------------------------------------------------------------------------------------
# Token classification (named entities): WikiANN, WNUT-17

def _read_conll(path: Path, prefix: str = "") -> list[dict]:
    """Sentences of a "token<TAB>tag" file; sentences end at a blank (or whitespace-only) line."""
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        token, tag = line.rsplit("\t", 1)
        tokens.append(token[len(prefix):] if prefix and token.startswith(prefix) else token)
        tags.append(tag.strip())
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


def load_ner(name: str) -> dict[str, list[dict]]:
    """Train / validation / test sentences of "wikiann-en" or "wnut17", in file order.

    Items are ``{"tokens": [str, ...], "tags": [str, ...]}`` with IOB2 tag strings ("B-PER", "O", ...);
    :func:`label_names` gives the tag list in id order. WikiANN's "en:" token prefix is removed.
    """
    _need(name, NER, "load_ner")
    prefix = "en:" if name == "wikiann-en" else ""
    splits = info(name)["splits"]
    return {split: _read_conll(verified_files(name, splits[split])[0], prefix)
            for split in ("train", "validation", "test")}


# ---------------------------------------------------------------------------------------------------------
# Relations: SemEval-2010 Task 8

_SEMEVAL_LINE = re.compile(r'^(\d+)\t"(.*)"$')


def _read_semeval(path: Path) -> list[dict]:
    """Examples of a SemEval-2010 Task 8 file: 4 lines each (id and quoted sentence, label, comment, blank)."""
    lines = [line.rstrip("\r") for line in path.read_text(encoding="ascii").split("\n")]
    examples = []
    for i in range(0, len(lines) - 1, 4):
        match = _SEMEVAL_LINE.match(lines[i])
        if match is None:
            raise DataError(f"{path}, line {i + 1}: expected '<id><TAB>\"<sentence>\"', found {lines[i][:60]!r}. "
                            f"The file is not the original SemEval-2010 Task 8 release.", path=path, problem="layout")
        examples.append({"id": int(match.group(1)), "text": match.group(2), "label": lines[i + 1].strip()})
    return examples


def load_semeval(seed: int = 0) -> dict[str, list[dict]]:
    """SemEval-2010 Task 8 (Hendrickx et al. 2010): train / validation / test examples (notebook 08).

    Items are ``{"id": 1, "text": "The <e1>author</e1> of a keygen uses a <e2>disassembler</e2> ...",
    "label": "Instrument-Agency(e2,e1)"}``, the nominals marked as in the release. The release has no
    validation split: 800 training examples are carved off with ``seed``; the 2,717 test sentences are
    the official test set.
    """
    name = RELATIONS
    splits = info(name)["splits"]
    train = _read_semeval(verified_files(name, splits["train"])[0])
    test = _read_semeval(verified_files(name, splits["test"])[0])
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:SEMEVAL_VALIDATION])
    return {"train": [ex for i, ex in enumerate(train) if i not in val_idx],
            "validation": [ex for i, ex in enumerate(train) if i in val_idx], "test": test}


# ---------------------------------------------------------------------------------------------------------
# Question answering: SQuAD v1.1

def load_squad(split: str = "dev") -> list[dict]:
    """SQuAD v1.1's articles (Rajpurkar et al. 2016): ``[{"title", "paragraphs": [{"context", "qas": [{"id",
    "question", "answers": [{"text", "answer_start"}, ...]}]}]}]``, as in the official JSON (notebook 08).

    ``split="dev"`` is the official development set (in every data folder). ``split="train"`` is the official
    training set, which only a download brings (``python -m bertbook data --download squad-v1.1`` on a machine
    with internet puts it beside the dev set); without it, notebook 08 splits the dev set by article.
    """
    name = SQUAD
    if split == "dev":
        (path,) = verified_files(name, info(name)["splits"]["dev"])
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)["data"]
    if split != "train":
        raise ValueError(f"SQuAD v1.1 has splits 'dev' and 'train'; got split={split!r}.")
    expected = info(name)["source"]["originals"]["train-v1.1.json"]
    for root in paths.data_dirs():
        path = root / info(name)["folder"] / "train-v1.1.json"
        if path.is_file():
            actual = sha256_file(path)
            if actual != expected["sha256"]:
                raise DataError(f"{path} is not the official SQuAD v1.1 training set: SHA-256 {actual}, expected "
                                f"{expected['sha256']}. Delete it and run python -m bertbook data --download "
                                f"squad-v1.1 --force.", path=path, expected_sha256=expected["sha256"],
                                problem="checksum")
            return json.loads(path.read_text(encoding="utf-8"))["data"]
    raise DataError(f"The SQuAD v1.1 training set (train-v1.1.json) is not in any data folder; only the dev set "
                    f"is. On a machine with internet, python -m bertbook data --download squad-v1.1 --force fetches "
                    f"both from {expected['url'].rsplit('/', 1)[0]}/; without it, split the dev set by article "
                    f"(bertbook.qa.squad_splits does).", path=Path("train-v1.1.json"), problem="not found")


# ---------------------------------------------------------------------------------------------------------
# Evaluation text: WikiText-2

def load_wikitext2(split: str = "validation", raw: bool = False) -> str:
    """WikiText-2 evaluation text (Merity et al. 2016), for masked-LM perplexity (notebook 05).

    ``raw=False``: the tokenized version (rare words replaced by ``<unk>``), split "validation" or
    "test". ``raw=True``: the untokenized version, available for split "test" only (line ends
    normalised to "\\n"). The train split is not part of bertbook's data.
    """
    name = "wikitext-2"
    if raw:
        if split != "test":
            raise ValueError("The raw WikiText-2 text is available for split='test' only; use raw=False "
                             "for the tokenized validation text.")
        (path,) = verified_files(name, info(name)["splits"]["raw-test"])
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    (path,) = verified_files(name, _split_files(name, split, ("validation", "test")))
    return path.read_text(encoding="utf-8")
