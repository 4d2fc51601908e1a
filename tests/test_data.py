"""bertbook.data: every dataset loads with its documented counts; damaged files give a DataError that
says which file, which checksum and how to fix it; downloads convert and verify (tested offline)."""

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from bertbook import data, paths, registry
from bertbook import cli


@pytest.fixture(scope="module")
def imdb():
    return data.load_classification("imdb")


def copy_dataset(name: str, root: Path) -> Path:
    """A private, writable copy of a small dataset under ``root`` (same layout as a data folder)."""
    src = registry.find(name)
    dest = root / registry.info(name)["folder"]
    shutil.copytree(src, dest)
    for f in dest.rglob("*"):
        f.chmod(0o644 if f.is_file() else 0o755)
    return dest


@pytest.fixture
def private_data(tmp_path, monkeypatch):
    """BERTBOOK_DATA_DIR -> an empty folder searched first; the project cache -> an empty folder."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("BERTBOOK_DATA_DIR", str(root))
    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "cache")
    return root


# ------------------------------------------------------------------------------------------------ manifest

def test_manifest_lists_every_dataset_with_licence_citation_and_checksums():
    assert registry.names() == ["gutenberg-small", "gutenberg-large", "imdb", "sst2", "rotten-tomatoes",
                            "wikitext-2", "wikiann-en", "wnut17", "semeval2010-task8", "squad-v1.1",
                            "tatoeba-cmn-eng", "scitldr", "dailydialog"]
    for name in registry.names():
        entry = registry.info(name)
        for key in ("folder", "description", "licence", "citation", "home", "files", "source"):
            assert entry[key], (name, key)
        for rel, f in entry["files"].items():
            assert len(f["sha256"]) == 64 and f["size"] > 0, (name, rel)
    with pytest.raises(ValueError, match="Known datasets"):
        registry.info("mnist")


def test_manifest_agrees_with_the_shared_sha256sums():
    sums_file = paths.project_root().parent / "shared" / "data" / "SHA256SUMS"
    if not sums_file.exists():
        pytest.skip("no ../shared/data on this machine")
    sums = {p.removeprefix("./"): h for h, p in (line.split(None, 1) for line in sums_file.read_text().splitlines())}
    for name in registry.names():
        entry = registry.info(name)
        for rel, f in entry["files"].items():
            assert sums[f"{entry['folder']}/{rel}"] == f["sha256"]


# ------------------------------------------------------------------------------------------------ corpora

def test_gutenberg_small_loads_whole_books():
    train = data.load_corpus("gutenberg-small")
    valid = data.load_corpus("gutenberg-small", "validation")
    assert len(train) == 4_235_245 and len(valid) == 466_847
    assert train.startswith("Produced by") and "PROJECT GUTENBERG" not in train[:3000]
    assert "It is a truth universally acknowledged" in train[:2000]
    assert train.endswith("\n\n")
    assert data.load_corpus("gutenberg-small", max_chars=1000) == train[:1000]


def test_streaming_is_exact_and_cut_at_paragraphs():
    chunks = list(data.iter_corpus_text("gutenberg-small", "train", chunk_chars=100_000))
    assert len(chunks) > 30
    assert "".join(chunks) == data.load_corpus("gutenberg-small")
    assert all(c.endswith("\n\n") for c in chunks)
    assert max(map(len, chunks)) < 150_000


def test_gutenberg_large_one_shard():
    files = data.corpus_files("gutenberg-large", "train", shards=1)
    assert [f.name for f in files] == ["train-000.txt.gz"]
    assert len(data.corpus_files("gutenberg-large", "train")) == 10
    stream = data.iter_corpus_text("gutenberg-large", shards=1)
    first = next(stream)
    with gzip.open(files[0], "rt", encoding="utf-8") as f:
        assert f.read(len(first)) == first
    assert len(data.load_corpus("gutenberg-large", shards=1)) == 25_005_127
    assert len(data.load_corpus("gutenberg-large", "validation")) == 3_063_908
    assert len(data.load_corpus("gutenberg-large", max_chars=12_345)) == 12_345


def test_corpus_arguments_are_checked():
    with pytest.raises(ValueError, match="splits train, validation"):
        data.load_corpus("gutenberg-small", "valid")
    with pytest.raises(ValueError, match="shards"):
        data.corpus_files("gutenberg-large", "train", shards=0)
    with pytest.raises(ValueError, match="not one of them"):
        data.load_corpus("imdb")


# ------------------------------------------------------------------------------------------------ sentiment

def labels(items):
    return Counter(x["label"] for x in items)


def test_imdb_counts_balance_and_validation(imdb):
    assert {k: len(v) for k, v in imdb.items()} == {"train": 22_500, "validation": 2_500, "test": 25_000}
    assert labels(imdb["train"]) == {0: 11_250, 1: 11_250}
    assert labels(imdb["validation"]) == {0: 1_250, 1: 1_250}
    assert labels(imdb["test"]) == {0: 12_500, 1: 12_500}
    assert labels(imdb["test"][:200]).keys() == {0, 1}  # shuffled: a prefix holds both classes
    assert sum("<br />" in x["text"] for x in imdb["train"]) > 10_000  # raw reviews keep their tags
    # train and validation partition the original 25,000 training reviews
    with gzip.open(registry.find("imdb") / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        original = Counter(json.loads(line)["text"] for line in f)
    assert Counter(x["text"] for x in imdb["train"]) + Counter(x["text"] for x in imdb["validation"]) == original


def test_imdb_split_is_deterministic_and_seeded(imdb):
    again = data.load_classification("imdb", seed=0)
    assert again["validation"] == imdb["validation"] and again["train"][:50] == imdb["train"][:50]
    other = data.load_classification("imdb", seed=1, clean_html=True)
    assert {x["text"] for x in other["validation"]} != {x["text"] for x in imdb["validation"]}
    assert not any("<br" in x["text"] for x in other["train"])


def test_stratified_carve_is_disjoint_and_complete():
    examples = [{"label": i % 3} for i in range(300)]
    a, b, rest = data._stratified_carve(examples, [30, 60], seed=5)
    assert (len(a), len(b), len(rest)) == (30, 60, 210)
    assert not (set(a) & set(b)) and not (set(a) & set(rest)) and not (set(b) & set(rest))
    assert sorted(a + b + rest) == list(range(300))
    assert Counter(examples[i]["label"] for i in a) == {0: 10, 1: 10, 2: 10}
    assert data._stratified_carve(examples, [30, 60], seed=5) == [a, b, rest]


def test_sst2_counts():
    d = data.load_classification("sst2")
    assert {k: len(v) for k, v in d.items()} == {"train": 60_614, "validation": 6_735, "test": 872}
    assert labels(d["train"]) == {1: 33_828, 0: 26_786}
    assert labels(d["validation"]) == {1: 3_741, 0: 2_994}
    assert labels(d["test"]) == {1: 444, 0: 428}
    assert data.label_names("sst2") == ["negative", "positive"]


def test_rotten_tomatoes_split_and_encoding():
    d = data.load_classification("rotten-tomatoes", seed=0)
    assert {k: len(v) for k, v in d.items()} == {"train": 8_530, "validation": 1_066, "test": 1_066}
    assert labels(d["train"]) == {0: 4_265, 1: 4_265} and labels(d["test"]) == {0: 533, 1: 533}
    texts = Counter(x["text"] for split in d.values() for x in split)
    assert sum(texts.values()) == 10_662
    # byte 0x85 is an ellipsis in Windows-1252 and must not split a line
    assert any("\u2026" in t for t in texts) and not any("\x85" in t for t in texts)
    assert d == data.load_classification("rotten-tomatoes", seed=0)
    other = data.load_classification("rotten-tomatoes", seed=1)
    assert {x["text"] for x in other["test"]} != {x["text"] for x in d["test"]}


# ------------------------------------------------------------------------------------------------ NER, WikiText

def test_ner_counts_and_tags():
    wikiann = data.load_ner("wikiann-en")
    assert {k: len(v) for k, v in wikiann.items()} == {"train": 20_000, "validation": 10_000, "test": 10_000}
    first = wikiann["train"][0]
    assert first["tokens"][:2] == ["R.H.", "Saunders"] and first["tags"][:2] == ["B-ORG", "I-ORG"]
    assert not any(t.startswith("en:") for s in wikiann["train"][:2000] for t in s["tokens"])
    wnut = data.load_ner("wnut17")
    assert {k: len(v) for k, v in wnut.items()} == {"train": 3_394, "validation": 1_009, "test": 1_287}
    assert sum(len(s["tokens"]) for s in wnut["train"]) == 62_730
    for name, d in (("wikiann-en", wikiann), ("wnut17", wnut)):
        tags = {t for split in d.values() for s in split for t in s["tags"]}
        assert tags == set(data.label_names(name))
        assert all(len(s["tokens"]) == len(s["tags"]) > 0 for split in d.values() for s in split)
    counts = Counter(t for s in wikiann["train"] for t in s["tags"])
    assert (counts["B-PER"], counts["B-ORG"], counts["B-LOC"]) == (9_164, 9_422, 9_345)


def test_wikitext2():
    valid = data.load_wikitext2()
    assert valid.count("\n") == 3_760 and "<unk>" in valid and " @-@ " in valid
    assert data.load_wikitext2("test").count("\n") == 4_358
    raw = data.load_wikitext2("test", raw=True)
    assert "\r" not in raw and "<unk>" not in raw and raw.count("\n") == 2_891
    with pytest.raises(ValueError, match="raw=False"):
        data.load_wikitext2("validation", raw=True)


# ------------------------------------------------------------------------------------------------ errors

def test_lookup_order_prefers_bertbook_data_dir(private_data):
    copy = copy_dataset("wnut17", private_data)
    assert registry.find("wnut17") == copy
    assert registry.find("sst2") != private_data / "sst2"  # not in the private folder: found further down


def test_missing_file_names_file_checksum_and_fix(private_data):
    copy = copy_dataset("wnut17", private_data)
    (copy / "emerging.dev.conll").unlink()
    with pytest.raises(registry.DataError) as err:
        data.load_ner("wnut17")
    message = str(err.value)
    assert err.value.problem == "missing" and isinstance(err.value, RuntimeError)
    expected = registry.info("wnut17")["files"]["emerging.dev.conll"]["sha256"]
    assert "emerging.dev.conll" in message and expected in message
    assert "BERTBOOK_DATA_DIR" in message and "python -m bertbook data --download wnut17" in message


def test_truncated_and_corrupted_files(private_data):
    copy = copy_dataset("wnut17", private_data)
    expected = registry.info("wnut17")["files"]["wnut17train.conll"]["sha256"]
    assert len(data.load_ner("wnut17")["train"]) == 3_394  # intact: loads (and is remembered as verified)
    path = copy / "wnut17train.conll"
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(registry.DataError, match="truncated") as err:
        data.load_ner("wnut17")
    assert err.value.problem == "size" and expected in str(err.value) and "wnut17train.conll" in str(err.value)
    corrupted = bytearray(original)
    corrupted[1000] ^= 0x20  # same size, one letter changed case
    path.write_bytes(bytes(corrupted))
    os.utime(path, ns=(1, 1))
    with pytest.raises(registry.DataError, match="corrupt") as err:
        data.load_ner("wnut17")
    assert err.value.problem == "checksum" and expected in str(err.value)
    assert hashlib.sha256(bytes(corrupted)).hexdigest() in str(err.value)


def test_missing_dataset_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "data_dirs", lambda: [tmp_path])
    with pytest.raises(registry.DataError) as err:
        data.load_classification("sst2")
    message = str(err.value)
    assert err.value.problem == "not found"
    assert "sst2/" in message and "BERTBOOK_DATA_DIR" in message and "--download sst2" in message


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_verifies_everything(capsys):
    assert cli.cli_data([]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert name in out
    assert "All 13 datasets present and verified" in out
    assert cli.cli_data(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in report["datasets"]] == ["ok"] * 13


def test_cli_fails_on_a_corrupt_file(private_data, capsys):
    copy = copy_dataset("rotten-tomatoes", private_data)
    path = copy / "rt-polarity.pos"
    path.write_bytes(path.read_bytes().replace(b"the", b"teh", 1))
    assert cli.cli_data([]) == 1
    captured = capsys.readouterr()
    assert "rotten-tomatoes" in captured.out and "corrupt" in captured.out
    assert "rt-polarity.pos" in captured.err
    rows = {r["name"]: r for r in registry.status()}
    assert rows["rotten-tomatoes"]["corrupt"] == ["rt-polarity.pos"] and rows["sst2"]["state"] == "ok"


def test_module_command_runs():
    result = subprocess.run([sys.executable, "-m", "bertbook", "data", "--json"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["datasets"]) == 13


def test_cli_download_offline_is_a_clear_error(private_data, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(registry.urllib.request, "urlopen", no_network)
    assert cli.cli_data(["--download", "wnut17"]) == 1
    err = capsys.readouterr().err
    assert "Could not download https://" in err and "internet" in err
    assert not (paths.cache_dir() / "wnut17").exists()


# ------------------------------------------------------------------------------------------------ downloads

def local_fetch(name):
    """A stand-in for the network: serve each URL of the manifest from the local copy."""
    folder = registry.find(name)
    by_url = {url: rel for rel, url in registry.info(name)["source"]["urls"].items()}

    def fetch(url, dest):
        shutil.copyfile(folder / by_url[url], dest)
    return fetch


def test_download_files_verifies_and_installs_atomically(tmp_path):
    folder = registry.download("wnut17", dest_root=tmp_path, fetch=local_fetch("wnut17"))
    assert folder == tmp_path / "wnut17"
    assert sorted(p.name for p in folder.iterdir()) == sorted(registry.info("wnut17")["files"])
    assert [p.name for p in tmp_path.iterdir()] == ["wnut17"]


def test_download_rejects_a_changed_source(tmp_path):
    good = local_fetch("sst2")

    def bad(url, dest):
        good(url, dest)
        if dest.name == "dev.tsv":
            dest.write_bytes(dest.read_bytes()[:-10])
    with pytest.raises(registry.DataError, match="does not match the manifest") as err:
        registry.download("sst2", dest_root=tmp_path, fetch=bad)
    assert err.value.problem == "download" and "dev.tsv" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-installed


def test_gzip_output_reproduces_the_reference_bytes(tmp_path):
    entry = registry.info("gutenberg-large")["files"]["valid-000.txt.gz"]
    with gzip.open(registry.find("gutenberg-large") / "valid-000.txt.gz", "rb") as f:
        content = f.read()
    out = tmp_path / "valid-000.txt.gz"
    registry._write_gzip(out, content, entry["gzip"]["name"], entry["gzip"]["mtime"])
    assert hashlib.sha256(out.read_bytes()).hexdigest() == entry["sha256"]


def test_convert_aclimdb_from_the_original_archive_layout(tmp_path):
    with gzip.open(registry.find("imdb") / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [line for line in f]
    records = [json.loads(line) for line in lines]
    wanted = {"test/neg/0", "test/neg/1", "test/neg/10", "test/pos/2", "test/pos/11"}
    chosen = [(line, r) for line, r in zip(lines, records) if r["id"] in wanted]
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, text):
            blob = text.encode("utf-8")
            member = tarfile.TarInfo(name)
            member.size = len(blob)
            tar.addfile(member, io.BytesIO(blob))
        add("aclImdb/README", "not a review")
        add("aclImdb/train/unsup/0_0.txt", "unlabelled review")
        for _, r in reversed(chosen):
            split, polarity, number = r["id"].split("/")
            add(f"aclImdb/{split}/{polarity}/{number}_{r['rating']}.txt", r["text"])
    out = tmp_path / "out"
    out.mkdir()
    registry.convert_aclimdb(archive, out, registry.info("imdb")["files"])
    with gzip.open(out / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        assert f.read() == "".join(line for line, _ in chosen)  # neg before pos, numeric id order
    with gzip.open(out / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        assert f.read() == ""


def test_gutenberg_rebuild_from_raw_ebooks(tmp_path):
    entry = registry.info("gutenberg-small")
    base = entry["source"]["base_url"]
    texts = {}
    for split, file in (("train", "train.txt"), ("validation", "valid.txt")):
        text = (registry.find("gutenberg-small") / file).read_text(encoding="utf-8")
        start = 0
        for book, chars in entry["source"]["books"][split]:
            texts[base + registry.urllib.parse.quote(book)] = text[start:start + chars]
            start += chars + 2

    def fetch(url, dest):  # what Project Gutenberg serves: header, the book, licence; CRLF line ends
        raw = ("\ufeffThe Project Gutenberg EBook of Something\r\n\r\n"
               "*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\r\n\r\n\r\n"
               + texts[url].replace("\n", "\r\n")
               + "\r\n\r\n\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\r\n\r\nLicence text\r\n")
        dest.write_bytes(raw.encode("utf-8"))
    folder = registry.download("gutenberg-small", dest_root=tmp_path, fetch=fetch)
    assert (folder / "train.txt").stat().st_size == entry["files"]["train.txt"]["size"]


def test_clean_gutenberg_old_style_markers():
    raw = ("Header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nThe text.\n\n"
           "End of the Project Gutenberg EBook of X\nmore licence")
    assert registry.clean_gutenberg(raw) == "The text."


def test_large_shards_follow_the_25m_rule():
    lengths = [chars for _, chars in registry.info("gutenberg-large")["source"]["books"]["train"]]
    counts = registry.shard_books(lengths, 25_000_000)
    assert counts == [65, 65, 57, 78, 71, 74, 74, 72, 72, 57]
    sizes, start = [], 0
    for c in counts:
        sizes.append(sum(n + 2 for n in lengths[start:start + c]))
        start += c
    assert sizes[0] == 25_005_127 and sizes[-1] == 21_881_415  # the shard files' lengths in characters
    assert registry.shard_books([5, 5], 0) == [2]


def _squad_fetch(train_bytes: bytes):
    """The network for SQuAD: the official dev JSON from the local gzip, and ``train_bytes`` as the train file."""
    dev_gz = registry.find("squad-v1.1") / "dev-v1.1.json.gz"

    def fetch(url, dest):
        if url.endswith("/dev-v1.1.json"):
            with gzip.open(dev_gz, "rb") as f:
                dest.write_bytes(f.read())
        else:
            dest.write_bytes(train_bytes)
    return fetch


def test_squad_download_rebuilds_the_dev_gzip_byte_for_byte_and_keeps_the_train_file(tmp_path, monkeypatch):
    entry = registry.info("squad-v1.1")
    train = entry["source"]["originals"]["train-v1.1.json"]
    fake_train = json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": []}]}).encode()
    # the official train file is not offline: let the manifest expect the stand-in's checksum instead
    patched = copy.deepcopy(entry)
    patched["source"]["originals"]["train-v1.1.json"] = {**train, "sha256": hashlib.sha256(fake_train).hexdigest()}
    fake_info = lambda name: patched if name == "squad-v1.1" else entry  # noqa: E731
    monkeypatch.setattr(registry, "info", fake_info)  # what download checks against
    monkeypatch.setattr(data, "info", fake_info)  # ... and what load_squad reads
    folder = registry.download("squad-v1.1", dest_root=tmp_path, fetch=_squad_fetch(fake_train))
    gz = folder / "dev-v1.1.json.gz"
    assert hashlib.sha256(gz.read_bytes()).hexdigest() == entry["files"]["dev-v1.1.json.gz"]["sha256"]
    assert (folder / "train-v1.1.json").read_bytes() == fake_train
    assert not (folder / "dev-v1.1.json").exists()
    monkeypatch.setenv("BERTBOOK_DATA_DIR", str(tmp_path))  # training then finds the downloaded train set
    assert data.load_squad("train") == [{"title": "T", "paragraphs": []}]
    monkeypatch.setattr(data, "info", lambda name: entry)  # against the real checksum it is refused
    with pytest.raises(registry.DataError, match="is not the official SQuAD v1.1 training set"):
        data.load_squad("train")


def test_squad_download_of_a_changed_train_file_installs_nothing(tmp_path):
    with pytest.raises(registry.DataError, match="changed at its source") as err:
        registry.download("squad-v1.1", dest_root=tmp_path, fetch=_squad_fetch(b"{}"))
    assert err.value.problem == "download" and "train-v1.1.json" in str(err.value)
    assert list(tmp_path.iterdir()) == []
