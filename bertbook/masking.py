"""Masking and the pretraining objectives: what the model is asked to predict.

Taught in notebook 04. Two kinds of self-supervised objective live here.

**Masked language modelling (MLM)** (Devlin et al. 2019, section 3.1). Choose 15% of the tokens for
prediction; of those, replace 80% by ``[MASK]``, 10% by a random token and keep 10% unchanged. The loss is
the cross-entropy of the original token at the chosen positions only (the source article's "sum over the
whole vocabulary" is an error). Special tokens and padding are never chosen. Masking is *dynamic*: each
batch draws fresh masks (Liu et al. 2019, RoBERTa), from an explicit ``torch.Generator`` so that a run is
reproducible. *Whole-word masking* chooses words instead of word pieces: a word split as
``play ##ing`` is masked whole or not at all.

**Sentence-level objectives**, predicted from the ``[CLS]`` vector:

- ``nsp``: next-sentence prediction (BERT). Segment B follows A (label 0) or is a random segment from
  elsewhere in the corpus (label 1). Two classes.
- ``sop``: sentence-order prediction (ALBERT, Lan et al. 2020). A and B are always consecutive; they come in
  their original order (label 0) or swapped (label 1). Two classes; harder, because topic gives it away
  no more.
- ``msc``: the source article's "masked sequence classification" (掩码句子分类器): shuffle k consecutive
  segments and predict which of the k! permutations was applied (as ERNIE 2.0's sentence-reordering task,
  Sun et al. 2020). k! classes; the loss is -log p(pi), the article's formula. BERT itself never used it.

Each is a plain classification with cross-entropy (:func:`sentence_loss`). Batches use the
Hugging Face keys ``input_ids``, ``token_type_ids``, ``labels`` (-100 = not predicted) and
``sentence_label``.

Seeing masking on one text (``mask_preview``, the chosen tokens in colour) is in :mod:`bertbook.views`; the
mask-rate widget is ``widgets.mask_widget``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "MSC_SEGMENTS",
    "SENTENCE_OBJECTIVES",
    "MaskVocab",
    "choose_positions",
    "corrupt",
    "mask_tokens",
    "num_sentence_labels",
    "permutations",
    "permutation_label",
    "nsp_pair",
    "sop_pair",
    "msc_shuffle",
    "assemble",
    "sentence_loss",
    "mlm_loss",
    "check_mask_prob",
]

IGNORE_INDEX = -100  # label of a position the loss skips (the convention of torch and transformers)
MSC_SEGMENTS = 3  # segments shuffled by the 'msc' objective: 3! = 6 classes
SENTENCE_OBJECTIVES = ("none", "nsp", "sop", "msc")


# ---------------------------------------------------------------------------------------------------------
# 1. What masking needs to know about the vocabulary
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskVocab:
    """The facts about a tokenizer that masking uses (notebook 04).

    ``special`` and ``continuation`` are boolean lookup tables indexed by token id, so that a whole batch is
    classified with one indexing operation: ``vocab.special[input_ids]``.
    """

    mask_token_id: int
    cls_token_id: int
    sep_token_id: int
    pad_token_id: int
    special: torch.Tensor  # (V,) bool: [PAD], [UNK], [CLS], [SEP], [MASK]: never chosen, never drawn
    continuation: torch.Tensor  # (V,) bool: word pieces that continue a word ('##ing')
    random_ids: torch.Tensor  # (R,) ids that the "random token" replacement draws from (no special tokens)

    @property
    def size(self) -> int:
        return int(self.special.numel())

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "MaskVocab":
        """Build the tables from a (fast) WordPiece tokenizer such as ``get_tokenizer(P)``."""
        size = len(tokenizer)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        special = torch.zeros(size, dtype=torch.bool)
        special[list(tokenizer.all_special_ids)] = True
        continuation = torch.tensor([t is not None and t.startswith("##") for t in tokens], dtype=torch.bool)
        return cls(mask_token_id=tokenizer.mask_token_id, cls_token_id=tokenizer.cls_token_id,
                   sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                   special=special, continuation=continuation,
                   random_ids=torch.nonzero(~special).flatten())


# ---------------------------------------------------------------------------------------------------------
# 2. Masked language modelling: choose, then corrupt
# ---------------------------------------------------------------------------------------------------------


def check_mask_prob(mask_prob: float) -> None:
    """Raise ValueError unless ``mask_prob`` is a fraction strictly between 0 and 1 (BERT uses 0.15)."""
    if not (isinstance(mask_prob, (int, float)) and 0.0 < mask_prob < 1.0):
        raise ValueError(f"mask_prob must be a fraction between 0 and 1 (BERT uses 0.15), got {mask_prob!r}.")


def choose_positions(input_ids: torch.Tensor, vocab: MaskVocab, mask_prob: float = 0.15,
                     whole_word: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which positions the model must predict: a bool tensor shaped like ``input_ids`` (notebook 04).

    Each ordinary token (or, with ``whole_word``, each word) is chosen independently with probability
    ``mask_prob``, so a fraction ``mask_prob`` of the tokens is chosen on average. Special tokens and
    padding never are.
    """
    check_mask_prob(mask_prob)
    special = vocab.special.to(input_ids.device)[input_ids]  # (B, T) bool
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)  # (B, T) uniform
    if not whole_word:
        return (draw < mask_prob) & ~special
    # A word starts at every token that is not a '##' continuation; special tokens are words of their own,
    # and a piece right after one (a row cut mid-word) starts a word too.
    starts = ~vocab.continuation.to(input_ids.device)[input_ids] | special  # (B, T) bool
    starts[..., 1:] |= special[..., :-1]
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)  # (B, T)
    # For every token, the position where its word starts: a running maximum of the start positions.
    word_start = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=-1).values  # (B, T)
    chosen_word = (draw < mask_prob) & starts  # one draw per word, read at the word's first piece
    return chosen_word.gather(-1, word_start) & ~special  # (B, T): every piece follows its word


def corrupt(input_ids: torch.Tensor, chosen: torch.Tensor, vocab: MaskVocab, mask_frac: float = 0.8,
            random_frac: float = 0.1, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 rule: returns ``(corrupted_ids, labels)`` (notebook 04).

    Chosen positions become ``[MASK]`` with probability ``mask_frac``, a random ordinary token with
    probability ``random_frac``, and stay unchanged otherwise (so the model cannot assume that an
    unmasked token is always correct). ``labels`` holds the original id at chosen positions, -100 elsewhere.
    """
    if not (0.0 <= mask_frac and 0.0 <= random_frac and mask_frac + random_frac <= 1.0):
        raise ValueError(f"mask_frac + random_frac must be at most 1, got {mask_frac} + {random_frac}.")
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # (B, T)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)  # (B, T) uniform
    to_mask = chosen & (draw < mask_frac)
    to_random = chosen & (draw >= mask_frac) & (draw < mask_frac + random_frac)
    random_ids = vocab.random_ids.to(input_ids.device)
    pick = torch.randint(len(random_ids), input_ids.shape, generator=generator, device=input_ids.device)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, vocab.mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids[pick], corrupted)  # (B, T)
    return corrupted, labels


def mask_tokens(input_ids: torch.Tensor, vocab: MaskVocab, mask_prob: float = 0.15, whole_word: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic MLM masking of a batch: ``(corrupted_ids, labels)``; see :func:`choose_positions` and
    :func:`corrupt` (notebook 04). The input is not modified."""
    chosen = choose_positions(input_ids, vocab, mask_prob, whole_word, generator)
    return corrupt(input_ids, chosen, vocab, generator=generator)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the original token at the chosen positions only (notebook 04).

    ``logits`` is (B, T, V) for every position, or (N, V) for the N chosen positions only (what
    ``BertForMaskedLM(..., masked_only=True)`` returns); ``labels`` is (B, T) with -100 elsewhere.
    """
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)  # (B*T, V)
    return F.cross_entropy(logits, labels[labels != IGNORE_INDEX])  # (N, V) against (N,)


# ---------------------------------------------------------------------------------------------------------
# 3. Sentence-level objectives
# ---------------------------------------------------------------------------------------------------------


def permutations(k: int = MSC_SEGMENTS) -> list[tuple[int, ...]]:
    """The k! orders of k segments, in a fixed order; a permutation's label is its index here."""
    return list(itertools.permutations(range(k)))


def permutation_label(order: Sequence[int]) -> int:
    """The class index of a permutation (``permutations(k).index(order)``)."""
    return permutations(len(order)).index(tuple(order))


def num_sentence_labels(objective: str, msc_segments: int = MSC_SEGMENTS) -> int:
    """Classes of the sentence head: 2 for nsp and sop, k! for msc, 0 for none."""
    if objective not in SENTENCE_OBJECTIVES:
        raise ValueError(f"Unknown sentence objective {objective!r}: choose one of {SENTENCE_OBJECTIVES}.")
    return {"none": 0, "nsp": 2, "sop": 2, "msc": math.factorial(msc_segments)}[objective]


def nsp_pair(a: list[int], b: list[int], random_b: list[int], use_random: bool
             ) -> tuple[list[list[int]], int]:
    """Next-sentence prediction: ``([a, b], 0)`` (B is next) or ``([a, random_b], 1)`` (B is random)."""
    return ([a, random_b], 1) if use_random else ([a, b], 0)


def sop_pair(a: list[int], b: list[int], swap: bool) -> tuple[list[list[int]], int]:
    """Sentence-order prediction: ``([a, b], 0)`` (original order) or ``([b, a], 1)`` (swapped)."""
    return ([b, a], 1) if swap else ([a, b], 0)


def msc_shuffle(segments: Sequence[list[int]], order: Sequence[int]) -> tuple[list[list[int]], int]:
    """The article's permutation objective: segments placed in ``order``; the label is the order's index."""
    if sorted(order) != list(range(len(segments))):
        raise ValueError(f"order must be a permutation of 0..{len(segments) - 1}, got {list(order)}.")
    return [segments[i] for i in order], permutation_label(order)


def assemble(segments: Sequence[list[int]], cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """``[CLS] s1 [SEP] s2 [SEP] ...`` and its segment ids (0, 1, 0, ... alternating per segment)."""
    ids, types = [cls_id], [0]
    for i, seg in enumerate(segments):
        ids += list(seg) + [sep_id]
        types += [i % 2] * (len(seg) + 1)
    return ids, types


def sentence_loss(sentence_logits: torch.Tensor, sentence_label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the sentence classes (notebook 04): two classes for nsp/sop, k! for msc, where
    it is exactly the article's -log p(pi) averaged over the batch. ``sentence_logits`` is (B, C)."""
    return F.cross_entropy(sentence_logits, sentence_label)
