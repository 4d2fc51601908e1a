"""Named entities (notebook 08): word-piece alignment, entity-level metrics, error analysis, the CRF baseline,
tagging typed text."""

import pytest

from bertbook import ner
from bertbook.config import get_preset


@pytest.fixture(scope="module")
def tiny(tiny_task_model):
    return tiny_task_model("wikiann")


def test_first_piece_carries_the_label_the_rest_are_ignored():
    # [CLS] Obama ##ma was in Paris [SEP]: words 0 0 1 2 3
    assert ner.align_labels([None, 0, 0, 1, 2, 3, None], [1, 0, 0, 5]) == [-100, 1, -100, 0, 0, 5, -100]


def test_encode_words_maps_every_piece_to_its_word(tiny):
    _, tokenizer, _ = tiny
    words = ["Wolfeschlegelsteinhausen", "visited", "Paris", "."]
    ids, word_ids = ner.encode_words(tokenizer, words, 64)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert word_ids[0] is None and word_ids[-1] is None
    assert sorted(set(w for w in word_ids if w is not None)) == [0, 1, 2, 3]
    assert word_ids.count(0) > 1  # the long name is split into several pieces
    feats = ner.featurize(tokenizer, [{"tokens": words, "tags": ["B-PER", "O", "B-LOC", "O"]}],
                          {"label_names": ["O", "B-PER", "I-PER", "B-LOC"], "max_length": 64})
    labelled = [label for label in feats[0]["labels"] if label != -100]
    assert labelled == [1, 0, 3, 0]


def test_tags_outside_the_tag_set_are_refused_with_the_tag_set():
    info = {"label_names": ["O", "B-PER", "I-PER"], "max_length": 16}
    with pytest.raises(ValueError, match=r"B-MISC.*not in the tag set"):
        ner.featurize(None, [{"tokens": ["Berlin"], "tags": ["B-MISC"]}], info)


def test_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    s = ner.entity_scores(true, pred)
    # gold: PER, LOC, ORG; predicted: PER, ORG (wrong type at LOC's span), ORG -> 2 right of 3 each way
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["per_type"]["PER"]["f1"] == 1.0 and s["per_type"]["LOC"]["f1"] == 0.0
    assert s["per_type"]["ORG"]["precision"] == 0.5 and s["per_type"]["ORG"]["recall"] == 1.0


def test_errors_separate_boundaries_from_types():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "O", "B-PER", "O"]]
    pred = [["B-PER", "O", "O", "B-ORG", "O", "O", "B-LOC", "O", "O", "B-LOC"]]
    # PER 0-1 vs PER 0: boundary; LOC 3 vs ORG 3: type; ORG 5-6 vs LOC 6: boundary+type; PER 8: missed;
    # LOC 9: spurious
    assert ner.entity_errors(true, pred) == {"correct": 0, "type": 1, "boundary": 1, "boundary+type": 1,
                                             "missed": 1, "spurious": 1}


def test_word_shape_features():
    f = ner.word_features(["Obama", "visited", "iPhone-7"], 2)
    assert f["shape"] == "xXx-d" and f["prev:lower"] == "visited" and f["next:edge"]
    assert ner.word_features(["2009"], 0)["digit"] is True


def test_crf_beats_nothing_on_a_small_slice():
    P = get_preset("ci")
    row = ner.crf_row(P, "wikiann")
    assert row["model"] == "crf" and row["train_examples"] == P.tasks.ner_train_examples
    assert 0.2 < row["f1"] <= 1.0  # a CRF on 96 sentences finds a fair share of WikiANN's entities
    assert sum(row["errors"].values()) > 0


def test_predict_spans_and_long_text(tiny):
    model, tokenizer, info = tiny
    text = "Angela Merkel met Emmanuel Macron in Paris."
    out = ner.predict(model, tokenizer, info, text)
    assert out["words"][:2] == ["Angela", "Merkel"] and len(out["tags"]) == len(out["words"])
    for e in out["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and e["type"] in ("PER", "ORG", "LOC")
    long_text = " ".join(["Paris"] * 200)  # longer than the model's 48 tokens: tagged in pieces
    out = ner.predict(model, tokenizer, info, long_text)
    assert out["pieces"] > 1 and len(out["tags"]) == 200
    other_script = ner.predict(model, tokenizer, info, "北京是中国的首都")  # another script: tagged, no crash
    assert len(other_script["tags"]) == len(other_script["words"]) >= 1
    with pytest.raises(ValueError, match="empty"):
        ner.predict(model, tokenizer, info, "   ")


def test_entities_html_marks_each_entity():
    html = ner.entities_html("Ada met Bob.", [{"text": "Ada", "type": "PER", "start": 0, "end": 3,
                                              "probability": 0.9}])
    assert "Ada <b" in html and "PER" in html and " met Bob." in html


def test_alignment_exercise_checker():
    from bertbook import exercises

    assert exercises.check_align_labels(exercises.solutions.align_labels)
    with pytest.raises(AssertionError, match="only the first piece"):
        exercises.check_align_labels(lambda w, labels: [-100 if x is None else labels[x] for x in w], trials=200)
    with pytest.raises(AssertionError, match=r"\[CLS\] and \[SEP\]"):
        exercises.check_align_labels(lambda w, labels: [0 if x is None else labels[x] for x in w])
