"""The shared helpers: atomic writes, folder swaps, autocast, eval mode."""

import os

import pytest
import torch

from bertbook.utils import (atomic_write, autocast, autocast_dtype, cpu_computes_bf16, device_of, eval_mode,
                            replace_folder)


def test_atomic_write_text_bytes_and_writer(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write(p, "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    atomic_write(p, lambda tmp: open(tmp, "w").write("from a writer"))
    assert p.read_text() == "from a writer"
    assert sorted(os.listdir(p.parent)) == ["a.txt"]  # no temporary file left behind


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, broken)
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_replace_folder_swaps_and_removes_the_old_one(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir(); (out / "old.txt").write_text("old")
    tmp.mkdir(); (tmp / "new.txt").write_text("new")
    replace_folder(tmp, out)
    assert sorted(os.listdir(out)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    tmp.mkdir(); (tmp / "x").write_text("x")
    replace_folder(tmp, tmp_path / "fresh")  # no old folder
    assert (tmp_path / "fresh" / "x").read_text() == "x"
    empty = tmp_path / "empty"; empty.mkdir()
    tmp.mkdir(); (tmp / "y").write_text("y")
    replace_folder(tmp, empty)  # an empty folder is simply replaced
    assert os.listdir(empty) == ["y"]


def test_autocast_dtype_and_context():
    cpu = torch.device("cpu")
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_computes_bf16() else None)
    assert autocast_dtype("auto", torch.device("meta")) is None
    assert autocast_dtype("fp32", cpu) is None
    x = torch.randn(4, 4)
    with pytest.raises(ValueError, match="precision must be"):
        autocast_dtype("half", cpu)
    with autocast(cpu, None):
        assert (x @ x).dtype == torch.float32
    with autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16


def test_auto_precision_follows_the_cpu_and_the_environment(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not cpu_computes_bf16() and autocast_dtype("auto", cpu) is None  # emulated bf16 would be slower
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_computes_bf16() and autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setenv("BERTBOOK_PRECISION", "fp32")  # decides every "auto", never an explicit setting
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setenv("BERTBOOK_PRECISION", "double")
    with pytest.raises(ValueError, match="BERTBOOK_PRECISION"):
        autocast_dtype("auto", cpu)


def test_eval_mode_restores_the_mode_also_on_errors():
    m = torch.nn.Dropout(0.5)
    assert m.training
    with eval_mode(m):
        assert not m.training
    assert m.training
    with pytest.raises(RuntimeError):
        with eval_mode(m):
            raise RuntimeError
    assert m.training
    m.eval()
    with eval_mode(m):
        pass
    assert not m.training
    assert device_of(torch.nn.Linear(2, 2)) == torch.device("cpu")
