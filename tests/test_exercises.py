"""The exercise checkers accept the reference solutions and reject typical mistakes with a useful message."""

import pytest
import torch

from bertbook import exercises as X
from bertbook.config import ModelConfig


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


def shortest_first(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def no_prefix(word, vocab):
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
