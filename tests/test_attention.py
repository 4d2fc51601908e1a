"""Attention: masked softmax, padding masks, the spelled-out and fused paths, multi-head shapes and errors."""

import pytest
import torch

from bertbook.attention import (MultiHeadSelfAttention, explore_attention, extended_attention_mask, fused_attention,
                                masked_softmax, padding_mask, scaled_dot_product_attention)


def test_masked_softmax_gives_zero_weight_to_masked_keys():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 5)
    mask = padding_mask(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    w = masked_softmax(scores, mask)
    assert torch.all(w[0, :, :, 3:] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))
    torch.testing.assert_close(w[0, :, :, :3], torch.softmax(scores[0, :, :, :3], -1))


def test_masked_softmax_all_masked_row_is_uniform_not_nan():
    w = masked_softmax(torch.randn(1, 4), torch.zeros(1, 4, dtype=torch.bool))
    torch.testing.assert_close(w, torch.full((1, 4), 0.25))


def test_masked_softmax_rejects_a_float_mask():
    with pytest.raises(TypeError, match="boolean"):
        masked_softmax(torch.randn(2, 2), torch.ones(2, 2))


def test_padding_mask_shape_and_error():
    assert padding_mask(torch.ones(3, 7)).shape == (3, 1, 1, 7)
    with pytest.raises(ValueError, match="batch, seq_len"):
        padding_mask(torch.ones(7))


def test_additive_and_boolean_masks_agree_and_match_the_formula():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    am = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    out_b, w_b = scaled_dot_product_attention(q, k, v, padding_mask(am))
    out_a, w_a = scaled_dot_product_attention(q, k, v, extended_attention_mask(am))
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    # the formula, by hand, for the unpadded sequence
    ref = torch.softmax(q[0] @ k[0].transpose(-1, -2) / 8 ** 0.5, -1) @ v[0]
    torch.testing.assert_close(out_a[0], ref)
    assert torch.all(w_a[1, :, :, 4:] == 0)


def test_fused_path_equals_spelled_out_path():
    torch.manual_seed(2)
    q, k, v = (torch.randn(3, 2, 9, 16) for _ in range(3))
    mask = extended_attention_mask(torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7]))
    torch.testing.assert_close(fused_attention(q, k, v, mask), scaled_dot_product_attention(q, k, v, mask)[0],
                               atol=1e-6, rtol=1e-5)


def test_scale_off_makes_the_softmax_sharper_for_wide_heads():
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 1, 16, 256) for _ in range(3))
    _, w_scaled = scaled_dot_product_attention(q, k, v, scale=True)
    _, w_raw = scaled_dot_product_attention(q, k, v, scale=False)
    assert w_raw.max(-1).values.mean() > 0.9 > w_scaled.max(-1).values.mean()


def test_multi_head_self_attention_shapes_and_paths():
    torch.manual_seed(4)
    mha = MultiHeadSelfAttention(32, 4).eval()
    x = torch.randn(2, 7, 32)
    mask = extended_attention_mask(torch.tensor([[1] * 7, [1] * 3 + [0] * 4]))
    out, w = mha(x, mask, output_attentions=True)
    assert out.shape == (2, 7, 32) and w.shape == (2, 4, 7, 7)
    out_fused, none = mha(x, mask)
    assert none is None
    torch.testing.assert_close(out_fused, out, atol=1e-6, rtol=1e-5)
    q, k, v = mha.project_qkv(x)
    assert q.shape == k.shape == v.shape == (2, 4, 7, 8)
    torch.testing.assert_close(mha.merge_heads(mha.split_heads(x)), x, rtol=0, atol=0)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="not divisible by num_attention_heads=5.*divides 64"):
        MultiHeadSelfAttention(64, 5)


def test_explore_attention_switches_and_errors():
    from bertbook.config import ModelConfig
    from bertbook.model import BertModel
    from bertbook.tokenizer import train_tokenizer

    tok = train_tokenizer("the cat sat on the mat . the dog sat on the log .\n" * 20, vocab_size=60,
                          min_frequency=1, model_max_length=16)
    torch.manual_seed(5)
    model = BertModel(ModelConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)).eval()
    tokens, w = explore_attention(model, tok, "the cat sat", layer=1, head=1, pad_to=8)
    assert tokens == ["[CLS]", "the", "cat", "sat", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]
    assert w.shape == (8, 8) and torch.all(w[:, 5:] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(8))
    # it is the model's own attention when nothing is switched off
    ids = tok("the cat sat", return_tensors="pt")["input_ids"]
    ref = model(ids, output_attentions=True).attentions[1][0, 1]
    torch.testing.assert_close(explore_attention(model, tok, "the cat sat", 1, 1)[1], ref)
    _, unmasked = explore_attention(model, tok, "the cat sat", 1, 1, use_padding_mask=False, pad_to=8)
    assert torch.all(unmasked[:, 5:] > 0)
    _, unscaled = explore_attention(model, tok, "the cat sat", 1, 1, scale=False)
    assert not torch.allclose(unscaled, ref)
    with pytest.raises(ValueError, match="2 layers"):
        explore_attention(model, tok, "the cat", layer=2)
    with pytest.raises(ValueError, match="2 heads"):
        explore_attention(model, tok, "the cat", head=-1)
    with pytest.raises(ValueError, match="type a sentence"):
        explore_attention(model, tok, "  ")
