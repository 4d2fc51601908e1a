"""Parity with transformers, both ways: random weights (bertbook -> HF) and MiniLM's weights (HF -> bertbook)."""

import dataclasses

import pytest
import torch
import transformers

from bertbook import hf
from bertbook import checkpoint as C
from bertbook import model as M
from bertbook.config import ModelConfig
from bertbook import cli

CFG = ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=32)
KINDS = ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
         "BertForTokenClassification"]


def build(kind, cfg=CFG):
    torch.manual_seed(0)
    extra = {"num_labels": 3} if "Classification" in kind else {}
    return getattr(M, kind)(cfg, **extra)


def check_row(row):
    assert row.get("round_trip", True)
    assert hf.worst(row) <= hf.TOLERANCE, row


@pytest.mark.parametrize("kind", KINDS)
def test_random_weights_bertbook_to_transformers(kind):
    ours = build(kind)
    theirs = hf.to_hf(ours)
    assert type(theirs).__name__ == kind and theirs.config._attn_implementation == "eager"
    back = hf.from_hf(theirs)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name
    for padding in (False, True):
        row = hf.compare(ours, theirs, padding)
        check_row(row)
        assert len(row["attentions"]) == CFG.num_hidden_layers
        if kind in ("BertForMaskedLM", "BertForPreTraining"):
            assert row["masked_only_loss"] <= 1e-5


def test_names_map_one_to_one():
    ours = build("BertForPreTraining")
    names = [hf.hf_name(n) for n in ours.state_dict()]
    assert len(set(names)) == len(names)
    assert hf.hf_name("bert.layers.1.ffn.fc1.weight") == "bert.encoder.layer.1.intermediate.dense.weight"
    assert hf.hf_name("layers.0.attention.out.bias") == "encoder.layer.0.attention.output.dense.bias"
    assert hf.hf_name("mlm.bias") == "cls.predictions.bias"


def test_config_round_trip():
    hf_cfg = hf.to_hf_config(CFG, num_labels=4)
    assert hf_cfg.num_labels == 4 and hf_cfg.hidden_size == 32
    assert hf.from_hf_config(hf_cfg) == CFG
    with pytest.raises(ValueError, match="decoder"):
        hf.from_hf_config(transformers.BertConfig(is_decoder=True))


def test_conversion_errors_say_what_is_wrong():
    with pytest.raises(TypeError, match="from_hf converts"):
        hf.from_hf(transformers.BertForQuestionAnswering(hf.to_hf_config(CFG)))
    with pytest.raises(ValueError, match="2-way sentence classifier"):
        hf.to_hf(M.BertForPreTraining(CFG, num_sentence_labels=3))
    untied = transformers.BertForMaskedLM(hf.to_hf_config(CFG, tie_word_embeddings=False))
    with torch.no_grad():
        untied.cls.predictions.decoder.weight.add_(1.0)
    with pytest.raises(C.CheckpointError, match="not tied"):
        hf.from_hf(untied)


@pytest.fixture(scope="module")
def minilm():
    from bertbook.minilm import load_minilm

    return load_minilm("base")[0].eval()


@pytest.mark.parametrize("kind", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification",
                                  "BertForTokenClassification"])
def test_minilm_weights_transformers_to_bertbook(minilm, kind):
    theirs = hf._minilm_hf(kind, num_labels=3)
    encoder = theirs if kind == "BertModel" else theirs.bert
    assert torch.equal(encoder.embeddings.word_embeddings.weight, minilm.embeddings.word_embeddings.weight)
    ours = hf.from_hf(theirs)
    assert ours.config.hidden_size == 384 and ours.config.num_hidden_layers == 6
    for padding in ((False, True) if kind == "BertModel" else (True,)):  # padding is the harder case
        check_row(hf.compare(ours, theirs, padding))


def test_minilm_real_sentence(minilm):
    from bertbook.minilm import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    batch = tok(["The cat sat on the mat.", "A much longer sentence, padded to the same length as the other."],
                padding=True, return_tensors="pt")
    ours = hf.from_hf(minilm).eval()
    with torch.no_grad():
        a = ours(**batch, output_attentions=True)
        b = minilm(**batch, output_attentions=True)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)
    for x, y in zip(a.attentions, b.attentions, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_a_state_dict_of_another_shape_is_refused():
    small = hf.from_hf(hf.to_hf(build("BertForMaskedLM")))
    wide = M.BertForMaskedLM(dataclasses.replace(CFG, hidden_size=64, intermediate_size=128))
    before = wide.bert.embeddings.word_embeddings.weight.clone()
    with pytest.raises(C.CheckpointError, match="different shapes: bert.embeddings.word_embeddings.weight: "
                                                "checkpoint \\(300, 32\\) vs model \\(300, 64\\)"):
        wide.load_state_dict(small.state_dict())
    assert torch.equal(wide.bert.embeddings.word_embeddings.weight, before)  # nothing was loaded
    with pytest.raises(C.CheckpointError, match="bare encoder: load them with model.bert.load_state_dict"):
        M.BertForSequenceClassification(CFG).load_state_dict(M.BertModel(CFG).state_dict())
    M.BertForMaskedLM(CFG).load_state_dict(small.state_dict())  # the same shape loads


def test_cli_parity_prints_a_table_and_passes(capsys):
    assert cli.cli_parity(["--weights", "random", "--models", "BertForMaskedLM"]) == 0
    out = capsys.readouterr().out
    assert "BertForMaskedLM" in out and "within 1e-05" in out and "attentions" in out


def test_cli_parity_fails_above_the_tolerance(capsys):
    assert cli.cli_parity(["--weights", "random", "--models", "BertModel", "--tolerance", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out
