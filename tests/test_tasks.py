"""One body, many heads (notebook 08): the shared loop, saving and loading, the command line end to end for
the four tasks on the ci preset, the panels."""

import json

import pytest
import torch

from bertbook import cli, tasks, widgets
from bertbook.config import get_preset


@pytest.fixture(scope="module")
def shared_artifacts(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("artifacts")
    mp.setenv("BERTBOOK_ARTIFACTS", str(folder))
    yield folder
    mp.undo()


def test_pad_features_pads_each_key_with_its_own_value():
    batch = tasks.pad_features([{"input_ids": [2, 5, 3], "labels": [-100, 1, -100]},
                                {"input_ids": [2, 3], "labels": [-100, -100]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]
    batch = tasks.pad_features([{"input_ids": [2, 3], "markers": [1, 1], "labels": 4}], pad_id=0)
    assert batch["labels"].tolist() == [4] and batch["markers"].shape == (1, 2)
    # a decoder's ids and per-token labels have their own length, independent of the encoder's
    batch = tasks.pad_features([{"input_ids": [2, 5, 3], "decoder_input_ids": [1, 7], "labels": [7, 4]},
                                {"input_ids": [2, 3], "decoder_input_ids": [1, 8, 9, 6], "labels": [8, 9, 6, 4]}])
    assert batch["input_ids"].shape == (2, 3) and batch["decoder_input_ids"].tolist() == [[1, 7, 0, 0], [1, 8, 9, 6]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[7, 4, -100, -100], [8, 9, 6, 4]]


@pytest.mark.parametrize("task", ["wikiann", "wnut17", "semeval", "squad"])
def test_cli_finetune_and_predict_end_to_end(task, shared_artifacts, tmp_path, capsys):
    out = tmp_path / "model"
    assert cli.main(["finetune", "--task", task, "--init", "random", "--preset", "ci", "--out", str(out),
                     "--train-examples", "32", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["task"] == task and record["preset"] == "ci" and record["train_examples"] == 32
    assert 0 <= record["score"] <= (100 if task == "squad" else 1)
    # a second run refuses to overwrite the learner's model
    assert cli.main(["finetune", "--task", task, "--init", "random", "--preset", "ci", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    text = {"semeval": "The <e1>cup</e1> held <e2>tea</e2>.",
            "squad": "The Broncos beat the Panthers 24-10 in Super Bowl 50 in Santa Clara."}.get(
        task, "Angela Merkel visited Paris in 2019.")
    question = ["--question", "Who won Super Bowl 50?"] if task == "squad" else []
    args = ["predict", "--model", str(out), text] + question
    assert cli.main(args) == 0
    answer = json.loads(capsys.readouterr().out.strip())
    if task == "semeval":
        assert answer["label"] in json.loads((out / "finetune.json").read_text())["label_names"]
    elif task == "squad":
        assert answer["text"] == text[answer["start"]:answer["end"]] and answer["windows"] == 1
    else:
        assert all(text[e["start"]:e["end"]] == e["text"] for e in answer["entities"])
    assert cli.main(["predict", "--model", str(out), "   "]) == 2  # empty text: a message, no label
    assert "empty" in capsys.readouterr().err


def test_cli_refuses_bad_task_input(shared_artifacts, tmp_path, capsys):
    out = tmp_path / "semeval"
    assert cli.main(["finetune", "--task", "semeval", "--init", "random", "--preset", "ci", "--out", str(out),
                     "--train-examples", "16", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(out), "no nominals are marked here"]) == 2
    assert "<e1>" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(out), "x", "--question", "why?"]) == 2  # a question is for squad
    assert "squad" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--task", "wikiann", "--pooling", "cls", "--preset", "ci"])
    assert "--pooling is for --task semeval" in capsys.readouterr().err


def test_saved_model_predicts_as_before(shared_artifacts, tmp_path):
    P = get_preset("ci", **{"tasks.ner_train_examples": 16, "tasks.eval_examples": 16})
    run = tasks.run_task(P, "wikiann", "random", out=tmp_path / "m", verbose=False)
    model, tokenizer, info = tasks.load_task_model(run.path)
    batch = tasks.pad_features([{"input_ids": tokenizer("Paris is big")["input_ids"]}])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, run.model(**batch).logits)
    with pytest.raises(FileExistsError, match="overwrite"):
        tasks.save_task_model(run.path, run.model, run.tokenizer, run.info)
    # seconds are rounded to 0.1: a 16-sentence run on a fast machine may record 0.0
    assert run.record["seconds"] >= 0 and run.result.best["epoch"] == 1


def test_panels_show_entities_and_answers(tiny_task_model):
    model, tokenizer, info = tiny_task_model("wikiann")
    panel = widgets.entity_highlighter(model, tokenizer, info)
    assert "<span" in panel.children[-1].value or "no entities found" in panel.children[-1].value
    panel.children[0].value = ""
    assert "empty" in panel.children[-1].value
    model, tokenizer, info = tiny_task_model("squad")
    panel = widgets.answer_finder(model, tokenizer, info, "The cat sat on the mat.", "Where did the cat sit?")
    assert "score" in panel.children[-1].value and "<span" in panel.children[-1].value
    panel.children[1].value = ""
    assert "question is empty" in panel.children[-1].value


HOSTILE = "<script>alert(1)</script>"


def test_panels_choose_a_sentence_rank_replies_and_translate(tiny_task_model):
    model, tokenizer, info = tiny_task_model("scitldr")
    panel = widgets.summary_picker(model, tokenizer, info, f"We study cats. {HOSTILE} Cats sleep a lot.")
    shown = panel.children[-1].value
    assert "Chosen:" in shown and "<script>" not in shown and "&lt;script&gt;" in shown
    panel.children[0].value = "  "
    assert "empty" in panel.children[-1].value
    model, tokenizer, info = tiny_task_model("dailydialog", encoder_kind="bi")
    panel = widgets.reply_ranker(model, tokenizer, info, ["Hi!", "Hello, how are you?"], ["Fine, thanks.", HOSTILE])
    shown = panel.children[-1].value
    assert shown.count("<tr>") == 2 and "<script>" not in shown
    panel.children[1].value = ""
    assert "candidate" in panel.children[-1].value  # no replies to rank: a message, not the old ranking
    model, tokenizer, info = tiny_task_model("tatoeba-zh")
    panel = widgets.translator(model, tokenizer, info, HOSTILE)
    assert "<script>" not in panel.children[-1].value
    panel.children[0].value = ""
    assert "empty" in panel.children[-1].value


@pytest.mark.slow
def test_minilm_learns_entities_quickly(shared_artifacts):
    P = get_preset("ci", **{"tasks.ner_train_examples": 300, "tasks.eval_examples": 100, "tasks.epochs": 2})
    run = tasks.run_task(P, "wikiann", "minilm", verbose=False)
    random = tasks.run_task(P, "wikiann", "random", verbose=False)
    # a pretrained encoder finds entities after 300 sentences; the same head on random weights does not
    assert run.record["f1"] > 0.15 and run.record["f1"] > random.record["f1"] + 0.1, (run.record["f1"],
                                                                                     random.record["f1"])
