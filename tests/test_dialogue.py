"""Dialogue with an encoder (notebook 10): response selection on DailyDialog with a cross-encoder and a
bi-encoder, Recall@1 of 10 and MRR, the baselines, the command line."""

import json

import numpy as np
import pytest
import torch

from bertbook import cli, dialogue, tasks
from bertbook.config import get_preset


@pytest.fixture(scope="module", autouse=True)
def shared_artifacts(tmp_path_factory):
    """One artifacts folder for the module (the ci tokenizer is trained once) and one torch thread."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("artifacts")
    mp.setenv("BERTBOOK_ARTIFACTS", str(folder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield folder
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def cross():
    return tasks.build_task_model(get_preset("ci"), "dailydialog", "random")


@pytest.fixture(scope="module")
def bi():
    return tasks.build_task_model(get_preset("ci"), "dailydialog", "random", encoder_kind="bi")


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


EXAMPLE = {"context": ["Shall we go out for dinner tonight?", "Good idea. Where to?", "How about the new Thai place?"],
           "candidates": ["Great, I love Thai food.", "The meeting is at ten.", "My car is red."], "label": 0}


# ---------------------------------------------------------------------------------------------------------
# Features: the pair layout, the cut, the two texts of the bi-encoder
# ---------------------------------------------------------------------------------------------------------

def test_pair_has_segments_and_training_pairs_have_labels(cross):
    _, tokenizer, info = cross
    assert info["encoder_kind"] == "cross" and info["negatives"] == dialogue.TRAIN_NEGATIVES
    feats = dialogue.featurize(tokenizer, [EXAMPLE], info)
    assert [f["labels"] for f in feats] == [1] + [0] * dialogue.TRAIN_NEGATIVES
    f = feats[0]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    turns = [_ids(tokenizer, t) for t in EXAMPLE["context"]]
    context = [cls] + turns[0] + [sep] + turns[1] + [sep] + turns[2] + [sep]  # turns joined with [SEP]
    candidate = _ids(tokenizer, EXAMPLE["candidates"][0]) + [sep]
    assert f["input_ids"] == context + candidate
    assert f["token_type_ids"] == [0] * len(context) + [1] * len(candidate)
    wrong = feats[1]["input_ids"]
    assert wrong[len(context):] == _ids(tokenizer, EXAMPLE["candidates"][1]) + [sep]  # the first wrong one


def test_a_long_context_loses_its_oldest_tokens_and_the_candidate_stays_whole(cross):
    _, tokenizer, info = cross
    sep = tokenizer.sep_token_id
    oldest = " ".join(f"word{i}" for i in range(200))
    example = {"context": [oldest, "Good idea. Where to?", "How about the new Thai place?"],
               "candidates": ["Great, I love Thai food.", "No."], "label": 0}
    f = dialogue.featurize(tokenizer, [example], info)[0]
    ids, types = f["input_ids"], f["token_type_ids"]
    assert len(ids) == info["max_length"]
    candidate = _ids(tokenizer, "Great, I love Thai food.") + [sep]
    assert ids[-len(candidate):] == candidate and sum(types) == len(candidate)  # whole, and all of segment 1
    newest = _ids(tokenizer, "Good idea. Where to?") + [sep] + _ids(tokenizer, "How about the new Thai place?") + [sep]
    context = ids[:len(ids) - len(candidate)]
    assert context[-len(newest):] == newest  # the two newest turns are whole
    assert context[-len(newest) - 1] == sep  # the [SEP] after what is left of the oldest turn
    cut = context[1:len(context) - len(newest) - 1]
    assert cut and cut == _ids(tokenizer, oldest)[-len(cut):]  # its end, not its beginning
    # a candidate longer than half the budget keeps its first half; the context fills the rest
    long = " ".join(f"reply{i}" for i in range(200))
    f = dialogue.featurize(tokenizer, [{**example, "candidates": [long, "No."]}], info)[0]
    half = (info["max_length"] - 3) // 2  # of the budget beside [CLS] and two [SEP]
    assert sum(f["token_type_ids"]) == half + 1 and len(f["input_ids"]) == info["max_length"]
    assert f["input_ids"][-half - 1:-1] == _ids(tokenizer, long)[:half]


def test_bi_encoder_features_are_the_context_and_the_true_reply(bi):
    _, tokenizer, info = bi
    assert info["encoder_kind"] == "bi" and info["temperature"] == dialogue.TEMPERATURE
    (f,) = dialogue.featurize(tokenizer, [{**EXAMPLE, "label": 2}], info)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert f["candidate_ids"] == [cls] + _ids(tokenizer, "My car is red.") + [sep]
    assert f["input_ids"][0] == cls and f["input_ids"][-1] == sep and "token_type_ids" not in f


def test_pair_head_reads_the_mean_of_real_tokens_and_scores_pointwise():
    torch.manual_seed(0)
    head = dialogue.PairHead(8).eval()
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = head(hidden, attention_mask=mask, labels=torch.tensor([1, 0]))
    assert out.logits.shape == (2,)
    alone = head(hidden[:1, :3], attention_mask=mask[:1, :3]).logits  # the same pair without padding
    torch.testing.assert_close(out.logits[:1], alone)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out.loss, expected)


def test_options_are_checked(cross):
    encoder = cross[0].encoder
    with pytest.raises(ValueError, match="'cross'.*or 'bi'"):
        dialogue.prepare(encoder, cross[1], get_preset("ci"), encoder_kind="poly")
    with pytest.raises(ValueError, match="dialogue_max_length=512 must be between 8"):
        dialogue.prepare(encoder, cross[1], get_preset("ci", **{"tasks.dialogue_max_length": 512}))
    with pytest.raises(ValueError, match="no head"):
        dialogue.make_head(64, {"encoder_kind": "bi"})


# ---------------------------------------------------------------------------------------------------------
# The bi-encoder: a (B, B) score matrix, the diagonal is the true pair
# ---------------------------------------------------------------------------------------------------------

QUESTIONS = ["When does the train leave?", "Would you like some tea?", "What colour is your car?",
             "How much is this shirt?"]


def _bi_batch(tokenizer, info, replies):
    examples = [{"context": [q], "candidates": [r], "label": 0} for q, r in zip(QUESTIONS, replies)]
    return tasks.pad_features(dialogue.featurize(tokenizer, examples, info), tokenizer.pad_token_id)


def test_bi_encoder_scores_every_context_against_every_reply(bi):
    model, tokenizer, info = bi
    model.eval()
    batch = _bi_batch(tokenizer, info, ["Yes, at six.", "No, thanks.", "It is blue.", "Twenty dollars."])
    with torch.no_grad():
        out = model(**batch)
        context = model.encode(batch["input_ids"], batch["attention_mask"])
        reply = model.encode(batch["candidate_ids"], batch["candidate_attention_mask"])
    assert out.logits.shape == (4, 4) and torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits * info["temperature"], context @ reply.T)  # cosines
    # the target of row i is column i
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.arange(4)))
    # a context paired with itself as reply has cosine 1: the diagonal wins every row
    same = {**batch, "candidate_ids": batch["input_ids"], "candidate_attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        mirrored = model(**same)
    assert mirrored.logits.argmax(dim=1).tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(mirrored.logits.diagonal(), torch.full((4,), 1 / info["temperature"]))


def test_a_repeated_reply_is_not_a_negative_for_its_twin(bi):
    model, tokenizer, info = bi
    model.eval()
    batch = _bi_batch(tokenizer, info, ["Thank you.", "It is blue.", "Thank you."])
    with torch.no_grad():
        out = model(**batch)
    masked = out.logits.clone()
    masked[0, 2] = masked[2, 0] = float("-inf")  # rows 0 and 2 share their true reply
    expected = torch.nn.functional.cross_entropy(masked, torch.arange(3))
    torch.testing.assert_close(out.loss, expected)
    assert not torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.arange(3)))


# ---------------------------------------------------------------------------------------------------------
# Metrics and baselines
# ---------------------------------------------------------------------------------------------------------

def test_recall_and_mrr_by_hand():
    scores = np.array([[0.9, 0.1, 0.2], [0.5, 0.9, 0.1]])
    perfect = dialogue.ranking_scores(scores, [0, 1])
    assert perfect["recall_at_1"] == 1.0 and perfect["mrr"] == 1.0 and perfect["ranks"] == [1, 1]
    third = dialogue.ranking_scores(np.array([[0.9, 0.1, 0.5]]), [1])
    assert third["recall_at_1"] == 0.0 and third["mrr"] == pytest.approx(1 / 3) and third["ranks"] == [3]
    # ties are broken fairly: a two-way tie at the top is first half of the time
    tie = dialogue.ranking_scores(np.array([[0.7, 0.7, 0.1]]), [1])
    assert tie["recall_at_1"] == 0.5 and tie["mrr"] == pytest.approx((1 + 1 / 2) / 2) and tie["ranks"] == [1.5]
    flat = dialogue.ranking_scores(np.zeros((3, 10)), [0, 4, 9])  # no preference at all: exactly chance
    assert flat["recall_at_1"] == pytest.approx(0.1) and flat["mrr"] == pytest.approx(dialogue.chance_mrr(10))
    with pytest.raises(ValueError, match="one label per example"):
        dialogue.ranking_scores(np.zeros((2, 10)), [0])


def test_chance_mrr_is_the_mean_reciprocal_rank_of_a_uniform_position():
    assert dialogue.chance_mrr(1) == 1.0 and dialogue.chance_mrr(2) == pytest.approx(0.75)
    assert dialogue.chance_mrr(10) == pytest.approx(7381 / 25200)  # H_10 / 10 = (7381 / 2520) / 10
    assert round(dialogue.chance_mrr(10), 3) == 0.293


def test_tfidf_prefers_shared_words_and_is_deterministic():
    contexts = [["Do you like Thai food?"], ["Where is the station?"]]
    candidates = [["I love Thai food.", "The station is near."], ["The station is near.", "I love Thai food."]]
    fit = ["I love Thai food.", "The station is near.", "Do you like Thai food?", "Where is the station?"]
    scores = dialogue.tfidf_scores(contexts, candidates, fit)
    assert scores.shape == (2, 2) and scores[0].argmax() == 0 and scores[1].argmax() == 0
    np.testing.assert_array_equal(scores, dialogue.tfidf_scores(contexts, candidates, fit))


def test_baselines_on_the_test_examples():
    P = get_preset("ci")
    chance, tfidf = dialogue.baseline_rows(P)
    assert chance["model"] == "chance" and chance["test_examples"] == P.tasks.eval_examples
    assert chance["recall_at_1"] == pytest.approx(0.1) and chance["mrr"] == pytest.approx(dialogue.chance_mrr())
    assert tfidf["model"] == "tf-idf" and tfidf["test_examples"] == chance["test_examples"]
    assert tfidf["score"] == tfidf["recall_at_1"] and tfidf["recall_at_1"] <= 1 and tfidf["mrr"] <= 1
    assert tfidf["mrr"] > chance["mrr"]  # word overlap beats no preference on 48 test examples


def test_task_data_removes_repeated_dialogues():
    P = get_preset("ci")
    splits = dialogue.task_data(P)
    assert splits.removed == {"validation": 84, "test": 109}
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [96, 48, 48]
    ex = splits["test"][0]
    assert len(ex["candidates"]) == dialogue.CANDIDATES and len(ex["context"]) <= P.tasks.dialogue_context_turns
    assert all(ex["dialogue_id"].startswith("dailydialog-test-") for ex in splits["test"])
    assert dialogue.task_data(P)["train"] == splits["train"]  # seeded


# ---------------------------------------------------------------------------------------------------------
# Whole runs, saving and loading, asking
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_run_save_load_scores_the_same(kind, tmp_path):
    P = get_preset("ci")
    run = tasks.run_task(P, "dailydialog", "random", out=tmp_path / kind, verbose=False, encoder_kind=kind)
    assert run.record["test_examples"] == 48 and 0 <= run.record["recall_at_1"] <= 1
    assert run.record["score"] == run.record["recall_at_1"] and 0 < run.record["mrr"] <= 1
    assert len(run.test["ranks"]) == 48 and all(1 <= r <= 10 for r in run.test["ranks"])
    model, tokenizer, info = tasks.load_task_model(run.path)
    assert info["encoder_kind"] == kind
    assert isinstance(model, dialogue.BiEncoder if kind == "bi" else tasks.TaskModel)
    test = dialogue.task_data(P)["test"]
    again = dialogue.evaluate(model, tokenizer, test, [], info)
    assert again["ranks"] == run.test["ranks"] and again["mrr"] == run.test["mrr"]
    ranking = dialogue.rank(model, tokenizer, info, test[0]["context"], test[0]["candidates"])
    assert sorted(r["text"] for r in ranking) == sorted(test[0]["candidates"])
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    assert tasks.task_folder(P, "dailydialog", "random", encoder_kind=kind).name == f"task-dailydialog-random-{kind}"


def test_predict_reads_turns_and_refuses_what_it_cannot_rank(cross):
    model, tokenizer, info = cross
    out = dialogue.predict(model, tokenizer, info, "Shall we eat out? | Good idea. Where to?",
                           ["Great, I love Thai food.", "The meeting is at ten."])
    assert out["response"] == out["ranking"][0]["text"] and len(out["ranking"]) == 2
    assert dialogue.split_turns(" Hi! | Hello, how are you? ") == ["Hi!", "Hello, how are you?"]
    with pytest.raises(ValueError, match="context is empty"):
        dialogue.predict(model, tokenizer, info, "  ", ["Yes."])
    with pytest.raises(ValueError, match="turn 2 .* is empty"):
        dialogue.predict(model, tokenizer, info, "Hi! |  | Hello.", ["Yes."])
    with pytest.raises(ValueError, match="turn 2 of the context is empty"):
        dialogue.rank(model, tokenizer, info, ["Hi!", " ", "Hello."], ["Yes."])
    with pytest.raises(ValueError, match="No candidates.*list of strings"):
        dialogue.predict(model, tokenizer, info, "Hi!")
    with pytest.raises(ValueError, match="candidate 2 of 2 is empty"):
        dialogue.predict(model, tokenizer, info, "Hi!", ["Yes.", " "])


def test_cli_finetune_and_predict_with_candidates(tmp_path, capsys):
    out = tmp_path / "bi"
    assert cli.main(["finetune", "--task", "dailydialog", "--init", "random", "--preset", "ci", "--out", str(out),
                     "--encoder-kind", "bi", "--train-examples", "32", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["task"] == "dailydialog" and record["train_examples"] == 32
    assert 0 <= record["recall_at_1"] <= 1 and 0 < record["mrr"] <= 1
    assert json.loads((out / "finetune.json").read_text())["encoder_kind"] == "bi"
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("Great, I love Thai food.\nThe meeting is at ten.\nMy car is red.\n")
    assert cli.main(["predict", "--model", str(out), "--candidates", str(candidates),
                     "Shall we eat out? | Good idea. Where to?", "How are you?"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["text"] for line in lines] == ["Shall we eat out? | Good idea. Where to?", "How are you?"]
    assert all(line["response"] in candidates.read_text().splitlines() and len(line["ranking"]) == 3
               for line in lines)
    # a dialogue model needs candidates; an empty line, or an empty turn, is refused with the reason
    assert cli.main(["predict", "--model", str(out), "How are you?"]) == 2
    assert "--candidates FILE" in capsys.readouterr().err
    candidates.write_text("Fine.\n\nGood.\n")
    assert cli.main(["predict", "--model", str(out), "--candidates", str(candidates), "How are you?"]) == 2
    assert "line 2" in capsys.readouterr().err
    candidates.write_text("Fine.\n")
    assert cli.main(["predict", "--model", str(out), "--candidates", str(candidates), "Hi | | there"]) == 2
    assert "turn 2" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(out), "--candidates", str(tmp_path / "absent.txt"), "Hi"]) == 2
    assert "cannot read the candidates" in capsys.readouterr().err


def test_cli_refuses_dialogue_options_elsewhere(tmp_path, capsys):
    out = tmp_path / "semeval"
    assert cli.main(["finetune", "--task", "semeval", "--init", "random", "--preset", "ci", "--out", str(out),
                     "--train-examples", "16", "--quiet"]) == 0
    capsys.readouterr()
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("Fine.\n")
    assert cli.main(["predict", "--model", str(out), "--candidates", str(candidates),
                     "The <e1>cup</e1> held <e2>tea</e2>."]) == 2
    assert "--candidates is for a model fine-tuned with --task dailydialog" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--task", "semeval", "--encoder-kind", "bi", "--preset", "ci"])
    assert "--encoder-kind is for --task dailydialog" in capsys.readouterr().err
