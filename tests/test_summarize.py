"""Summaries with an encoder (notebook 10): BertSum-style features, the sentence head, ROUGE against several
references as SciTLDR scores it, the baselines, and a whole run on the ci preset through the command line."""

import json

import numpy as np
import pytest
import torch

from conftest import ci_preset_in_own_folder

from bertbook import cli, summarize, tasks
from bertbook.model import ModelOutput


@pytest.fixture(scope="module")
def P(tmp_path_factory):
    yield from ci_preset_in_own_folder(tmp_path_factory, {})


@pytest.fixture(scope="module")
def tiny(P):
    return tasks.build_task_model(P, "scitldr", "random")


def lengths(tokenizer, sentences):
    return [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]


def test_features_put_a_cls_before_every_sentence_with_alternating_segments(tiny):
    _, tokenizer, info = tiny
    sentences = ["The house was old.", "It was dark.", "The door was open and the wind came in.", "We left."]
    (f,) = summarize.featurize(tokenizer, [{"sentences": sentences}], info)
    ids, types, positions = f["input_ids"], f["token_type_ids"], f["sentence_positions"]
    assert len(positions) == len(sentences) and f["dropped"] == 0
    assert [ids[p] for p in positions] == [tokenizer.cls_token_id] * len(sentences)
    assert ids.count(tokenizer.cls_token_id) == len(sentences)  # no [CLS] anywhere else
    assert all(ids[p - 1] == tokenizer.sep_token_id for p in positions[1:]) and ids[-1] == tokenizer.sep_token_id
    ends = positions[1:] + [len(ids)]
    for i, (start, end) in enumerate(zip(positions, ends)):
        assert types[start:end] == [i % 2] * (end - start)  # interval segments: 0, 1, 0, 1 by sentence
    assert "labels" not in f  # a typed abstract has no oracle


def test_sentences_past_the_budget_are_dropped_and_counted(tiny):
    _, tokenizer, info = tiny
    sentences = ["The house was old.", "It was dark.", "The door was open and the wind came in.", "We left."]
    n = lengths(tokenizer, sentences)
    budget = (n[0] + 2) + (n[1] + 2) + 1  # room for two sentences; the third does not fit, nor after it the fourth
    record = {"sentences": sentences, "oracle": 2, "rouge_scores": [0.1, 0.3, 0.9, 0.2]}
    (f,) = summarize.featurize(tokenizer, [record], {**info, "max_length": budget})
    assert len(f["input_ids"]) <= budget and len(f["sentence_positions"]) == 2 and f["dropped"] == 2
    assert f["oracle_dropped"] and f["labels"] == 1  # the best sentence the model can still read
    (g,) = summarize.featurize(tokenizer, [{**record, "oracle": 1}], {**info, "max_length": budget})
    assert not g["oracle_dropped"] and g["labels"] == 1
    # a first sentence longer than the whole budget is cut, so that every abstract keeps one sentence
    (h,) = summarize.featurize(tokenizer, [record], {**info, "max_length": 6})
    assert len(h["input_ids"]) == 6 and h["sentence_positions"] == [0] and h["dropped"] == 3


def test_head_loss_is_finite_and_padded_sentences_are_masked():
    torch.manual_seed(0)
    head = summarize.SentenceHead(8).eval()
    hidden = torch.randn(2, 7, 8)  # (B, T, D)
    positions = torch.tensor([[0, 3, 5], [0, 4, 0]])  # the second abstract has two sentences, one padding entry
    out = head(hidden, sentence_positions=positions, labels=torch.tensor([2, 1]))
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 3)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits[1, 2] == summarize.MASKED and torch.softmax(out.logits, -1)[1, 2] < 1e-6
    changed = hidden.clone()
    changed[:, 1] += 1.0  # a word, not a [CLS]: no score moves
    torch.testing.assert_close(head(changed, sentence_positions=positions).logits, out.logits)
    changed[0, 3] += 1.0  # the [CLS] of the first abstract's second sentence
    moved = head(changed, sentence_positions=positions).logits != out.logits
    assert moved.tolist() == [[False, True, False], [False, False, False]]
    with pytest.raises(ValueError, match="sentence_positions"):
        head(hidden)


def test_head_on_a_padded_batch_of_the_encoder(tiny):
    model, tokenizer, info = tiny
    records = [{"sentences": ["One.", "Two.", "Three."], "oracle": 2, "rouge_scores": [0, 0, 1]},
               {"sentences": ["Only one here."], "oracle": 0, "rouge_scores": [1]}]
    batch = tasks.pad_features(summarize.featurize(tokenizer, records, info), tokenizer.pad_token_id)
    assert batch["sentence_positions"].shape == (2, 3) and batch["labels"].tolist() == [2, 0]
    out = model(**batch)
    assert torch.isfinite(out.loss) and (out.logits[1, 1:] == summarize.MASKED).all()
    assert (out.logits[0] > summarize.MASKED).all()


def test_the_head_reads_transformers_bert_too(P):
    model, tokenizer, info = tasks.build_task_model(P, "scitldr", "minilm")  # MiniLM: transformers' BertModel
    records = [{"sentences": ["We propose a method.", "It works."], "oracle": 1, "rouge_scores": [0.2, 0.5]}]
    out = model(**tasks.pad_features(summarize.featurize(tokenizer, records, info), tokenizer.pad_token_id))
    out.loss.backward()
    assert out.logits.shape == (1, 2) and torch.isfinite(out.loss)
    assert model.head.scorer.weight.grad.abs().sum() > 0
    assert model.encoder.embeddings.token_type_embeddings.weight.grad[1].abs().sum() > 0  # segment 1 was read


def test_rouge_of_a_reference_is_one_and_several_references_combine_as_scitldr():
    same = summarize.rouge("Cats sleep on warm mats.", ["Cats sleep on warm mats."])
    assert same["max"] == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}) and same["mean"] == same["max"]
    assert summarize.rouge("cats sleep", ["dogs bark", "Cats sleep."])["max"]["rouge1"] == pytest.approx(1.0)
    # reference A has every word (ROUGE-1 1.0) in reverse order (no bigram); B shares 3 words and 2 bigrams
    s = summarize.rouge("cats sleep on warm mats", ["mats warm on sleep cats", "cats sleep on cold floors"])
    # "max": all three scores against the reference with the best ROUGE-1, not the best of each score
    assert s["max"]["rouge1"] == pytest.approx(1.0) and s["max"]["rouge2"] == pytest.approx(0.0)
    assert s["max"]["rougeL"] == pytest.approx(0.2)  # the longest common subsequence is one word
    assert s["mean"]["rouge1"] == pytest.approx((1.0 + 0.6) / 2) and s["mean"]["rouge2"] == pytest.approx(0.25)
    scores = summarize.summary_scores(["Cats sleep.", "dogs"], [{"targets": ["Cats sleep."]}, {"targets": ["cats"]}])
    assert scores["rouge1"] == pytest.approx(50.0)  # percent, averaged over the abstracts
    with pytest.raises(ValueError, match="one per abstract"):
        summarize.summary_scores(["a"], [])


def test_tfidf_centroid_picks_the_most_central_sentence():
    record = {"sentences": ["The weather is nice today.", "Cats eat fish.", "Cats and dogs eat fish and meat.",
                            "Dogs eat meat."]}
    assert summarize.tfidf_centroid([record], [record]) == [2]
    assert summarize.first_sentence(record) == 0


def test_baselines_are_deterministic_and_the_oracle_bounds_them(P):
    splits = summarize.task_data(P)
    assert {k: len(v) for k, v in splits.items()} == {"train": 64, "validation": 48, "test": 48}
    rows = summarize.baseline_rows(P, splits)
    again = summarize.baseline_rows(P)
    assert [{**r, "seconds": 0} for r in rows] == [{**r, "seconds": 0} for r in again]
    by = {r["name"]: r for r in rows}
    assert set(by) == {"first sentence", "tf-idf centroid", "oracle"} and all(r["examples"] == 48 for r in rows)
    assert by["oracle"]["rouge1"] >= by["first sentence"]["rouge1"]
    assert by["oracle"]["rouge1"] >= by["tf-idf centroid"]["rouge1"]
    assert all(0 < r[t] < 100 for r in rows for t in summarize.ROUGE_TYPES)


def test_split_sentences_and_predict_keep_text_as_data(tiny):
    model, tokenizer, info = tiny
    assert summarize.split_sentences("We use BERT, e.g. the base model. It works!  Is it fast? Yes.") == \
        ["We use BERT, e.g. the base model.", "It works!", "Is it fast?", "Yes."]
    assert summarize.split_sentences("no full stop at all") == ["no full stop at all"]
    hostile = "<script>alert(1)</script>. Second sentence."
    out = summarize.predict(model, tokenizer, info, hostile)
    assert [s["text"] for s in out["sentences"]] == ["<script>alert(1)</script>.", "Second sentence."]
    assert out["summary"] == out["sentences"][out["chosen"]]["text"] and out["dropped"] == 0
    assert sum(s["probability"] for s in out["sentences"]) == pytest.approx(1.0, abs=1e-5)
    for empty in ("", "   \n "):
        with pytest.raises(ValueError, match="empty: paste an abstract"):
            summarize.predict(model, tokenizer, info, empty)


def test_prepare_refuses_a_length_past_the_position_table(P, tiny):
    model, tokenizer, _ = tiny
    with pytest.raises(ValueError, match="at most 128"):
        summarize.prepare(model.encoder, tokenizer, P.override(**{"tasks.summary_max_length": 512}))
    with pytest.raises(ValueError, match="at least 3"):
        summarize.prepare(model.encoder, tokenizer, P.override(**{"tasks.summary_max_length": 2}))
    assert summarize.prepare(model.encoder, tokenizer, P) == {"max_length": 128}


def test_run_trains_saves_and_reloads_with_the_same_scores(P, tmp_path):
    run = tasks.run_task(P, "scitldr", "random", out=tmp_path / "m", verbose=False)
    assert run.record["train_examples"] == 64 and run.record["test_examples"] == 48
    assert run.record["score"] == run.record["rouge1"] and 0 < run.record["rouge1"] < 100
    assert run.record["truncated"] >= run.record["oracle_dropped"] >= 0  # ci reads 128 tokens of each abstract
    model, tokenizer, info = tasks.load_task_model(run.path)
    test = summarize.task_data(P)["test"]
    again = summarize.evaluate(model, tokenizer, test, summarize.featurize(tokenizer, test, info), info)
    assert again["chosen"] == run.test["chosen"]
    assert {t: again[t] for t in summarize.ROUGE_TYPES} == {t: run.test[t] for t in summarize.ROUGE_TYPES}


def test_cli_finetune_and_predict(P, tmp_path, capsys):
    out = tmp_path / "model"
    assert cli.main(["finetune", "--task", "scitldr", "--init", "random", "--preset", "ci", "--out", str(out),
                     "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["task"] == "scitldr" and 0 < record["rouge1"] < 100 and record["score"] == record["rouge1"]
    abstracts = tmp_path / "abstracts.txt"
    abstracts.write_text("We study cats. Cats sleep a lot. We find that cats sleep more in winter.\n"
                         "<b>Bold</b> claims. Second sentence.\n", encoding="utf-8")
    assert cli.main(["predict", "--model", str(out), "--file", str(abstracts)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [len(a["sentences"]) for a in lines] == [3, 2]
    assert lines[1]["sentences"][0]["text"] == "<b>Bold</b> claims." and np.isfinite(lines[1]["sentences"][0]["score"])
    assert cli.main(["predict", "--model", str(out), "   "]) == 2  # empty text: a message, no summary
    assert "empty" in capsys.readouterr().err
