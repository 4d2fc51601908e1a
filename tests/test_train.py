"""Optimizer groups, schedules, the pretraining loop, checkpoints (resume, refusal, divergence), budgets."""

import json
import math

import numpy as np
import pytest
from conftest import ci_preset_in_own_folder
import torch
from safetensors.torch import load_file

from bertbook import evaluate, optim, runstate, train
from bertbook.config import ConfigError, get_preset
from bertbook.checkpoint import CheckpointError
from bertbook.model import BertForPreTraining, BertForSequenceClassification
from bertbook import bench, cli, exercises, experiments

SMALL = {"pretrain.max_steps": 8, "pretrain.batch_size": 4, "pretrain.eval_every": 4, "pretrain.checkpoint_every": 4,
         "pretrain.eval_batches": 1}


@pytest.fixture(scope="module")
def P(tmp_path_factory):
    """The ci preset shrunk to 8 steps, with one artifacts folder (tokenizer, token cache) for the module."""
    yield from ci_preset_in_own_folder(tmp_path_factory, SMALL)


def test_param_groups_skip_biases_and_layernorm():
    model = BertForSequenceClassification(get_preset("ci").model)
    groups = optim.param_groups(model, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() == 2), name  # weight matrices and embeddings only
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and not any(id(p) in decayed for m in norms for p in m.parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    model.classifier.weight.requires_grad_(False)
    assert sum(len(g["params"]) for g in optim.param_groups(model, 0.01)) == len(list(model.parameters())) - 1


def test_schedules():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lin = optim.make_scheduler(opt, warmup_steps=10, total_steps=110, kind="linear")
    factors = [f(s) for s in range(111) for f in lin.lr_lambdas]
    assert factors[0] == 0.0 and factors[5] == pytest.approx(0.5) and factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5) and factors[110] == pytest.approx(0.0)
    assert all(a <= b for a, b in zip(factors[:10], factors[1:11]))  # warmup rises
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # decay falls
    assert optim.lr_factor(0.55, 0.1, "cosine") == pytest.approx(0.5)
    assert optim.lr_factor(0.9, 0.1, "constant") == 1.0
    assert optim.lr_factor(1.0, 0.1, "cosine") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="cosine"):
        optim.make_scheduler(opt, 1, 10, kind="exponential")
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.make_scheduler(opt, 20, 10)


def test_resume_continues_the_same_curve(P, tmp_path):
    full = train.pretrain(P, tmp_path / "full", progress=False, verbose=False)
    assert full.finished and [r["step"] for r in full.train] == list(range(1, 9))
    half = train.pretrain(P, tmp_path / "split", stop_after=4, progress=False, verbose=False)
    assert not half.finished and len(half.train) == 4
    assert runstate.read_run(tmp_path / "split" / "checkpoint")["step"] == 4
    # the optimizer, scheduler and random states load without unpickling any Python object
    state = torch.load(tmp_path / "split" / "checkpoint" / runstate.STATE_FILE, weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "rng"} and state["optimizer"]["state"]
    resumed = train.pretrain(P, tmp_path / "split", resume=True, progress=False, verbose=False)
    assert resumed.finished
    assert [r["loss"] for r in resumed.train] == [r["loss"] for r in full.train]
    assert [(e["name"], e["loss"]) for e in resumed.eval] == [(e["name"], e["loss"]) for e in full.eval]
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint is what the fine-tuning notebook reads
    model = BertForPreTraining.from_pretrained(tmp_path / "full" / "checkpoint")
    assert model.config.num_hidden_layers == P.model.num_hidden_layers
    clf = BertForSequenceClassification(model.config)
    clf.load_encoder(tmp_path / "full" / "checkpoint")
    # a finished run resumed again returns its history without training
    again = train.pretrain(P, tmp_path / "full", resume=True, progress=False, verbose=False)
    assert again.finished and again.train == full.train
    # nothing is overwritten without resume=True
    with pytest.raises(FileExistsError, match="resume"):
        train.pretrain(P, tmp_path / "full", progress=False, verbose=False)


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    """Python's, numpy's and torch's generators are saved as tensors and numbers (``weights_only=True`` loads
    them) and restored exactly, a cached Gaussian included."""
    import random

    import numpy as np

    random.gauss(0, 1), np.random.standard_normal()  # both now hold a cached second Gaussian

    def draws():
        return random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()

    torch.save(runstate.rng_state(), tmp_path / "rng.pt")
    expected = draws()
    runstate.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_a_damaged_checkpoint_is_named_and_never_unpickled(P, tmp_path, capsys):
    """Resuming from a checkpoint with a truncated, garbled, pickled or missing file: the error names the file
    and says to delete the checkpoint and pretrain again; the command line prints it and exits with 2."""
    import io
    import shutil

    train.pretrain(P, tmp_path / "run", stop_after=4, progress=False, verbose=False)
    good = tmp_path / "run" / "checkpoint"
    half = lambda b: b[:len(b) // 2]  # noqa: E731 - what a killed copy or a full disk leaves

    class Payload:  # unpickling this would run code: a weights_only load refuses it
        def __reduce__(self):
            return (print, ("unpickled!",))

    def saved(obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return lambda b: buffer.getvalue()

    cases = [(runstate.STATE_FILE, half, r"not a readable torch file"),
             (runstate.STATE_FILE, saved({"rng": Payload()}), "only unpickling could read"),
             (runstate.STATE_FILE, saved({"rng": [{"numpy": np.random.get_state()}]}), "only unpickling"),  # old style
             (runstate.STATE_FILE, None, "is missing"),
             ("model.safetensors", half, r"not a readable safetensors file: SafetensorError"),
             (runstate.RUN_FILE, lambda b: b[:-40], "not valid JSON")]
    for i, (name, damage, problem) in enumerate(cases):
        run = tmp_path / f"damaged{i}"
        shutil.copytree(good.parent, run)
        if damage is None:
            (run / "checkpoint" / name).unlink()
        else:
            (run / "checkpoint" / name).write_bytes(damage((run / "checkpoint" / name).read_bytes()))
        with pytest.raises(CheckpointError, match=rf"checkpoint/{name} (is damaged \(.*)?{problem}.*Delete the "
                                                  rf"folder .*checkpoint and pretrain again"):
            train.pretrain(P, run, resume=True, progress=False, verbose=False)
    assert "unpickled!" not in capsys.readouterr().out
    # the command line (the last case: a broken pretrain.json) prints one paragraph, no traceback
    args = ["--preset", "ci", "--out", str(run), "--resume", "--no-progress"] + [f"--set={k}={v}"
                                                                                  for k, v in SMALL.items()]
    assert cli.cli_pretrain(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"{runstate.RUN_FILE} is damaged" in err


def test_checkpoint_from_another_config_is_refused(P, tmp_path):
    train.pretrain(P, tmp_path / "run", stop_after=4, progress=False, verbose=False)
    other = P.override(**{"model.hidden_size": 32, "model.num_attention_heads": 2})
    with pytest.raises(CheckpointError, match=r"model.hidden_size: checkpoint 64, now 32.*another folder"):
        train.pretrain(other, tmp_path / "run", resume=True, progress=False, verbose=False)
    with pytest.raises(CheckpointError, match="pretrain.learning_rate"):
        train.pretrain(P.override(**{"pretrain.learning_rate": 0.1}), tmp_path / "run", resume=True,
                       progress=False, verbose=False)


def test_settings_outside_pretraining_do_not_block_a_resume(P, tmp_path):
    """Fine-tuning settings, or a group a later version of the course adds, are not part of what pretraining
    computed: a checkpoint saved without them still resumes."""
    train.pretrain(P, tmp_path / "run", stop_after=4, progress=False, verbose=False)
    state = tmp_path / "run" / runstate.CHECKPOINT / runstate.RUN_FILE
    saved = json.loads(state.read_text())
    saved["preset"]["finetune"]["learning_rate"] = 0.5
    saved["preset"]["a_later_notebook"] = {"rank": 8}
    state.write_text(json.dumps(saved))
    history = train.pretrain(P, tmp_path / "run", resume=True, progress=False, verbose=False)
    assert history.finished
    assert runstate.pretraining_settings(saved["preset"]) == runstate.pretraining_settings(P.to_dict())


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_default(P, tmp_path):
    """A pretraining setting added later (here the objective) is absent from an older checkpoint: it counts as
    the setting's default, so the run resumes; a checkpoint that recorded another value is still refused."""
    train.pretrain(P, tmp_path / "run", stop_after=4, progress=False, verbose=False)
    state = tmp_path / "run" / runstate.CHECKPOINT / runstate.RUN_FILE
    saved = json.loads(state.read_text())
    del saved["preset"]["pretrain"]["objective"]
    state.write_text(json.dumps(saved))
    assert train.pretrain(P, tmp_path / "run", resume=True, stop_after=5, progress=False, verbose=False)
    saved = json.loads(state.read_text())
    saved["preset"]["pretrain"]["rtd_weight"] = 7.0
    state.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="pretrain.rtd_weight: checkpoint 7.0"):
        train.pretrain(P, tmp_path / "run", resume=True, progress=False, verbose=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(P, tmp_path, monkeypatch):
    calls = []
    real = train.compute_loss

    def poisoned(model, batch):
        out = real(model, batch)
        calls.append(1)
        if len(calls) == 6:  # the forward pass of step 6
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(train, "compute_loss", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(train.TrainingDiverged, match=r"loss became nan at step 6.*checkpoint.*\(step 4\)"):
        train.pretrain(P, run, progress=False, verbose=False)
    saved = runstate.read_run(run / "checkpoint")
    assert saved["step"] == 4 and not saved["finished"]
    weights = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    monkeypatch.setattr(train, "compute_loss", real)
    resumed = train.pretrain(P, run, resume=True, progress=False, verbose=False)  # it can go on from there
    assert resumed.finished


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_time_budget(P, tmp_path):
    # progress=True: the bar's last update overshoots the budget and must not break the run
    h = train.pretrain(P.override(**{"pretrain.max_steps": 1}), tmp_path / "t", time_budget_s=1.5,
                       progress=True, verbose=False)
    assert h.finished and len(h.train) > 1  # max_steps is ignored
    assert h.train[-1]["seconds"] >= 1.5
    lrs = [r["lr"] for r in h.train]
    peak = P.pretrain.learning_rate
    assert max(lrs) <= peak and lrs[-1] < 0.5 * peak  # the schedule followed the clock down
    assert runstate.read_run(tmp_path / "t" / "checkpoint")["time_budget_s"] == 1.5


def test_get_pretrained_and_fill_mask(P, monkeypatch, capsys):
    monkeypatch.setenv("BERTBOOK_SET", "pretrain.max_steps=4,pretrain.batch_size=4,pretrain.eval_batches=1")
    ci = get_preset("ci")
    folder = train.get_pretrained(ci)
    assert "notebook 05" in capsys.readouterr().out
    assert (folder / "model.safetensors").is_file() and runstate.read_run(folder)["finished"]
    assert train.get_pretrained(ci) == folder  # found, not retrained
    assert "pretraining now" not in capsys.readouterr().out
    from bertbook.tokenizer import get_tokenizer

    model, tok = BertForPreTraining.from_pretrained(folder), get_tokenizer(ci)
    guesses = evaluate.fill_mask(model, tok, "it is a truth universally [MASK] that a [MASK] man", top_k=3)
    assert len(guesses) == 2 and all(len(g) == 3 for g in guesses)
    assert all(0 <= p <= 1 for g in guesses for _, p in g) and guesses[0][0][1] >= guesses[0][1][1]
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        evaluate.fill_mask(model, tok, "no mask here")


def test_experiments_and_panel_logic(P):
    changes = experiments.experiment_settings(P, learning_rate=3e-3, width=32, heads=2, steps=4, mask_prob=0.3)
    assert "pretrain.max_steps" not in experiments.experiment_settings(P, mask_prob=0.3)
    assert changes["model.intermediate_size"] == 128 and changes["pretrain.max_steps"] == 4
    with pytest.raises(ConfigError, match="divisible"):
        experiments.experiment_settings(P, width=48, heads=5)
    with pytest.raises(ConfigError, match="short"):
        experiments.experiment_settings(P, steps=P.pretrain.max_steps + 1)
    assert experiments.experiment_length(P.override(**{"pretrain.max_steps": 1500})) == {"pretrain.max_steps": 150,
                                                                                   "pretrain.time_budget_s": 0.0}
    long_run = P.override(**{"pretrain.time_budget_s": 600.0})
    assert experiments.experiment_length(long_run) == {"pretrain.time_budget_s": 60.0}
    run = experiments.run_experiment(P, learning_rate=3e-3, width=32, heads=2, steps=4, mask_prob=0.3)
    assert run["label"] == "lr=0.003, mask=0.3, A=2, H=32, steps=4"
    assert len(run["history"].train) == 4 and run["history"].last_eval("gutenberg") is not None
    again = experiments.run_experiment(P, learning_rate=3e-3, width=32, heads=2, steps=4, mask_prob=0.3)
    assert again["history"].train == run["history"].train  # reused, not retrained
    other = experiments.run_experiment(P.override(**{"pretrain.time_budget_s": 600.0}), steps=4,
                                 sentence_objective="sop")  # experiments count steps, even on a budgeted preset
    assert len(other["history"].train) == 4
    assert "sentence_loss" in other["history"].train[0]
    ax = experiments.plot_runs([run, other])
    assert len(ax.get_legend().get_texts()) == 2


def test_compute_estimate():
    gpu = get_preset("gpu")
    est = bench.compute_estimate(gpu)
    assert 105e6 < est["parameters"] < 115e6  # BERT-base with its pretraining heads
    assert est["tokens"] == 20000 * 256 * 128
    assert est["flops_6nd"] == 6 * est["parameters"] * est["tokens"]
    assert 0.5 < est["flops"] / est["flops_6nd"] < 1.0  # masked-only logits save the vocabulary's share
    assert est["flops"] == est["flops_per_token"] * est["tokens"] and est["time_budget_s"] == 0
    cfg = gpu.model
    assert bench.model_flops_per_token(cfg, 128, masked_only=False) > bench.model_flops_per_token(cfg, 128)
    assert bench.compute_estimate(gpu, flops_per_s=1e15)["seconds"] == pytest.approx(est["flops"] / 1e15)


def test_cli_pretrain(P, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--preset", "ci", "--out", str(out), "--no-progress"] + [f"--set={k}={v}" for k, v in SMALL.items()]
    assert cli.cli_pretrain(args + ["--set=pretrain.max_steps=4", "--tensorboard"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard logs on request
    assert summary["step"] == 4 and summary["finished"] and math.isfinite(summary["gutenberg_loss"])
    assert 0 <= summary["wikitext-2_accuracy"] <= 1
    assert cli.cli_pretrain(args + ["--set=pretrain.max_steps=4"]) == 2  # exists: refused
    assert "--resume" in capsys.readouterr().err
    assert cli.cli_pretrain(args + ["--set=pretrain.max_steps=4", "--resume"]) == 0
    assert cli.cli_pretrain(args + ["--set", "nonsense"]) == 2
    assert "GROUP.FIELD=VALUE" in capsys.readouterr().err


def test_exercise_checkers(capsys):
    assert exercises.check_warmup_linear(exercises.solutions.warmup_linear)
    assert exercises.check_no_decay(exercises.solutions.no_decay_names)
    assert not exercises.check_warmup_linear(lambda s, w, t: s / w if s < w else 1.0, raise_on_error=False)
    assert "at step" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="should not decay"):
        exercises.check_no_decay(lambda model: {n for n, _ in model.named_parameters() if n.endswith("bias")})
    with pytest.raises(AssertionError, match="lose their decay"):
        exercises.check_no_decay(lambda model: {n for n, _ in model.named_parameters()})


def test_unigram_baseline_is_a_context_free_model_scored_like_evaluate():
    train_ids = [5] * 6 + [7] * 3 + [9]  # counts 6, 3, 1 of 10; vocabulary of 12, add-one smoothing
    labels = torch.full((2, 4), -100)
    labels[0, 1], labels[0, 3], labels[1, 0], labels[1, 2] = 5, 7, 9, 5
    batches = [{"input_ids": torch.zeros(2, 4, dtype=torch.long), "token_type_ids": torch.zeros(2, 4, dtype=torch.long),
                "labels": labels}]
    got = evaluate.unigram_baseline(train_ids, batches, vocab_size=12)
    p = {5: 7 / 22, 7: 4 / 22, 9: 2 / 22}
    want = -(2 * math.log(p[5]) + math.log(p[7]) + math.log(p[9])) / 4
    assert got["tokens"] == 4 and got["accuracy"] == 0.5 and got["loss"] == pytest.approx(want)

    class ContextFree(torch.nn.Module):  # the same predictor as a model: `evaluate` must agree
        def forward(self, input_ids, token_type_ids, labels, masked_only):
            log_p = torch.log((torch.bincount(torch.tensor(train_ids), minlength=12).float() + 1) / 22)
            return type("Out", (), {"logits": log_p.expand(int((labels != -100).sum()), 12)})

    ev = evaluate.evaluate_mlm(ContextFree(), batches)
    assert ev["loss"] == pytest.approx(got["loss"], rel=1e-6) and ev["accuracy"] == got["accuracy"]


def test_train_step_equals_the_loop_written_out():
    """train_step is forward, loss / A, backward over micro-batches, clip, step: the same numbers by hand."""
    P = get_preset("ci")
    torch.manual_seed(0)
    a = train.build_model(P, P.model.vocab_size)
    b = train.build_model(P, P.model.vocab_size)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()  # no dropout: the two must see the same function
    g = torch.Generator().manual_seed(1)
    micro = []
    for _ in range(2):
        ids = torch.randint(5, P.model.vocab_size, (3, 16), generator=g)
        labels = torch.full_like(ids, -100)
        labels[:, ::4] = ids[:, ::4]
        micro.append({"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "labels": labels})
    opt_a = optim.make_optimizer(a, 1e-3, 0.01)
    opt_b = optim.make_optimizer(b, 1e-3, 0.01)
    stats = train.train_step(a, micro, opt_a, max_grad_norm=0.5)
    losses = []
    for batch in micro:
        out = b(**batch, masked_only=True)
        (out.loss / len(micro)).backward()
        losses.append(out.loss.detach())
    norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
    opt_b.step()
    torch.testing.assert_close(stats[0], torch.stack(losses).mean())
    torch.testing.assert_close(stats[3], norm)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, msg=name)
    assert all(p.grad is None for p in a.parameters())  # zeroed for the next step


def test_init_from_continues_from_a_checkpoint_with_a_fresh_schedule(P, tmp_path):
    first = train.pretrain(P, tmp_path / "books", progress=False, verbose=False)
    ckpt = tmp_path / "books" / "checkpoint"
    then = train.pretrain(P, tmp_path / "then", progress=False, verbose=False, init_from=ckpt)
    assert then.finished and runstate.read_run(tmp_path / "then" / "checkpoint")["init_from"] == str(ckpt)
    assert then.train[0]["lr"] == first.train[0]["lr"]  # a fresh schedule
    # it starts from the checkpoint's weights, not from a fresh initialisation
    run = train.start_run(P, tmp_path / "fresh", init_from=ckpt, verbose=False, progress=False)
    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in run.model.state_dict().items())
    assert run.tokenizer_hash == runstate.read_run(ckpt)["tokenizer"]
    resumed = train.pretrain(P, tmp_path / "then", resume=True, progress=False, verbose=False, init_from=ckpt)
    assert resumed.finished


def test_train_step_without_clipping_when_max_grad_norm_is_zero():
    """max_grad_norm=0 turns clipping off (torch's clip_grad_norm_(params, 0) would zero every gradient): the
    step equals a plain backward and step, and the unclipped norm is still returned."""
    P = get_preset("ci")
    torch.manual_seed(0)
    a = train.build_model(P, P.model.vocab_size).eval()
    b = train.build_model(P, P.model.vocab_size).eval()
    b.load_state_dict(a.state_dict())
    ids = torch.randint(5, P.model.vocab_size, (3, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "labels": labels}
    opt_a, opt_b = optim.make_optimizer(a, 1e-3, 0.01), optim.make_optimizer(b, 1e-3, 0.01)
    before = [p.detach().clone() for p in a.parameters()]
    stats = train.train_step(a, [batch], opt_a, max_grad_norm=0.0)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), before))  # the step moved the weights
    b(**batch, masked_only=True).loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in b.parameters() if p.grad is not None]))
    opt_b.step()
    torch.testing.assert_close(stats[3], norm)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, msg=name)
