"""Speed: training tokens/s of bertbook next to ``transformers.BertForMaskedLM``, and the pipeline's
tokenization throughput. ``python -m bertbook bench [--json]`` (notebook 05 discusses the numbers).

Both models get the same config, the same packed batch (no padding, so no attention mask), the same
masks and the same AdamW, and are timed in the same process, interleaved, after warm-up steps; the best
of several repeats is reported (other programs on the machine only ever slow a repeat down). The math is
the same in both (``bertbook.hf`` checks the outputs agree); the difference is that bertbook computes the
vocabulary-sized output layer only at the ~15% masked positions (Cramming does the same), while
transformers computes it at every position and then ignores 85% of it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from .config import ModelConfig

__all__ = ["CONFIGS", "peak_flops", "time_training", "bench_models", "bench_tokenization", "run_bench",
           "format_table", "cli_bench"]

VOCAB, SEQ, BATCH = 30522, 128, 32
# name -> (layers, hidden, heads); the feed-forward is 4 x hidden, as in BERT
CONFIGS = {"L2/H128": (2, 128, 2), "L4/H512": (4, 512, 8)}
GPU_CONFIG = ("L12/H768", (12, 768, 12))  # BERT-base, the gpu preset's model

# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), for model FLOPs utilisation.
# BERTBOOK_PEAK_TFLOPS overrides them (e.g. for a card not listed, or a power-capped one).
PEAKS = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
         "GH200": 989e12, "A100": 312e12, "A10G": 70e12, "A10": 125e12, "L40S": 362e12, "L40": 181e12,
         "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 0.0, "T4": 0.0}


def peak_flops(device_name: str) -> float:
    """The card's dense bf16 peak in FLOP/s (0 when unknown or without bf16 tensor cores)."""
    if os.environ.get("BERTBOOK_PEAK_TFLOPS"):
        return float(os.environ["BERTBOOK_PEAK_TFLOPS"]) * 1e12
    for key, value in PEAKS.items():  # the most specific names come first
        if key in device_name:
            return value
    return 0.0


def _config(layers: int, hidden: int, heads: int, seq: int, vocab: int = VOCAB) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=4 * hidden, max_position_embeddings=max(512, seq))


def _batch(cfg: ModelConfig, batch: int, seq: int, device: torch.device, seed: int = 0) -> dict:
    """A packed batch of ordinary token ids, 15% masked with BERT's 80/10/10 rule."""
    from .masking import MaskVocab, mask_tokens

    special = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    special[:5] = True  # [PAD] [UNK] [CLS] [SEP] [MASK], as in bertbook's tokenizer
    vocab = MaskVocab(mask_token_id=4, cls_token_id=2, sep_token_id=3, pad_token_id=0, special=special,
                      continuation=torch.zeros_like(special), random_ids=torch.arange(5, cfg.vocab_size))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, cfg.vocab_size, (batch, seq), generator=g)  # (B, T)
    ids[:, 0], ids[:, -1] = 2, 3
    input_ids, labels = mask_tokens(ids, vocab, 0.15, generator=g)
    return {"input_ids": input_ids.to(device), "token_type_ids": torch.zeros_like(input_ids).to(device),
            "labels": labels.to(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(step, device: torch.device, steps: int) -> float:
    """Seconds for ``steps`` calls of ``step()`` (device work included)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t0


def _trainer(model, batch: dict, masked_only: bool | None, dtype: torch.dtype | None):
    """One AdamW training step of ``model`` on ``batch``, as a closure."""
    from .train import make_optimizer

    opt = make_optimizer(model, 1e-4, 0.01)
    extra = {} if masked_only is None else {"masked_only": masked_only}
    device_type = next(model.parameters()).device.type

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch, **extra).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_models(name: str, layers: int, hidden: int, heads: int, device: str = "cpu", batch: int = BATCH,
                 seq: int = SEQ, steps: int = 5, warmup: int = 2, repeats: int = 3, vocab: int = VOCAB) -> dict:
    """Training tokens/s of bertbook and transformers for one config on one device (best of ``repeats``)."""
    import transformers

    from .hf import to_hf_config
    from .model import BertForMaskedLM
    from .train import autocast_dtype, model_flops_per_token

    dev = torch.device(device)
    cfg = _config(layers, hidden, heads, seq, vocab)
    torch.manual_seed(0)
    ours = BertForMaskedLM(cfg).to(dev).train()
    hf = transformers.BertForMaskedLM(to_hf_config(cfg, attn_implementation="sdpa")).to(dev).train()
    data = _batch(cfg, batch, seq, dev)
    dtype = autocast_dtype("auto", dev)
    runs = {"bertbook": _trainer(ours, data, True, dtype), "transformers": _trainer(hf, data, None, dtype)}
    for step in runs.values():
        time_training(step, dev, warmup)
    best = {k: float("inf") for k in runs}
    for _ in range(repeats):  # interleaved, so a busy moment hurts both rather than one
        for k, step in runs.items():
            best[k] = min(best[k], time_training(step, dev, steps))
    tokens = batch * seq * steps
    row = {"device": dev.type, "config": name, "batch": batch, "seq": seq, "vocab": vocab,
           "dtype": "bf16" if dtype else "fp32",
           "bertbook_tok_s": tokens / best["bertbook"], "transformers_tok_s": tokens / best["transformers"]}
    row["ratio"] = row["bertbook_tok_s"] / row["transformers_tok_s"]
    if dev.type == "cuda":
        peak = peak_flops(torch.cuda.get_device_name(dev))
        row["gpu"] = torch.cuda.get_device_name(dev)
        row["peak_tflops"] = peak / 1e12
        for k, masked in (("bertbook", True), ("transformers", False)):
            achieved = row[f"{k}_tok_s"] * model_flops_per_token(cfg, seq, 0.15, masked_only=masked)
            row[f"{k}_tflops"] = achieved / 1e12
            row[f"{k}_mfu"] = achieved / peak if peak else None
    del ours, hf, runs
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def bench_tokenization(preset=None, max_chars: int = 0) -> dict:
    """Throughput of the pipeline's first step (paragraphs -> sentences -> fast WordPiece -> ids on disk)
    on the preset's corpus, with the bert-base-uncased vocabulary (30,522 entries, shipped with MiniLM), or
    the preset's own tokenizer where MiniLM is not installed."""
    from . import data
    from .config import get_preset
    from .corpus import build_cache, iter_paragraphs

    P = preset or get_preset()
    try:
        from transformers import AutoTokenizer

        from .pretrained import minilm_path

        tok, tok_name = AutoTokenizer.from_pretrained(str(minilm_path())), "bert-base-uncased vocabulary"
    except ImportError:
        from .tokenizer import get_tokenizer

        tok, tok_name = get_tokenizer(P), f"the {P.name!r} preset's tokenizer"
    text = data.load_corpus(P.data.corpus, "train", max_chars=max_chars, shards=P.data.large_shards)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_cache(iter_paragraphs([text]), tok, Path(tmp) / "cache", progress=False)
        seconds = time.perf_counter() - t0
        n_tokens = cache.n_tokens
    return {"corpus": P.data.corpus, "tokenizer": tok_name, "vocab": len(tok), "chars": len(text),
            "tokens": n_tokens, "seconds": seconds, "mb_s": len(text) / seconds / 1e6, "tokens_s": n_tokens / seconds}


def run_bench(devices: list[str], quick: bool = False, repeats: int = 3, steps: int = 5,
              gpu_batch: int = 256, tokenize_chars: int = 0) -> dict:
    """Every config on every device, then the tokenization throughput (on ``tokenize_chars`` characters of
    the current preset's corpus; 0 = all of gutenberg-small or the preset's shards)."""
    from .course import machine

    rows = []
    for device in devices:
        configs = dict(CONFIGS)
        if device == "cuda" and not quick:
            configs[GPU_CONFIG[0]] = GPU_CONFIG[1]
        for name, (layers, hidden, heads) in configs.items():
            batch = gpu_batch if name == GPU_CONFIG[0] else BATCH
            if quick:
                rows.append(bench_models(f"L{layers}/H{hidden // 4} (quick)", layers, hidden // 4, heads, device,
                                         batch=4, seq=32, steps=1, warmup=1, repeats=1, vocab=1000))
            else:
                rows.append(bench_models(name, layers, hidden, heads, device, batch=batch, steps=steps,
                                         repeats=repeats))
    tokenization = bench_tokenization(None, 200_000 if quick else tokenize_chars)
    return {"machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "quick": quick, "models": rows, "tokenization": tokenization}


def format_table(result: dict) -> str:
    """The bench as a Markdown table (one row per device and config) plus the tokenization line."""
    lines = [f"Training tokens/s, bertbook vs transformers.BertForMaskedLM (same config, packed batch, AdamW; "
             f"best of repeats) on {result['machine']}, torch {result['torch']}, {result['threads']} threads"
             + (" [--quick: tiny batches, not a measurement]" if result["quick"] else ""), "",
             "| device | config | batch x seq, vocab | bertbook tok/s | transformers tok/s | ratio | MFU (ours / HF) |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in result["models"]:
        mfu = ""
        if r.get("bertbook_mfu") is not None:
            mfu = f"{r['bertbook_mfu']:.0%} / {r['transformers_mfu']:.0%} of {r['peak_tflops']:.0f} TFLOP/s"
        lines.append(f"| {r['device']} {r['dtype']} | {r['config']} | {r['batch']} x {r['seq']}, {r['vocab']} | "
                     f"{r['bertbook_tok_s']:,.0f} | {r['transformers_tok_s']:,.0f} | {r['ratio']:.2f}x | {mfu} |")
    t = result["tokenization"]
    lines += ["", f"Tokenization (sentence split + fast WordPiece + ids to disk): {t['mb_s']:.2f} MB/s, "
                  f"{t['tokens_s'] / 1e6:.2f} M tokens/s ({t['chars'] / 1e6:.1f} M characters of {t['corpus']} "
                  f"in {t['seconds']:.1f} s, {t['tokenizer']})"]
    return "\n".join(lines)


def cli_bench(argv: list[str]) -> int:
    """``python -m bertbook bench [--json] [--quick] [--device cpu|cuda|all]``."""
    parser = argparse.ArgumentParser(prog="python -m bertbook bench",
                                     description="Training speed of bertbook vs transformers, side by side, and "
                                                 "the tokenization throughput.")
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                        help="all = the CPU, and CUDA when present")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (last line)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and batches: checks that the command works, measures nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--gpu-batch", type=int, default=256, help="batch of the BERT-base row on CUDA")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually one per core)")
    parser.add_argument("--tokenize-chars", type=int, default=0,
                        help="characters of the preset's corpus to tokenize (0 = all of it)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but no CUDA device is available here.", file=__import__("sys").stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    result = run_bench(devices, args.quick, args.repeats, args.steps, args.gpu_batch, args.tokenize_chars)
    print(format_table(result))
    if args.json:
        print(json.dumps(result))
    return 0
