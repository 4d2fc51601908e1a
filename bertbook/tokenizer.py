"""WordPiece tokenization: train, save, load, explore and compare (notebook 01).

BERT reads word pieces (Wu et al. 2016; Devlin et al. 2019): text is lower-cased and split into words and
punctuation, then each word is cut greedily into the longest pieces found in a vocabulary learned from the
corpus; a piece that continues a word starts with ``##`` ("tokenization" -> "token", "##ization"). Frequent
words stay whole, rare words fall apart into pieces, and only characters never seen become [UNK].

The tokenizer is trained with the `tokenizers` library and wrapped as a `transformers` fast tokenizer, so it
pads, truncates, builds ``[CLS] A [SEP] B [SEP]`` pairs with ``token_type_ids`` and returns tensors like
any Hugging Face tokenizer. Special tokens come first: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import data
from .checkpoint import MissingFileError, load_or_explain, read_json_file
from .config import Preset, get_preset
from .paths import artifacts_dir

__all__ = [
    "SPECIAL_TOKENS",
    "train_tokenizer",
    "wrap_tokenizer",
    "save_tokenizer",
    "load_tokenizer",
    "get_tokenizer",
    "tokenizer_dir",
    "explain",
    "TokenizerStats",
    "tokenizer_stats",
    "wordpiece_word",
    "explorer_rows",
]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, in this order
_TOKENIZER_FILE = "tokenizer.json"
_SETTINGS_FILE = "training_settings.json"  # what get_tokenizer trained it on


def _chunks(text: str, size: int = 1 << 16) -> Iterator[str]:
    """Feed a long text to the trainer in pieces (split at line ends), so it can parallelise."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end == -1 else end + 1
        yield text[start:end]
        start = end


def train_tokenizer(text: str | Iterable[str], vocab_size: int, min_frequency: int = 2,
                    model_max_length: int = 512):
    """Train a lower-cased WordPiece tokenizer on ``text`` (a string or an iterator of strings) and return
    it as a `transformers.PreTrainedTokenizerFast` (notebook 01).

    The vocabulary may stay below ``vocab_size``: WordPiece stops when no pair occurring ``min_frequency``
    times is left (on the small Gutenberg slice, min_frequency=2 stops near 23.6k entries).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special "
                         f"tokens; use at least a few hundred (BERT uses 30522).")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # split on whitespace and punctuation
    tok.decoder = decoders.WordPiece(prefix="##")  # glue "##" pieces back onto their word
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##",
                                        show_progress=False)
    chunks = list(_chunks(text)) if isinstance(text, str) else list(text)
    tok.train_from_iterator(chunks, trainer=trainer)
    tok.model = _ordered_by_frequency(tok, chunks)
    return wrap_tokenizer(tok, model_max_length)


def _ordered_by_frequency(tok, chunks: list[str]):
    """The trained vocabulary renumbered: special tokens first, then pieces from the most to the least
    frequent in the training text (ties alphabetically), so a small id means a common piece.

    The trainer breaks ties between equally frequent pairs in an arbitrary order, so two trainings on the same
    text can differ in a few rare pieces at the edge of the vocabulary. That is why the course trains once
    and saves the tokenizer (``get_tokenizer``): every later notebook and checkpoint uses that file.
    """
    from tokenizers import models

    counts = dict.fromkeys(tok.get_vocab(), 0)
    for enc in tok.encode_batch(chunks, add_special_tokens=False):
        for piece in enc.tokens:
            counts[piece] += 1
    rest = sorted((t for t in counts if t not in SPECIAL_TOKENS), key=lambda t: (-counts[t], t))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + rest)}
    return models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                            max_input_chars_per_word=100)


def wrap_tokenizer(tok, model_max_length: int = 512):
    """Add BERT's [CLS] A [SEP] B [SEP] template to a `tokenizers.Tokenizer` and wrap it for `transformers`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    if None in ids.values():
        missing = [t for t, i in ids.items() if i is None]
        raise ValueError(f"The tokenizer lacks the special tokens {missing}; train it with train_tokenizer.")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",  # ":1" = segment (token_type_id) 1 for sentence B
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.no_padding()
    tok.no_truncation()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, padding_side="right",
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def save_tokenizer(tokenizer, folder: str | os.PathLike) -> Path:
    """Save atomically: write into a temporary sibling folder, then move each file into ``folder``
    (``tokenizer.json`` last, so a folder holding it is always complete)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        tokenizer.save_pretrained(str(tmp))
        folder.mkdir(exist_ok=True)
        files = sorted(tmp.iterdir(), key=lambda p: p.name == _TOKENIZER_FILE)
        for f in files:
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_tokenizer(folder: str | os.PathLike, remedy: str | None = None):
    """Load a tokenizer saved by ``save_tokenizer`` (a `transformers.PreTrainedTokenizerFast`). A damaged
    file raises a `bertbook.checkpoint.CheckpointError` naming it; ``remedy`` is what its message says to do."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / _TOKENIZER_FILE).is_file():
        raise MissingFileError(f"No tokenizer in {folder} ({_TOKENIZER_FILE} is missing): run notebook 01 or "
                               f"call bertbook.tokenizer.get_tokenizer(P), which trains one.")
    # the JSON files transformers reads (those saved beside tokenizer.json are checked when present)
    names = [_TOKENIZER_FILE] + [n for n in ("tokenizer_config.json", "special_tokens_map.json")
                                 if (folder / n).exists()]
    return load_or_explain(lambda: PreTrainedTokenizerFast.from_pretrained(str(folder)), folder, names, remedy,
                           suspect=_TOKENIZER_FILE)


def tokenizer_dir(preset: Preset) -> Path:
    """Where a preset's tokenizer lives: ``artifacts/<preset>/tokenizer``."""
    return artifacts_dir(preset.name) / "tokenizer"


def _check_settings(folder: Path, settings: dict) -> None:
    """Refuse a saved tokenizer trained with other settings (corpus, size) than the preset asks for."""
    saved = folder / _SETTINGS_FILE
    remedy = f"Delete the folder {folder}: get_tokenizer(P) then trains a new tokenizer (notebook 01)."
    made_with = read_json_file(saved, remedy) if saved.is_file() else settings  # older folders: trusted
    if made_with != settings:
        diffs = ", ".join(f"{k} {made_with.get(k)!r} there vs {v!r} now" for k, v in settings.items()
                          if made_with.get(k) != v)
        raise ValueError(f"The tokenizer in {folder} was trained with other settings ({diffs}); its ids would not "
                         f"fit this preset's corpus and models. Move or delete that folder (and the checkpoints "
                         f"made with it) to train a new one, or point BERTBOOK_ARTIFACTS at another folder.")


def get_tokenizer(preset: Preset | None = None):
    """The preset's WordPiece tokenizer: loaded from ``artifacts/<preset>/tokenizer``, or trained on the
    preset's corpus slice and saved there first (notebook 01 explains it). Use ``len(tokenizer)`` as the
    model's vocab_size: it can fall short of ``preset.model.vocab_size``."""
    P = preset or get_preset()
    folder = tokenizer_dir(P)
    settings = {"corpus": P.data.corpus, "train_chars": P.data.tokenizer_train_chars,
                "vocab_size": P.model.vocab_size, "min_frequency": P.data.min_frequency}
    if (folder / _TOKENIZER_FILE).is_file():
        _check_settings(folder, settings)
        return load_tokenizer(folder, remedy=f"Delete the folder {folder}: get_tokenizer(P) then trains a new "
                              f"tokenizer (notebook 01); an unfinished pretraining run that used the old one "
                              f"cannot be resumed after that.")

    t0 = time.time()
    shards = data.corpus_shards(P.data.corpus, P.data.large_shards)  # as corpus.corpus_cache
    text = data.load_corpus(P.data.corpus, "train", max_chars=P.data.tokenizer_train_chars, shards=shards)
    tok = train_tokenizer(text, P.model.vocab_size, P.data.min_frequency, P.model.max_position_embeddings)
    save_tokenizer(tok, folder)
    (folder / _SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    print(f"Trained a WordPiece tokenizer for preset {P.name!r} on {len(text):,} characters of {P.data.corpus} "
          f"in {time.time() - t0:.1f} s: {len(tok):,} entries (asked for {P.model.vocab_size:,}); saved to "
          f"{folder}. Notebook 01 explains how it is made.")
    return tok


# ----------------------------------------------------------------------------------------------------------
# Looking at tokenizations
# ----------------------------------------------------------------------------------------------------------

def explain(tokenizer, text: str) -> list[dict]:
    """One row per token of ``text``: the piece, its id, the characters it came from, and whether it is [UNK]."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    rows = []
    for i, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        piece = tokenizer.convert_ids_to_tokens(i)
        rows.append({"piece": piece, "id": i, "text": text[start:end], "unknown": i == tokenizer.unk_token_id,
                     "special": i in tokenizer.all_special_ids})
    return rows


@dataclass
class TokenizerStats:
    """How a tokenizer cuts a text: words, pieces per word, unknown rate, words split into several pieces."""

    words: int
    pieces: int
    pieces_per_word: float
    unknown_rate: float  # fraction of pieces that are [UNK]
    split_words: float  # fraction of words cut into two or more pieces


def tokenizer_stats(tokenizer, text: str) -> TokenizerStats:
    """Statistics of ``tokenizer`` on ``text``; words are what BERT's pre-tokenizer splits (notebook 01)."""
    enc = tokenizer(text, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False,
                    verbose=False)  # a long text is fine here: nothing is fed to a model
    word_ids = [w for w in enc.word_ids() if w is not None]
    ids = enc["input_ids"]
    words = len(set(word_ids))
    per_word: dict[int, int] = {}
    for w in word_ids:
        per_word[w] = per_word.get(w, 0) + 1
    unk = sum(1 for i in ids if i == tokenizer.unk_token_id)
    return TokenizerStats(words=words, pieces=len(ids), pieces_per_word=len(ids) / max(words, 1),
                          unknown_rate=unk / max(len(ids), 1),
                          split_words=sum(1 for n in per_word.values() if n > 1) / max(words, 1))


def wordpiece_word(word: str, vocab: set[str] | dict[str, int], unk: str = "[UNK]", prefix: str = "##") -> list[str]:
    """Greedy longest-match-first WordPiece of one (lower-cased) word, as BERT does it (notebook 01)."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:  # not even one character is known: the whole word becomes [UNK]
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def explorer_rows(tokenizers: dict, text: str) -> list[tuple[str, str, str, str]]:
    """For the explorer widget: one line per tokenizer with its pieces, ids and unknown count."""
    if not text.strip():
        return [("", "type some text above", "", "")]
    out = []
    for name, tok in tokenizers.items():
        rows = explain(tok, text)
        pieces = " ".join(f"[{r['piece']}]" if r["unknown"] else r["piece"] for r in rows)
        ids = " ".join(str(r["id"]) for r in rows)
        unk = sum(r["unknown"] for r in rows)
        out.append((name, pieces, ids, f"{len(rows)} tokens, {unk} unknown"))
    return out


