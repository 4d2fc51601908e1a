"""The dataset registry: which datasets exist, where they live, whether they are intact, how to fetch them.

Taught in notebook 00 (where the data comes from); :mod:`bertbook.data` reads the files this module finds
and verifies. The course reads only real, public text.

``data/manifest.json`` lists every dataset: its folder, each file's SHA-256 and size, its public home,
licence and citation. A dataset is looked up, in this order, in

1. the folder named by the environment variable ``BERTBOOK_DATA_DIR``,
2. the project's cache ``data/cache/`` (where downloads land),
3. ``../shared/data`` beside the checkout (the course machines keep a copy there).

The first of these that holds the dataset's folder is used. Every file is checked against the manifest
before it is read: its size every time, its SHA-256 once per process (and again whenever its size or
modification time changes). A missing, truncated or changed file raises :class:`DataError`, which names the
file, the expected checksum and how to fix it.

Nothing is downloaded silently. On a machine with internet, ``python -m bertbook data --download imdb``
(or :func:`download`) fetches a dataset from its public home into ``data/cache/``, converts it to the same
layout and verifies every checksum before the folder becomes visible.

Read top to bottom: the manifest (:func:`names`, :func:`info`); finding and verifying a dataset
(:func:`find`, :func:`sha256_file`, :func:`verified_files`, :func:`status`); downloading (:func:`download`,
with the converters :func:`convert_aclimdb`, :func:`clean_gutenberg` and :func:`shard_books`, and the
``gzip -9 -n`` rebuild of files that are kept gzipped, such as SQuAD's dev set and Tatoeba's pairs).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from . import paths

__all__ = [
    "DataError",
    "names",
    "info",
    "lookup_text",
    "fix_text",
    "find",
    "sha256_file",
    "verified_files",
    "status",
    "convert_aclimdb",
    "clean_gutenberg",
    "shard_books",
    "download",
]


class DataError(RuntimeError):
    """A dataset or one of its files is missing, truncated or corrupt; the message says how to fix it.

    Attributes: ``path`` (the file or folder concerned), ``expected_sha256`` (None for a whole dataset)
    and ``problem`` ("not found", "missing", "size", "checksum", "download", "layout").
    """

    def __init__(self, message: str, *, path: Path | None = None, expected_sha256: str | None = None,
                 problem: str = "missing") -> None:
        super().__init__(message)
        self.path = path
        self.expected_sha256 = expected_sha256
        self.problem = problem


# ---------------------------------------------------------------------------------------------------------
# The manifest: which datasets exist and what their files must look like

_MANIFEST: dict[str, Any] | None = None


def _manifest() -> dict[str, Any]:
    global _MANIFEST
    if _MANIFEST is None:
        path = paths.project_root() / "data" / "manifest.json"
        if not path.is_file():
            raise DataError(f"The data manifest {path} is missing. It is part of the bertbook checkout: "
                            f"run from the checkout (pip install -e .) or restore data/manifest.json.",
                            path=path, problem="missing")
        _MANIFEST = json.loads(path.read_text(encoding="utf-8"))
    return _MANIFEST


def names() -> list[str]:
    """The names of every dataset in the manifest, e.g. ``['gutenberg-small', ..., 'wnut17']``."""
    return list(_manifest()["datasets"])


def info(name: str) -> dict[str, Any]:
    """A dataset's manifest entry: folder, description, files (sha256, size), licence, citation, home."""
    datasets = _manifest()["datasets"]
    if name not in datasets:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(datasets)}.")
    return datasets[name]


# ---------------------------------------------------------------------------------------------------------
# Finding a dataset and verifying its files

def lookup_text() -> str:
    """The folders a dataset is looked up in, in order, one numbered line each (for messages)."""
    env = os.environ.get("BERTBOOK_DATA_DIR")
    shared = paths.project_root().parent / "shared" / "data"
    return (f"  1. BERTBOOK_DATA_DIR ({env if env else 'not set'})\n"
            f"  2. the project cache {paths.cache_dir()}\n"
            f"  3. the shared data folder {shared}{'' if shared.is_dir() else ' (absent)'}")


def fix_text(name: str) -> str:
    """What to do when dataset ``name`` is missing or damaged (the end of every DataError message)."""
    folder = info(name)["folder"]
    return (f"To fix it, do one of:\n"
            f"  - put the dataset's folder {folder}/ (all files listed in data/manifest.json) into a data "
            f"folder and point BERTBOOK_DATA_DIR at it (on the course machines a verified copy is in "
            f"../shared/data/{folder}/);\n"
            f"  - on a machine with internet: python -m bertbook data --download {name}  "
            f"(fetches it from its public home into data/cache/ and checks every checksum).")


def find(name: str) -> Path:
    """The folder holding dataset ``name``: the first of the lookup folders that contains it.

    Raises DataError (saying where it looked and how to get the data) when no folder has it.
    """
    folder = info(name)["folder"]
    for root in paths.data_dirs():
        if (root / folder).is_dir():
            return root / folder
    raise DataError(f"Dataset {name!r} was not found: no folder {folder}/ in any of\n{lookup_text()}\n"
                    f"{fix_text(name)}", path=Path(folder), problem="not found")


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as hex, read a megabyte at a time (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Files hashed and found intact in this process: {absolute path: [size, mtime_ns, sha256]}. Hashing all
# 140 MB takes well under a second, so each file is hashed once per process and only its size afterwards.
_VERIFIED: dict[str, list] = {}


def _check_file(name: str, folder: Path, rel: str, full: bool = False) -> Path:
    """Return ``folder/rel`` after checking it against the manifest, else raise DataError.

    The size is checked every time; the SHA-256 only when this exact file (size and modification time)
    has not been verified in this process, or when ``full`` is set.
    """
    expected = info(name)["files"][rel]
    path = folder / rel
    where = f"{rel} of dataset {name!r} ({path})"
    if not path.is_file():
        raise DataError(f"File {where} is missing (expected SHA-256 {expected['sha256']}, "
                        f"{expected['size']:,} bytes).\n{fix_text(name)}",
                        path=path, expected_sha256=expected["sha256"], problem="missing")
    stat = path.stat()
    if stat.st_size != expected["size"]:
        raise DataError(f"File {where} is truncated or changed: {stat.st_size:,} bytes, expected "
                        f"{expected['size']:,} bytes with SHA-256 {expected['sha256']}.\n{fix_text(name)}",
                        path=path, expected_sha256=expected["sha256"], problem="size")
    key = str(path.resolve())
    record = [stat.st_size, stat.st_mtime_ns, expected["sha256"]]
    if not full and _VERIFIED.get(key) == record:
        return path
    actual = sha256_file(path)
    if actual != expected["sha256"]:
        raise DataError(f"File {where} is corrupt: its SHA-256 is {actual}, expected "
                        f"{expected['sha256']}.\n{fix_text(name)}",
                        path=path, expected_sha256=expected["sha256"], problem="checksum")
    _VERIFIED[key] = record
    return path


def verified_files(name: str, rels: list[str]) -> list[Path]:
    """The files ``rels`` of dataset ``name`` (paths inside its folder), each checked against the manifest;
    raises DataError when one is missing, truncated or corrupt. The readers in :mod:`bertbook.data` use it."""
    folder = find(name)
    return [_check_file(name, folder, rel) for rel in rels]


def status(full: bool = True) -> list[dict[str, Any]]:
    """One row per dataset: ``name``, ``where`` (folder or None), ``state`` ("ok", "not found",
    "missing", "corrupt"), ``ok`` / ``missing`` / ``corrupt`` (file names), ``bytes`` (expected size),
    ``problems`` (messages). ``full=True`` re-hashes every file (a few seconds for all of them)."""
    rows = []
    for name in names():
        entry = info(name)
        row: dict[str, Any] = {"name": name, "where": None, "state": "not found", "ok": [], "missing": [],
                               "corrupt": [], "bytes": sum(f["size"] for f in entry["files"].values()),
                               "problems": []}
        try:
            folder = find(name)
        except DataError as err:
            row["problems"].append(str(err).splitlines()[0])
            rows.append(row)
            continue
        row["where"] = str(folder)
        for rel in entry["files"]:
            try:
                _check_file(name, folder, rel, full=full)
                row["ok"].append(rel)
            except DataError as err:
                row["missing" if err.problem == "missing" else "corrupt"].append(rel)
                row["problems"].append(str(err).splitlines()[0])
        row["state"] = "corrupt" if row["corrupt"] else "missing" if row["missing"] else "ok"
        rows.append(row)
    return rows



# ---------------------------------------------------------------------------------------------------------
# Downloading from the public homes (explicit only: python -m bertbook data --download NAME)

Fetch = Callable[[str, Path], None]


def _http_fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (the only function here that touches the network)."""
    request = urllib.request.Request(url, headers={"User-Agent": "bertbook-data/1"})
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DataError(f"Could not download {url}: {reason}. Downloading needs internet access; on a "
                        f"machine without it, copy the dataset's folder and set BERTBOOK_DATA_DIR "
                        f"(see data/README.md).", path=dest, problem="download") from None
    os.replace(tmp, dest)


def _write_gzip(path: Path, data: bytes, name: str, mtime: int) -> None:
    """Write ``data`` gzipped exactly as the reference files were (level 9, header name and time), so
    that a rebuilt file has the same SHA-256 as the manifest's."""
    with open(path, "wb") as raw, gzip.GzipFile(filename=name, mode="wb", fileobj=raw, compresslevel=9,
                                                 mtime=mtime) as gz:
        gz.write(data)
        gz.flush()


def _build_files(entry: dict, out: Path, fetch: Fetch) -> None:
    """Files kept unchanged from their source: fetch each one."""
    for rel, url in entry["source"]["urls"].items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        fetch(url, out / rel)


_ACLIMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


def convert_aclimdb(archive: Path, out: Path, files: dict[str, dict]) -> None:
    """Turn the original ``aclImdb_v1.tar.gz`` into ``train.jsonl.gz`` and ``test.jsonl.gz``.

    One JSON object per review, ``{"id": "train/pos/0", "text": <file content>, "label": 1,
    "rating": 9}``, negatives first, each class sorted by numeric id. Unlabelled reviews are skipped.
    """
    records: dict[str, list[tuple[int, int, dict]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            match = _ACLIMDB_MEMBER.search(member.name)
            if not member.isfile() or not match:
                continue
            split, polarity, number, rating = match.groups()
            text = tar.extractfile(member).read().decode("utf-8")
            label = 1 if polarity == "pos" else 0
            record = {"id": f"{split}/{polarity}/{number}", "text": text, "label": label,
                      "rating": int(rating)}
            records[split].append((label, int(number), record))
    for split, rows in records.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        data = "".join(json.dumps(r[2], ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        rel = f"{split}.jsonl.gz"
        _write_gzip(out / rel, data, files[rel]["gzip"]["name"], files[rel]["gzip"]["mtime"])


def _build_aclimdb(entry: dict, out: Path, fetch: Fetch) -> None:
    archive = out / "aclImdb_v1.tar.gz"
    fetch(entry["source"]["url"], archive)
    convert_aclimdb(archive, out, entry["files"])
    archive.unlink()


_PG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT!.*$",
                       re.IGNORECASE | re.MULTILINE)
_PG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg",
                     re.IGNORECASE | re.MULTILINE)


def clean_gutenberg(raw: str) -> str:
    """A Project Gutenberg e-book without its header and licence footer: the text between the
    "*** START OF ..." line (or the old "*END*THE SMALL PRINT!" line) and "*** END OF ..." /
    "End of the Project Gutenberg ...", with CRLF turned into LF and surrounding blank space removed."""
    text = raw.lstrip("\ufeff").replace("\r\n", "\n")
    start = _PG_START.search(text)
    if start:
        text = text[start.end():]
    end = _PG_END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip()


def shard_books(lengths: list[int], shard_chars: int) -> list[int]:
    """How many consecutive books go into each shard: a shard is closed as soon as it holds at least
    ``shard_chars`` characters (each book counts its length + 2 for the blank line after it);
    ``shard_chars=0`` puts everything in one file."""
    counts, size, count = [], 0, 0
    for n in lengths:
        size += n + 2
        count += 1
        if shard_chars and size >= shard_chars:
            counts.append(count)
            size, count = 0, 0
    if count or not counts:
        counts.append(count)
    return counts


def _build_gutenberg(entry: dict, out: Path, fetch: Fetch) -> None:
    """Fetch each listed book, strip the Project Gutenberg header, join and shard as the reference."""
    source = entry["source"]
    raw_dir = out / ".raw"
    raw_dir.mkdir()
    differ = []
    for split, books in source["books"].items():
        texts = []
        for i, (book, chars) in enumerate(books):
            dest = raw_dir / f"{split}-{i}.txt"
            fetch(source["base_url"] + urllib.parse.quote(book), dest)
            text = clean_gutenberg(dest.read_bytes().decode("utf-8"))
            dest.unlink()
            if len(text) != chars:
                differ.append(f"{book}: {len(text):,} characters after cleaning, the reference has {chars:,}")
            texts.append(text)
        (out / source["book_lists"][split]).write_text(
            "".join(f"{book}\t{chars}\n" for book, chars in books), encoding="utf-8", newline="")
        pattern = source["outputs"][split]
        start = 0
        for shard, count in enumerate(shard_books([len(t) for t in texts], source["shard_chars"])):
            data = "".join(t + "\n\n" for t in texts[start:start + count]).encode("utf-8")
            start += count
            rel = pattern.format(shard)
            if rel.endswith(".gz"):
                gz = entry["files"][rel]["gzip"]
                _write_gzip(out / rel, data, gz["name"], gz["mtime"])
            else:
                (out / rel).write_bytes(data)
    raw_dir.rmdir()
    if differ:
        print("Books that clean differently from the reference:\n  " + "\n  ".join(differ[:20]),
              file=sys.stderr)


def _fetch_original(spec: dict, dest: Path, fetch: Fetch) -> None:
    """Fetch an original file (``spec``: url, sha256, size) and check its SHA-256 before anything is built
    from it, so that a source that changed is named as such."""
    fetch(spec["url"], dest)
    actual = sha256_file(dest)
    if actual != spec["sha256"]:
        raise DataError(f"{spec['url']} has SHA-256 {actual}, expected {spec['sha256']}: the file changed at "
                        f"its source, so nothing was installed.", path=dest,
                        expected_sha256=spec["sha256"], problem="download")


def _gzip_n(path: Path) -> None:
    """``gzip -9 -n path`` (no name, no time, so the bytes are reproducible): the GNU program, because
    Python's zlib compresses to other bytes than the reference files were written with."""
    import subprocess

    gzip_tool = shutil.which("gzip")
    if gzip_tool is None:
        raise DataError(f"Rebuilding {path.name}.gz needs the gzip program (GNU gzip), which is not on PATH. "
                        f"Install it, or copy a verified copy of the dataset's folder and set BERTBOOK_DATA_DIR.",
                        path=path.with_name(path.name + ".gz"), problem="download")
    subprocess.run([gzip_tool, "-9", "-n", str(path)], check=True)


def _build_squad(entry: dict, out: Path, fetch: Fetch) -> None:
    """The official SQuAD v1.1 files: each checked against its SHA-256, the dev set gzipped as the reference
    (``gzip -9 -n``), the train set kept as it is."""
    for rel, spec in entry["source"]["originals"].items():
        _fetch_original(spec, out / rel, fetch)
    _gzip_n(out / "dev-v1.1.json")


def _build_gzip(entry: dict, out: Path, fetch: Fetch) -> None:
    """Files kept unchanged (``urls``) and originals stored gzipped (``originals``: each checked against its
    SHA-256, then ``gzip -9 -n``), e.g. Tatoeba's ``cmn.txt`` -> ``cmn.txt.gz``."""
    _build_files(entry, out, fetch)
    for rel, spec in entry["source"]["originals"].items():
        _fetch_original(spec, out / rel, fetch)
        _gzip_n(out / rel)


_BUILDERS: dict[str, Callable[[dict, Path, Fetch], None]] = {
    "files": _build_files, "aclimdb": _build_aclimdb, "gutenberg": _build_gutenberg,
    "squad": _build_squad, "gzip": _build_gzip}


def download(name: str, *, dest_root: Path | None = None, fetch: Fetch | None = None,
             force: bool = False) -> Path:
    """Fetch dataset ``name`` from its public home into ``data/cache/`` (or ``dest_root``), convert it to
    bertbook's layout and verify every file's SHA-256. Returns the dataset's folder.

    Needs internet. The folder appears only once every file is verified; a failed download leaves
    nothing behind. An intact existing copy is kept unless ``force``.
    """
    entry = info(name)
    root = Path(dest_root) if dest_root is not None else paths.cache_dir()
    final = root / entry["folder"]
    if final.is_dir() and not force:
        try:
            for rel in entry["files"]:
                _check_file(name, final, rel, full=True)
            return final
        except DataError:
            pass  # incomplete or damaged: rebuild it
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        _BUILDERS[entry["source"]["kind"]](entry, work, fetch or _http_fetch)
        for rel, expected in entry["files"].items():
            try:
                _check_file(name, work, rel, full=True)
            except DataError as err:
                raise DataError(f"The downloaded {rel} of {name!r} does not match the manifest "
                                f"(expected SHA-256 {expected['sha256']}): {err.problem}. The source may have "
                                f"changed; nothing was installed. Copy a verified folder instead and set "
                                f"BERTBOOK_DATA_DIR (see data/README.md).", path=err.path,
                                expected_sha256=expected["sha256"], problem="download") from None
        if final.exists():
            old = final.with_name(f"{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final

