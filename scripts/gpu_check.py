"""The GPU check: one command that exercises bertbook on a CUDA machine in about 8 minutes.

Stages, each a ``python -m bertbook`` command whose output is kept in ``build/gpu-check/logs/``:

0. ``tokenizer`` the gpu preset's WordPiece tokenizer, trained on the shards that are present;
1. ``parity``   bertbook vs transformers on CUDA (random weights: MiniLM's may not be installed there);
2. ``bench``    training tokens/s of bertbook and transformers (L2/H128, L4/H512, BERT-base at the gpu
                preset's batch), with model FLOPs utilisation against the card's bf16 peak, and the
                pipeline's tokenization throughput;
3. ``pretrain`` a time-budgeted run (default 240 s of training) of the gpu preset on the shards of
                gutenberg-large that are present, held-out MLM accuracy on Gutenberg and WikiText-2;
4. ``finetune`` an IMDB fine-tune of that checkpoint (default 10,000 reviews, 2 epochs); its test accuracy;
5. ``baselines`` the bag-of-words baseline and the same model from random initialisation, fine-tuned on
                the same reviews with the same settings (``python -m bertbook results --rows bow random``).

Results go to ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (default ``results/``), rewritten after
every stage, so a run cut short still reports what finished; the stages' output is gathered in
``<out>/gpu_check.log``. When ``$OUT`` is set (the device tool), the three files are copied there too,
after every stage.
Checkpoints and caches go to ``build/gpu-check`` (git-ignored). Nothing is copied into git.

The data: only the working tree travels to a GPU machine (at most 64 MiB), so the data it needs is put in
a git-ignored folder first: ``python scripts/gpu_check.py --prepare-carry shared-carry --shards 2`` copies
two gutenberg-large shards, its validation book, IMDB, Rotten Tomatoes and WikiText-2's validation text
(about 49 MB) from the local data folders. Then, on the GPU machine: ``bash scripts/gpu_check.sh
--data-dir shared-carry``.

``--tiny`` runs every stage on the CPU on the ci preset in a few seconds each: a dry run that checks the
script itself (the test suite runs it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY_FILES = {  # dataset folder -> files the check reads (shards are added by --shards)
    "gutenberg/large": ["valid-000.txt.gz"],
    "imdb": ["train.jsonl.gz", "test.jsonl.gz"],
    "rotten-tomatoes": None,  # every file of the folder (two small text files)
    "wikitext-2/tokenized": ["valid.txt"],
}


def prepare_carry(dest: Path, shards: int) -> int:
    """Copy what the check needs from the local data folders into ``dest`` (which git must ignore)."""
    sys.path.insert(0, str(ROOT))
    from bertbook import registry

    dest = (dest if dest.is_absolute() else ROOT / dest).resolve()
    inside = dest.is_relative_to(ROOT)
    shown = dest.relative_to(ROOT) if inside else dest
    if inside and subprocess.run(["git", "check-ignore", "-q", str(dest)], cwd=ROOT).returncode != 0:
        exclude = ROOT / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a") as f:
            f.write(f"\n/{shown}/\n")
        print(f"added /{shown}/ to .git/info/exclude (a local ignore list, not committed)")
    total = 0
    for folder, names in CARRY_FILES.items():
        dataset = {"gutenberg/large": "gutenberg-large", "imdb": "imdb", "rotten-tomatoes": "rotten-tomatoes",
                   "wikitext-2/tokenized": "wikitext-2"}[folder]
        src = registry.find(dataset)
        if folder.startswith("wikitext-2/"):
            src = src / "tokenized"
        if folder == "gutenberg/large":
            names = names + [f"train-{i:03d}.txt.gz" for i in range(shards)]
        files = [src / n for n in names] if names else [p for p in src.iterdir() if p.is_file()]
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / folder / f.name)
            total += f.stat().st_size
    print(f"copied {total / 2**20:.1f} MiB into {dest}; on the GPU machine: "
          f"bash scripts/gpu_check.sh --data-dir {shown}" + (f"  (carry {shown})" if inside else ""))
    return 0


def run_stage(name: str, cmd: list[str], env: dict, logs: Path, timeout: float) -> dict:
    """Run one command; keep its output; return status, seconds and the JSON of its last JSON line."""
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + "\n[timed out]"
        code = 124
    seconds = time.time() - t0
    (logs / f"{name}.out").write_text(out)
    (logs / f"{name}.err").write_text(err)
    record: dict = {"status": "ok" if code == 0 else "failed", "exit_code": code, "seconds": round(seconds, 1)}
    json_lines = [line for line in out.splitlines() if line.startswith("{")]
    if json_lines:
        try:
            record["result"] = json.loads(json_lines[-1])
        except json.JSONDecodeError:
            pass
    if code != 0:
        record["error"] = (err.strip().splitlines() or ["(no error output)"])[-1][:500]
    if name == "parity":
        record["table"] = out.strip()[-4000:]
    print(f"   {record['status']} in {seconds:.0f} s" + (f": {record.get('error')}" if code else ""), flush=True)
    return record


# The preset's tokenizer, trained on the shards that are present (as get_tokenizer does, but reading only
# the first data.large_shards shards, so that a machine holding a few shards can train it).
TOKENIZER_SNIPPET = """
import sys, time
from bertbook import data
from bertbook.config import get_preset
from bertbook.tokenizer import save_tokenizer, tokenizer_dir, train_tokenizer
P = get_preset(sys.argv[1], **dict(a.split("=", 1) for a in sys.argv[2:]))
t0 = time.time()
text = data.load_corpus(P.data.corpus, "train", max_chars=P.data.tokenizer_train_chars, shards=P.data.large_shards)
tok = train_tokenizer(text, P.model.vocab_size, P.data.min_frequency, P.model.max_position_embeddings)
save_tokenizer(tok, tokenizer_dir(P))
print('{"chars": %d, "vocab": %d, "seconds": %.1f}' % (len(text), len(tok), time.time() - t0))
"""


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "cpu_cores": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                   bf16=torch.cuda.is_bf16_supported(), cuda_version=torch.version.cuda,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    return env


def summary_markdown(report: dict) -> str:
    """The results as a short Markdown page."""
    e = report["environment"]
    hw = e.get("gpu", "no GPU") + (f" x{e['gpus']}" if e.get("gpus", 1) > 1 else "")
    lines = [f"# bertbook GPU check{' (--tiny dry run on the CPU: not a measurement)' if report['tiny'] else ''}",
             "", f"{hw}, {e['cpu_cores']} CPU cores; torch {e['torch']}, transformers {e.get('transformers')}, "
             f"Python {e['python']}; {e['when']}; total {report.get('total_seconds', 0) / 60:.1f} min.", ""]
    st = report["stages"]
    lines += ["| stage | status | seconds |", "|---|---|---:|"]
    lines += [f"| {k} | {v['status']} | {v['seconds']:.0f} |" for k, v in st.items()]
    if "parity" in st:
        lines += ["", f"Parity with transformers on {report['device']}: "
                      f"{'all outputs within tolerance' if st['parity']['status'] == 'ok' else 'FAILED'}."]
    bench = st.get("bench", {}).get("result")
    if bench:
        from bertbook.bench import format_table

        lines += ["", format_table(bench)]
    pre = st.get("pretrain", {}).get("result")
    if pre:
        lines += ["", f"Pretraining, preset {pre['preset']!r} ({report['pretrain_settings']}): "
                      f"{pre['step']} steps, {pre['tokens']:,} tokens in {pre['train_seconds']:.0f} s of training "
                      f"({pre['tokens'] / max(pre['train_seconds'], 1e-9):,.0f} tokens/s); held-out MLM accuracy "
                      f"{pre['gutenberg_accuracy']:.1%} on Gutenberg (loss {pre['gutenberg_loss']:.3f}) and "
                      f"{pre['wikitext-2_accuracy']:.1%} on WikiText-2 (loss {pre['wikitext-2_loss']:.3f})."]
    fin = st.get("finetune", {}).get("result")
    if fin:
        lines += ["", f"IMDB fine-tune of that checkpoint: {fin['train_examples']:,} training reviews, length "
                      f"{fin['max_length']}, {fin['epochs']} epoch(s): test accuracy {fin['accuracy']:.1%} "
                      f"(F1 {fin['f1']:.3f}) on {fin['test_examples']:,} test reviews."]
    base = st.get("baselines", {}).get("result")
    if base:
        from bertbook.results import render_markdown

        lines += ["", "The same reviews and settings: bag of words, and the model from random initialisation.",
                  "", render_markdown(base).rstrip()]
    failed = [f"- {k}: {v.get('error')}" for k, v in st.items() if v["status"] != "ok"]
    if failed:
        lines += ["", "Failures (their output is in gpu_check.log):"] + failed
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="where gpu_check.json/.md go")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the carried data (sets BERTBOOK_DATA_DIR), e.g. shared-carry")
    parser.add_argument("--shards", type=int, default=None,
                        help="gutenberg-large shards to pretrain on (default: all found in --data-dir)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of pretraining (default 240)")
    parser.add_argument("--finetune-examples", type=int, default=10000, help="IMDB training reviews")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="epochs of the IMDB fine-tune")
    parser.add_argument("--test-examples", type=int, default=5000, help="IMDB test reviews")
    parser.add_argument("--set", action="append", default=[], metavar="GROUP.FIELD=VALUE",
                        help="extra preset overrides for the pretraining run (repeatable)")
    stages = ["parity", "bench", "pretrain", "finetune", "baselines"]
    parser.add_argument("--stages", nargs="+", default=stages, choices=stages)
    parser.add_argument("--tiny", action="store_true", help="a dry run of every stage on the CPU, ci preset")
    parser.add_argument("--preset", default=None, help="the preset (default: gpu, or ci with --tiny)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the tokenizer, caches and checkpoints (default build/gpu-check/...)")
    parser.add_argument("--prepare-carry", type=Path, metavar="DIR",
                        help="copy the data the check needs into DIR (git-ignored) and exit")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.set):
        parser.error("--set takes GROUP.FIELD=VALUE, e.g. --set pretrain.learning_rate=5e-4")
    if args.prepare_carry:
        return prepare_carry(args.prepare_carry, args.shards or 2)

    sys.path.insert(0, str(ROOT))
    out = args.out if args.out.is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or ROOT / "build" / "gpu-check" / ("tiny" if args.tiny else "gpu")  # emptied first
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "PYTHONUNBUFFERED": "1", "BERTBOOK_ARTIFACTS": str(work)}
    env.pop("BERTBOOK_SET", None)
    if args.data_dir:
        env["BERTBOOK_DATA_DIR"] = str(args.data_dir if args.data_dir.is_absolute() else ROOT / args.data_dir)
    py = [sys.executable, "-m", "bertbook"]
    info = environment()
    device = "cuda" if info["cuda"] and not args.tiny else "cpu"
    if not args.tiny and device != "cuda":
        print("error: no CUDA device here; use --tiny for a dry run on the CPU.", file=sys.stderr)
        return 2
    preset = args.preset or ("ci" if args.tiny else "gpu")
    shards = args.shards
    if shards is None and args.data_dir:
        shards = len(glob.glob(str(Path(env["BERTBOOK_DATA_DIR"]) / "gutenberg" / "large" / "train-*.txt.gz")))
    settings: dict[str, str] = {}
    if shards:  # pretrain on the shards that are here; the tokenizer reads at most what they hold
        settings["data.large_shards"] = str(shards)
        settings["data.tokenizer_train_chars"] = str(min(50_000_000, 25_000_000 * shards))
    settings.update(item.split("=", 1) for item in args.set)  # the caller's settings win
    sets = [f"{k}={v}" for k, v in settings.items()]
    budget = 3.0 if args.tiny else args.budget
    report = {"tiny": args.tiny, "device": device, "preset": preset, "environment": info, "stages": {},
              "pretrain_settings": f"{budget:g} s budget" + (f", {', '.join(sets)}" if sets else "")}
    t_start = time.time()

    def save() -> None:
        report["total_seconds"] = round(time.time() - t_start, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "gpu_check.md").write_text(summary_markdown(report))
        with open(out / "gpu_check.log", "w") as f:
            for stage in report["stages"]:
                for kind in ("out", "err"):
                    f.write(f"===== {stage} ({'stdout' if kind == 'out' else 'stderr'})\n")
                    f.write((logs / f"{stage}.{kind}").read_text()[-20000:] + "\n")
        if "OUT" in os.environ and Path(os.environ["OUT"]).is_dir():  # the device tool brings $OUT back,
            for name in ("gpu_check.json", "gpu_check.md", "gpu_check.log"):  # even from a run cut short
                shutil.copy2(out / name, Path(os.environ["OUT"]) / name)

    run_dir = work / "pretrain-run"
    if "pretrain" in args.stages:  # the tokenizer first, from the shards that are here
        cmd = [sys.executable, "-c", TOKENIZER_SNIPPET, preset] + sets
        report["stages"]["tokenizer"] = run_stage("tokenizer", cmd, env, logs, 600)
        save()
    n_train, n_test = (64, 64) if args.tiny else (args.finetune_examples, args.test_examples)
    fenv = {**env, "BERTBOOK_SET": ",".join(sets + [  # the pretraining settings (the model's shape) too
        f"finetune.train_examples={n_train}", f"finetune.test_examples={n_test}",
        f"finetune.val_examples={min(1000, n_train // 4)}", f"finetune.epochs={args.finetune_epochs}",
        f"finetune.max_length={64 if args.tiny else 256}"])}
    for stage in args.stages:
        if stage == "parity":
            cmd = py + ["parity", "--device", device, "--weights", "random"]
            report["stages"]["parity"] = run_stage("parity", cmd, env, logs, 300)
        elif stage == "bench":
            cmd = py + ["bench", "--json", "--device", device]
            cmd += ["--quick"] if args.tiny else ["--repeats", "2", "--steps", "5", "--tokenize-chars", "10000000"]
            report["stages"]["bench"] = run_stage("bench", cmd, {**env, "BERTBOOK_PRESET": preset,  # its corpus
                                                            "BERTBOOK_SET": ",".join(sets)}, logs, 300)
        elif stage == "pretrain":
            cmd = py + ["pretrain", "--preset", preset, "--out", str(run_dir), "--time-budget", str(budget),
                        "--no-progress"] + [f"--set={s}" for s in sets]
            report["stages"]["pretrain"] = run_stage("pretrain", cmd, env, logs, budget + 420)
        elif stage == "finetune":
            cmd = py + ["finetune", "--task", "imdb", "--init", str(run_dir / "checkpoint"), "--preset", preset,
                        "--out", str(work / "finetune-imdb")]
            report["stages"]["finetune"] = run_stage("finetune", cmd, fenv, logs, 600)
        elif stage == "baselines":  # the same reviews and settings as the fine-tune above
            table = work / "baselines.json"
            cmd = py + ["results", "--preset", preset, "--tasks", "imdb", "--rows", "bow", "random", "--quiet",
                        "--out", str(table)]
            record = run_stage("baselines", cmd, fenv, logs, 600)
            if table.exists():
                record["result"] = json.loads(table.read_text())["results"]
            report["stages"]["baselines"] = record
        save()
    print((out / "gpu_check.md").read_text())
    return 0 if all(s["status"] == "ok" for s in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
