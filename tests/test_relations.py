"""Relations (notebook 08): entity markers, the official SemEval-2010 Task 8 score."""

import pytest

from bertbook import relations


@pytest.fixture(scope="module")
def tiny(tiny_task_model):
    return tiny_task_model("semeval")


def test_mark_turns_tags_into_marker_tokens():
    assert relations.mark("The <e1>author</e1> of a keygen uses a <e2>disassembler</e2>.") == \
        "The [E1] author [/E1] of a keygen uses a [E2] disassembler [/E2] ."
    with pytest.raises(ValueError, match="mark the two nominals"):
        relations.mark("The author uses a disassembler.")


def test_markers_are_new_tokens_with_their_own_embedding_rows(tiny):
    model, tokenizer, info = tiny
    ids = tokenizer.convert_tokens_to_ids(list(relations.MARKERS))
    assert sorted(ids) == list(range(len(tokenizer) - 4, len(tokenizer)))  # four new rows at the end
    assert model.encoder.embeddings.word_embeddings.num_embeddings == len(tokenizer)
    assert model.encoder.config.vocab_size == len(tokenizer)
    assert tokenizer.tokenize("[E1] x [/E1]")[0] == "[E1]"  # never split


def test_features_point_at_the_markers_even_in_a_long_sentence(tiny):
    _, tokenizer, info = tiny
    long = "word " * 80 + "the <e1>cup</e1> held <e2>tea</e2> " + "word " * 80
    feats = relations.featurize(tokenizer, [{"text": long, "label": "Content-Container(e2,e1)"}], info)
    f = feats[0]
    assert len(f["input_ids"]) <= info["max_length"]
    e1, e2 = tokenizer.convert_tokens_to_ids(["[E1]", "[E2]"])
    assert f["input_ids"][f["markers"][0]] == e1 and f["input_ids"][f["markers"][1]] == e2
    assert info["label_names"][f["labels"]] == "Content-Container(e2,e1)"
    with pytest.raises(ValueError, match="not one of the 19"):
        relations.featurize(tokenizer, [{"text": "<e1>a</e1> <e2>b</e2>", "label": "Part-Of(e1,e2)"}], info)


def test_official_macro_f1_by_hand():
    true = ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)", "Component-Whole(e1,e2)", "Other"]
    pred = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other", "Component-Whole(e1,e2)"]
    s = relations.semeval_scores(true, pred)
    # Cause-Effect: 1 right (label and direction) of 2 predicted, 2 gold -> P = R = F1 = 0.5;
    # Component-Whole: 0 right -> 0; the seven absent relations -> 0; Other is not averaged
    assert s["per_relation"]["Cause-Effect"]["f1"] == pytest.approx(0.5)
    assert s["macro_f1"] == pytest.approx(0.5 / 9)
    assert s["accuracy"] == pytest.approx(0.25)
    every = [f"{r}(e1,e2)" for r in relations.RELATIONS]
    perfect = relations.semeval_scores(every, every)
    assert perfect["macro_f1"] == 1.0
    assert relations.semeval_scores(["Other"], ["Other"])["macro_f1"] == 0.0  # Other alone scores nothing


def test_marker_and_cls_heads_read_different_vectors(tiny):
    model, tokenizer, info = tiny
    out = relations.predict(model, tokenizer, info, "The <e1>cup</e1> held <e2>tea</e2>.")
    assert out["label"] in info["label_names"] and 0 < out["probability"] <= 1 and len(out["top"]) == 3
    cls_head = relations.make_head(model.encoder.config.hidden_size, {**info, "pooling": "cls"})
    assert cls_head.dense.in_features == model.head.dense.in_features // 2
    with pytest.raises(ValueError, match="empty"):
        relations.predict(model, tokenizer, info, "")
