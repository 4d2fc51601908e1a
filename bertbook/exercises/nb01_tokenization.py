"""Notebook 01's exercise: WordPiece's greedy longest-match-first split of one word."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch

from .harness import call, register_references, run_checks

__all__ = ['check_wordpiece', 'solutions']


# Reference solutions (try first!)

def _wordpiece(word: str, vocab) -> list[str]:
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:  # try the longest candidate first
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]  # a word with an unknown part becomes a single [UNK]
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_shortest(word: str, vocab, prefix: str = "##") -> list[str]:
    """A typical mistake, for the checker's diagnosis: the shortest match instead of the longest."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_no_prefix(word: str, vocab) -> list[str]:
    """Another typical mistake: looking up every piece without the '##' continuation prefix."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and word[start:end] not in vocab:
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(word[start:end])
        start = end
    return pieces


solutions = register_references(SimpleNamespace(wordpiece=_wordpiece))


def check_wordpiece(fn: Callable[[str, set], list[str]], raise_on_error: bool = True, trials: int = 200) -> bool:
    """Check ``fn(word, vocab) -> pieces``: greedy longest-match-first WordPiece (notebook 01)."""

    def tests() -> int:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        letters = "abcde"
        for t in range(trials):
            words = ["".join(letters[i] for i in torch.randint(0, 5, (int(n),), generator=g))
                     for n in torch.randint(1, 4, (40,), generator=g)]
            vocab = {w for w in words[:20]} | {"##" + w for w in words[20:]}
            vocab |= set("abcd")  # every letter but "e" may start a word
            vocab |= {"##" + c for c in "abc"}
            word = "".join(letters[i] for i in torch.randint(0, 5, (int(torch.randint(1, 8, (), generator=g)),),
                                                           generator=g))
            want, got = _wordpiece(word, vocab), call(fn, word, vocab)
            if not isinstance(got, list):
                raise AssertionError(f"return a list of pieces, got {type(got).__name__}.")
            if got == want:
                continue
            raise AssertionError(f"for the word {word!r} with vocabulary {sorted(vocab)} you gave {got}: "
                                 f"{_diagnose(word, vocab, got, want)}")
        return trials

    return run_checks("wordpiece", tests, raise_on_error, fn=fn)


def _diagnose(word: str, vocab, got: list, want: list) -> str:
    """What is wrong with the pieces ``got`` (never the expected pieces themselves)."""
    if got == _wordpiece_shortest(word, vocab):
        return "try the longest candidate first (shrink it from the right), not the shortest."
    if got == _wordpiece_no_prefix(word, vocab):
        return "pieces after the first start with '##' and must be looked up with that prefix."
    if want == ["[UNK]"]:
        return ("some part of this word matches no vocabulary piece, and a word that cannot be split becomes "
                "a single [UNK] token.")
    if got == ["[UNK]"]:
        return "every part of this word is in the vocabulary: it should not become ['[UNK]']."
    if "[UNK]" in got:
        return "an unknown part makes the whole word a single '[UNK]', never one '[UNK]' among other pieces."
    outside = [p for p in got if p not in vocab]
    if outside:
        return f"{outside[0]!r} is not in the vocabulary: every piece must be."
    if any(not p.startswith("##") for p in got[1:]) or (got and got[0].startswith("##")):
        return "only the first piece starts without '##'; every later piece starts with '##'."
    if "".join(p.removeprefix("##") for p in got) != word:
        return "your pieces, without their '##', do not spell the word."
    for i, (mine, right) in enumerate(zip(got, want)):
        if mine != right:
            return (f"piece {i + 1}, {mine!r}, is not the longest vocabulary piece that starts there: "
                    "try the longest candidate first.")
    return "the split differs from greedy longest-match-first."
