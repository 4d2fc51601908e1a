"""The pretraining data pipeline: sentences, the token cache on disk, packed and masked micro-batches."""

import numpy as np
import pytest
import torch

from bertbook import corpus
from bertbook.config import get_preset
from bertbook.masking import IGNORE_INDEX, MaskVocab, permutations


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The ci preset, its tokenizer and token cache, in an artifacts folder shared by this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BERTBOOK_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
    from bertbook.tokenizer import get_tokenizer

    P = get_preset("ci")
    tok = get_tokenizer(P)
    cache = corpus.corpus_cache(P, tok, progress=False)
    yield P, tok, cache, MaskVocab.from_tokenizer(tok)
    mp.undo()


def test_split_sentences():
    text = ("It is a truth universally acknowledged, that a single man in possession\nof a good fortune, must be "
            "in want of a wife. \"Is it?\" said Mr. Bennet. 'Yes!' Mrs. Long told me so.")
    assert corpus.split_sentences(text) == [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife.", "\"Is it?\" said Mr. Bennet.", "'Yes!'", "Mrs. Long told me so."]
    assert corpus.split_sentences("  ") == []


def test_iter_paragraphs_joins_chunks_and_stops_at_max_chars():
    chunks = ["first para", "graph\n\nsecond\n", "\nthird"]
    assert list(corpus.iter_paragraphs(chunks)) == ["first paragraph", "second", "third"]
    assert list(corpus.iter_paragraphs(["abc\n\ndefgh\n\nij"], max_chars=7)) == ["abc", "de"]


def test_cache_on_disk(env, tmp_path):
    P, tok, cache, _ = env
    assert isinstance(cache.ids, np.memmap) and cache.ids.dtype == np.uint16  # 2,000 entries fit 16 bits
    assert cache.n_tokens == cache.meta["n_tokens"] > 50_000
    starts = np.asarray(cache.sentence_starts)
    assert starts[0] == 0 and np.all(np.diff(starts) > 0) and starts[-1] < cache.n_tokens
    # the same preset and tokenizer find the same cache (no rebuild); no temporary folder is left
    again = corpus.corpus_cache(P, tok, progress=False)
    assert again.folder == cache.folder
    assert [p.name for p in cache.folder.parent.iterdir()] == [cache.folder.name]
    # a build in small batches equals the text tokenized sentence by sentence
    text = "One sentence here. Another one follows!\n\nA new paragraph. And the end."
    small = corpus.build_cache(corpus.iter_paragraphs([text]), tok, tmp_path / "c", progress=False,
                               batch_chars=10)
    sentences = corpus.split_sentences_text(text)
    assert len(sentences) == 4 == small.meta["n_sentences"]
    expected = [i for s in sentences for i in tok(s, add_special_tokens=False)["input_ids"]]
    assert small.ids.tolist() == expected
    lengths = [len(tok(s, add_special_tokens=False)["input_ids"]) for s in sentences]
    assert small.sentence_starts.tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()


def test_cache_key_follows_the_tokenizer(env):
    P, tok, cache, _ = env
    from bertbook.tokenizer import train_tokenizer

    other = train_tokenizer("a few words to make another small vocabulary " * 50, 200, 1)
    assert corpus.corpus_cache(P.override(**{"data.corpus_max_chars": 5_000}), other,
                               progress=False).folder != cache.folder


def test_packed_rows_have_no_padding(env):
    P, tok, cache, vocab = env
    data = corpus.PretrainData(cache, vocab, seq_len=64, batch_size=8, seed=0)
    b = data.batch(step=3)
    assert b["input_ids"].shape == (8, 64) and b["labels"].shape == (8, 64)
    assert (b["input_ids"] != tok.pad_token_id).all()
    assert (b["input_ids"][:, 0] == tok.cls_token_id).all() and (b["input_ids"][:, -1] == tok.sep_token_id).all()
    # a row is 62 consecutive tokens of the corpus once the masks are undone
    original = torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])
    w = int(data.windows(3 * 8, 1)[0])
    assert original[0, 1:-1].tolist() == cache.ids[w * 62:(w + 1) * 62].tolist()
    assert 0.05 < (b["labels"] != IGNORE_INDEX).float().mean() < 0.25


def test_batches_are_a_pure_function_of_seed_step_and_index(env):
    _, _, cache, vocab = env
    data = corpus.PretrainData(cache, vocab, 64, 8, seed=0)
    again = corpus.PretrainData(cache, vocab, 64, 8, seed=0)
    for k in ("input_ids", "labels"):
        assert torch.equal(data.batch(5, 1, 2)[k], again.batch(5, 1, 2)[k])
        assert not torch.equal(data.batch(5, 0, 2)[k], data.batch(5, 1, 2)[k])
    assert not torch.equal(data.batch(5)["input_ids"], corpus.PretrainData(cache, vocab, 64, 8, seed=1).batch(5)[
        "input_ids"])
    # an epoch visits every window once before any repeats
    n = data.n_examples
    assert sorted(data.windows(0, n).tolist()) == list(range(n))
    assert sorted(data.windows(n, n).tolist()) == list(range(n))


@pytest.mark.parametrize("objective", ["nsp", "sop", "msc"])
def test_sentence_objective_examples(env, objective):
    _, tok, cache, vocab = env
    data = corpus.PretrainData(cache, vocab, 64, 64, objective=objective, seed=0)
    b = data.batch(0)
    ids = torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])
    assert ids.shape == (64, 64) == b["attention_mask"].shape
    # only the tokens of a last word that did not fit are padding: at the end, hidden by the attention mask
    assert torch.equal(b["attention_mask"] == 0, ids == tok.pad_token_id)
    assert (b["attention_mask"].sum(1) > 56).all() and (b["attention_mask"].diff(dim=1) <= 0).all()
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()  # never masked, never scored
    labels = b["sentence_label"].tolist()
    k = 3 if objective == "msc" else 2
    assert set(labels) <= set(range(6 if objective == "msc" else 2)) and len(set(labels)) > 1
    stream = np.asarray(cache.ids)
    for row, types, n, label in zip(ids.tolist(), b["token_type_ids"].tolist(), b["attention_mask"].sum(1).tolist(),
                                    labels):
        row, types = row[:n], types[:n]
        seps = [i for i, t in enumerate(row) if t == tok.sep_token_id]
        assert row[0] == tok.cls_token_id and seps[-1] == n - 1 and len(seps) >= k
        cut = seps[-k:]  # segment ends (a segment itself never contains [SEP] in this corpus)
        segs = [row[1:cut[0]]] + [row[a + 1:b] for a, b in zip(cut[:-1], cut[1:])]
        assert types == [0] + [i % 2 for i, seg in enumerate(segs) for _ in range(len(seg) + 1)]
        if objective == "nsp":
            joined = segs[0] + segs[1]
        elif objective == "sop":
            joined = segs[0] + segs[1] if label == 0 else segs[1] + segs[0]
        else:
            order = permutations(3)[label]
            original = [None] * 3
            for pos, src in enumerate(order):
                original[src] = segs[pos]
            joined = original[0] + original[1] + original[2]
        if objective != "nsp" or label == 0:  # consecutive text of the corpus, in its original order
            at = _find(stream, joined)
            assert at >= 0
            # ... that ends with a whole word: what follows it in the corpus is not a '##' piece
            assert at + len(joined) == len(stream) or not vocab.continuation[int(stream[at + len(joined)])]


def _find(stream: np.ndarray, needle: list) -> int:
    """Where ``needle`` first occurs as a contiguous run of ``stream`` (-1: nowhere)."""
    for i in np.flatnonzero(stream[: len(stream) - len(needle) + 1] == needle[0]):
        if stream[i:i + len(needle)].tolist() == needle:
            return int(i)
    return -1


def test_eval_batches_are_fixed(env):
    P, tok, _, vocab = env
    text = corpus.eval_text("gutenberg", 20_000, P)
    a = corpus.eval_batches(text, tok, vocab, 64, 8, 2)
    b = corpus.eval_batches(text, tok, vocab, 64, 8, 2)
    assert len(a) == 2 and all(torch.equal(x["labels"], y["labels"]) for x, y in zip(a, b))
    wiki = corpus.eval_text("wikitext-2", 5_000)
    assert "@-@" not in wiki and "<unk>" not in wiki
    with pytest.raises(ValueError, match="fewer than one row"):
        corpus.eval_batches("too short", tok, vocab, 64, 8, 2)


def _segment_starts(row: list[int], k: int, sep_id: int) -> list[int]:
    """Positions in ``row`` where each of its ``k`` segments begins ([CLS] s1 [SEP] s2 [SEP] ...)."""
    seps = [i for i, t in enumerate(row) if t == sep_id][-k:]
    return [1] + [i + 1 for i in seps[:-1]]


@pytest.mark.parametrize("objective", ["nsp", "sop", "msc"])
def test_segments_never_begin_inside_a_word(env, objective):
    _, tok, cache, vocab = env
    data = corpus.PretrainData(cache, vocab, 64, 64, objective=objective, seed=0)
    k = 3 if objective == "msc" else 2
    for step in range(4):
        b = data.batch(step)
        ids = torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])
        for row in ids.tolist():
            firsts = [row[i] for i in _segment_starts(row, k, tok.sep_token_id)]
            assert not vocab.continuation[firsts].any(), tok.convert_ids_to_tokens(row)


def test_cuts_prefer_sentence_starts_then_word_starts(tmp_path):
    # A toy vocabulary and stream: words of one or two pieces ('##' continues a word), and one very long
    # sentence in which no sentence boundary is near.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##x", "##y"]
    special = torch.tensor([t.startswith("[") for t in tokens])
    vocab = MaskVocab(mask_token_id=4, cls_token_id=2, sep_token_id=3, pad_token_id=0, special=special,
                      continuation=torch.tensor([t.startswith("##") for t in tokens]),
                      random_ids=torch.nonzero(~special).flatten())
    g = np.random.default_rng(0)
    ids = g.choice([5, 6, 7, 8, 9], size=400).astype(np.uint16)
    ids[0] = 5
    starts = np.array([0, 9, 20, 300])  # sentences of 9 and 11 tokens, then one of 280 tokens
    for s in starts:
        ids[s] = 6  # a sentence begins with a word
    cache = corpus.TokenCache(folder=tmp_path, ids=ids, sentence_starts=starts, meta={})
    data = corpus.PretrainData(cache, vocab, seq_len=32, batch_size=4, objective="msc")
    W = data.width  # 28 content tokens
    # Inside the first sentences every cut lands on a sentence start, whatever the targets.
    assert data._cuts(0, W, [W // 3, 2 * W // 3]) == [9, 20]
    assert data._cuts(0, W, [12]) == [9]
    # Inside the long sentence there is no sentence start: each cut moves to the nearest word start.
    for s in (40, 100, 200):
        for targets in ([s + 7, s + 15], [s + 1, s + 2], [s + W - 2, s + W - 1]):
            cuts = data._cuts(s, s + W, targets)
            assert all(not vocab.continuation[ids[c]] for c in cuts), (s, targets, cuts)
            assert s < cuts[0] < cuts[1] < s + W  # every segment keeps at least one token
        word_starts = [j for j in range(s + 1, s + W) if not vocab.continuation[ids[j]]]
        first = data._cuts(s, s + W, [s + 7, s + 15])[0]  # targets far apart: the first cut is the nearest word start
        assert abs(first - (s + 7)) == min(abs(j - (s + 7)) for j in word_starts)
    # A window ends with a whole word: at the last word start it reaches, with a few tokens to spare at most.
    for s in (40, 100, 200, 400 - W):
        e = data._word_end(s, W, least=3)
        assert s + 3 <= e <= s + W and (e == len(ids) or not vocab.continuation[ids[e]])
        assert all(vocab.continuation[ids[j]] for j in range(e + 1, min(s + W, len(ids) - 1) + 1))
    # The rows themselves: no segment of any objective begins with a '##' piece.
    for objective, k in (("sop", 2), ("msc", 3)):
        rows = corpus.PretrainData(cache, vocab, seq_len=32, batch_size=8, objective=objective, seed=1)
        for step in range(5):
            b = rows.batch(step)
            original = torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])
            for row in original.tolist():
                firsts = [row[i] for i in _segment_starts(row, k, 3)]
                assert not vocab.continuation[firsts].any(), row
    # A window that is a single word (nothing but '##' pieces after its first) still gets non-empty segments.
    ids[100:100 + W] = 8
    ids[100] = 5
    assert data._cuts(100, 100 + W, [100 + 5, 100 + 9]) == [105, 109]
    assert data._word_end(100, W, least=3) == 100 + W  # no word ends inside: the window is cut where asked
