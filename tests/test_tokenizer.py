"""The WordPiece tokenizer: training, special tokens, pairs, saving/loading, get_tokenizer, the explorer."""

import pytest

from bertbook import tokenizer as T
from bertbook.config import get_preset
from bertbook import widgets

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering "
        "a neighbourhood, this truth is so well fixed in the minds of the surrounding families.\n") * 40


@pytest.fixture(scope="module")
def tok():
    return T.train_tokenizer(TEXT, vocab_size=300, min_frequency=1, model_max_length=64)


def test_special_tokens_come_first(tok):
    assert tok.convert_ids_to_tokens(list(range(5))) == T.SPECIAL_TOKENS
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 1, 2, 3, 4)
    assert tok.model_max_length == 64


def test_pair_template_and_segments(tok):
    enc = tok("A truth.", "Single man.")
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "[CLS]" and pieces.count("[SEP]") == 2 and pieces[-1] == "[SEP]"
    first_sep = pieces.index("[SEP]")
    assert set(enc["token_type_ids"][:first_sep + 1]) == {0}
    assert set(enc["token_type_ids"][first_sep + 1:]) == {1}
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "a truth. single man."


def test_lowercase_word_pieces_and_unknowns(tok):
    assert tok.tokenize("TRUTH") == tok.tokenize("truth") == ["truth"]
    assert any(p.startswith("##") for p in tok.tokenize("acknowledgedness"))
    rows = T.explain(tok, "truth ☃")
    assert [r["piece"] for r in rows] == ["[CLS]", "truth", "[UNK]", "[SEP]"]
    assert [r["unknown"] for r in rows] == [False, False, True, False]
    assert rows[1]["text"] == "truth"


def test_padding_batches(tok):
    batch = tok(["a man", "a single man of good fortune"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"][0].tolist().count(0) > 0
    assert batch["input_ids"][0][batch["attention_mask"][0] == 0].eq(0).all()


def test_greedy_wordpiece_matches_the_library(tok):
    vocab = tok.get_vocab()
    for word in ["truth", "universally", "neighbourhoods", "acknowledgement", "fortunes", "zzz"]:
        assert T.wordpiece_word(word, vocab) == tok.tokenize(word), word


def test_save_load_round_trip(tok, tmp_path):
    folder = T.save_tokenizer(tok, tmp_path / "tok")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    again = T.load_tokenizer(folder)
    assert again.get_vocab() == tok.get_vocab()
    assert again("A truth.", "A man.") == tok("A truth.", "A man.")
    assert again.model_max_length == 64
    with pytest.raises(FileNotFoundError, match="notebook 01"):
        T.load_tokenizer(tmp_path / "missing")


def test_stats_and_explorer_rows(tok):
    stats = T.tokenizer_stats(tok, "a truth universally acknowledged ☃")
    assert stats.words == 5 and stats.pieces >= 5
    assert stats.unknown_rate == pytest.approx(1 / stats.pieces)
    rows = T.explorer_rows({"ours": tok}, "a truth")
    assert rows[0][0] == "ours" and "truth" in rows[0][1] and rows[0][3] == "4 tokens, 0 unknown"
    assert T.explorer_rows({"ours": tok}, "   ")[0][1] == "type some text above"
    assert widgets.tokenizer_explorer({"ours": tok}, "a truth") is not None


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match="special tokens"):
        T.train_tokenizer(TEXT, vocab_size=5)


def test_get_tokenizer_trains_once_then_loads(artifacts, capsys):
    P = get_preset("ci")
    tok = T.get_tokenizer(P)
    first = capsys.readouterr().out
    assert "Trained a WordPiece tokenizer" in first and "Notebook 01" in first
    assert len(tok) == P.model.vocab_size  # the ci slice is large enough to fill 2000 entries
    assert (artifacts / "ci" / "tokenizer" / "tokenizer.json").is_file()
    again = T.get_tokenizer(P)
    assert capsys.readouterr().out == ""
    assert again.get_vocab() == tok.get_vocab()
    assert again.model_max_length == P.model.max_position_embeddings


def test_a_damaged_tokenizer_file_is_named(tok, artifacts):
    """A truncated or garbled tokenizer.json: the error names it and says to delete the folder (get_tokenizer
    then trains a new one), not the tokenizers library's bare "expected value" or KeyError."""
    from bertbook.checkpoint import CheckpointError

    folder = T.save_tokenizer(tok, artifacts / "ci" / "tokenizer")
    good = (folder / "tokenizer.json").read_bytes()
    for content, problem in [(good[:len(good) // 2], "not valid JSON"), (b'{"version": "1.0"}', "unreadable")]:
        (folder / "tokenizer.json").write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"tokenizer.json is damaged \({problem}.*Delete the folder "
                                                  rf".*get_tokenizer\(P\) then trains a new tokenizer"):
            T.get_tokenizer(get_preset("ci"))
    (folder / "tokenizer.json").write_bytes(good)
    (folder / "tokenizer_config.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"tokenizer_config.json is damaged.*Re-run the command that wrote"):
        T.load_tokenizer(folder)
