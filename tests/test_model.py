"""The bertbook model: output contract, heads, masked-only loss, saving/loading, input errors."""

import dataclasses
import json

import pytest
import torch

from bertbook.config import ModelConfig
from bertbook.model import (BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
                            BertForTokenClassification, BertModel, attention_modules, count_parameters)
from bertbook.checkpoint import CheckpointError, checkpoint_config

CFG = ModelConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=24)


def batch(B=3, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CFG.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1
    return ids, mask, types


def mlm_labels(ids, mask, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.full_like(ids, -100)
    pick = (torch.rand(ids.shape, generator=g) < 0.3) & (mask == 1)
    pick[0, 0] = True
    labels[pick] = ids[pick]
    return labels


def test_output_contract_attentions_and_hidden_states():
    torch.manual_seed(0)
    model = BertModel(CFG).eval()
    ids, mask, types = batch()
    out = model(ids, mask, types, output_attentions=True, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 10, 32)
    assert out.pooler_output.shape == (3, 32)
    assert len(out.hidden_states) == CFG.num_hidden_layers + 1
    assert len(out.attentions) == CFG.num_hidden_layers
    assert all(a.shape == (3, 4, 10, 10) for a in out.attentions)
    assert torch.all(out.attentions[0][2, :, :, 3:] == 0)  # no attention to padding
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    plain = model(ids, mask, types)  # fused path
    assert plain.attentions is None and plain.hidden_states is None
    torch.testing.assert_close(plain.last_hidden_state, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert model.bert is model


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(1)
    model = BertModel(CFG).eval()
    ids, mask, types = batch()
    full = model(ids, mask, types).last_hidden_state
    short = model(ids[2:, :3], mask[2:, :3], types[2:, :3]).last_hidden_state
    torch.testing.assert_close(full[2:, :3], short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [BertForMaskedLM, BertForPreTraining])
def test_masked_only_logits_give_the_same_loss(cls):
    torch.manual_seed(2)
    model = cls(CFG).eval()
    ids, mask, types = batch()
    labels = mlm_labels(ids, mask)
    full = model(ids, mask, types, labels=labels)
    only = model(ids, mask, types, labels=labels, masked_only=True)
    n = int((labels != -100).sum())
    assert full.logits.shape == (3, 10, CFG.vocab_size)
    assert only.logits.shape == (n, CFG.vocab_size)
    torch.testing.assert_close(only.loss, full.loss)
    torch.testing.assert_close(only.logits, full.logits[labels != -100])
    with pytest.raises(ValueError, match="needs labels"):
        model(ids, masked_only=True)


def test_mlm_head_is_tied_to_the_token_embeddings():
    model = BertForMaskedLM(CFG)
    names = [n for n, _ in model.named_parameters()]
    assert not any("decoder" in n for n in names)
    assert model.bert.pooler is None
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[7] += 1.0
    ids, mask, types = batch()
    before = model(ids).logits[..., 7].clone()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[7, :] = 0.0
    assert not torch.allclose(before, model(ids).logits[..., 7])


def test_pretraining_losses_add_up():
    torch.manual_seed(3)
    model = BertForPreTraining(CFG, num_sentence_labels=3).eval()
    ids, mask, types = batch()
    out = model(ids, mask, types, labels=mlm_labels(ids, mask), sentence_label=torch.tensor([0, 2, 1]))
    assert out.sentence_logits.shape == (3, 3)
    torch.testing.assert_close(out.loss, out.mlm_loss + out.sentence_loss)
    only_sentence = model(ids, mask, types, sentence_label=torch.tensor([0, 2, 1]))
    torch.testing.assert_close(only_sentence.loss, out.sentence_loss)


def test_classification_heads_shapes_and_losses():
    torch.manual_seed(4)
    ids, mask, types = batch()
    seq = BertForSequenceClassification(CFG, num_labels=2).eval()
    out = seq(ids, mask, types, labels=torch.tensor([0, 1, 1]))
    assert out.logits.shape == (3, 2) and out.loss.ndim == 0
    with pytest.raises(ValueError, match="one class per text"):
        seq(ids, mask, labels=torch.zeros(3, 10, dtype=torch.long))
    tok = BertForTokenClassification(CFG, num_labels=5).eval()
    labels = torch.randint(0, 5, (3, 10)).masked_fill(mask == 0, -100)
    out = tok(ids, mask, types, labels=labels)
    assert out.logits.shape == (3, 10, 5)
    manual = torch.nn.functional.cross_entropy(out.logits[mask == 1], labels[mask == 1])
    torch.testing.assert_close(out.loss, manual)


def test_input_errors_say_what_to_do():
    model = BertModel(CFG)
    ids, mask, types = batch()
    with pytest.raises(ValueError, match="outside the vocabulary.*vocab_size=len"):
        model(ids + CFG.vocab_size)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(ids - 10)
    with pytest.raises(ValueError, match="longer than max_position_embeddings=24.*truncat"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="type_vocab_size=2"):
        model(ids, token_type_ids=types + 1)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(ids, mask[:, :5])
    with pytest.raises(ValueError, match="unsqueeze"):
        model(ids[0])
    with pytest.raises(TypeError, match="integer token ids"):
        model(ids.float())
    with pytest.raises(TypeError, match="ModelConfig"):
        BertModel({"hidden_size": 32})


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(5)
    model = BertForSequenceClassification(CFG, num_labels=3, classifier_dropout=0.2).eval()
    model.save_pretrained(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    again = BertForSequenceClassification.from_pretrained(tmp_path / "ck").eval()
    assert again.num_labels == 3 and again.classifier_dropout == 0.2 and again.config == CFG
    ids, mask, types = batch()
    torch.testing.assert_close(again(ids, mask).logits, model(ids, mask).logits, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="load_encoder"):
        BertForTokenClassification.from_pretrained(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        BertModel.from_pretrained(tmp_path / "nothing")


def test_load_encoder_from_another_head(tmp_path, capsys):
    torch.manual_seed(6)
    pre = BertForPreTraining(CFG)
    pre.save_pretrained(tmp_path / "pre")
    clf = BertForSequenceClassification(CFG, num_labels=2)
    assert clf.load_encoder(tmp_path / "pre") == []
    for (n, a), (_, b) in zip(pre.bert.state_dict().items(), clf.bert.state_dict().items()):
        assert torch.equal(a, b), n
    mlm = BertForMaskedLM(CFG)
    mlm.save_pretrained(tmp_path / "mlm")
    missing = BertForSequenceClassification(CFG).load_encoder(tmp_path / "mlm")
    assert missing == ["pooler.dense.weight", "pooler.dense.bias"]
    assert "pooler keeps its fresh initialisation" in capsys.readouterr().out
    enc = BertModel(CFG)
    enc.save_pretrained(tmp_path / "enc")
    assert BertForTokenClassification(CFG, num_labels=3).load_encoder(tmp_path / "enc") == []


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    BertForMaskedLM(CFG).save_pretrained(tmp_path / "small")
    wider = dataclasses.replace(CFG, hidden_size=64, intermediate_size=128)
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 32 vs model 64.*checkpoint_config"):
        BertForSequenceClassification(wider).load_encoder(tmp_path / "small")
    assert checkpoint_config(tmp_path / "small") == CFG
    # a config that lies about the weights: the tensor shapes are checked too
    meta = json.loads((tmp_path / "small" / "config.json").read_text())
    meta["hidden_size"], meta["intermediate_size"] = 64, 128
    (tmp_path / "small" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different shapes"):
        BertForMaskedLM.from_pretrained(tmp_path / "small")


def test_a_damaged_or_missing_file_is_named_with_what_to_do(tmp_path):
    """A truncated weights file, broken JSON or a missing file: the error names the file and says what to do
    (re-run what wrote the folder, or delete it), instead of the library's own message."""
    import re
    import shutil

    from bertbook.checkpoint import MissingFileError, check_files, read_json_file

    BertForMaskedLM(CFG).save_pretrained(tmp_path / "good")

    def damaged(name, content=None):
        folder = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tmp_path / "good", folder)
        if content is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(content((folder / name).read_bytes()))
        return folder

    half = lambda b: b[:len(b) // 2]  # noqa: E731 - what a killed copy or a full disk leaves
    folder = damaged("model.safetensors", half)
    for load in (lambda: BertForMaskedLM.from_pretrained(folder), lambda: BertModel(CFG).load_encoder(folder)):
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(folder))}/model.safetensors is damaged \(not a "
                                                  r"readable safetensors file: SafetensorError.*delete that folder"):
            load()
    folder = damaged("config.json", half)
    for load in (lambda: BertForMaskedLM.from_pretrained(folder), lambda: checkpoint_config(folder)):
        with pytest.raises(CheckpointError, match=r"config.json is damaged \(not valid JSON.*Re-run the command"):
            load()
    folder = damaged("config.json", lambda b: b"[1, 2]")
    with pytest.raises(CheckpointError, match="config.json is damaged .a JSON list where an object"):
        checkpoint_config(folder)
    folder = damaged("model.safetensors")
    with pytest.raises(MissingFileError, match=r"model.safetensors is missing. Re-run"):
        BertForMaskedLM.from_pretrained(folder)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, CheckpointError)
    # the helpers other loaders use: the first bad file is named, with the caller's advice
    with pytest.raises(CheckpointError, match=r"model.safetensors is damaged.*Do this\.$"):
        check_files(damaged("model.safetensors", lambda b: b""), ["config.json", "model.safetensors"], "Do this.")
    check_files(tmp_path / "good", ["config.json", "model.safetensors"])
    assert read_json_file(tmp_path / "good" / "config.json")["hidden_size"] == CFG.hidden_size


def test_attention_modules_project_qkv():
    model = BertForSequenceClassification(CFG)
    mods = attention_modules(model)
    assert len(mods) == CFG.num_hidden_layers
    q, k, v = mods[0].project_qkv(torch.randn(2, 6, 32))
    assert q.shape == k.shape == v.shape == (2, 4, 6, 8)
    with pytest.raises(TypeError, match="from_hf"):
        attention_modules(torch.nn.Linear(2, 2))


def test_parameter_count_matches_the_analytic_count():
    model = BertModel(CFG)
    groups = count_parameters(model)
    assert sum(groups.values()) == sum(p.numel() for p in model.parameters()) == CFG.num_parameters()
    mlm = BertForMaskedLM(CFG)
    g = count_parameters(mlm)
    assert g["task head"] == 32 * 32 + 32 + 2 * 32 + CFG.vocab_size  # transform, LayerNorm, output bias
    assert sum(g.values()) == sum(p.numel() for p in mlm.parameters())


def test_train_mode_uses_dropout_and_backprop_works():
    torch.manual_seed(7)
    model = BertForMaskedLM(dataclasses.replace(CFG, hidden_dropout_prob=0.5)).train()
    ids, mask, types = batch()
    labels = mlm_labels(ids, mask)
    a = model(ids, mask, labels=labels, masked_only=True).loss
    b = model(ids, mask, labels=labels, masked_only=True).loss
    assert a.item() != b.item()
    a.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None
