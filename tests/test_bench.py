"""The bench command (checked to run and report ratios, never timed) and the GPU check script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertbook import bench
from bertbook import cli

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_prints_ratios(capsys):
    assert cli.cli_bench(["--quick", "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert [r["config"] for r in result["models"]] == ["L2/H32 (quick)", "L4/H128 (quick)"]
    for r in result["models"]:
        assert r["bertbook_tok_s"] > 0 and r["transformers_tok_s"] > 0
        assert r["ratio"] == pytest.approx(r["bertbook_tok_s"] / r["transformers_tok_s"])
        assert f"{r['ratio']:.2f}x" in out
    (p,) = result["precision"]  # fp32 and bf16 side by side, and what "auto" chose
    assert p["config"] == "L4/H64" and p["fp32_tok_s"] > 0 and p["bf16_tok_s"] > 0
    assert p["ratio"] == pytest.approx(p["bf16_tok_s"] / p["fp32_tok_s"]) and f"{p['ratio']:.2f}x" in out
    assert p["auto"] == ("bf16" if p["hardware_bf16"] else "fp32") and f"trains in {p['auto']} here" in out
    t = result["tokenization"]
    assert t["tokens"] > 10_000 and t["mb_s"] > 0 and "MB/s" in out


def test_peak_flops_and_the_gpu_table(monkeypatch):
    assert bench.peak_flops("NVIDIA H200") == 989e12
    assert bench.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench.peak_flops("Some Future GPU") == 0.0
    monkeypatch.setenv("BERTBOOK_PEAK_TFLOPS", "500")
    assert bench.peak_flops("NVIDIA H200") == 500e12
    table = bench.format_table(_fake_bench())
    assert "| cuda bf16 | L12/H768 | 256 x 128, 30522 | 300,000 | 100,000 | 3.00x | 40% / 25% of 989 TFLOP/s |" in table


def _fake_bench() -> dict:
    row = {"device": "cuda", "config": "L12/H768", "batch": 256, "seq": 128, "vocab": 30522, "dtype": "bf16",
           "bertbook_tok_s": 3e5, "transformers_tok_s": 1e5, "ratio": 3.0, "gpu": "NVIDIA H200",
           "peak_tflops": 989.0, "bertbook_tflops": 395.6, "transformers_tflops": 247.3, "bertbook_mfu": 0.4,
           "transformers_mfu": 0.25}
    return {"machine": "NVIDIA H200 x1", "torch": "2.x", "threads": 16, "quick": False, "models": [row],
            "tokenization": {"corpus": "gutenberg-large", "tokenizer": "the 'gpu' preset's tokenizer", "vocab": 30522,
                             "chars": 10_000_000, "tokens": 2_400_000, "seconds": 2.0, "mb_s": 5.0,
                             "tokens_s": 1.2e6}}


def test_gpu_check_summary_of_a_full_report(script):
    gc = script("gpu_check")
    report = {"tiny": False, "device": "cuda", "preset": "gpu", "total_seconds": 470.0,
              "pretrain_settings": "240 s budget, data.large_shards=2",
              "environment": {"gpu": "NVIDIA H200", "gpus": 1, "cpu_cores": 16, "torch": "2.11", "python": "3.12",
                              "transformers": "5.17", "when": "today"},
              "stages": {"parity": {"status": "ok", "seconds": 20.0},
                         "bench": {"status": "ok", "seconds": 60.0, "result": _fake_bench()},
                         "pretrain": {"status": "ok", "seconds": 330.0, "result": {
                             "preset": "gpu", "step": 3000, "tokens": 98_304_000, "train_seconds": 240.0,
                             "gutenberg_accuracy": 0.31, "gutenberg_loss": 4.1, "wikitext-2_accuracy": 0.22,
                             "wikitext-2_loss": 5.0}},
                         "finetune": {"status": "failed", "seconds": 5.0, "error": "boom"}}}
    md = gc.summary_markdown(report)
    assert "NVIDIA H200, 16 CPU cores" in md and "40% / 25% of 989 TFLOP/s" in md
    assert "3000 steps, 98,304,000 tokens in 240 s" in md and "31.0% on Gutenberg" in md
    assert "- finetune: boom" in md


@pytest.mark.slow
def test_gpu_check_tiny_dry_run(tmp_path):
    """The script's CPU dry run: a time-budgeted pretraining run on ci, then the IMDB fine-tune of it."""
    (tmp_path / "device-out").mkdir()  # $OUT of a device machine: the results are copied there after each stage
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--out",
                           str(tmp_path), "--work", str(tmp_path / "work"), "--stages", "pretrain", "finetune",
                           "baselines"], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OUT": str(tmp_path / "device-out")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["tiny"] and set(report["stages"]) == {"tokenizer", "pretrain", "finetune", "baselines"}
    assert all(stage["status"] == "ok" for stage in report["stages"].values())
    pre = report["stages"]["pretrain"]["result"]
    assert pre["finished"] and pre["train_seconds"] >= 3.0 and 0 <= pre["gutenberg_accuracy"] <= 1
    fin = report["stages"]["finetune"]["result"]
    assert fin["task"] == "imdb" and 0 <= fin["accuracy"] <= 1 and fin["test_examples"] == 64
    base = {row["model"]: row for row in report["stages"]["baselines"]["result"]}
    assert set(base) == {"bow", "random"} and all(row["train_examples"] == 64 for row in base.values())
    md = (tmp_path / "gpu_check.md").read_text()
    assert "dry run" in md and "IMDB fine-tune" in md and "bag of words (TF-IDF" in md
    assert (tmp_path / "device-out" / "gpu_check.md").read_text() == md
    assert "===== pretrain (stdout)" in (tmp_path / "gpu_check.log").read_text()
