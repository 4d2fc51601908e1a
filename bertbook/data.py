"""Datasets: where they live, whether they are intact, and how to read them.

Taught in notebook 00 (where the data comes from) and used by every later notebook. The course reads only
real, public text: Project Gutenberg novels for pretraining, IMDB / SST-2 / Rotten Tomatoes for sentiment,
WikiText-2 for evaluation, WikiANN / WNUT-17 for named entities, SemEval-2010 Task 8 for relations and
SQuAD v1.1 for question answering.

``data/manifest.json`` lists every dataset: its folder, each file's SHA-256 and size, its public home,
licence and citation. A dataset is looked up, in this order, in

1. the folder named by the environment variable ``BERTBOOK_DATA_DIR``,
2. the project's cache ``data/cache/`` (where downloads land),
3. ``../shared/data`` beside the checkout (the course machines keep a copy there).

The first of these that holds the dataset's folder is used. Every file is checked against the manifest
before it is read: its size every time, its SHA-256 once per process (and again whenever its size or
modification time changes). A missing,
truncated or changed file raises :class:`DataError`, which names the file, the expected checksum and how
to fix it.

Nothing is downloaded silently. On a machine with internet, ``python -m bertbook data --download imdb``
(or :func:`download`) fetches a dataset from its public home into ``data/cache/``, converts it to the same
layout and verifies every checksum before the folder becomes visible.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

from . import paths

__all__ = [
    "DataError",
    "names",
    "info",
    "find",
    "status",
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
    "download",
]

CORPORA = ("gutenberg-small", "gutenberg-large")
# Pretraining text made from a labelled dataset, labels dropped: IMDB's training reviews without the 2,500
# carved off for validation (the "validation" split of this corpus); the test reviews are never used.
REVIEWS = "imdb-reviews"
# What data.corpus may name: one corpus, or several joined with "+" (their chunks interleaved)
CORPUS_CHOICES = (*CORPORA, REVIEWS, "gutenberg-small+imdb-reviews", "gutenberg-large+imdb-reviews")
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


class DataError(RuntimeError):
    """A dataset or one of its files is missing, truncated or corrupt; the message says how to fix it.

    Attributes: ``path`` (the file or folder concerned), ``expected_sha256`` (None for a whole dataset)
    and ``problem`` ("not found", "missing", "size", "checksum", "download", "layout").
    """

    def __init__(self, message: str, *, path: Path | None = None, expected_sha256: str | None = None,
                 problem: str = "missing") -> None:
        super().__init__(message)
        self.path = path
        self.expected_sha256 = expected_sha256
        self.problem = problem


# ---------------------------------------------------------------------------------------------------------
# The manifest: which datasets exist and what their files must look like

_MANIFEST: dict[str, Any] | None = None


def _manifest() -> dict[str, Any]:
    global _MANIFEST
    if _MANIFEST is None:
        path = paths.project_root() / "data" / "manifest.json"
        if not path.is_file():
            raise DataError(f"The data manifest {path} is missing. It is part of the bertbook checkout: "
                            f"run from the checkout (pip install -e .) or restore data/manifest.json.",
                            path=path, problem="missing")
        _MANIFEST = json.loads(path.read_text(encoding="utf-8"))
    return _MANIFEST


def names() -> list[str]:
    """The names of every dataset in the manifest, e.g. ``['gutenberg-small', ..., 'wnut17']``."""
    return list(_manifest()["datasets"])


def info(name: str) -> dict[str, Any]:
    """A dataset's manifest entry: folder, description, files (sha256, size), licence, citation, home."""
    datasets = _manifest()["datasets"]
    if name not in datasets:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(datasets)}.")
    return datasets[name]


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
# Finding a dataset and verifying its files

def lookup_text() -> str:
    env = os.environ.get("BERTBOOK_DATA_DIR")
    shared = paths.project_root().parent / "shared" / "data"
    return (f"  1. BERTBOOK_DATA_DIR ({env if env else 'not set'})\n"
            f"  2. the project cache {paths.cache_dir()}\n"
            f"  3. the shared data folder {shared}{'' if shared.is_dir() else ' (absent)'}")


def fix_text(name: str) -> str:
    folder = info(name)["folder"]
    return (f"To fix it, do one of:\n"
            f"  - put the dataset's folder {folder}/ (all files listed in data/manifest.json) into a data "
            f"folder and point BERTBOOK_DATA_DIR at it (on the course machines a verified copy is in "
            f"../shared/data/{folder}/);\n"
            f"  - on a machine with internet: python -m bertbook data --download {name}  "
            f"(fetches it from its public home into data/cache/ and checks every checksum).")


def find(name: str) -> Path:
    """The folder holding dataset ``name``: the first of the lookup folders that contains it.

    Raises DataError (saying where it looked and how to get the data) when no folder has it.
    """
    folder = info(name)["folder"]
    for root in paths.data_dirs():
        if (root / folder).is_dir():
            return root / folder
    raise DataError(f"Dataset {name!r} was not found: no folder {folder}/ in any of\n{lookup_text()}\n"
                    f"{fix_text(name)}", path=Path(folder), problem="not found")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Files hashed and found intact in this process: {absolute path: [size, mtime_ns, sha256]}. Hashing all
# 140 MB takes well under a second, so each file is hashed once per process and only its size afterwards.
_VERIFIED: dict[str, list] = {}


def _check_file(name: str, folder: Path, rel: str, full: bool = False) -> Path:
    """Return ``folder/rel`` after checking it against the manifest, else raise DataError.

    The size is checked every time; the SHA-256 only when this exact file (size and modification time)
    has not been verified in this process, or when ``full`` is set.
    """
    expected = info(name)["files"][rel]
    path = folder / rel
    where = f"{rel} of dataset {name!r} ({path})"
    if not path.is_file():
        raise DataError(f"File {where} is missing (expected SHA-256 {expected['sha256']}, "
                        f"{expected['size']:,} bytes).\n{fix_text(name)}",
                        path=path, expected_sha256=expected["sha256"], problem="missing")
    stat = path.stat()
    if stat.st_size != expected["size"]:
        raise DataError(f"File {where} is truncated or changed: {stat.st_size:,} bytes, expected "
                        f"{expected['size']:,} bytes with SHA-256 {expected['sha256']}.\n{fix_text(name)}",
                        path=path, expected_sha256=expected["sha256"], problem="size")
    key = str(path.resolve())
    record = [stat.st_size, stat.st_mtime_ns, expected["sha256"]]
    if not full and _VERIFIED.get(key) == record:
        return path
    actual = _sha256(path)
    if actual != expected["sha256"]:
        raise DataError(f"File {where} is corrupt: its SHA-256 is {actual}, expected "
                        f"{expected['sha256']}.\n{fix_text(name)}",
                        path=path, expected_sha256=expected["sha256"], problem="checksum")
    _VERIFIED[key] = record
    return path


def _files(name: str, rels: list[str]) -> list[Path]:
    folder = find(name)
    return [_check_file(name, folder, rel) for rel in rels]


def status(full: bool = True) -> list[dict[str, Any]]:
    """One row per dataset: ``name``, ``where`` (folder or None), ``state`` ("ok", "not found",
    "missing", "corrupt"), ``ok`` / ``missing`` / ``corrupt`` (file names), ``bytes`` (expected size),
    ``problems`` (messages). ``full=True`` re-hashes every file (a few seconds for all of them)."""
    rows = []
    for name in names():
        entry = info(name)
        row: dict[str, Any] = {"name": name, "where": None, "state": "not found", "ok": [], "missing": [],
                               "corrupt": [], "bytes": sum(f["size"] for f in entry["files"].values()),
                               "problems": []}
        try:
            folder = find(name)
        except DataError as err:
            row["problems"].append(str(err).splitlines()[0])
            rows.append(row)
            continue
        row["where"] = str(folder)
        for rel in entry["files"]:
            try:
                _check_file(name, folder, rel, full=full)
                row["ok"].append(rel)
            except DataError as err:
                row["missing" if err.problem == "missing" else "corrupt"].append(rel)
                row["problems"].append(str(err).splitlines()[0])
        row["state"] = "corrupt" if row["corrupt"] else "missing" if row["missing"] else "ok"
        rows.append(row)
    return rows


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
        return _files("imdb", info("imdb")["splits"]["train"])
    _need(name, CORPORA, "corpus_files")
    rels = _split_files(name, split, ("train", "validation"))
    if shards is not None:
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards must be a positive integer (or None for all), got {shards!r}.")
        rels = rels[:shards]
    return _files(name, rels)


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
        train_path, test_path = _files(name, entry["splits"]["train"] + entry["splits"]["test"])
        train_all, test = _read_imdb(train_path), _read_imdb(test_path)
        val_idx, train_idx = _stratified_carve(train_all, [IMDB_VALIDATION], seed)
        splits = {"train": [train_all[i] for i in train_idx], "validation": [train_all[i] for i in val_idx],
                  "test": test}
    elif name == "sst2":
        train, dev, test = (_read_sst2(p) for p in _files(name, entry["splits"]["train"]
                                                           + entry["splits"]["validation"]
                                                           + entry["splits"]["test"]))
        splits = {"train": train, "validation": dev, "test": test}
    else:
        neg_path, pos_path = _files(name, entry["splits"]["all"])
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
    return {split: _read_conll(_files(name, splits[split])[0], prefix)
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
    train = _read_semeval(_files(name, splits["train"])[0])
    test = _read_semeval(_files(name, splits["test"])[0])
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
        (path,) = _files(name, info(name)["splits"]["dev"])
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)["data"]
    if split != "train":
        raise ValueError(f"SQuAD v1.1 has splits 'dev' and 'train'; got split={split!r}.")
    expected = info(name)["source"]["originals"]["train-v1.1.json"]
    for root in paths.data_dirs():
        path = root / info(name)["folder"] / "train-v1.1.json"
        if path.is_file():
            actual = _sha256(path)
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
        (path,) = _files(name, info(name)["splits"]["raw-test"])
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    (path,) = _files(name, _split_files(name, split, ("validation", "test")))
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Downloading from the public homes (explicit only: python -m bertbook data --download NAME)

Fetch = Callable[[str, Path], None]


def _http_fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (the only function here that touches the network)."""
    request = urllib.request.Request(url, headers={"User-Agent": "bertbook-data/1"})
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DataError(f"Could not download {url}: {reason}. Downloading needs internet access; on a "
                        f"machine without it, copy the dataset's folder and set BERTBOOK_DATA_DIR "
                        f"(see data/README.md).", path=dest, problem="download") from None
    os.replace(tmp, dest)


def _write_gzip(path: Path, data: bytes, name: str, mtime: int) -> None:
    """Write ``data`` gzipped exactly as the reference files were (level 9, header name and time), so
    that a rebuilt file has the same SHA-256 as the manifest's."""
    with open(path, "wb") as raw, gzip.GzipFile(filename=name, mode="wb", fileobj=raw, compresslevel=9,
                                                 mtime=mtime) as gz:
        gz.write(data)
        gz.flush()


def _build_files(entry: dict, out: Path, fetch: Fetch) -> None:
    """Files kept unchanged from their source: fetch each one."""
    for rel, url in entry["source"]["urls"].items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        fetch(url, out / rel)


_ACLIMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


def convert_aclimdb(archive: Path, out: Path, files: dict[str, dict]) -> None:
    """Turn the original ``aclImdb_v1.tar.gz`` into ``train.jsonl.gz`` and ``test.jsonl.gz``.

    One JSON object per review, ``{"id": "train/pos/0", "text": <file content>, "label": 1,
    "rating": 9}``, negatives first, each class sorted by numeric id. Unlabelled reviews are skipped.
    """
    records: dict[str, list[tuple[int, int, dict]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            match = _ACLIMDB_MEMBER.search(member.name)
            if not member.isfile() or not match:
                continue
            split, polarity, number, rating = match.groups()
            text = tar.extractfile(member).read().decode("utf-8")
            label = 1 if polarity == "pos" else 0
            record = {"id": f"{split}/{polarity}/{number}", "text": text, "label": label,
                      "rating": int(rating)}
            records[split].append((label, int(number), record))
    for split, rows in records.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        data = "".join(json.dumps(r[2], ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        rel = f"{split}.jsonl.gz"
        _write_gzip(out / rel, data, files[rel]["gzip"]["name"], files[rel]["gzip"]["mtime"])


def _build_aclimdb(entry: dict, out: Path, fetch: Fetch) -> None:
    archive = out / "aclImdb_v1.tar.gz"
    fetch(entry["source"]["url"], archive)
    convert_aclimdb(archive, out, entry["files"])
    archive.unlink()


_PG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT!.*$",
                       re.IGNORECASE | re.MULTILINE)
_PG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg",
                     re.IGNORECASE | re.MULTILINE)


def clean_gutenberg(raw: str) -> str:
    """A Project Gutenberg e-book without its header and licence footer: the text between the
    "*** START OF ..." line (or the old "*END*THE SMALL PRINT!" line) and "*** END OF ..." /
    "End of the Project Gutenberg ...", with CRLF turned into LF and surrounding blank space removed."""
    text = raw.lstrip("\ufeff").replace("\r\n", "\n")
    start = _PG_START.search(text)
    if start:
        text = text[start.end():]
    end = _PG_END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip()


def shard_books(lengths: list[int], shard_chars: int) -> list[int]:
    """How many consecutive books go into each shard: a shard is closed as soon as it holds at least
    ``shard_chars`` characters (each book counts its length + 2 for the blank line after it);
    ``shard_chars=0`` puts everything in one file."""
    counts, size, count = [], 0, 0
    for n in lengths:
        size += n + 2
        count += 1
        if shard_chars and size >= shard_chars:
            counts.append(count)
            size, count = 0, 0
    if count or not counts:
        counts.append(count)
    return counts


def _build_gutenberg(entry: dict, out: Path, fetch: Fetch) -> None:
    """Fetch each listed book, strip the Project Gutenberg header, join and shard as the reference."""
    source = entry["source"]
    raw_dir = out / ".raw"
    raw_dir.mkdir()
    differ = []
    for split, books in source["books"].items():
        texts = []
        for i, (book, chars) in enumerate(books):
            dest = raw_dir / f"{split}-{i}.txt"
            fetch(source["base_url"] + urllib.parse.quote(book), dest)
            text = clean_gutenberg(dest.read_bytes().decode("utf-8"))
            dest.unlink()
            if len(text) != chars:
                differ.append(f"{book}: {len(text):,} characters after cleaning, the reference has {chars:,}")
            texts.append(text)
        (out / source["book_lists"][split]).write_text(
            "".join(f"{book}\t{chars}\n" for book, chars in books), encoding="utf-8", newline="")
        pattern = source["outputs"][split]
        start = 0
        for shard, count in enumerate(shard_books([len(t) for t in texts], source["shard_chars"])):
            data = "".join(t + "\n\n" for t in texts[start:start + count]).encode("utf-8")
            start += count
            rel = pattern.format(shard)
            if rel.endswith(".gz"):
                gz = entry["files"][rel]["gzip"]
                _write_gzip(out / rel, data, gz["name"], gz["mtime"])
            else:
                (out / rel).write_bytes(data)
    raw_dir.rmdir()
    if differ:
        print("Books that clean differently from the reference:\n  " + "\n  ".join(differ[:20]),
              file=sys.stderr)


def _build_squad(entry: dict, out: Path, fetch: Fetch) -> None:
    """The official SQuAD v1.1 files: each checked against its SHA-256, the dev set gzipped as the reference
    (``gzip -9 -n``: no name, no time, so the bytes are reproducible), the train set kept as it is."""
    import subprocess

    for rel, spec in entry["source"]["originals"].items():
        fetch(spec["url"], out / rel)
        actual = _sha256(out / rel)
        if actual != spec["sha256"]:
            raise DataError(f"{spec['url']} has SHA-256 {actual}, expected {spec['sha256']}: the file changed at "
                            f"its source, so nothing was installed.", path=out / rel,
                            expected_sha256=spec["sha256"], problem="download")
    gzip_tool = shutil.which("gzip")
    if gzip_tool is None:
        raise DataError("Rebuilding dev-v1.1.json.gz needs the gzip program (GNU gzip), which is not on PATH. "
                        "Install it, or copy a verified squad-v1.1 folder and set BERTBOOK_DATA_DIR.",
                        path=out / "dev-v1.1.json.gz", problem="download")
    subprocess.run([gzip_tool, "-9", "-n", str(out / "dev-v1.1.json")], check=True)


_BUILDERS: dict[str, Callable[[dict, Path, Fetch], None]] = {
    "files": _build_files, "aclimdb": _build_aclimdb, "gutenberg": _build_gutenberg,
    "squad": _build_squad}


def download(name: str, *, dest_root: Path | None = None, fetch: Fetch | None = None,
             force: bool = False) -> Path:
    """Fetch dataset ``name`` from its public home into ``data/cache/`` (or ``dest_root``), convert it to
    bertbook's layout and verify every file's SHA-256. Returns the dataset's folder.

    Needs internet. The folder appears only once every file is verified; a failed download leaves
    nothing behind. An intact existing copy is kept unless ``force``.
    """
    entry = info(name)
    root = Path(dest_root) if dest_root is not None else paths.cache_dir()
    final = root / entry["folder"]
    if final.is_dir() and not force:
        try:
            for rel in entry["files"]:
                _check_file(name, final, rel, full=True)
            return final
        except DataError:
            pass  # incomplete or damaged: rebuild it
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        _BUILDERS[entry["source"]["kind"]](entry, work, fetch or _http_fetch)
        for rel, expected in entry["files"].items():
            try:
                _check_file(name, work, rel, full=True)
            except DataError as err:
                raise DataError(f"The downloaded {rel} of {name!r} does not match the manifest "
                                f"(expected SHA-256 {expected['sha256']}): {err.problem}. The source may have "
                                f"changed; nothing was installed. Copy a verified folder instead and set "
                                f"BERTBOOK_DATA_DIR (see data/README.md).", path=err.path,
                                expected_sha256=expected["sha256"], problem="download") from None
        if final.exists():
            old = final.with_name(f"{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------------------
# Command line: python -m bertbook data


