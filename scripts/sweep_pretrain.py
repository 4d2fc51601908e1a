"""The pretraining ablation sweep behind the laptop preset's recipe (notebook 05, results/README.md).

Every row is a short pretraining run of the laptop preset with a few settings changed, all with the same
seed and the same number of optimizer steps (a step budget, unlike the preset's clock budget, so that the
rows do not depend on what else the machine was doing; seconds are recorded beside them). Each run is
scored on the same fixed-mask held-out batches (15% masking whatever the training mask rate): the
validation book, the 2,500 IMDB reviews held out for validation, and WikiText-2, next to the
context-free unigram baseline of its tokenizer on the same batches.

    python scripts/sweep_pretrain.py --steps 250 --out results/sweep_laptop.jsonl    # every row
    python scripts/sweep_pretrain.py --only recipe recipe-lr2e-3 ...                 # some rows
    python scripts/sweep_pretrain.py --table results/sweep_laptop.jsonl              # the markdown table

Rows run one at a time, each in its own process (its own artifacts folder per corpus and vocabulary, under
``build/sweep/``), and each result is appended to the JSON-lines file as soon as it finishes, so a sweep
cut short keeps what it measured; rows already in the file are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BOOKS_AND_REVIEWS = "gutenberg-small+imdb-reviews"
# The short-budget recipe (Geiping & Goldstein 2023; Izsak et al. 2021), before the sweep chose among it
RECIPE = {"model.layer_norm_position": "pre", "pretrain.dropout": False, "pretrain.schedule": "triangle",
          "pretrain.warmup_frac": 0.75, "pretrain.learning_rate": 1e-3, "pretrain.max_grad_norm": 0.5,
          "pretrain.adam_betas": (0.9, 0.98), "pretrain.mask_prob": 0.3, "data.corpus": BOOKS_AND_REVIEWS,
          "pretrain.precision": "fp32"}
# BERT's long-run recipe as the laptop preset had it: post-LN, dropout 0.1, 6% warmup, linear decay
BERT = {"model.layer_norm_position": "post", "pretrain.dropout": True, "pretrain.schedule": "linear",
        "pretrain.warmup_frac": 0.06, "pretrain.learning_rate": 1e-3, "pretrain.max_grad_norm": 1.0,
        "pretrain.mask_prob": 0.15, "data.corpus": BOOKS_AND_REVIEWS, "pretrain.precision": "fp32"}

# name -> (what it tests, settings); each differs from RECIPE (or BERT) in one thing
ROWS: dict[str, tuple[str, dict]] = {
    "bert": ("BERT's recipe: post-LN, dropout 0.1, 6% warmup + linear decay, mask 15%", BERT),
    "bert+pre-ln": ("BERT's recipe with pre-LN", {**BERT, "model.layer_norm_position": "pre"}),
    "bert+pre-ln+no-dropout": ("... and no dropout",
                               {**BERT, "model.layer_norm_position": "pre", "pretrain.dropout": False}),
    "recipe": ("pre-LN, no dropout, triangle schedule, clip 0.5, mask 30%, lr 1e-3", RECIPE),
    "recipe-post-ln": ("the recipe with post-LN", {**RECIPE, "model.layer_norm_position": "post"}),
    "recipe+dropout": ("the recipe with dropout 0.1", {**RECIPE, "pretrain.dropout": True}),
    "recipe-linear": ("the recipe with 6% warmup + linear decay",
                      {**RECIPE, "pretrain.schedule": "linear", "pretrain.warmup_frac": 0.06}),
    "recipe-mask15": ("the recipe with mask 15%", {**RECIPE, "pretrain.mask_prob": 0.15}),
    "recipe-mask40": ("the recipe with mask 40%", {**RECIPE, "pretrain.mask_prob": 0.4}),
    "recipe-lr5e-4": ("the recipe with lr 5e-4", {**RECIPE, "pretrain.learning_rate": 5e-4}),
    "recipe-lr2e-3": ("the recipe with lr 2e-3", {**RECIPE, "pretrain.learning_rate": 2e-3}),
    "recipe-L2H128": ("the recipe, model L2/H128 (A2, FFN 512)",
                      {**RECIPE, "model.num_hidden_layers": 2, "model.hidden_size": 128,
                       "model.num_attention_heads": 2, "model.intermediate_size": 512}),
    "recipe-L2H128-x3": ("the recipe, model L2/H128, three times the steps (about the same time)",
                         {**RECIPE, "model.num_hidden_layers": 2, "model.hidden_size": 128,
                          "model.num_attention_heads": 2, "model.intermediate_size": 512, "steps_factor": 3}),
    "recipe-L4H512": ("the recipe, model L4/H512 (A8, FFN 2048)",
                      {**RECIPE, "model.hidden_size": 512, "model.num_attention_heads": 8,
                       "model.intermediate_size": 2048}),
    "recipe-batch8": ("the recipe, batch 8 for four times the steps (the same tokens; held out: the same rows, "
                      "other masks)",
                      {**RECIPE, "pretrain.batch_size": 8, "pretrain.eval_batches": 40, "steps_factor": 4}),
    "recipe-vocab4k": ("the recipe, vocabulary 4,096", {**RECIPE, "model.vocab_size": 4096}),
    "recipe-vocab16k": ("the recipe, vocabulary 16,384", {**RECIPE, "model.vocab_size": 16384}),
    "recipe-bf16": ("the recipe in bf16 autocast (fp32 weights; every other row is fp32)",
                    {**RECIPE, "pretrain.precision": "bf16"}),
    "recipe-books": ("the recipe on the books alone", {**RECIPE, "data.corpus": "gutenberg-small"}),
    "recipe-reviews": ("the recipe on the reviews alone", {**RECIPE, "data.corpus": "imdb-reviews"}),
}


def _env_value(v) -> str:
    return json.dumps(list(v)) if isinstance(v, tuple) else str(v)


def run_one(name: str, steps: int, eval_every: int) -> dict:
    """Pretrain row ``name`` for ``steps`` steps in this process; return its result row."""
    import torch

    from bertbook import evaluate, train
    from bertbook.config import get_preset
    from bertbook.corpus import EVAL_SETS, corpus_cache, eval_batches, eval_text
    from bertbook.utils import machine
    from bertbook.masking import MaskVocab
    from bertbook.tokenizer import get_tokenizer

    what, settings = ROWS[name]
    settings = dict(settings)
    steps *= settings.pop("steps_factor", 1)
    P = get_preset("laptop", **settings, **{"pretrain.max_steps": steps, "pretrain.time_budget_s": 0.0,
                                             "pretrain.eval_every": eval_every,
                                             "pretrain.checkpoint_every": steps})
    run_dir = ROOT / "build" / "sweep" / "runs" / name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a row of the sweep is always measured afresh
    tok = get_tokenizer(P)
    t0 = time.perf_counter()
    history = train.pretrain(P, out_dir=run_dir, progress=False)
    wall = time.perf_counter() - t0
    cache = corpus_cache(P, tok, "train", progress=False)
    vocab = MaskVocab.from_tokenizer(tok)
    row = {"row": name, "what": what, "settings": {k: _env_value(v) for k, v in ROWS[name][1].items()},
           "steps": steps, "tokens": history.train[-1]["tokens"], "train_seconds": history.train[-1]["seconds"],
           "wall_seconds": wall, "vocab": len(tok), "threads": torch.get_num_threads(), "machine": machine(),
           "params": sum(p.numel() for p in train.build_model(P, len(tok)).parameters()), "eval": {}}
    for ev_name in EVAL_SETS:
        last = history.last_eval(ev_name)
        text = eval_text(ev_name, P.data.eval_max_chars, P)
        batches = eval_batches(text, tok, vocab, P.pretrain.seq_len, P.pretrain.batch_size, P.pretrain.eval_batches)
        base = evaluate.unigram_baseline(cache.ids, batches, len(tok))
        curve = [(e["step"], round(e["accuracy"], 4)) for e in history.eval if e["name"] == ev_name]
        row["eval"][ev_name] = {"accuracy": last["accuracy"], "loss": last["loss"], "unigram_accuracy":
                                base["accuracy"], "unigram_loss": base["loss"], "curve": curve}
    return row


def table(rows: list[dict]) -> str:
    """The sweep as a markdown table: held-out MLM accuracy (15% masking) and its gain over the unigram."""
    head = ("| row | what | steps | tokens | train s | reviews acc | (unigram) | books acc | (unigram) | "
            "WikiText-2 acc |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        e = r["eval"]
        lines.append(f"| {r['row']} | {r['what']} | {r['steps']:,} | {r['tokens'] / 1e6:.2f} M | "
                     f"{r['train_seconds']:.0f} | {e['imdb-reviews']['accuracy']:.1%} | "
                     f"{e['imdb-reviews']['unigram_accuracy']:.1%} | {e['gutenberg']['accuracy']:.1%} | "
                     f"{e['gutenberg']['unigram_accuracy']:.1%} | {e['wikitext-2']['accuracy']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps per row (same for every row)")
    parser.add_argument("--eval-every", type=int, default=125)
    parser.add_argument("--out", default="results/sweep_laptop.jsonl", help="JSON lines, one row per run")
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="run only these rows")
    parser.add_argument("--table", metavar="JSONL", help="print the markdown table of a finished sweep and exit")
    parser.add_argument("--one", choices=list(ROWS), help=argparse.SUPPRESS)  # a row, in a child process
    args = parser.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
        print(table(rows))
        return 0
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.eval_every)))
        return 0
    out = Path(args.out)
    done = {json.loads(line)["row"] for line in out.read_text().splitlines() if line.strip()} if out.exists() else set()
    for name in args.only or list(ROWS):
        if name in done:
            print(f"{name}: already in {out}, skipped")
            continue
        settings = ROWS[name][1]
        art = ROOT / "build" / "sweep" / ("art-" + settings["data.corpus"].replace("+", "_")
                                          + f"-{settings.get('model.vocab_size', 'default')}")
        env = {**os.environ, "BERTBOOK_ARTIFACTS": str(art), "BERTBOOK_PRESET": "laptop"}
        env.pop("BERTBOOK_SET", None)
        print(f"{name}: {ROWS[name][0]} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps),
                               "--eval-every", str(args.eval_every)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        e = row["eval"]
        print(f"{name}: reviews {e['imdb-reviews']['accuracy']:.1%}, books {e['gutenberg']['accuracy']:.1%} "
              f"after {row['steps']} steps ({row['train_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
