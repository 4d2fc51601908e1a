"""bertbook.data_generation: the datasets of notebook 10 (Tatoeba English-Mandarin, SciTLDR-A, DailyDialog)
load with their documented counts, split without leaks, handle the releases' known faults, and download
(tested offline, with the local copies standing in for the network)."""

import gzip
import hashlib
import json
import re
import shutil
from collections import Counter

import pytest

from bertbook import data_generation as gen
from bertbook import paths, registry

NAMES = ("tatoeba-cmn-eng", "scitldr", "dailydialog")


@pytest.fixture(scope="module")
def tatoeba():
    return gen.load_tatoeba()


@pytest.fixture(scope="module")
def scitldr():
    return gen.load_scitldr()


@pytest.fixture(scope="module")
def dailydialog():
    return gen.load_dailydialog()


def sizes(splits):
    return {k: len(v) for k, v in splits.items()}


# ------------------------------------------------------------------------------------------------ registry

def test_the_three_datasets_are_registered_and_verify():
    rows = {r["name"]: r for r in registry.status(full=True)}
    for name in NAMES:
        entry = registry.info(name)
        assert rows[name]["state"] == "ok", rows[name]["problems"]
        assert sorted(rows[name]["ok"]) == sorted(entry["files"])
        assert entry["source"]["kind"] in ("files", "gzip") and entry["licence"] and entry["home"]
    assert "Cachola" in registry.info("scitldr")["citation"]
    assert "Li, Yanran" in registry.info("dailydialog")["citation"]
    assert "tatoeba.org" in registry.info("tatoeba-cmn-eng")["citation"]
    assert "NonCommercial" in registry.info("dailydialog")["licence"]


def test_a_missing_folder_says_where_to_put_it_or_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "data_dirs", lambda: [tmp_path])
    for name, load in (("tatoeba-cmn-eng", gen.load_tatoeba), ("scitldr", gen.load_scitldr),
                       ("dailydialog", gen.load_dailydialog)):
        with pytest.raises(registry.DataError) as err:
            load()
        message = str(err.value)
        assert err.value.problem == "not found"
        assert f"{name}/" in message and "BERTBOOK_DATA_DIR" in message
        assert f"python -m bertbook data --download {name}" in message


# ------------------------------------------------------------------------------------------------ Tatoeba

def test_tatoeba_pairs_keep_their_attribution(tatoeba):
    pairs = [p for split in tatoeba.values() for p in split]
    assert len(pairs) == 26_388
    assert len({(p["en_id"], p["zh_id"]) for p in pairs}) == 26_388
    assert len({p["en"] for p in pairs}) == 25_331 and len({p["zh"] for p in pairs}) == 23_997
    for p in pairs:
        assert p["attribution"].startswith("CC-BY 2.0 (France) Attribution: tatoeba.org ")
        assert f"#{p['en_id']} (" in p["attribution"] and f"#{p['zh_id']} (" in p["attribution"]
    first = next(p for p in pairs if p["en_id"] == 538123)
    assert first == {"en": "Hi.", "zh": "嗨。", "en_id": 538123, "zh_id": 891077,
                     "attribution": "CC-BY 2.0 (France) Attribution: tatoeba.org #538123 (CM) & #891077 (Martha)"}
    assert not any("\u200b" in p["zh"] for p in pairs)  # 5 lines carried zero-width spaces
    assert next(p for p in pairs if p["zh_id"] == 834687)["zh"] == "請借我你的書。"


def test_tatoeba_split_sizes_and_no_sentence_on_two_sides(tatoeba):
    assert sizes(tatoeba) == {"train": 21_110, "validation": 2_639, "test": 2_639}
    assert sizes(tatoeba) == {k: v for k, v in registry.info("tatoeba-cmn-eng")["counts"].items() if k != "pairs"}
    for lang in ("en", "zh"):
        sides = {split: {p[lang] for p in items} for split, items in tatoeba.items()}
        assert not sides["train"] & sides["validation"]
        assert not sides["train"] & sides["test"]
        assert not sides["validation"] & sides["test"]
    # the 977 English sentences with several translations keep them all on one side
    per_sentence = Counter(p["en"] for split in tatoeba.values() for p in split)
    assert sum(n > 1 for n in per_sentence.values()) == 977


def test_tatoeba_split_is_seeded(tatoeba):
    again = gen.load_tatoeba(seed=0)
    assert again == tatoeba
    other = gen.load_tatoeba(seed=1)
    assert {p["en"] for p in other["test"]} != {p["en"] for p in tatoeba["test"]}
    # shuffled: a prefix is a sample of the whole, not the file's shortest sentences
    assert max(len(p["en"]) for p in tatoeba["train"][:200]) > 40
    smaller = gen.load_tatoeba(validation=0.05, test=0.05)
    assert sizes(smaller)["test"] == round(0.05 * 26_388) == sizes(smaller)["validation"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        gen.load_tatoeba(test=1.5)
    with pytest.raises(ValueError, match="leave pairs for training"):
        gen.load_tatoeba(validation=0.5, test=0.5)


# ------------------------------------------------------------------------------------------------ SciTLDR

def raw_scitldr(split):
    rel = registry.info("scitldr")["splits"][split][0]
    text = (registry.find("scitldr") / rel).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line]


def test_scitldr_official_splits_and_references(scitldr):
    assert sizes(scitldr) == {"train": 1_992, "validation": 619, "test": 618}
    assert Counter(len(r["targets"]) for r in scitldr["train"]) == {1: 1_992}
    assert {len(r["targets"]) for r in scitldr["test"]} == {2, 3, 4}
    assert sum(len(r["targets"]) for r in scitldr["test"]) == 1_967
    assert sum(len(r["targets"]) for r in scitldr["validation"]) == 1_453
    ids = [r["paper_id"] for split in scitldr.values() for r in split]
    assert len(set(ids)) == len(ids) == 3_229
    for split in scitldr.values():
        for r in split:
            assert len(r["rouge_scores"]) == len(r["sentences"]) and 0 <= r["oracle"] < len(r["sentences"])
            assert r["rouge_scores"][r["oracle"]] == max(r["rouge_scores"])
            assert all(t == t.strip() and t for t in r["targets"])
            assert not any("\n" in s for s in r["sentences"])


def test_scitldr_misaligned_scores_are_recomputed(scitldr):
    recomputed = {split: sum(r["recomputed"] for r in records) for split, records in scitldr.items()}
    assert recomputed == {"train": 63, "validation": 19, "test": 44}  # 126 records
    oracle_moved = 0
    for split, records in scitldr.items():
        for raw, r in zip(raw_scitldr(split), records, strict=True):
            assert (len(raw["rouge_scores"]) < len(raw["source"])) == r["recomputed"]
            if r["recomputed"]:
                oracle_moved += raw["source_labels"].index(1) != r["oracle"]
            else:  # the release's own scores and oracle, which its formula reproduces exactly
                assert r["rouge_scores"] == raw["rouge_scores"]
                assert r["oracle"] == raw["source_labels"].index(1)
                assert [gen.tldr_rouge1(s, raw["target"][0]) for s in raw["source"]] == raw["rouge_scores"]
    assert oracle_moved == 64


def test_tldr_rouge1_counts_each_word_once():
    assert gen.tldr_rouge1("the cat sat", "the cat sat") == pytest.approx(1.0, abs=1e-7)
    assert gen.tldr_rouge1("the the the", "the cat") == pytest.approx(2 * 1 * 0.5 / 1.5, abs=1e-7)
    assert gen.tldr_rouge1("The cat.", "the cat") == pytest.approx(0.5, abs=1e-7)  # case-sensitive
    assert gen.tldr_rouge1("", "the cat") == 0.0


# ------------------------------------------------------------------------------------------------ DailyDialog

def test_dailydialog_splits_and_turns(dailydialog):
    assert sizes(dailydialog) == {"train": 11_118, "validation": 1_000, "test": 1_000}
    turns = {split: sum(len(d["turns"]) for d in ds) for split, ds in dailydialog.items()}
    assert turns == {"train": 87_170, "validation": 8_069, "test": 7_740}
    first = dailydialog["train"][0]
    assert first["id"] == "dailydialog-train-0" and first["topic"] == "Attitude & Emotion"
    assert first["turns"][0] == {"speaker": "A", "text": "Say, Jim, how about going for a few beers after dinner?",
                                 "act": "directive", "emotion": "no emotion"}
    for ds in dailydialog.values():
        for d in ds:
            assert [t["speaker"] for t in d["turns"]] == ["AB"[i % 2] for i in range(len(d["turns"]))]
    assert {t["act"] for d in dailydialog["test"] for t in d["turns"]} == {"inform", "question", "directive",
                                                                           "commissive"}


def test_repeated_dialogues_are_dropped(dailydialog):
    before = sizes(dailydialog)
    clean, removed = gen.drop_repeated_dialogues(dailydialog)
    assert removed == {"validation": 84, "test": 109}
    assert sizes(clean) == {"train": 11_118, "validation": 916, "test": 891}
    assert sizes(dailydialog) == before  # the input is left alone
    train = {tuple(t["text"] for t in d["turns"]) for d in dailydialog["train"]}
    for split in ("validation", "test"):
        assert not any(tuple(t["text"] for t in d["turns"]) in train for d in clean[split])
    assert gen.drop_repeated_dialogues(dailydialog, against_validation=True)[1] == {"validation": 84, "test": 113}
    assert gen.drop_repeated_dialogues(dailydialog, normalize=True)[1] == {"validation": 93, "test": 123}


def test_response_selection_has_one_true_candidate_and_negatives_from_the_same_split(dailydialog):
    test = gen.drop_repeated_dialogues(dailydialog)[0]["test"]
    examples = gen.response_selection(test, context_turns=2, seed=3)
    assert len(examples) == sum(len(d["turns"]) - 1 for d in test) == 6_129
    by_id = {d["id"]: [t["text"] for t in d["turns"]] for d in test}
    elsewhere = Counter(text for d in test for text in {t["text"] for t in d["turns"]})
    for ex in examples:
        turns = by_id[ex["dialogue_id"]]
        true = turns[ex["turn"]]
        assert len(ex["candidates"]) == 10 and len(set(ex["candidates"])) == 10
        assert ex["candidates"][ex["label"]] == true and ex["candidates"].count(true) == 1
        assert ex["context"] == turns[max(0, ex["turn"] - 2):ex["turn"]]
        for i, negative in enumerate(ex["candidates"]):
            if i != ex["label"]:  # a test turn, said in another test dialogue
                assert elsewhere[negative] >= 1 + (negative in turns)
    assert len({ex["label"] for ex in examples}) == 10  # the true answer is not always in one place
    assert examples == gen.response_selection(test, context_turns=2, seed=3)
    assert examples != gen.response_selection(test, context_turns=2, seed=4)
    one_each = gen.response_selection(test, every_turn=False)
    assert len(one_each) == len(test) and all(len(ex["context"]) <= 3 for ex in one_each)
    with pytest.raises(ValueError, match="too few"):
        gen.response_selection(test[:1])


# ------------------------------------------------------------------------------------------------ downloads

def local_fetch(name):
    """A stand-in for the network: serve each URL of the manifest from the local copy (Tatoeba's original
    cmn.txt from the gunzipped local file)."""
    folder = registry.find(name)
    source = registry.info(name)["source"]
    by_url = {url: folder / rel for rel, url in source["urls"].items()}

    def fetch(url, dest):
        if url in by_url:
            shutil.copyfile(by_url[url], dest)
            return
        (rel,) = [rel for rel, spec in source["originals"].items() if spec["url"] == url]
        with gzip.open(folder / f"{rel}.gz", "rb") as f:
            dest.write_bytes(f.read())
    return fetch


@pytest.mark.parametrize("name", NAMES)
def test_download_rebuilds_each_file_byte_for_byte(name, tmp_path):
    folder = registry.download(name, dest_root=tmp_path, fetch=local_fetch(name))
    assert folder == tmp_path / registry.info(name)["folder"]
    files = registry.info(name)["files"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    for rel, expected in files.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == expected["sha256"]


def test_tatoeba_download_refuses_another_release(tmp_path):
    good = local_fetch("tatoeba-cmn-eng")

    def newer_release(url, dest):  # manythings.org's current file has other lines
        good(url, dest)
        if dest.name == "cmn.txt":
            dest.write_bytes(dest.read_bytes() + "Hi!\t你好！\tCC-BY 2.0 (France) ...\n".encode())
    with pytest.raises(registry.DataError, match="changed at its source") as err:
        registry.download("tatoeba-cmn-eng", dest_root=tmp_path, fetch=newer_release)
    assert err.value.problem == "download" and "cmn.txt" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-installed
    assert re.search(r"qi-dian-b/.+/[0-9a-f]{40}/cmn\.txt$", registry.info("tatoeba-cmn-eng")["source"]
                     ["originals"]["cmn.txt"]["url"])
