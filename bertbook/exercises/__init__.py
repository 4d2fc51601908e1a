"""The exercises of every notebook, with checkers that explain what is wrong.

    from bertbook import exercises
    exercises.check_masked_softmax(my_masked_softmax)

A checker calls your function on fresh random inputs, compares it with a reference and says what is wrong
in words (not just "assert failed"). It prints a tick and returns True when all tests pass; otherwise it
raises an AssertionError with the diagnosis, or, with ``raise_on_error=False``, prints it and returns False.
Every checker runs on the one harness in ``exercises.harness``; each notebook's exercises live in their own
module (``nb02_attention``, ``nb05_pretraining``, ...).

A failure message says what is wrong and where to look, with your own value and the inputs of the failing
case, but never the expected answer. Reference solutions live in ``exercises.solutions``; nothing shows
them unless you ask:

    exercises.check_solution("masked_softmax")   # ✓ masked softmax: the reference solution passes.
    exercises.show_solution("masked_softmax")    # prints the reference solution's source
    exercises.solutions.mask_count()             # runs a reference solution: the answer itself

A checker given a reference solution prints only that it passes, not the answer it computed. Try first!
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from . import (nb00_setup, nb01_tokenization, nb02_attention, nb03_encoder, nb04_masking, nb05_pretraining,
               nb06_finetuning, nb07_looking_inside, nb08_applications, nb09_efficient, nb10_generation)
from .harness import call, close, is_reference, run_checks
from .nb00_setup import check_bert_large
from .nb01_tokenization import check_wordpiece
from .nb02_attention import check_attention, check_masked_softmax, check_split_heads
from .nb03_encoder import check_param_count
from .nb04_masking import check_mlm_loss, check_unshuffle
from .nb05_pretraining import check_no_decay, check_warmup_linear
from .nb06_finetuning import check_f1_from_confusion, check_tail_only
from .nb07_looking_inside import check_next_token_head, check_previous_token_share
from .nb08_applications import check_align_labels, check_squad_f1
from .nb09_efficient import check_lora_count, check_merge_lora
from .nb10_generation import check_causal_mask, check_ranking_metrics, check_teacher_forcing

__all__ = ["check_bert_large", "check_wordpiece", "check_masked_softmax", "check_attention", "check_split_heads",
           "check_param_count", "check_mlm_loss", "check_unshuffle", "check_warmup_linear", "check_no_decay",
           "check_f1_from_confusion", "check_tail_only", "check_previous_token_share", "check_next_token_head",
           "check_align_labels", "check_squad_f1", "check_merge_lora", "check_lora_count",
           "check_causal_mask", "check_teacher_forcing", "check_ranking_metrics",
           "solutions", "solution", "show_solution", "check_solution", "CHECKERS", "run_checks", "call", "close",
           "is_reference"]

_NOTEBOOKS = (nb00_setup, nb01_tokenization, nb02_attention, nb03_encoder, nb04_masking, nb05_pretraining,
              nb06_finetuning, nb07_looking_inside, nb08_applications, nb09_efficient, nb10_generation)
solutions = SimpleNamespace(**{k: v for m in _NOTEBOOKS for k, v in vars(m.solutions).items()})


CHECKERS = {  # the name of each reference solution -> the checker of its exercise
    "bert_large_parameters": check_bert_large, "wordpiece": check_wordpiece, "masked_softmax": check_masked_softmax,
    "attention": check_attention, "split_heads": check_split_heads, "param_count": check_param_count,
    "mlm_loss": check_mlm_loss, "unshuffle": check_unshuffle, "warmup_linear": check_warmup_linear,
    "no_decay_names": check_no_decay, "f1_from_confusion": check_f1_from_confusion, "tail_only": check_tail_only,
    "previous_token_share": check_previous_token_share, "next_token_head": check_next_token_head,
    "align_labels": check_align_labels, "squad_f1": check_squad_f1, "merge_lora": check_merge_lora,
    "lora_count": check_lora_count, "causal_mask": check_causal_mask, "teacher_forcing": check_teacher_forcing,
    "ranking_metrics": check_ranking_metrics,
}


def solution(name: str):
    """The reference solution called ``name`` (a function in ``exercises.solutions``), without printing it."""
    fn = getattr(solutions, name, None)
    if fn is None:
        raise ValueError(f"No solution called {name!r}; choose one of {', '.join(vars(solutions))}.")
    return fn


def show_solution(name: str) -> None:
    """Print the reference solution of an exercise (a name in ``exercises.solutions``, e.g.
    ``masked_softmax`` or ``warmup_linear``): its source, the way to the answer."""
    print(inspect.getsource(solution(name)))


def check_solution(*names: str) -> bool:
    """Run the checker of each named exercise on its reference solution. Each prints one line,
    "✓ <exercise>: the reference solution passes.", and nothing of the answer; returns True when all pass."""
    if not names:
        raise ValueError(f"Name at least one exercise: {', '.join(CHECKERS)}.")
    results = []
    for name in names:
        fn = solution(name)
        if name not in CHECKERS:
            raise ValueError(f"{name!r} has no checker (it answers a question in words): "
                             f"exercises.show_solution({name!r}) shows how, exercises.solutions.{name}() answers.")
        results.append(CHECKERS[name](fn))
    return all(results)
