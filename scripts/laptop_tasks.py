"""The laptop preset's rows for notebook 08: named entities, relations and answers.

    python scripts/laptop_tasks.py                      # every row, into results/laptop_tasks.json
    python scripts/laptop_tasks.py --tasks semeval      # some tasks only (the other rows in the file are kept)
    python scripts/laptop_tasks.py --tasks squad --rows overlap minilm   # some rows only

Each task is fine-tuned from MiniLM and from bertbook's own pretrained model (`bertbook.tasks.run_task`,
exactly what ``python -m bertbook finetune --task TASK`` and notebook 08 run), next to its baseline: a CRF
on word shapes for the entities, the word-overlap answer for SQuAD, and for the relations MiniLM read from
[CLS] instead of from the entity markers. The JSON is rewritten after every row, so an interrupted run keeps
what it finished. Artifacts go to ``$BERTBOOK_ARTIFACTS`` (default ``artifacts/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "laptop_tasks.json"


def rows_for(P, task: str):
    """(name, function returning the row) for each row of a task, baseline first."""
    from bertbook import ner, qa, tasks

    def fine_tuned(init: str, **options):
        out = tasks.task_folder(P, task, init, **options)  # where notebook 08 finds it (tasks.get_task_model)
        return lambda: {**tasks.run_task(P, task, init, out=out, overwrite=True, **options).record,
                        **({"pooling": options["pooling"]} if options else {})}

    if task in ("wikiann", "wnut17"):
        baseline = [("crf", lambda: ner.crf_row(P, task))]
    elif task == "squad":
        baseline = [("overlap", lambda: qa.overlap_row(P))]
    else:
        baseline = [("minilm-cls", fine_tuned("minilm", pooling="cls"))]
    return baseline + [("minilm", fine_tuned("minilm")), ("pretrained", fine_tuned("pretrained"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--tasks", nargs="+", default=["wikiann", "wnut17", "semeval", "squad"])
    parser.add_argument("--rows", nargs="+", default=["crf", "overlap", "minilm-cls", "minilm", "pretrained"],
                        help="which rows of each task (a task has its baseline, minilm and pretrained)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from bertbook.config import get_preset
    from bertbook.utils import atomic_write

    P = get_preset(args.preset)
    old = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    rows = [r for r in old if r["task"] not in args.tasks or r["row"] not in args.rows]
    header = {"preset": P.name, "tasks_config": P.to_dict()["tasks"], "torch_threads": torch.get_num_threads(),
              "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "date": time.strftime("%Y-%m-%d")}
    for task in args.tasks:
        for name, make in [(n, m) for n, m in rows_for(P, task) if n in args.rows]:
            print(f"== {task} / {name}", flush=True)
            row = make()
            row = {k: v for k, v in row.items() if k not in ("per_type", "errors", "per_relation", "path")}
            rows.append({**row, "row": name, "tasks_config": P.to_dict()["tasks"]})  # with any BERTBOOK_SET
            atomic_write(args.out, json.dumps({**header, "rows": rows}, indent=1) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
