"""ELECTRA: replaced-token labels, the loss, sampling, shared embeddings, parity with transformers, the
pretraining loop (checkpoint, exact resume, fine-tuning from the discriminator) and its settings."""

import dataclasses
import json

import pytest
from conftest import ci_preset_in_own_folder
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bertbook import cli, hf, runstate, train
from bertbook import electra as E
from bertbook.checkpoint import CheckpointError
from bertbook.config import ConfigError, ModelConfig, get_preset
from bertbook.model import IGNORE_INDEX, BertForSequenceClassification

CFG = ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch(seed=0, B=3, T=12, padding=True):
    """A masked batch as the pipeline makes it: ids, labels (originals at about 30% of the real tokens)."""
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(5, CFG.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if padding:
        mask[1, T - 4:] = 0
    original = original.masked_fill(mask == 0, CFG.pad_token_id)
    picked = (torch.rand(B, T, generator=g) < 0.3) & (mask == 1)
    picked[0, 1] = True
    labels = torch.where(picked, original, torch.full_like(original, IGNORE_INDEX))
    masked = original.masked_fill(picked, 4)  # 4 plays [MASK]
    return {"input_ids": masked, "attention_mask": mask, "labels": labels}, original


def test_rtd_labels_from_original_and_corrupted_ids():
    original = torch.tensor([[2, 11, 12, 13, 14, 3, 0, 0]])
    corrupted = torch.tensor([[2, 11, 40, 13, 14, 3, 0, 0]])  # position 2 replaced; position 3 sampled = original
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    labels = E.rtd_labels(original, corrupted, mask)
    assert labels.tolist() == [[0, 0, 1, 0, 0, 0, -100, -100]]
    assert E.rtd_labels(original, corrupted).tolist() == [[0, 0, 1, 0, 0, 0, 0, 0]]  # no mask: every token counts
    # padding is skipped by the loss: changing a padded logit changes nothing
    logits = torch.randn(1, 8)
    loss = E.rtd_loss(logits, labels)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits[0, :6], labels[0, :6].float()))
    logits[0, 6:] = 100.0
    assert torch.equal(E.rtd_loss(logits, labels), loss)


def test_a_sampled_token_equal_to_the_original_is_labelled_original():
    """The generator is made (almost) certain of token 7: where the original is 7, the sample equals it and the
    label is 0; at every other masked position the sample differs and the label is 1."""
    torch.manual_seed(0)
    model = E.Electra(CFG).eval()
    with torch.no_grad():
        model.generator.head.bias[7] = 1e4
    inputs, original = batch(1, padding=True)
    picked = inputs["labels"] != IGNORE_INDEX
    original[0, 1] = inputs["labels"][0, 1] = 7  # a masked position whose original is 7
    out = model(**inputs)
    assert (out.corrupted_ids[picked] == 7).all() and torch.equal(out.corrupted_ids[~picked], original[~picked])
    assert out.rtd_labels[0, 1] == 0
    assert (out.rtd_labels[picked & (original != 7)] == 1).all()
    assert (out.rtd_labels[~picked & (inputs["attention_mask"] == 1)] == 0).all()
    assert (out.rtd_labels[inputs["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert torch.equal(out.rtd_labels, E.rtd_labels(original, out.corrupted_ids, inputs["attention_mask"]))


def test_the_loss_is_mlm_plus_lambda_times_rtd():
    torch.manual_seed(0)
    model = E.Electra(CFG)
    assert model.rtd_weight == 50.0 == E.RTD_WEIGHT
    inputs, original = batch(2)
    out = model(**inputs, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.loss, out.mlm_loss + 50.0 * out.rtd_loss)
    picked = inputs["labels"] != IGNORE_INDEX
    torch.testing.assert_close(out.mlm_loss, F.cross_entropy(out.generator_logits, original[picked]))
    real = inputs["attention_mask"] == 1
    torch.testing.assert_close(out.rtd_loss, F.binary_cross_entropy_with_logits(out.logits[real],
                                                                                out.rtd_labels[real].float()))
    assert out.generator_logits.shape == (int(picked.sum()), CFG.vocab_size) and out.logits.shape == (3, 12)
    # the accuracies a plot needs
    said = out.logits[real] > 0
    truth = out.rtd_labels[real] == 1
    torch.testing.assert_close(out.rtd_accuracy, (said == truth).float().mean())
    torch.testing.assert_close(out.replaced_accuracy, (said & truth).sum() / truth.sum())
    torch.testing.assert_close(out.generator_accuracy,
                               (out.generator_logits.argmax(-1) == original[picked]).float().mean())
    # another lambda, the same draws: the same two parts, weighted differently
    model.rtd_weight = 2.0
    again = model(**inputs, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again.loss, out.mlm_loss + 2.0 * out.rtd_loss)


def test_replacements_are_sampled_from_the_softmax_not_the_argmax():
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log().expand(20000, 3)  # (N, V)
    draws = E.sample_replacements(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.015)  # the argmax (token 0) would give [1, 0, 0]
    assert torch.equal(draws, E.sample_replacements(logits, torch.Generator().manual_seed(0)))  # reproducible
    # in the model: random weights, so the samples are far from always the generator's top token
    torch.manual_seed(0)
    model = E.Electra(CFG)
    inputs, _ = batch(3)
    out = model(**inputs)
    picked = inputs["labels"] != IGNORE_INDEX
    assert (out.corrupted_ids[picked] != out.generator_logits.argmax(-1)).any()
    # no gradient flows from the discriminator's loss into the generator through the samples
    out.rtd_loss.backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert model.bert.embeddings.word_embeddings.weight.grad is not None  # the discriminator's own path


def test_generator_and_discriminator_share_their_embeddings():
    torch.manual_seed(0)
    model = E.Electra(CFG)
    g = model.generator
    assert g.config.hidden_size == 8 and g.config.num_attention_heads == 1 and g.config.intermediate_size == 16
    assert g.config.num_hidden_layers == CFG.num_hidden_layers
    assert not any(isinstance(m, torch.nn.Embedding) for m in g.modules())  # the generator owns no table
    assert g.embeddings_project.in_features == 32 and g.embeddings_project.out_features == 8
    tables = [n for n, p in model.named_parameters() if p.shape == (CFG.vocab_size, CFG.hidden_size)]
    assert tables == ["bert.embeddings.word_embeddings.weight"]
    # the generator's MLM loss alone reaches the one token table and position table, not the discriminator
    inputs, _ = batch(4)
    gen = model.generator_mlm(inputs["input_ids"], inputs["attention_mask"], labels=inputs["labels"], masked_only=True)
    gen.loss.backward()
    e = model.bert.embeddings
    assert e.word_embeddings.weight.grad.abs().sum() > 0 and e.position_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for layer in model.bert.layers for p in layer.parameters())
    assert all(p.grad is None for p in model.discriminator_head.parameters())
    # and the converted generator holds the discriminator's embeddings
    hf_g = E.to_hf_generator(E.Electra(dataclasses.replace(CFG, vocab_size=60)))
    assert torch.equal(hf_g.generator_lm_head.weight, hf_g.electra.embeddings.word_embeddings.weight)
    # generator sizes: the laptop model at 1/4 is ELECTRA-Small's generator; heads always divide the width
    laptop = E.generator_config(get_preset("laptop").model, 0.25)
    assert (laptop.hidden_size, laptop.num_attention_heads, laptop.intermediate_size) == (64, 1, 256)
    odd = E.generator_config(dataclasses.replace(CFG, hidden_size=50, num_attention_heads=5), 0.3)
    assert (odd.hidden_size, odd.num_attention_heads) == (15, 1)  # 2 heads would not divide 15
    assert E.generator_config(CFG, 1.0) == CFG
    assert E.Electra(CFG, generator_size=1.0).generator.embeddings_project is None  # same width: no projection


def test_parity_with_transformers_both_ways():
    rows = E.parity_report()
    assert {(r["weights"], r["model"], r["padding"]) for r in rows} == {
        (w, m, p) for w in ("electra", "electra-hf") for m in ("ElectraForPreTraining", "ElectraForMaskedLM")
        for p in (False, True)}
    for r in rows:
        assert hf.worst(r) <= hf.TOLERANCE, r
        assert r["round_trip"], r
    assert "ElectraForMaskedLM" in hf.format_report(rows)


def test_conversion_refuses_what_it_cannot_represent():
    import transformers

    with pytest.raises(ValueError, match="post-LayerNorm.*bertbook.hf.to_hf\\(model.bert\\)"):
        E.to_hf(E.Electra(dataclasses.replace(CFG, layer_norm_position="pre")))
    small = transformers.ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
    with pytest.raises(CheckpointError, match="16-wide embeddings under a 32-wide encoder"):
        E.from_hf(transformers.ElectraForPreTraining(small))
    with pytest.raises(TypeError, match="ElectraForPreTraining"):
        E.from_hf(transformers.ElectraForMaskedLM(small))
    torch.manual_seed(0)
    model = E.Electra(CFG)
    disc, gen = E.to_hf(model), E.to_hf_generator(model)
    with torch.no_grad():
        gen.electra.embeddings.position_embeddings.weight.add_(1.0)
    with pytest.raises(CheckpointError, match="embeddings differ"):
        E.from_hf(disc, gen)
    alone = E.from_hf(disc)  # the discriminator alone converts
    assert type(alone) is E.ElectraDiscriminator and not hasattr(alone, "generator")


@pytest.mark.parametrize("key, value, match", [
    ("pretrain.generator_size", 0.0, r"generator_size must be in \(0, 1\].*1/4 to 1/2"),
    ("pretrain.generator_size", -0.5, r"generator_size must be in \(0, 1\]"),
    ("pretrain.generator_size", 1.5, r"generator_size must be in \(0, 1\]"),
    ("pretrain.rtd_weight", -1.0, r"rtd_weight must be >= 0 \(ELECTRA uses 50\)"),
    ("pretrain.objective", "gpt", r"objective must be 'mlm' .* or 'electra'"),
])
def test_bad_settings_say_what_to_change(key, value, match):
    with pytest.raises(ConfigError, match=match):
        get_preset("ci", **{key: value})


def test_electra_has_no_sentence_objective_and_the_model_checks_its_own_numbers():
    with pytest.raises(ConfigError, match="sentence_objective=none"):
        get_preset("ci", **{"pretrain.objective": "electra", "pretrain.sentence_objective": "nsp"})
    with pytest.raises(ConfigError, match="generator_size"):
        E.Electra(CFG, generator_size=0)
    with pytest.raises(ConfigError, match="rtd_weight"):
        E.Electra(CFG, rtd_weight=-2)
    P = get_preset("ci", **{"pretrain.objective": "electra", "pretrain.generator_size": "0.5"})  # as from --set
    assert P.pretrain.generator_size == 0.5 and P.pretrain.rtd_weight == 50.0


# ---------------------------------------------------------------------------------------------------------
# The pretraining loop with objective=electra
# ---------------------------------------------------------------------------------------------------------

RUN = {"pretrain.objective": "electra", "pretrain.max_steps": 20, "pretrain.eval_every": 10,
       "pretrain.checkpoint_every": 10, "pretrain.eval_batches": 1, "pretrain.precision": "fp32"}


@pytest.fixture(scope="module")
def P(tmp_path_factory):
    """The ci preset with objective=electra, 20 steps, one artifacts folder (tokenizer, token cache)."""
    yield from ci_preset_in_own_folder(tmp_path_factory, RUN)


def test_pretrain_electra_checkpoints_resumes_exactly_and_fine_tunes(P, tmp_path, capsys):
    args = ["--preset", "ci", "--out", str(tmp_path / "full"), "--no-progress"] + [f"--set={k}={v}"
                                                                                   for k, v in RUN.items()]
    assert cli.cli_pretrain(args) == 0  # python -m bertbook pretrain --set pretrain.objective=electra ...
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["finished"] and summary["step"] == 20
    full = train.History.from_dict(runstate.read_run(tmp_path / "full" / "checkpoint")["history"])
    assert [r["step"] for r in full.train] == list(range(1, 21))
    for r in full.train:
        assert r["loss"] == pytest.approx(r["mlm_loss"] + 50.0 * r["rtd_loss"], rel=1e-5)
    ev = full.last_eval("gutenberg")
    assert ev["step"] == 20 and 0.0 <= ev["rtd_accuracy"] <= 1.0 and 0.0 < ev["replaced_fraction"] < 1.0
    assert ev["perplexity"] > 1.0 and ev["tokens"] > 0

    half = train.pretrain(P, tmp_path / "split", stop_after=10, progress=False, verbose=False)
    assert not half.finished and len(half.train) == 10
    resumed = train.pretrain(P, tmp_path / "split", resume=True, progress=False, verbose=False)
    assert resumed.finished
    assert [r["loss"] for r in resumed.train] == [r["loss"] for r in full.train]
    assert [(e["name"], e["loss"], e["rtd_accuracy"]) for e in resumed.eval] == \
        [(e["name"], e["loss"], e["rtd_accuracy"]) for e in full.eval]
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("generator.") for k in a)

    # the checkpoint loads as an Electra, and its discriminator's encoder into the fine-tuning classifier
    model = E.Electra.from_pretrained(tmp_path / "full" / "checkpoint")
    assert model.generator_size == P.pretrain.generator_size and model.rtd_weight == P.pretrain.rtd_weight
    clf = BertForSequenceClassification(model.config, pooling="mean")
    clf.load_encoder(tmp_path / "full" / "checkpoint")
    encoder = clf.bert.state_dict()
    assert all(torch.equal(encoder[k], a["bert." + k]) for k in encoder if not k.startswith("pooler."))
    # an MLM run's settings do not resume an ELECTRA checkpoint
    with pytest.raises(CheckpointError, match="pretrain.objective: checkpoint 'electra', now 'mlm'"):
        train.pretrain(P.override(**{"pretrain.objective": "mlm"}), tmp_path / "split", resume=True,
                       progress=False, verbose=False)


def test_build_model_dispatches_on_the_objective(P):
    model = train.build_model(P, 2000)
    assert isinstance(model, E.Electra) and model.config.hidden_dropout_prob == 0.0  # recipe: no dropout
    assert model.generator.config.hidden_size == round(P.model.hidden_size * P.pretrain.generator_size)
    mlm = train.build_model(P.override(**{"pretrain.objective": "mlm"}), 2000)
    assert type(mlm).__name__ == "BertForPreTraining"


def test_held_out_scores_are_reproducible_and_leave_the_random_state_alone():
    torch.manual_seed(0)
    model = E.Electra(CFG)
    batches = [batch(s)[0] for s in range(2)]
    state = torch.get_rng_state()
    first, second = E.evaluate_electra(model, batches), E.evaluate_electra(model, batches)
    assert first == second and torch.equal(torch.get_rng_state(), state)
    assert set(first) >= {"loss", "accuracy", "perplexity", "tokens", "rtd_loss", "rtd_accuracy",
                          "replaced_accuracy", "replaced_fraction"}
    assert first["tokens"] == sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
