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

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

from . import data
from .config import ModelConfig, get_preset
from .corpus import build_cache, iter_paragraphs
from .hf import to_hf_config
from .masking import MaskVocab, mask_tokens
from .model import BertForMaskedLM
from .optim import make_optimizer
from .minilm import minilm_path
from .tokenizer import get_tokenizer
from .train import build_model
from .utils import autocast_dtype, cpu_computes_bf16, machine

__all__ = ["CONFIGS", "peak_flops", "time_training", "bench_models", "bench_precision", "bench_tokenization",
           "run_bench", "format_table", "model_flops_per_token", "compute_estimate"]

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


def bench_precision(batch: int = BATCH, seq: int = SEQ, steps: int = 5, warmup: int = 2, repeats: int = 3,
                    quick: bool = False) -> dict:
    """Training tokens/s of the laptop preset's model (bertbook) on the CPU in fp32 and in bf16 autocast, side
    by side: what ``precision="auto"`` gains by choosing bf16 where the CPU computes it (and would lose where
    it only emulates it). The same batch, masks and AdamW in both; interleaved, best of ``repeats``."""
    dev = torch.device("cpu")
    cfg = get_preset("laptop").model
    if quick:
        cfg = dataclasses.replace(cfg, vocab_size=1000, hidden_size=64, num_attention_heads=2, intermediate_size=256)
        batch, seq, steps, warmup, repeats = 4, 32, 1, 1, 1
    data = _batch(cfg, batch, seq, dev)
    runs = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        runs[name] = _trainer(BertForMaskedLM(cfg).to(dev).train(), data, True, dtype)
        time_training(runs[name], dev, warmup)
    best = {k: float("inf") for k in runs}
    for _ in range(repeats):
        for k, step in runs.items():
            best[k] = min(best[k], time_training(step, dev, steps))
    tokens = batch * seq * steps
    row = {"device": dev.type, "config": f"L{cfg.num_hidden_layers}/H{cfg.hidden_size}", "batch": batch,
           "seq": seq, "vocab": cfg.vocab_size, "fp32_tok_s": tokens / best["fp32"],
           "bf16_tok_s": tokens / best["bf16"],
           "hardware_bf16": cpu_computes_bf16(),
           "auto": "bf16" if autocast_dtype("auto", dev) is not None else "fp32"}
    row["ratio"] = row["bf16_tok_s"] / row["fp32_tok_s"]
    return row


def bench_tokenization(preset=None, max_chars: int = 0) -> dict:
    """Throughput of the pipeline's first step (paragraphs -> sentences -> fast WordPiece -> ids on disk)
    on the preset's corpus, with the bert-base-uncased vocabulary (30,522 entries, shipped with MiniLM), or
    the preset's own tokenizer where MiniLM is not installed."""

    P = preset or get_preset()
    try:
        from transformers import AutoTokenizer

        tok, tok_name = AutoTokenizer.from_pretrained(str(minilm_path())), "bert-base-uncased vocabulary"
    except ImportError:
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
    precision = [bench_precision(steps=steps, repeats=repeats, quick=quick)] if "cpu" in devices else []
    tokenization = bench_tokenization(None, 200_000 if quick else tokenize_chars)
    return {"machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "quick": quick, "models": rows, "precision": precision, "tokenization": tokenization}


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
    for r in result.get("precision", []):
        why = "computes bf16 in hardware" if r["hardware_bf16"] else "only emulates bf16"
        lines += ["", f"bf16 autocast vs fp32, bertbook's {r['config']} ({r['batch']} x {r['seq']}, "
                      f"vocab {r['vocab']}) on {r['device']}: {r['bf16_tok_s']:,.0f} vs {r['fp32_tok_s']:,.0f} "
                      f"tokens/s, {r['ratio']:.2f}x; this {r['device'].upper()} {why}, so precision 'auto' trains in "
                      f"{r['auto']} here"]
    t = result["tokenization"]
    lines += ["", f"Tokenization (sentence split + fast WordPiece + ids to disk): {t['mb_s']:.2f} MB/s, "
                  f"{t['tokens_s'] / 1e6:.2f} M tokens/s ({t['chars'] / 1e6:.1f} M characters of {t['corpus']} "
                  f"in {t['seconds']:.1f} s, {t['tokenizer']})"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# What pretraining costs: about 6 x parameters x tokens (notebook 05)
# ----------------------------------------------------------------------------------------------------------

def model_flops_per_token(config, seq_len: int, mask_prob: float = 0.15, masked_only: bool = True) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward; a multiply-add is 2 FLOPs):
    6 x the weights every token passes through (Kaplan et al. 2020), plus 12 L T d for the attention
    scores and their weighted sums (as in PaLM's utilisation count, Chowdhery et al. 2022), plus the
    vocabulary-sized output layer at the predicted positions only (``masked_only``) or at all of them."""
    D, L, V, F_ = config.hidden_size, config.num_hidden_layers, config.vocab_size, config.intermediate_size
    per_layer = 4 * D * D + 2 * D * F_  # Q, K, V, output projections and the feed-forward
    encoder = 6 * L * per_layer + 6 * L * 2 * seq_len * D  # weights, then QK^T and attention x V
    head = 6 * (D * D + D * V)  # transform + tied output layer
    return encoder + head * (mask_prob if masked_only else 1.0)


def compute_estimate(preset, vocab_size: int | None = None, flops_per_s: float | None = None) -> dict:
    """Parameters, training tokens and FLOPs of a preset's pretraining for ``max_steps`` steps (about 6 x
    parameters x tokens), and the time it takes at ``flops_per_s`` sustained FLOP/s (notebook 05). A
    time-budgeted preset stops at its budget, so for it these are upper bounds."""
    cfg = preset.model if vocab_size is None else dataclasses.replace(preset.model, vocab_size=vocab_size)
    with torch.device("meta"):
        model = build_model(dataclasses.replace(preset, model=cfg), cfg.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    pc = preset.pretrain
    tokens = pc.max_steps * pc.batch_size * pc.grad_accum_steps * pc.seq_len
    flops = model_flops_per_token(cfg, pc.seq_len, pc.mask_prob) * tokens
    out = {"parameters": n_params, "tokens": tokens, "flops": flops, "flops_6nd": 6 * n_params * tokens,
           "flops_per_token": model_flops_per_token(cfg, pc.seq_len, pc.mask_prob),
           "time_budget_s": pc.time_budget_s}  # with a budget, max_steps (and so ``tokens``) is an upper bound
    if flops_per_s:
        out["seconds"] = flops / flops_per_s
    return out
