"""The exercise checkers accept the reference solutions and reject typical mistakes with a useful message."""

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
    (lambda w, v: [w], "expected"),
    (lambda w, v: list(w), "expected"),
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
     "must be"),
    (lambda q, k, v, m: X.solutions.attention(q, k, v, m)[0], "pair"),
])
def test_attention_checker_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        X.check_attention(wrong)


def test_split_heads_checker_rejects():
    with pytest.raises(AssertionError, match="transpose"):
        X.check_split_heads(lambda x, h: x.reshape(x.size(0), h, x.size(1), -1))
    with pytest.raises(AssertionError, match="must be"):
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
    assert "335,141,888 parameters, correct" in capsys.readouterr().out
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
