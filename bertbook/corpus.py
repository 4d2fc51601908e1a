"""The pretraining data pipeline: text -> token ids on disk -> packed, masked batches.

Taught in notebooks 04 and 05. Three steps, each cheap to run again:

1. **Tokenize once.** The corpus is streamed a chunk at a time (``bertbook.data.iter_corpus_text``), cut
   into paragraphs and sentences, and tokenized in large batches by the fast (Rust) tokenizer. Token ids go
   to ``ids.bin`` (uint16 when the vocabulary fits, a memory-mapped array on disk) and the offset where
   every sentence starts to ``sentences.bin``. Memory stays bounded whatever the corpus size: the 250 M
   character corpus is never held in memory. The cache folder's name includes a hash of the tokenizer and
   of the slice of the corpus, so a retrained tokenizer never reuses stale ids; it is written atomically.
2. **Pack.** Training sequences are full-length: ``[CLS] + seq_len-2 tokens + [SEP]`` cut from the
   token stream with no padding (Liu et al. 2019 pack "full sentences" the same way), so no compute is
   spent on [PAD] and no attention mask is needed. For a sentence objective the window is cut at sentence
   boundaries into segments: ``[CLS] A [SEP] B [SEP]`` (nsp, sop) or three segments (msc); it ends with a
   whole word, and the row is filled up with a few [PAD]s that ``attention_mask`` hides.
3. **Mask on the fly.** Every micro-batch is a pure function of ``(seed, step, index)``: which windows it
   reads and which tokens it masks. A resumed run therefore sees exactly the batches it would have seen,
   and on several GPUs each rank reads its own micro-batches (``index = rank * accum + micro``), so two
   processes with batch b see the same data as one process with batch b and two accumulation steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from . import data
from .masking import MSC_SEGMENTS, MaskVocab, assemble, mask_tokens, msc_shuffle, nsp_pair, sop_pair
from .paths import artifacts_dir

__all__ = [
    "split_sentences",
    "iter_paragraphs",
    "encode_sentences",
    "TokenCache",
    "build_cache",
    "corpus_cache",
    "PretrainData",
    "eval_batches",
    "eval_text",
    "example_seed",
]

FORMAT_VERSION = 1  # bump when the cache layout changes: old caches are then rebuilt, never misread

# A sentence ends with . ! or ? (and maybe closing quotes or brackets), followed by space and an opening
# quote or a capital letter. A few abbreviations that end in a full stop do not end a sentence.
_SENTENCE_END = re.compile(
    r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bMessrs)[.!?][\"'\u201d\u2019)\]]*\s+"
    r"(?=[\"'\u201c\u2018(\[]*[A-Z])")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences with a simple rule (good enough for novels; notebook 04)."""
    text = " ".join(paragraph.split())  # undo the hard line wrapping
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start:m.end()].strip())
        start = m.end()
    if start < len(text):
        out.append(text[start:].strip())
    return [s for s in out if s]


def iter_paragraphs(chunks: Iterable[str], max_chars: int = 0) -> Iterator[str]:
    """Paragraphs (separated by blank lines) from a stream of text chunks; a paragraph cut by a chunk
    boundary is joined first. Stops after ``max_chars`` characters when it is > 0."""
    tail, seen = "", 0
    for chunk in chunks:
        if max_chars:
            chunk = chunk[:max(0, max_chars - seen)]
        seen += len(chunk)
        parts = _BLANK_LINE.split(tail + chunk)
        tail = parts.pop()
        yield from (p for p in parts if p.strip())
        if max_chars and seen >= max_chars:
            break
    if tail.strip():
        yield tail


def encode_sentences(sentences: list[str], tokenizer) -> list[list[int]]:
    """Token ids of each sentence, no special tokens, in one batched call of the fast tokenizer.

    The Rust tokenizer behind ``tokenizer`` (``backend_tokenizer``) is called directly: the same ids as
    ``tokenizer(sentences, add_special_tokens=False)["input_ids"]``, without building Python objects for
    attention masks and offsets, on all cores."""
    backend = tokenizer.backend_tokenizer
    if backend.padding is not None or backend.truncation is not None:  # e.g. MiniLM's pads to 128
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer is left as it was
        backend.no_padding()
        backend.no_truncation()
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no character offsets
    return [e.ids for e in encode(sentences, add_special_tokens=False)]


# ---------------------------------------------------------------------------------------------------------
# 1. Tokenize once: the on-disk cache
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TokenCache:
    """A tokenized corpus on disk: ``ids`` (all tokens, memory-mapped) and ``sentence_starts`` (the offset
    of every sentence in ``ids``, increasing). Open with :meth:`open` or build with :func:`build_cache`."""

    folder: Path
    ids: np.ndarray
    sentence_starts: np.ndarray
    meta: dict

    @property
    def n_tokens(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def open(cls, folder: Path) -> "TokenCache":
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"The token cache in {folder} has format {meta.get('format')}, this code reads "
                             f"format {FORMAT_VERSION}: delete the folder and it is rebuilt.")
        ids = np.memmap(folder / "ids.bin", dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],))
        starts = np.memmap(folder / "sentences.bin", dtype=np.int64, mode="r", shape=(meta["n_sentences"],))
        return cls(folder, ids, starts, meta)


def build_cache(paragraphs: Iterable[str], tokenizer, folder: Path, total_chars: int | None = None,
                progress: bool = True, batch_chars: int = 1_000_000, source: dict | None = None) -> TokenCache:
    """Tokenize a stream of paragraphs into ``folder`` (atomically: a half-written cache is never seen).

    Sentences are tokenized ``batch_chars`` characters at a time and appended to the files, so memory holds
    two batches, never the corpus. The Rust tokenizer works on one batch (on all cores, outside Python's
    lock) while Python splits the next one into sentences.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    folder = Path(folder)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_tokens = n_sentences = n_chars = 0
    bar = tqdm(total=total_chars, unit="char", unit_scale=True, desc=f"tokenizing {folder.name}",
               disable=not progress, mininterval=1.0)
    with open(tmp / "ids.bin", "wb") as f_ids, open(tmp / "sentences.bin", "wb") as f_starts, \
            ThreadPoolExecutor(max_workers=1) as tokenizing:

        def write(encoded: list[list[int]]) -> None:
            nonlocal n_tokens, n_sentences
            encoded = [e for e in encoded if e]  # drop sentences with no tokens
            lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
            starts = n_tokens + np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(encoded) else lengths
            flat = np.fromiter(chain.from_iterable(encoded), dtype=dtype, count=int(lengths.sum()))
            flat.tofile(f_ids)
            starts.astype(np.int64).tofile(f_starts)
            n_tokens += int(lengths.sum())
            n_sentences += len(encoded)

        pending = None  # the batch being tokenized while the next one is split

        def submit(batch: list[str], size: int) -> None:
            nonlocal pending
            if pending is not None:
                write(pending.result())  # in order: one batch in flight at a time
            pending = tokenizing.submit(encode_sentences, batch, tokenizer)
            bar.update(size)

        batch: list[str] = []
        batch_len = 0
        for paragraph in paragraphs:
            batch += split_sentences(paragraph)
            batch_len += len(paragraph) + 2
            n_chars += len(paragraph) + 2
            if batch_len >= batch_chars:
                submit(batch, batch_len)
                batch, batch_len = [], 0
        if batch:
            submit(batch, batch_len)
        if pending is not None:
            write(pending.result())
    bar.close()
    if n_tokens == 0:
        shutil.rmtree(tmp)
        raise ValueError("The corpus produced no tokens: check that the text is not empty.")
    meta = {"format": FORMAT_VERSION, "dtype": np.dtype(dtype).name, "n_tokens": n_tokens,
            "n_sentences": n_sentences, "n_chars": n_chars, "vocab_size": len(tokenizer),
            "source": source or {}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        os.rename(tmp, folder)  # atomic: the folder appears complete or not at all
    except OSError:  # another process finished the same cache first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenCache.open(folder)


def tokenizer_hash(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def _gzip_size(path: Path) -> int:
    """Uncompressed size of a gzip file (from its trailer, modulo 4 GiB): a progress-bar total."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def corpus_cache(preset, tokenizer, split: str = "train", progress: bool = True) -> TokenCache:
    """The tokenized training corpus of a preset, built on first use (notebook 05).

    Lives in ``artifacts/<preset>/corpus/<corpus>-<split>-<hash>``; the hash covers the tokenizer, the
    corpus, the split, the character limit and the shard count, so any change builds a fresh cache.
    """

    d = preset.data
    shards = data.corpus_shards(d.corpus, d.large_shards)
    source = {"corpus": d.corpus, "split": split, "max_chars": d.corpus_max_chars, "shards": shards,
              "tokenizer": tokenizer_hash(tokenizer), "format": FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
    folder = artifacts_dir(preset.name, "corpus") / f"{d.corpus}-{split}-{key}"
    if (folder / "meta.json").exists():
        return TokenCache.open(folder)
    files = data.corpus_files(d.corpus, split, shards=shards)
    total = sum(_gzip_size(f) if f.suffix == ".gz" else f.stat().st_size for f in files)
    if d.corpus_max_chars:
        total = min(total, d.corpus_max_chars)
    chunks = data.iter_corpus_text(d.corpus, split, shards=shards)
    return build_cache(iter_paragraphs(chunks, d.corpus_max_chars), tokenizer, folder, total_chars=total,
                       progress=progress, source=source)


# ---------------------------------------------------------------------------------------------------------
# 2 and 3. Packed, masked micro-batches
# ---------------------------------------------------------------------------------------------------------


def example_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple such as (seed, step, index): independent streams without bookkeeping."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class PretrainData:
    """Masked micro-batches for pretraining, each a pure function of ``(seed, step, index)`` (notebook 05).

    ``objective='none'``: rows are ``[CLS] + seq_len-2 consecutive tokens + [SEP]``. Otherwise a window of
    at most ``seq_len - 1 - k`` tokens, from a sentence start to the end of a word, is cut at sentence
    boundaries (between two words where no sentence ends inside it) into k segments (k=2 for nsp and sop, 3
    for msc) and assembled with [SEP]s: no segment begins or ends inside a word, which would tell the order.
    The few tokens of a word that did not fit become [PAD]s at the end, hidden by ``attention_mask``; every
    row is ``seq_len`` long.
    """

    def __init__(self, cache: TokenCache, vocab: MaskVocab, seq_len: int, batch_size: int,
                 mask_prob: float = 0.15, whole_word: bool = False, objective: str = "none", seed: int = 0):
        self.cache, self.vocab, self.seq_len, self.batch_size = cache, vocab, seq_len, batch_size
        self.mask_prob, self.whole_word, self.objective, self.seed = mask_prob, whole_word, objective, seed
        self.k = {"none": 1, "nsp": 2, "sop": 2, "msc": MSC_SEGMENTS}[objective]
        self.width = seq_len - 2 if objective == "none" else seq_len - 1 - self.k  # content tokens per row
        self.n_examples = cache.n_tokens // self.width
        if self.n_examples < 2:
            raise ValueError(f"The corpus has {cache.n_tokens} tokens, too few for rows of {seq_len}: use more "
                             f"text (data.corpus_max_chars) or a shorter pretrain.seq_len.")
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        """The order in which epoch ``epoch`` visits the windows (a shuffle seeded by (seed, epoch))."""
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(example_seed(self.seed, "epoch", epoch))
            self._perms = {epoch: torch.randperm(self.n_examples, generator=g)}  # keep one epoch in memory
        return self._perms[epoch]

    def windows(self, first: int, count: int) -> np.ndarray:
        """Window numbers of examples ``first .. first+count-1`` of the endless shuffled stream."""
        index = first + np.arange(count)
        epochs, positions = index // self.n_examples, index % self.n_examples
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):  # one epoch, or two when the examples straddle a boundary
            here = epochs == epoch
            out[here] = self._permutation(int(epoch)).numpy()[positions[here]]
        return out

    def batch(self, step: int, index: int = 0, per_step: int = 1) -> dict[str, torch.Tensor]:
        """Micro-batch ``index`` (of ``per_step`` = world size x accumulation steps) of optimizer step ``step``."""
        g = torch.Generator().manual_seed(example_seed(self.seed, step, index))
        first = (step * per_step + index) * self.batch_size
        windows = self.windows(first, self.batch_size)
        if self.objective == "none":
            batch = self._packed(windows)
        else:
            batch = self._segments(windows, g)
        batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], self.vocab, self.mask_prob,
                                                          self.whole_word, g)
        return batch

    def _packed(self, windows: np.ndarray) -> dict[str, torch.Tensor]:
        idx = windows[:, None] * self.width + np.arange(self.width)  # (B, W) positions in the token stream
        body = torch.from_numpy(self.cache.ids[idx].astype(np.int64))  # (B, W)
        B = len(windows)
        cls = torch.full((B, 1), self.vocab.cls_token_id, dtype=torch.long)
        sep = torch.full((B, 1), self.vocab.sep_token_id, dtype=torch.long)
        input_ids = torch.cat([cls, body, sep], dim=1)  # (B, T)
        return {"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids)}

    def _start(self, window: int) -> int:
        """The first sentence start at or after the window's offset (so segments begin with a sentence); near
        the end of the corpus, the last sentence start that leaves room for a whole window."""
        starts, latest = self.cache.sentence_starts, self.cache.n_tokens - self.width
        j = int(np.searchsorted(starts, window * self.width))
        if j < len(starts) and starts[j] <= latest:
            return int(starts[j])
        j = int(np.searchsorted(starts, latest, side="right")) - 1
        return int(starts[j]) if j >= 0 else latest

    def _word_starts(self, a: int, b: int) -> np.ndarray:
        """Positions ``a < p <= b`` where a word starts: the token there is not a '##' piece (the end of the
        corpus counts too)."""
        n = self.cache.n_tokens
        body = torch.from_numpy(np.asarray(self.cache.ids[a + 1:min(b, n - 1) + 1], dtype=np.int64))
        p = a + 1 + np.flatnonzero(~self.vocab.continuation[body].numpy())
        return np.append(p, n) if b >= n else p

    def _word_end(self, start: int, length: int, least: int = 1) -> int:
        """``start + length`` moved back to a word start, so that the text ``[start, end)`` ends with a whole
        word; it keeps at least ``least`` tokens (a single longer word is cut where asked)."""
        ends = self._word_starts(start + least - 1, start + length)
        return int(ends[-1]) if len(ends) else start + length

    def _cuts(self, s: int, e: int, targets: list[int]) -> list[int]:
        """Where the segments of ``[s, e)`` meet: at the sentence start nearest each target, or, when no
        sentence starts in the rest of the text, at the nearest word start. A cut before a '##' piece would
        give the order away (``his grat [SEP] ##itude``). Every segment keeps at least one token."""
        starts = self.cache.sentence_starts
        lo, hi = int(np.searchsorted(starts, s + 1)), int(np.searchsorted(starts, e))
        sentences = np.asarray(starts[lo:hi], dtype=np.int64)  # sentence starts inside (s, e)
        words = self._word_starts(s, e - 1)  # word starts inside (s, e)
        cuts, prev = [], s
        for i, t in enumerate(targets):
            later = len(targets) - 1 - i  # cuts still to place: leave each a word start (or at least a token)
            last = int(words[-later - 1]) if len(words) > later else e - later - 1
            for candidates in (sentences, words):
                ok = candidates[(candidates > prev) & (candidates <= last)]
                if len(ok):
                    c = int(ok[np.abs(ok - t).argmin()])
                    break
            else:  # a single word fills the rest of the text: cut where asked
                c = min(max(t, prev + 1), last)
            cuts.append(c)
            prev = c
        return cuts

    def _segments(self, windows: np.ndarray, g: torch.Generator) -> dict[str, torch.Tensor]:
        ids, pad = self.cache.ids, self.vocab.pad_token_id
        W, k = self.width, self.k
        coins = torch.rand(len(windows), 2, generator=g).tolist()
        orders = torch.randint(0, 1 << 30, (len(windows),), generator=g).tolist()
        rows, types, masks, labels = [], [], [], []
        for w, (u, coin), r in zip(windows.tolist(), coins, orders):
            s = self._start(w)
            e = self._word_end(s, W, least=k)  # the text [s, e) ends with a whole word: a few [PAD]s fill the row
            n = e - s
            if k == 2:
                targets = [s + int(n * (0.25 + 0.5 * u))]  # A takes a quarter to three quarters of the text
            else:
                targets = [s + n * i // k for i in range(1, k)]
            bounds = [s] + self._cuts(s, e, targets) + [e]
            segs = [ids[a:b].astype(np.int64).tolist() for a, b in zip(bounds[:-1], bounds[1:])]
            if self.objective == "nsp":
                other = (w + 1 + r % (self.n_examples - 1)) % self.n_examples  # any other window
                o = self._start(other)
                random_b = ids[o:self._word_end(o, len(segs[1]))].astype(np.int64).tolist()
                segs, label = nsp_pair(segs[0], segs[1], random_b, use_random=coin < 0.5)
            elif self.objective == "sop":
                segs, label = sop_pair(segs[0], segs[1], swap=coin < 0.5)
            else:
                order = list(range(k))
                for i in range(k - 1, 0, -1):  # Fisher-Yates with the example's own random numbers
                    j = r % (i + 1)
                    r //= i + 1
                    order[i], order[j] = order[j], order[i]
                segs, label = msc_shuffle(segs, order)
            row, tt = assemble(segs, self.vocab.cls_token_id, self.vocab.sep_token_id)
            short = self.seq_len - len(row)  # the tokens of the word that did not fit
            rows.append(row + [pad] * short)
            types.append(tt + [0] * short)
            masks.append([1] * len(row) + [0] * short)
            labels.append(label)
        return {"input_ids": torch.tensor(rows, dtype=torch.long),  # (B, T)
                "token_type_ids": torch.tensor(types, dtype=torch.long),  # (B, T)
                "attention_mask": torch.tensor(masks, dtype=torch.long),  # (B, T): 0 on the [PAD]s at the end
                "sentence_label": torch.tensor(labels, dtype=torch.long)}  # (B,)


# ---------------------------------------------------------------------------------------------------------
# Held-out text with fixed masks, so that evaluations are comparable between runs
# ---------------------------------------------------------------------------------------------------------


EVAL_SETS = ("gutenberg", "imdb-reviews", "wikitext-2")  # held-out texts every pretraining run is scored on


def eval_text(name: str, max_chars: int, preset=None) -> str:
    """Held-out text: ``"gutenberg"`` (the validation book(s) of the books in the preset's corpus),
    ``"imdb-reviews"`` (the 2,500 IMDB training reviews carved off for validation, never pretrained on) or
    ``"wikitext-2"`` (its validation split, WikiText's ``@-@`` artefacts undone and ``<unk>`` kept as [UNK])."""

    if name == "gutenberg":
        corpus = data.book_corpus(preset.data.corpus) if preset is not None else "gutenberg-small"
        return data.load_corpus(corpus, "validation", max_chars=max_chars)
    if name == "imdb-reviews":
        return data.load_corpus(data.REVIEWS, "validation", max_chars=max_chars)
    if name == "wikitext-2":
        text = data.load_wikitext2("validation")[: max_chars or None]
        for a, b in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), ("<unk>", "[UNK]")):
            text = text.replace(a, b)
        return text
    raise ValueError(f"Unknown evaluation text {name!r}: use one of {', '.join(EVAL_SETS)}.")


def eval_batches(text: str, tokenizer, vocab: MaskVocab, seq_len: int, batch_size: int, n_batches: int,
                 mask_prob: float = 0.15, seed: int = 1234) -> list[dict[str, torch.Tensor]]:
    """Packed rows of ``text`` with masks drawn once from a fixed seed (notebook 05): evaluating any model
    on these batches gives numbers that are comparable between runs (as in the Hugging Face course)."""
    ids = list(chain.from_iterable(encode_sentences(split_sentences_text(text), tokenizer)))
    width = seq_len - 2
    n_rows = min(len(ids) // width, batch_size * n_batches)
    if n_rows == 0:
        raise ValueError(f"The evaluation text has {len(ids)} tokens, fewer than one row of {seq_len}.")
    body = torch.tensor(ids[: n_rows * width], dtype=torch.long).view(n_rows, width)  # (N, W)
    cls = torch.full((n_rows, 1), vocab.cls_token_id, dtype=torch.long)
    sep = torch.full((n_rows, 1), vocab.sep_token_id, dtype=torch.long)
    rows = torch.cat([cls, body, sep], dim=1)  # (N, T)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n_rows, batch_size):
        input_ids, labels = mask_tokens(rows[i:i + batch_size], vocab, mask_prob, generator=g)
        out.append({"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids), "labels": labels})
    return out


def split_sentences_text(text: str) -> list[str]:
    """All sentences of a text, paragraph by paragraph."""
    return [s for p in iter_paragraphs([text]) for s in split_sentences(p)]
