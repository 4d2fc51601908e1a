"""Notebook 08's exercises: word-piece label alignment, and SQuAD's word-overlap F1."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import SimpleNamespace

from ..ner import align_labels
from ..qa import f1_score, normalize_answer
from .harness import call, one_number, register_references, run_checks

__all__ = ["check_align_labels", "check_squad_f1", "solutions"]


# Reference solutions (try first!): the package's own functions
solutions = register_references(SimpleNamespace(align_labels=align_labels, squad_f1=f1_score))


def _random_word_ids(rng: random.Random) -> tuple[list, list[int]]:
    """[None, 0, 0, 1, 2, 2, 2, None]-like word ids (a word split into 1-3 pieces) and a label per word."""
    words = rng.randint(1, 8)
    word_ids = [None] + [w for w in range(words) for _ in range(rng.randint(1, 3))] + [None]
    return word_ids, [rng.randint(0, 6) for _ in range(words)]


def check_align_labels(fn: Callable[[list, list[int]], list[int]], raise_on_error: bool = True,
                       trials: int = 50) -> bool:
    """Check ``fn(word_ids, word_labels) -> labels``: one label per token, the word's label on its first
    piece, -100 on the other pieces and on the special tokens (notebook 08, exercise 1)."""

    def tests() -> int:
        rng = random.Random()
        for _ in range(trials):
            word_ids, word_labels = _random_word_ids(rng)
            got, want = call(fn, list(word_ids), list(word_labels)), align_labels(word_ids, word_labels)
            if got is None:
                raise AssertionError("your function returned None: return a list with one label per token.")
            try:
                got = [int(x) for x in got]
            except (TypeError, ValueError):
                raise AssertionError("return a list of whole-number labels, one per token.") from None
            if len(got) != len(word_ids):
                raise AssertionError(f"return one label per token: {len(word_ids)} tokens, got {len(got)} labels.")
            if got == want:
                continue
            if got[0] != -100 or got[-1] != -100:
                raise AssertionError("[CLS] and [SEP] (word id None) must get -100, so the loss skips them.")
            every_piece = [-100 if w is None else word_labels[w] for w in word_ids]
            if got == every_piece:
                raise AssertionError("only the first piece of a word carries its label; later pieces get -100 "
                                     "(compare each word id with the one before it).")
            last_piece = [-100 if w is None or (i + 1 < len(word_ids) and word_ids[i + 1] == w) else word_labels[w]
                          for i, w in enumerate(word_ids)]
            if got == last_piece:
                raise AssertionError("you labelled the last piece of each word; the label goes on the first piece "
                                     "(compare each word id with the one before it, not after).")
            i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            w = word_ids[i]
            where = ("a special token" if w is None else
                     f"the first piece of word {w}" if i == 0 or word_ids[i - 1] != w else f"a later piece of word {w}")
            rule = ("it gets -100" if w is None else "it carries that word's label, word_labels[word id]"
                    if where.startswith("the first") else "only the first piece carries the label; the others get -100")
            raise AssertionError(f"for word ids {word_ids} and word labels {word_labels} you returned {got}: token "
                                 f"{i} is {where}, and {rule}.")
        return trials

    return run_checks("label alignment", tests, raise_on_error, fn=fn)


_CASES = [("the cat sat", "cat sat down"), ("Denver Broncos", "The Denver Broncos!"), ("cat cat", "cat"),
          ("in 1965 and 1966", "1965"), ("a dog", "the cat"), ("Saint Bernadette Soubirous", "Saint Bernadette")]


def check_squad_f1(fn: Callable[[str, str], float], raise_on_error: bool = True) -> bool:
    """Check ``fn(prediction, truth) -> F1``: SQuAD's F1 over normalised words (notebook 08, exercise 2)."""

    def tests() -> int:
        for prediction, truth in _CASES:
            got, want = call(fn, prediction, truth), f1_score(prediction, truth)
            got = one_number(got, "the F1, a number between 0 and 1")
            if abs(got - want) <= 1e-6:
                continue
            p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
            normalised = call(fn, normalize_answer(prediction), normalize_answer(truth))
            if normalised is not None and abs(float(normalised) - want) <= 1e-6:
                hint = "normalise both first: lower case, no punctuation, no a/an/the (normalize_answer)."
            elif got == float(p == t):
                hint = "that is exact match; F1 gives credit for the words the two answers share."
            elif len(set(p)) < len(p) or len(set(t)) < len(t):
                hint = "count shared words with repeats, at most as often as each side has them (Counter &)."
            else:
                hint = ("F1 is the harmonic mean of precision (shared words / words predicted) and recall "
                        "(shared words / words in the truth).")
            raise AssertionError(f"F1({prediction!r}, {truth!r}): you returned {got:.3f}, "
                                 f"{'too high' if got > want else 'too low'}: {hint}")
        return len(_CASES)

    return run_checks("SQuAD F1", tests, raise_on_error, passed="passed {n} cases.", fn=fn)
