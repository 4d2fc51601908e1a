"""The reference model: exported from a finished run, checked by its checksums and by a recomputed figure."""

import json
import shutil

import pytest
import torch

from bertbook import cli
from bertbook import reference as ref
from bertbook.checkpoint import CheckpointError, MissingFileError
from bertbook.config import get_preset
from bertbook.train import pretrain


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """A finished ci-preset pretraining run (30 steps) and its checkpoint folder."""
    out = tmp_path_factory.mktemp("run")
    history = pretrain(get_preset("ci"), out, progress=False, verbose=False)
    return out / "checkpoint", history


@pytest.fixture()
def shipped(ci_run, tmp_path):
    return ref.export_reference(ci_run[0], tmp_path / "reference-ci")


def test_export_writes_bf16_weights_record_and_checksums(ci_run, shipped):
    from safetensors import safe_open

    with safe_open(str(shipped / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    record = ref.reference_record(shipped)
    history = ci_run[1]
    assert record["steps"] == 30 and record["tokens"] == 30 * 8 * 64
    assert set(record["held_out"]) == {"gutenberg", "imdb-reviews", "wikitext-2"}
    assert record["curve"] == history.eval  # the whole held-out curve is kept
    assert record["command"].startswith("python -m bertbook pretrain --preset ci ")
    sums = ref.verify_reference(shipped)
    assert set(sums) == {p.name for p in shipped.iterdir()} - {ref.SUMS_NAME}


def test_recomputed_slice_matches_the_record(shipped):
    model, tokenizer, record = ref.load_reference(shipped)
    assert next(model.parameters()).dtype == torch.float32
    now = ref.check_slice(model, tokenizer, get_preset("ci"))
    assert now["accuracy"] == pytest.approx(record["check_slice"]["accuracy"], abs=ref.SLICE_TOLERANCE)
    assert now["loss"] == pytest.approx(record["check_slice"]["loss"], abs=1e-3)


def test_a_changed_or_missing_file_is_refused_with_what_to_do(shipped):
    weights = shipped / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 does not match.*make reference"):
        ref.reference(shipped)
    (shipped / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match="tokenizer.json is missing"):
        ref.verify_reference(shipped)
    shutil.rmtree(shipped)
    with pytest.raises(MissingFileError, match="no reference model"):
        ref.load_reference(shipped)


def test_export_refuses_an_unfinished_run_and_an_existing_reference(ci_run, shipped, tmp_path):
    with pytest.raises(FileExistsError, match="--overwrite"):
        ref.export_reference(ci_run[0], shipped)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(ci_run[0], unfinished)
    run = json.loads((unfinished / "pretrain.json").read_text())
    (unfinished / "pretrain.json").write_text(json.dumps({**run, "finished": False}))
    with pytest.raises(ValueError, match="finish it first.*--resume"):
        ref.export_reference(unfinished, tmp_path / "other")


def test_the_reference_is_a_checkpoint_everywhere(shipped, monkeypatch, capsys):
    from bertbook.classifier import build_classifier, init_name

    monkeypatch.setattr(ref, "reference_dir", lambda: shipped)
    model, _, info = build_classifier(get_preset("ci"), "reference", verbose=False)
    assert info["checkpoint"] == str(shipped) and init_name("reference") == "reference"
    assert cli.main(["reference", "--out", str(shipped)]) == 0
    assert "the same" in capsys.readouterr().out


def test_cli_without_the_reference_says_how_to_get_it(tmp_path, capsys):
    assert cli.main(["reference", "--out", str(tmp_path / "absent")]) == 2
    assert "make reference" in capsys.readouterr().err


@pytest.mark.skipif(not ref.reference_dir().is_dir(), reason="this checkout has no models/reference-laptop")
def test_shipped_reference_matches_its_record():
    """The committed reference: every checksum, and its accuracy on the fixed slice recomputed here."""
    model, tokenizer, record = ref.load_reference()
    assert record["tokens"] >= 100_000_000
    now = ref.check_slice(model, tokenizer)
    assert now["accuracy"] == pytest.approx(record["check_slice"]["accuracy"], abs=ref.SLICE_TOLERANCE)


def test_course_mlm_takes_the_reference_when_it_has_the_presets_shape(shipped, monkeypatch, artifacts, tmp_path):
    monkeypatch.setattr(ref, "reference_dir", lambda: shipped)
    model, tokenizer, name = ref.course_mlm(get_preset("ci"))
    assert name == "the reference model" and not model.training and tokenizer.mask_token == "[MASK]"
    # another shape (or no reference at all): the preset's own checkpoint
    monkeypatch.setattr(ref, "reference_dir", lambda: tmp_path / "absent")
    _, _, name = ref.course_mlm(get_preset("ci", **{"pretrain.max_steps": 4}))
    assert name == "preset 'ci''s own model"
