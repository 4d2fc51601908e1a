"""Answers (notebook 08): SQuAD's official EM and F1, the best legal span, windows over long paragraphs,
the split by article."""

import numpy as np
import pytest

from bertbook import qa


@pytest.fixture(scope="module")
def tiny(tiny_task_model):
    return tiny_task_model("squad")


def test_normalisation_as_the_official_script():
    assert qa.normalize_answer("The Denver Broncos!") == "denver broncos"
    assert qa.normalize_answer("  an  apple, a pear ") == "apple pear"
    assert qa.normalize_answer("Theatre") == "theatre"  # "the" only as a word


def test_exact_match_and_f1_by_hand():
    assert qa.exact_match("the Broncos", "Broncos.") == 1.0
    assert qa.f1_score("the cat sat", "cat sat down") == pytest.approx(0.8)  # P 2/2, R 2/3
    assert qa.f1_score("cat cat", "cat") == pytest.approx(2 / 3)  # repeats count once each: P 1/2, R 1
    assert qa.f1_score("dog", "cat") == 0.0
    questions = [{"id": "a", "answers": [{"text": "Denver Broncos"}, {"text": "Broncos"}]},
                 {"id": "b", "answers": [{"text": "1965"}]}]
    s = qa.squad_scores({"a": "the Broncos", "b": "in 1965 and 1966"}, questions)
    assert s["exact_match"] == pytest.approx(50.0)  # "Broncos" matches the second reference
    assert s["f1"] == pytest.approx(100 * (1.0 + 0.4) / 2)  # b: P 1/4, R 1 -> 0.4


def test_best_span_is_legal():
    start = np.array([0.0, 1.0, 9.0, 2.0, 0.0])
    end = np.array([0.0, 8.0, 1.0, 3.0, 7.0])
    allowed = np.array([False, True, True, True, True])
    i, j, score = qa.best_span(start, end, allowed, max_tokens=30)
    assert (i, j) == (2, 4) and score == 16.0  # end 1 scores higher but lies before start 2
    i, j, _ = qa.best_span(start, end, allowed, max_tokens=2)
    assert (i, j) == (2, 3)  # at most two tokens long
    i, j, _ = qa.best_span(start, end, np.array([True, True, False, True, True]), max_tokens=30)
    assert 2 not in (i, j)  # never a token outside the paragraph
    assert qa.best_span(start, end, np.zeros(5, bool), 30)[0] == -1


def test_windows_cover_a_long_paragraph_with_overlap(tiny):
    _, tokenizer, info = tiny
    context = " ".join(f"word{k}" for k in range(150)) + " The treaty was signed in Utrecht in 1713. " + \
        " ".join(f"filler{k}" for k in range(150))
    ws = qa.windows(tokenizer, "Where was the treaty signed?", context, 64, 16)
    assert len(ws) > 3 and all(len(w["input_ids"]) <= 64 for w in ws)
    spans = [[o for o in w["offsets"] if o is not None] for w in ws]
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(context.rstrip())  # nothing cut off
    for a, b in zip(spans, spans[1:]):
        assert b[0][0] < a[-1][1]  # consecutive windows overlap
    start = context.index("Utrecht")
    feats = qa.featurize(tokenizer, [{"question": "Where?", "context": context,
                                      "answers": [{"text": "Utrecht", "answer_start": start}]}], info)
    found = [f for f in feats if f["start_positions"] > 0]
    assert found and all(f["start_positions"] == 0 for f in feats if f not in found)
    f = found[0]
    assert context[f["offsets"][f["start_positions"]][0]:f["offsets"][f["end_positions"]][1]] == "Utrecht"


def test_split_by_article_is_fixed_and_disjoint():
    a, b = qa.squad_splits(seed=0, use_train=False), qa.squad_splits(seed=0, use_train=False)
    assert [q["id"] for q in a["test"]] == [q["id"] for q in b["test"]]
    titles = {k: {q["title"] for q in a[k]} for k in ("train", "validation", "test")}
    assert len(titles["test"]) == qa.TEST_ARTICLES and len(titles["validation"]) == qa.VALIDATION_ARTICLES
    assert not (titles["train"] & titles["test"]) and not (titles["train"] & titles["validation"])
    assert sum(len(a[k]) for k in ("train", "validation", "test")) == 10570
    assert "dev only" in a["source"]


def test_overlap_baseline_answers_from_the_best_sentence():
    context = "Paris is large. The treaty was signed in Utrecht in 1713. Cats sleep."
    assert "Utrecht" in qa.overlap_answer("In which city was the treaty signed?", context)


def test_predict_reads_every_window_and_refuses_empty_input(tiny):
    model, tokenizer, info = tiny
    context = " ".join(["The river flows north."] * 60) + " The capital is Lyon."
    out = qa.predict(model, tokenizer, info, context, "What is the capital?")
    assert out["windows"] > 1 and context[out["start"]:out["end"]] == out["text"] and out["text"]
    assert 0 <= out["probability"] <= 1 and isinstance(out["answered"], bool)
    with pytest.raises(ValueError, match="paragraph is empty"):
        qa.predict(model, tokenizer, info, " ", "What?")
    with pytest.raises(ValueError, match="question is empty"):
        qa.predict(model, tokenizer, info, context, "")


def test_f1_exercise_checker():
    from bertbook import exercises

    assert exercises.check_squad_f1(exercises.solutions.squad_f1)
    with pytest.raises(AssertionError, match="that is exact match"):
        exercises.check_squad_f1(lambda p, t: float(p == t))

    def no_normalising(p, t):
        common = len(set(p.split()) & set(t.split()))
        return 0.0 if not common else 2 * common / (len(p.split()) + len(t.split()))
    with pytest.raises(AssertionError, match="normalise both first"):
        exercises.check_squad_f1(no_normalising)
