"""The exercise checkers accept the reference solutions and reject typical mistakes with a useful message."""

import copy
import re

import pytest
import torch

from bertbook import exercises as X
from bertbook.config import ModelConfig
from bertbook.exercises.nb01_tokenization import _wordpiece_no_prefix as no_prefix
from bertbook.exercises.nb01_tokenization import _wordpiece_shortest as shortest_first


def test_solutions_pass(capsys):
    assert X.check_wordpiece(X.solutions.wordpiece)
    assert X.check_masked_softmax(X.solutions.masked_softmax)
    assert X.check_attention(X.solutions.attention)
    assert X.check_split_heads(X.solutions.split_heads)
    assert X.check_param_count(X.solutions.param_count)
    assert capsys.readouterr().out.count("✓") == 5


def test_package_versions_pass_too():
    from bertbook.attention import masked_softmax, scaled_dot_product_attention
    from bertbook.tokenizer import wordpiece_word

    assert X.check_masked_softmax(masked_softmax)
    assert X.check_attention(lambda q, k, v, m: scaled_dot_product_attention(q, k, v, m))
    assert X.check_wordpiece(wordpiece_word)
    assert X.check_param_count(lambda cfg: cfg.num_parameters())


@pytest.mark.parametrize("wrong, message", [
    (shortest_first, "longest candidate first"),
    (no_prefix, "must be looked up with that prefix"),
    (lambda w, v: [w], "not in the vocabulary|should not become|matches no vocabulary piece"),
    (lambda w, v: list(w), "with '##'|not in the vocabulary|should not become|matches no vocabulary"),
    (lambda w, v: "nope", "list of pieces"),
])
def test_wordpiece_checker_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        X.check_wordpiece(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda s, m: torch.softmax(s, -1), "padded keys"),
    (lambda s, m: torch.softmax(s, -1) * m, "after the softmax"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, float("-inf")), -2), "sum to 1|NaN"),
    (lambda s, m: torch.softmax(s * m, -1), "padded keys"),
    (lambda s, m: torch.softmax(s, -1)[..., 0], "same shape"),
    (lambda s, m: 1 / 0, "ZeroDivisionError"),
])
def test_masked_softmax_checker_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        X.check_masked_softmax(wrong)


def unscaled(q, k, v, m):
    return X.solutions.attention(q * q.size(-1) ** 0.5, k, v, m)


def by_heads(q, k, v, m):
    return X.solutions.attention(q * q.size(-1) ** 0.5 / q.size(1) ** 0.5, k, v, m)


def by_d_k(q, k, v, m):
    return X.solutions.attention(q / q.size(-1) ** 0.5, k, v, m)


@pytest.mark.parametrize("wrong, message", [
    (unscaled, "not scaled"),
    (by_heads, "number of heads"),
    (by_d_k, "square root"),
    (lambda q, k, v, m: X.solutions.attention(q, k, v, None), "padding mask is ignored"),
    (lambda q, k, v, m: (X.solutions.attention(q, k, v, m)[1], X.solutions.attention(q, k, v, m)[0]),
     r"order \(output, weights\)"),
    (lambda q, k, v, m: X.solutions.attention(q, k, v, m)[0], "pair"),
])
def test_attention_checker_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        X.check_attention(wrong)


def test_split_heads_checker_rejects():
    with pytest.raises(AssertionError, match="transpose"):
        X.check_split_heads(lambda x, h: x.reshape(x.size(0), h, x.size(1), -1))
    with pytest.raises(AssertionError, match=r"that is \(B, T, H, d_k\): the head axis must come before"):
        X.check_split_heads(lambda x, h: x.view(x.size(0), x.size(1), h, -1))


@pytest.mark.parametrize("forget, message", [
    ("pooler", "the pooler"),
    ("positions", "position embeddings"),
    ("norms", "LayerNorms"),
    ("biases", "biases"),
])
def test_param_count_checker_names_what_is_missing(forget, message):
    def count(cfg: ModelConfig) -> int:
        D, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
        n = X.solutions.param_count(cfg)
        return n - {"pooler": D * D + D, "positions": cfg.max_position_embeddings * D,
                    "norms": L * 4 * D + 2 * D, "biases": L * (4 * D + I + D) + D}[forget]

    with pytest.raises(AssertionError, match=message):
        X.check_param_count(count)


def test_raise_on_error_false_prints_the_diagnosis(capsys):
    assert X.check_masked_softmax(lambda s, m: torch.softmax(s, -1), raise_on_error=False) is False
    assert "✗ masked softmax: padded keys" in capsys.readouterr().out


def test_show_solution(capsys):
    X.show_solution("split_heads")
    assert "transpose(1, 2)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="choose one of"):
        X.show_solution("nothing")


# --------------------------------------------------------------------- notebooks 00 and 06


def test_bert_large_checker(capsys):
    assert X.check_bert_large(X.solutions.bert_large_parameters)
    assert capsys.readouterr().out == "✓ BERT-large parameter count: the reference solution passes.\n"
    assert X.check_bert_large(lambda: X.solutions.bert_large_parameters())  # a learner's own right answer
    assert "your count is right" in capsys.readouterr().out
    V, T, S, H, L = 30522, 512, 2, 1024, 24
    rule_of_thumb = lambda: (V + T + S) * H + L * 12 * H * H  # weight matrices only
    no_pooler = lambda: X.solutions.bert_large_parameters() - (H * H + H)
    no_norms = lambda: X.solutions.bert_large_parameters() - (L * 4 * H + 2 * H)
    for wrong, message in [(rule_of_thumb, r"the layers' biases .* and the layers' LayerNorms .* and "
                                            r"the embeddings' LayerNorm .* and the pooler"),
                           (no_pooler, r"missing: the pooler \(H x H and a bias\)\.$"),
                           (no_norms, "missing: the layers' LayerNorms .* and the embeddings' LayerNorm"),
                           (lambda: None, "returned None"),
                           (lambda: 3.4e8, "whole number"), (lambda: 1 / 0, "ZeroDivisionError")]:
        with pytest.raises(AssertionError, match=message):
            X.check_bert_large(wrong)
    assert not X.check_bert_large(no_pooler, raise_on_error=False)
    assert "✗ BERT-large parameter count" in capsys.readouterr().out


def test_f1_checker():
    import numpy as np

    from bertbook import finetune as F

    assert X.check_f1_from_confusion(X.solutions.f1_from_confusion)
    # the package's metrics agree with the reference on the matrices the checker draws
    assert X.check_f1_from_confusion(lambda cm: F.classification_metrics(
        [0] * int(cm[0].sum()) + [1] * int(cm[1].sum()),
        [0] * int(cm[0, 0]) + [1] * int(cm[0, 1]) + [0] * int(cm[1, 0]) + [1] * int(cm[1, 1]))["f1"])

    def precision_recall(cm):
        tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
        return tp / (tp + fp), tp / (tp + fn)

    def nan_when_undefined(cm):
        with np.errstate(invalid="ignore", divide="ignore"):
            p, r = precision_recall(cm)
            return 2 * p * r / (p + r)

    for wrong, message in [
        (nan_when_undefined, "not NaN"),
        (lambda cm: X.solutions.f1_from_confusion(cm[::-1, ::-1]), "class 0"),
        (lambda cm: (cm[0, 0] + cm[1, 1]) / cm.sum(), "accuracy"),
        (lambda cm: None, "returned None"),
        (lambda cm: [0.5], "one number"),
    ]:
        with pytest.raises(AssertionError, match=message):
            X.check_f1_from_confusion(wrong)


def test_tail_checker():
    from bertbook import finetune as F

    assert X.check_tail_only(X.solutions.tail_only)
    head = lambda ids, budget: F.truncate(ids, budget, "head")
    for wrong, message in [
        (head, "You kept the head"),
        (lambda ids, budget: ids[-budget:][1:], "Keep exactly"),
        (lambda ids, budget: ids[-budget:] if len(ids) > budget else [], "must come back unchanged"),
        (lambda ids, budget: None, "returned None"),
    ]:
        with pytest.raises(AssertionError, match=message):
            X.check_tail_only(wrong)


# ----------------------------------------------------- every checker, and answers kept out of the messages


@pytest.mark.parametrize("name", list(X.CHECKERS))
def test_every_checker_passes_its_reference_and_prints_only_that(name, capsys):
    checker = X.CHECKERS[name]
    assert checker(getattr(X.solutions, name))
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and out.count("\n") == 1
    assert out.endswith(": the reference solution passes.\n") or re.search(r": passed \d+ [a-z ]+\.\n$", out)
    assert X.check_solution(name)
    assert capsys.readouterr().out == out


@pytest.mark.parametrize("name", list(X.CHECKERS))
def test_every_checker_fails_a_function_that_returns_nothing(name, capsys):
    checker = X.CHECKERS[name]
    nothing = lambda *args: None  # (the notebooks' "your code here" stubs)
    with pytest.raises(AssertionError):
        checker(nothing)
    assert checker(nothing, raise_on_error=False) is False
    assert capsys.readouterr().out.startswith("✗ ")


class Spy:
    """A learner's function that records its inputs, so a test can compute the answer of the failing case."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args):
        self.calls.append(copy.deepcopy(args))
        return self.fn(*args)


def spellings(want) -> list[str]:
    """The ways a message could print the expected value ``want``."""
    if isinstance(want, torch.Tensor):
        return spellings(float(want)) if want.numel() == 1 else [str(tuple(want.shape))]
    if isinstance(want, bool):
        return []
    if isinstance(want, int):
        return [str(want), f"{want:,}"] if abs(want) >= 10 else []
    if isinstance(want, float):  # 0 and 1 are the bounds every message may name
        return [] if want in (0.0, 1.0) else [f"{want:.3f}", f"{want:.4f}", repr(want)]
    if isinstance(want, (list, tuple)):
        return [str(want), str(list(want))]
    raise TypeError(type(want))


def gives(message: str, spelt: str) -> bool:
    """Whether ``message`` prints ``spelt`` as a value of its own (0.286 is not in "you returned 0.2857")."""
    return re.search(rf"(?<![\d.,]){re.escape(spelt)}(?![\d]|[.,]\d)", message) is not None


def failure(checker, fn, **kw) -> str:
    with pytest.raises(AssertionError) as info:
        checker(fn, **kw)
    return str(info.value)


def shortest(word, vocab):
    return shortest_first(word, vocab)


def no_transpose(x, h):
    return x.view(x.size(0), x.size(1), h, -1)


WRONG = [  # (exercise, a plausible wrong answer)
    ("bert_large_parameters", lambda: (30522 + 512 + 2) * 1024 + 24 * 12 * 1024 * 1024),
    ("bert_large_parameters", lambda: X.solutions.bert_large_parameters() * 4),
    ("bert_large_parameters", lambda: 5),
    ("wordpiece", shortest),
    ("wordpiece", lambda w, v: [w]),
    ("wordpiece", lambda w, v: ["[UNK]"]),
    ("masked_softmax", lambda s, m: torch.softmax(s, -1)),
    ("masked_softmax", lambda s, m: torch.softmax(s, -1)[..., 0]),
    ("attention", by_heads),
    ("attention", lambda q, k, v, m: X.solutions.attention(q, k, v, m)[::-1]),
    ("split_heads", no_transpose),
    ("split_heads", lambda x, h: x.reshape(x.size(0), h, x.size(1), -1)),
    ("param_count", lambda cfg: X.solutions.param_count(cfg) - cfg.hidden_size ** 2 - cfg.hidden_size),
    ("param_count", lambda cfg: X.solutions.param_count(cfg) + 7),
    ("mlm_loss", lambda logits, labels: X.solutions.mlm_loss(logits, labels) * 1.1),
    ("unshuffle", lambda segments, label: segments),
    ("warmup_linear", lambda s, w, t: s / w if s < w else 1.0),
    ("warmup_linear", lambda s, w, t: 0.5),
    ("no_decay_names", lambda model: {n for n, _ in model.named_parameters() if n.endswith("bias")}),
    ("f1_from_confusion", lambda cm: cm[1, 1] / (cm[1, 1] + cm[0, 1])),
    ("f1_from_confusion", lambda cm: 0.5),
    ("tail_only", lambda ids, budget: ids[:budget]),
    ("tail_only", lambda ids, budget: ids[-budget - 1:-1] if len(ids) > budget else ids),
    ("previous_token_share", lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1) * 2),
    ("previous_token_share", lambda a: a.diagonal(offset=-1, dim1=-2, dim2=-1)),
    ("next_token_head", lambda data: (0, 0) if X.solutions.next_token_head(data) != (0, 0) else (0, 1)),
    ("align_labels", lambda w, labels: [-100 if x is None else labels[x] for x in w]),
    ("align_labels", lambda w, labels: [-100] + [0] * (len(w) - 2) + [-100]),
    ("squad_f1", lambda p, t: float(p == t)),
    ("squad_f1", lambda p, t: 0.5),
    ("merge_lora", lambda W, A, B, alpha, r: W + B @ A),
    ("merge_lora", lambda W, A, B, alpha, r: (W + alpha / r * B @ A).T),
    ("lora_count", lambda d_in, d_out, r, layers, targets: r * (d_in + d_out)),
    ("lora_count", lambda d_in, d_out, r, layers, targets: 5),
    ("causal_mask", lambda T: X.solutions.causal_mask(T).T),
    ("causal_mask", lambda T: torch.ones(T, T, dtype=torch.bool)),
    ("causal_mask", lambda T: torch.tril(torch.ones(T, T))),
    ("causal_mask", lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)),
    ("teacher_forcing", lambda target, bos, eos: (target, target)),
    ("teacher_forcing", lambda target, bos, eos: ([bos, *target], [*target, bos])),
    ("ranking_metrics", lambda scores, labels: X.solutions.ranking_metrics(-scores, labels)),
    ("ranking_metrics", lambda scores, labels: (X.solutions.ranking_metrics(scores, labels)[0], 0.5)),
]


@pytest.mark.parametrize("name, wrong", WRONG, ids=[f"{n}-{i}" for i, (n, _) in enumerate(WRONG)])
def test_a_wrong_answer_is_explained_without_the_expected_value(name, wrong):
    spy = Spy(wrong)
    message = failure(X.CHECKERS[name], spy)
    assert spy.calls, message
    reference = getattr(X.solutions, name)
    want = reference(*spy.calls[-1])  # the answer of the case that failed
    if name == "no_decay_names":  # a set of names: none of those the learner missed is named
        missing = want - set(wrong(*spy.calls[-1]))
        assert missing and not any(n in message for n in missing), message
    else:
        for spelt in spellings(want):
            assert not gives(message, spelt), f"the message gives the answer {spelt}: {message}"
    assert len(message) > 30  # it says what is wrong, not just "wrong"


def test_bert_large_failure_does_not_print_the_count(capsys):
    want = 335_141_888
    assert X.solutions.bert_large_parameters() == want
    rule_of_thumb = lambda: (30522 + 512 + 2) * 1024 + 24 * 12 * 1024 * 1024
    stub = lambda: (30522 + 512 + 2) * 1024 + 24 * (4 * 1024 * 1024 + 2 * 1024 * 4096)  # notebook 00
    for wrong in (rule_of_thumb, stub, lambda: want + 1, lambda: want - 1024, lambda: 340_000_000):
        message = failure(X.check_bert_large, wrong)
        diff = want - wrong()
        for spelt in (f"{want:,}", str(want)) + ((f"{abs(diff):,}", str(abs(diff))) if abs(diff) > 1000 else ()):
            assert spelt not in message, message
        assert f"{wrong():,}" in message  # the learner's own count is shown
    assert X.check_bert_large(stub, raise_on_error=False) is False
    out = capsys.readouterr().out
    assert "335,141,888" not in out and "333,770,752" in out and "too small" in out


def test_lora_count_failure_does_not_print_the_count():
    assert X.solutions.lora_count(384, 384, 8, 6, 2) == 73_728  # the checker's first case
    for wrong in (lambda *a: None, lambda d_in, d_out, r, layers, targets: r * (d_in + d_out),
                  lambda d_in, d_out, r, layers, targets: layers * targets * r * d_in,
                  lambda d_in, d_out, r, layers, targets: 5, lambda d_in, d_out, r, layers, targets: 73_729):
        message = failure(X.check_lora_count, wrong)
        assert "73,728" not in message and "73728" not in message, message
    assert "too large" in failure(X.check_lora_count, lambda *a: 73_729)
    assert "by more than a factor of 20" in failure(X.check_lora_count, lambda *a: 5)  # no precise factor
    assert "count both matrices" in failure(X.check_lora_count, lambda d_in, d_out, r, layers, targets:
                                            layers * targets * r * d_in)


def test_squad_f1_failure_does_not_print_the_score():
    from bertbook.qa import f1_score

    assert f1_score("the cat sat", "cat sat down") == pytest.approx(0.8)  # the checker's first case
    for wrong, hint in [(lambda p, t: None, "returned None"), (lambda p, t: float(p == t), "exact match"),
                        (lambda p, t: 0.5, "harmonic mean"), (lambda p, t: 1.0, "too high")]:
        message = failure(X.check_squad_f1, wrong)
        assert hint in message
        assert not any(s in message for s in ("0.800", "0.80", "0.8")), message


def test_warmup_failure_says_why_not_what():
    message = failure(X.check_warmup_linear, lambda s, w, t: s / w if s < w else 1.0)
    assert "at step 11 of 100 with 10 warmup steps you returned 1.0000, too high" in message
    assert "0.989" not in message and "0.9889" not in message
    assert "no warmup" in failure(X.check_warmup_linear, lambda s, w, t: min(s / w, 1 - (s - w) / (t - w)) if s
                                  else 0.0)
    assert "steps left after warmup" in failure(X.check_warmup_linear, lambda s, w, t: s / w if s < w else
                                                (t - s) / t)


def test_shape_messages_name_the_axes_not_the_shape():
    torch.manual_seed(0)  # a first case with T != d_k
    message = failure(X.check_attention, lambda q, k, v, m: (X.solutions.attention(q, k, v, m)[0],
                                                             X.solutions.attention(q, k, v, m)[0]))
    assert "axis 3 has the size of d_k where T belongs" in message and "order (output, weights)" in message
    torch.manual_seed(0)  # a first case with d_in != d_out
    message = failure(X.check_merge_lora, lambda W, A, B, alpha, r: (W + alpha / r * B @ A).T)
    assert "transposed" in message
    message = failure(X.check_masked_softmax, lambda s, m: torch.softmax(s, -1)[..., 0])
    assert "same shape as the scores" in message and "(B, H, T, T)" in message


def test_learners_own_passing_function_gets_the_usual_tick(capsys):
    assert X.check_lora_count(lambda d_in, d_out, r, layers, targets: layers * targets * r * (d_in + d_out))
    assert X.check_split_heads(lambda x, h: x.view(x.size(0), x.size(1), h, -1).transpose(1, 2))
    out = capsys.readouterr().out
    assert "passed 4 cases" in out and "passed 20 random tests" in out and "reference" not in out


def test_solution_helpers(capsys):
    assert X.solution("lora_count") is X.solutions.lora_count
    assert X.is_reference(X.solutions.lora_count) and not X.is_reference(lambda: None)
    assert capsys.readouterr().out == ""  # looking a solution up prints nothing
    assert X.check_solution("masked_softmax", "split_heads")
    assert capsys.readouterr().out == ("✓ masked softmax: passed 20 random tests.\n"
                                       "✓ split heads: passed 20 random tests.\n")
    with pytest.raises(ValueError, match="choose one of"):
        X.solution("nothing")
    with pytest.raises(ValueError, match="Name at least one"):
        X.check_solution()
    assert set(X.CHECKERS) <= set(vars(X.solutions))


def test_questions_in_words_have_solutions_to_ask_for(capsys):
    with pytest.raises(ValueError, match="no checker"):
        X.check_solution("mask_count")
    assert capsys.readouterr().out == ""
    masks, predicted = X.solutions.mask_count()  # notebook 04, exercise 3: asked for, not printed
    assert masks == pytest.approx(126 * 0.15 * 0.8) and predicted == pytest.approx(126 * 0.15)
    assert X.solutions.uniform_perplexity(8192) == pytest.approx(8192)  # notebook 05, exercise 3
    X.show_solution("mask_count")
    out = capsys.readouterr().out
    assert "def _mask_count" in out and "15.12" not in out and "18.9" not in out


def test_direction_hints_round_and_cap_the_factor():
    from bertbook.exercises.harness import direction

    assert direction(9, 10) == "too small" and direction(11, 10) == "too large"
    assert direction(41, 10) == "too large by a factor of about 4"
    assert direction(1, 1000) == "far too small (by more than a factor of 20)"
    assert direction(41, 10, factor=False) == "too large"
