"""LoRA, adapters and prefix tuning (bertbook.efficient): against peft, merge/unmerge, counts, saving."""

import dataclasses
import json

import pytest
import torch

from bertbook import efficient as E, peft_check as PC, results as R
from bertbook.config import get_preset
from bertbook.model import BertForSequenceClassification


def _model(position: str = "post", seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(get_preset("ci").model, layer_norm_position=position)
    return BertForSequenceClassification(cfg, num_labels=2).eval()


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 2000, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _fill_lora_b(model, std=0.05):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in E.lora_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * std)


@pytest.mark.parametrize("targets", [("query", "value"), "all"])
def test_lora_equals_peft_merged_and_unmerged(targets):
    model = _model()
    E.apply_method(model, E.Method("lora", r=4, alpha=8.0, targets=targets))
    _fill_lora_b(model)  # B = 0 would make every check trivially true
    report = PC.compare_with_peft(model, _batch())
    assert report["trainable_ours"] == report["trainable_peft"]
    assert report["unmerged"] < 1e-5 and report["merged_ours"] < 1e-5 and report["merged_both"] < 1e-5


def test_lora_starts_from_the_base_and_merge_unmerge_round_trips():
    base = _model()
    batch = _batch()
    before = base(**batch).logits
    w0 = base.bert.layers[0].attention.query.weight.detach().clone()
    E.apply_method(base, E.Method("lora", r=4, alpha=8.0))
    torch.testing.assert_close(base(**batch).logits, before)  # B = 0: the same function
    _fill_lora_b(base)
    unmerged = base(**batch).logits
    assert (unmerged - before).abs().max() > 1e-4, "the filled update should change the output"
    E.merge_lora(base)
    lora = base.bert.layers[0].attention.query
    torch.testing.assert_close(lora.base.weight, w0 + lora.delta_weight())
    torch.testing.assert_close(base(**batch).logits, unmerged, atol=1e-5, rtol=1e-5)
    E.unmerge_lora(base)
    torch.testing.assert_close(lora.base.weight, w0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(base(**batch).logits, unmerged, atol=1e-5, rtol=1e-5)


def test_trainable_counts_follow_the_formulas():
    cfg = get_preset("ci").model  # H = 64, L = 2, FFN 128
    H, L, I = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    head = H * 2 + 2
    layer_norms = 2 * H * (2 * L + 2)  # embeddings, two per layer, the final one (pre-LayerNorm)
    counts = {}
    for method in [E.Method("full"), E.Method("head"), E.Method("lora", r=4), E.Method("lora", r=4, targets="all"),
                   E.Method("adapter", bottleneck=8), E.Method("prefix", prefix_length=5)]:
        model = _model("pre")
        total = sum(p.numel() for p in model.parameters())
        E.apply_method(model, method)
        n = E.count_parameters(model)
        counts[method.label] = n["trainable"]
        trained_old = {"full": total, "head": head, "adapter": head + layer_norms}.get(method.kind, head)
        assert n["total"] == total + n["trainable"] - trained_old  # new weights add to the total
    assert counts["full fine-tuning"] == model.config.num_parameters() + head
    assert counts["head only"] == head
    assert counts["LoRA r=4 (query,value)"] == L * 2 * 4 * (H + H) + head
    all_targets = 4 * 4 * (H + H) + 4 * (H + I) + 4 * (I + H)
    assert counts["LoRA r=4 (query,key,value,out,fc1,fc2)"] == L * all_targets + head
    assert counts["adapters m=8"] == L * 2 * (H * 8 + 8 + 8 * H + H) + layer_norms + head
    assert counts["prefix P=5"] == L * 2 * 5 * H + head


@pytest.mark.parametrize("kind", ["adapter", "lora"])
def test_zero_started_methods_compute_the_base_function(kind):
    model = _model("pre")
    batch = _batch()
    before = model(**batch).logits
    E.apply_method(model, E.Method(kind))
    torch.testing.assert_close(model(**batch).logits, before)


def test_prefix_changes_the_function_and_keeps_the_attention_contract():
    model = _model("pre")
    batch = _batch()
    before = model(**batch).logits
    E.apply_method(model, E.Method("prefix", prefix_length=3))
    out = model(**batch, output_attentions=True)
    assert (out.logits - before).abs().max() > 0  # the prefix takes a share of every softmax
    assert out.attentions[0].shape == (3, 2, 12, 12)  # (B, H, T, T): the real tokens only
    share = out.attentions[0].sum(-1)  # the rest went to the prefix
    assert bool((share < 1).all()) and bool((share > 0).all())
    padded = out.attentions[0][1, :, :, 7:]
    assert float(padded.detach().abs().max()) == 0.0  # padding is still never attended to
    fused = model(**batch).logits  # the fused kernel path equals the spelled-out one
    torch.testing.assert_close(fused, out.logits, atol=1e-5, rtol=1e-5)


def test_only_the_method_and_the_head_receive_gradients():
    model = _model("pre")
    E.apply_method(model, E.Method("lora", r=2))
    batch = {**_batch(), "labels": torch.tensor([0, 1, 1])}
    model.train()
    model(**batch).loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got and all(".lora_" in n or n.startswith("classifier.") for n in got)


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="positive integer"):
        E.Method("lora", r=0)
    with pytest.raises(ValueError, match="unknown LoRA target dense.*query, key, value"):
        E.Method("lora", targets=("dense",))
    with pytest.raises(ValueError, match="choose one of full, head, lora"):
        E.Method("bitfit")
    with pytest.raises(ValueError, match="larger than the layer allows"):
        E.apply_method(_model(), E.Method("lora", r=100))
    with pytest.raises(TypeError, match="from_hf"):
        E.add_lora(torch.nn.Linear(3, 3))


@pytest.mark.slow
def test_save_holds_only_trained_tensors_and_loads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTBOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    P = R.comparison_preset(get_preset("ci", **{"efficient.train_examples": 32, "efficient.test_examples": 32,
                                                 "finetune.val_examples": 16}))
    method = E.Method("lora", r=2, alpha=4.0)
    out = tmp_path / "lora-model"
    rec = R.run_efficient(P, "sst2", "pretrained", method, out=out, verbose=False)
    model = rec["_run"]["model"]
    saved = E.load_efficient(out)[0]
    from safetensors.torch import load_file

    state = load_file(str(out / E.WEIGHTS_NAME))
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(t.numel() for t in state.values()) == rec["trainable"] < rec["total"] / 10
    batch = _batch()
    batch["input_ids"] = batch["input_ids"] % model.config.vocab_size
    torch.testing.assert_close(saved(**batch).logits, model.eval()(**batch).logits)
    settings = json.loads((out / E.SETTINGS_NAME).read_text())
    assert settings["base"]["init"] == "checkpoint" and len(settings["base"]["sha256"]) == 64
    with pytest.raises(FileExistsError, match="--overwrite"):
        E.save_efficient(out, model, rec["_run"]["info"], method)
    # the base changes: refused, with what to do
    ckpt = settings["base"]["checkpoint"]
    with open(f"{ckpt}/model.safetensors", "ab") as f:
        f.write(b" ")
    with pytest.raises(ValueError, match="has changed"):
        E.load_efficient(out)
    import shutil

    shutil.rmtree(ckpt)
    with pytest.raises(FileNotFoundError, match="missing"):
        E.load_efficient(out)


@pytest.mark.slow
def test_cli_finetune_peft_end_to_end(artifacts, tmp_path, capsys):
    from bertbook import cli, tracking

    out = tmp_path / "sst2-lora"
    args = ["--task", "sst2", "--init", "pretrained", "--preset", "ci", "--train-examples", "48", "--quiet",
            "--peft", "lora", "--lora-r", "2", "--lora-alpha", "4", "--lora-targets", "query,value,fc1"]
    assert cli.cli_finetune(args + ["--out", str(out), "--tracker", "tensorboard"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["method"] == "lora" and 0 < record["trainable"] < record["total"] / 10
    assert sorted(p.name for p in out.iterdir()) == [E.SETTINGS_NAME, E.WEIGHTS_NAME]  # no copy of the base
    scalars = tracking.read_scalars(tmp_path / "logs" / "sst2-lora")
    assert len(scalars["train/loss"]) == 3 and "val/accuracy" in scalars  # 48 examples, batch 16: 3 steps
    assert cli.cli_predict(["--model", str(out), "a wonderful, moving film", "dull and far too long"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("negative", "positive") for line in lines)
    assert cli.cli_finetune(args + ["--out", str(out)]) == 2  # never overwritten silently
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--peft", "lora", "--lora-r", "0"], "LoRA rank must be a positive integer"),
    (["--peft", "lora", "--lora-targets", "query,dense"], "unknown LoRA target dense"),
    (["--peft", "lora", "--init", "no/such/folder"], "not 'random', 'pretrained', 'reference', 'minilm'"),
])
def test_cli_finetune_peft_refuses_bad_input(artifacts, tmp_path, capsys, extra, message):
    from bertbook import cli

    args = ["--task", "sst2", "--preset", "ci", "--quiet", "--out", str(tmp_path / "m"), *extra]
    assert cli.cli_finetune(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--peft", "lora", "--init", "random"], "pretrained base"),
    (["--peft", "adapter", "--lora-r", "4"], "go with --peft lora"),
])
def test_cli_finetune_peft_usage_errors(artifacts, capsys, extra, message):
    from bertbook import cli

    with pytest.raises(SystemExit) as exc:
        cli.cli_finetune(["--task", "sst2", "--preset", "ci", *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("r, targets", [(1, "query"), (4, ("query", "value")), (3, "all")])
def test_lora_parameters_from_shapes_equal_the_built_model(r, targets):
    model = _model("pre")
    before = sum(p.numel() for p in model.parameters())
    E.add_lora(model, r=r, targets=targets)
    assert E.lora_parameters(model.config, r, targets) == sum(p.numel() for p in model.parameters()) - before


def test_exercise_checkers_accept_the_solution_and_explain_mistakes():
    from bertbook.exercises import nb09_efficient as X

    assert X.check_merge_lora(X.solutions.merge_lora)
    with pytest.raises(AssertionError, match="not scaled"):
        X.check_merge_lora(lambda W, A, B, alpha, r: W + B @ A)
    with pytest.raises(AssertionError, match="upside down"):
        X.check_merge_lora(lambda W, A, B, alpha, r: W + (r / alpha) * B @ A)
    assert X.check_lora_count(X.solutions.lora_count)
    with pytest.raises(AssertionError, match="freezes"):
        X.check_lora_count(lambda d_in, d_out, r, layers, targets: layers * targets * d_in * d_out)
    cfg = get_preset("ci").model  # the solution agrees with the package's count from the shapes
    H = cfg.hidden_size
    assert X.solutions.lora_count(H, H, 4, cfg.num_hidden_layers, 2) == E.lora_parameters(cfg, 4, ("query", "value"))


def test_peft_check_refuses_a_model_transformers_cannot_hold():
    model = _model("pre")
    E.apply_method(model, E.Method("lora", r=2))
    with pytest.raises(ValueError, match="post-LayerNorm"):
        PC.compare_with_peft(model, _batch())
