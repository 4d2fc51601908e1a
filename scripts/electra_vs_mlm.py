"""ELECTRA against MLM in the learner's quarter of an hour: the same laptop model, the same idle CPU, the same
wall-clock, then fine-tuned on IMDB with the results table's protocol.

    python scripts/electra_vs_mlm.py [--budget 900] [--seeds 3] [--tasks imdb]
    python scripts/electra_vs_mlm.py --report      # the tables of results/electra_vs_mlm.json, in markdown

Each objective pretrains the laptop preset's model for ``--budget`` seconds of training (`pretrain.time_budget_s`:
the schedule follows the clock, so both runs finish their schedule), one after the other on the same machine.
Then every row is fine-tuned as ``python -m bertbook results`` does: mean pooling, the learning rate chosen on
the first seed's validation accuracy among ``LRS``, the test set reported once per seed. Row (b), random
weights, is measured here too, so that all rows come from one machine. Each stage writes
``results/electra_vs_mlm.json`` as it finishes (a cut run keeps what it measured; a rerun reuses the finished
pretraining runs in ``$BERTBOOK_ARTIFACTS``, default ``build/electra-vs-mlm``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BERTBOOK_ARTIFACTS", str(ROOT / "build" / "electra-vs-mlm"))
OUT = ROOT / "results" / "electra_vs_mlm.json"
LRS = (3e-4, 1e-3)  # the preset's fine-tuning rate and the one above it
ROWS = ("random", "mlm", "electra")  # (b) random weights, then each objective's pretrained model


def write(record: dict) -> None:
    from bertbook.utils import atomic_write, jsonable

    atomic_write(OUT, json.dumps(record, indent=1, default=jsonable) + "\n")


def pretrain_row(objective: str, budget: float) -> dict:
    """Pretrain the laptop model with ``objective`` for ``budget`` seconds; steps, tokens and estimated FLOPs."""
    from bertbook import train
    from bertbook.config import get_preset
    from bertbook.paths import artifacts_dir
    from bertbook.runstate import find_checkpoint, read_run

    P = get_preset("laptop", **{"pretrain.objective": objective, "pretrain.time_budget_s": budget})
    run_dir = artifacts_dir(P.name, f"pretrain-{objective}-{budget:g}s")
    ckpt = find_checkpoint(run_dir)
    if ckpt is None or not read_run(ckpt)["finished"]:
        train.pretrain(P, run_dir, resume=ckpt is not None, progress=False)
    run = read_run(find_checkpoint(run_dir))
    model = train.build_model(P, P.model.vocab_size)
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    # about 6 FLOPs per weight and token (forward 2, backward 4), embeddings excluded: a lookup is no matmul
    flops = 6 * (params - embedding) * run["tokens"]
    last = {e["name"]: e for e in run["history"]["eval"] if e["step"] == run["step"]}
    return {"objective": objective, "checkpoint": str(find_checkpoint(run_dir)), "steps": run["step"],
            "tokens": run["tokens"], "train_seconds": round(run["train_seconds"], 1), "machine": run["machine"],
            "parameters": params, "estimated_flops": flops,
            "held_out": {k: {m: v[m] for m in v if m not in ("kind", "step", "name")} for k, v in last.items()}}


def report(record: dict) -> str:
    """The two tables of a record in markdown: pretraining, then fine-tuning (mean ± sample std over seeds)."""
    lines = ["| objective | steps | tokens | seconds | estimated FLOPs | held-out MLM accuracy (book / reviews / "
             "WikiText-2) | RTD accuracy (reviews) |", "|---|---:|---:|---:|---:|---|---:|"]
    for name, r in record["pretraining"].items():
        acc = " / ".join(f"{r['held_out'][k]['accuracy']:.1%}" for k in ("gutenberg", "imdb-reviews", "wikitext-2"))
        rtd = r["held_out"]["imdb-reviews"].get("rtd_accuracy")
        lines.append(f"| {name} | {r['steps']:,} | {r['tokens'] / 1e6:.2f} M | {r['train_seconds']:.0f} "
                     f"| {r['estimated_flops']:.2e} | {acc} | {'-' if rtd is None else f'{rtd:.1%}'} |")
    lines += ["", "| task | row | test accuracy | seeds | learning rate (chosen on validation) |",
              "|---|---|---:|---:|---:|"]
    for r in record["finetuning"]:
        std = f" ± {100 * r['accuracy_std']:.1f}" if r.get("accuracy_std") else ""
        seeds = len(r.get("seeds") or [0])
        lines.append(f"| {r['task']} | {r['row']} | {100 * r['accuracy']:.1f}%{std} | {seeds} "
                     f"| {r.get('learning_rate', '-')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=900.0, help="seconds of pretraining per objective")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["imdb"])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="the fine-tuned rows")
    parser.add_argument("--report", action="store_true", help="print the tables of the stored record and stop")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(OUT.read_text())))
        return
    from bertbook import results as R
    from bertbook.config import get_preset

    record = json.loads(OUT.read_text()) if OUT.is_file() else {}
    command = (f"python scripts/electra_vs_mlm.py --budget {args.budget:g} --seeds {args.seeds} --tasks "
               + " ".join(args.tasks) + " --rows " + " ".join(args.rows))
    if record.get("command") != command:
        record = {"command": command, "pretraining": {}, "finetuning": []}
    for objective in ("mlm", "electra"):
        if objective not in record["pretraining"]:
            record["pretraining"][objective] = pretrain_row(objective, args.budget)
            write(record)
    P = get_preset("laptop", **{"finetune.pooling": "mean"})
    done = {(r["task"], r["row"]) for r in record["finetuning"]}
    for task in args.tasks:
        splits = R.task_data(P, task)
        if (task, "bow") not in done:
            record["finetuning"].append({**R.bow_row(P, task, splits), "row": "bow"})
            write(record)
        for row in args.rows:
            if (task, row) in done:
                continue
            init = "random" if row == "random" else record["pretraining"][row]["checkpoint"]
            rec = R.seeded_row(P, task, init, splits, seeds=args.seeds, poolings=("mean",), learning_rates=LRS)
            record["finetuning"].append({**rec, "row": row})
            write(record)
    print(report(record))


if __name__ == "__main__":
    main()
