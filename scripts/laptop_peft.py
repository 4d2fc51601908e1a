"""The notebook-09 comparison on a preset: full fine-tuning, head only, LoRA, adapters and prefix tuning,
on SST-2 and IMDB, with our pretrained model and MiniLM; written to results/<preset>_peft.json.

    python scripts/laptop_peft.py [--preset laptop] [--out results/laptop_peft.json]

Each row (task, model, method: every seed) runs in its own Python process (holding the lock file /tmp/bertbook-cpu.lock
while it runs), so that its peak memory is its own;
the file is rewritten after every row and rows already in it are kept, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from bertbook import results as R
from bertbook.config import get_preset
from bertbook.utils import atomic_write, jsonable

ROOT = Path(__file__).resolve().parent.parent
LOCK = "/tmp/bertbook-cpu.lock"  # one heavy job at a time on a shared machine
INITS = ("pretrained", "minilm")
TASKS = ("sst2", "imdb")


def machine() -> str:
    import os

    return f"{os.cpu_count()}-core {platform.machine()} CPU"


def one_row(preset: str, task: str, init: str, index: int) -> dict:
    P = get_preset(preset)
    method = R.comparison_methods(P)[index]
    row = R.comparison_row(P, task, init, method, verbose=False)
    import torch

    return {**row, "method_settings": method.to_dict(), "torch_threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--lock", default=LOCK, help=f"lock file each row holds while it runs (default {LOCK}; "
                                                      f"'' for none)")
    parser.add_argument("--row", nargs=3, metavar=("TASK", "INIT", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        task, init, index = args.row
        print(json.dumps(one_row(args.preset, task, init, int(index)), default=jsonable))
        return 0
    P = get_preset(args.preset)
    out = args.out or ROOT / "results" / f"{P.name}_peft.json"
    done = json.loads(out.read_text())["rows"] if out.exists() else []
    have = {(r["task"], r["model"], r["label"]) for r in done}
    rows = list(done)
    rows_to_run = [(task, init, i, method) for task in TASKS for init in INITS  # SST-2 first: the quick task
                   for i, method in enumerate(R.comparison_methods(P))]
    for task, init, i, method in rows_to_run:
        if (task, init, method.label) in have:
            continue
        print(f"--- {task}, {init}, {method.label}", flush=True)
        # each row takes the shared CPU lock for itself, so other work can run between rows
        lock = ["flock", args.lock] if args.lock else []
        proc = subprocess.run([*lock, sys.executable, __file__, "--preset", P.name, "--row", task, init, str(i)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"    {100 * row['accuracy']:.1f}% ± {100 * (row['accuracy_std'] or 0):.1f}, "
              f"{row['trainable']:,} trainable, {row['seconds_per_epoch']:.0f} s/epoch", flush=True)
        report = {"preset": P.name, "seeds": P.efficient.seeds, "machine": machine(),
                  "torch_threads": row["torch_threads"],
                  "date": time.strftime("%Y-%m-%d"), "seconds": round(sum(r["seconds"] for r in rows)),
                  "memory": "peak RSS while training, above the RSS at its start (sampled every 20 ms)",
                  "settings": P.efficient.__dict__ | {"epochs": P.finetune.epochs},
                  "rows": rows}
        atomic_write(out, json.dumps(report, indent=2, default=jsonable) + "\n")
    print(R.render_comparison(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
