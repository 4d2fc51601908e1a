"""The command line: ``python -m bertbook <command> ...`` for long runs, checks and benchmarks.

Every command is a function ``cli_<command>(argv) -> int``: below, or for fine-tuning (``finetune``,
``predict``, ``results``) in `bertbook.cli_finetune`. Each imports the concept module it drives when it runs,
so that a quick command (``data``, ``presets``) does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import PRESETS, ConfigError, get_preset
from .cli_finetune import cli_finetune, cli_predict, cli_results  # noqa: F401 (main calls them)

# command -> one-line help; each command is the function cli_<command> below
COMMANDS: dict[str, str] = {
    "data": "list the datasets, where each was found, and verify checksums",
    "parity": "check bertbook against transformers (largest difference per output)",
    "pretrain": "pretrain a masked language model on a preset",
    "bench": "training speed of bertbook vs transformers, side by side",
    "finetune": "fine-tune a classifier (imdb, sst2) or a task head (wikiann, wnut17, "
                 "semeval, squad) and print test metrics",
    "predict": "classify a text, find its entities, its relation or an answer",
    "results": "compute the results table (baselines vs pretrained models)",
    "reference": "check the shipped reference model and print its record; 'export' ships a finished run",
    "course": "execute every notebook headless on a preset and summarise",
    "presets": "print the presets",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m bertbook <command> [options]   (<command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return int(globals()[f"cli_{command}"](rest) or 0)
    except Exception as exc:
        # A missing or damaged file (bertbook.checkpoint.CheckpointError) is the user's to fix: its message says
        # which file and what to do, so print that, not a traceback. (Only a command that loaded a checkpoint
        # can raise one, and it has imported bertbook.checkpoint, so a quick command still skips torch.)
        checkpoint = sys.modules.get("bertbook.checkpoint")
        if checkpoint is None or not isinstance(exc, checkpoint.CheckpointError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------------------------------------
# python -m bertbook data
# ----------------------------------------------------------------------------------------------------------

def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cli_data(argv: list[str]) -> int:
    """``python -m bertbook data``: list the datasets, where each was found, verify every checksum."""
    from . import paths, registry

    parser = argparse.ArgumentParser(prog="python -m bertbook data",
                                     description="List the datasets, where each was found, and verify every "
                                                 "file's SHA-256 against data/manifest.json.")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--download", metavar="NAME", action="append", default=[],
                        help="fetch a dataset from its public home into data/cache/ (needs internet); "
                             "repeatable; 'all' for every dataset")
    parser.add_argument("--force", action="store_true", help="with --download: fetch even if a copy is intact")
    args = parser.parse_args(argv)

    wanted = registry.names() if "all" in args.download else args.download
    for name in wanted:
        if name not in registry.names():
            parser.error(f"unknown dataset {name!r}; choose from {', '.join(registry.names())} or 'all'")
    for name in wanted:
        print(f"downloading {name} into {paths.cache_dir()} ...", flush=True)
        try:
            folder = registry.download(name, force=args.force)
        except registry.DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"  {name}: verified, in {folder}")

    t0 = time.perf_counter()
    rows = registry.status(full=True)
    seconds = time.perf_counter() - t0
    bad = [r for r in rows if r["state"] != "ok"]
    if args.json:
        print(json.dumps({"lookup": [str(d) for d in paths.data_dirs()], "datasets": rows,
                          "seconds": round(seconds, 2)}, indent=1))
        return 1 if bad else 0

    width = max(len(r["name"]) for r in rows)
    print(f"{'dataset':<{width}}  {'state':<9}  {'files':>5}  {'size':>8}  found in")
    for r in rows:
        total = len(r["ok"]) + len(r["missing"]) + len(r["corrupt"]) or len(registry.info(r["name"])["files"])
        print(f"{r['name']:<{width}}  {r['state']:<9}  {len(r['ok']):>2}/{total:<2}  "
              f"{_megabytes(r['bytes']):>8}  {r['where'] or '-'}")
    print(f"\nLookup order (the first folder holding a dataset wins):\n{registry.lookup_text()}")
    if not bad:
        print(f"\nAll {len(rows)} datasets present and verified (SHA-256 of every file) in {seconds:.1f} s.")
        return 0
    print(f"\n{len(bad)} of {len(rows)} datasets need attention:", file=sys.stderr)
    for r in bad:
        for problem in r["problems"]:
            print(f"  {problem}", file=sys.stderr)
    for r in bad:
        print(f"\n{r['name']}: {registry.fix_text(r['name'])}", file=sys.stderr)
    return 1



# ----------------------------------------------------------------------------------------------------------
# python -m bertbook parity
# ----------------------------------------------------------------------------------------------------------

def cli_parity(argv: list[str]) -> int:
    """``python -m bertbook parity``: exit 1 if any output differs from transformers by more than the tolerance."""
    import torch

    from . import electra, hf

    parser = argparse.ArgumentParser(prog="python -m bertbook parity",
                                     description="Compare bertbook with transformers on random and MiniLM weights, "
                                                 "and ELECTRA's discriminator and generator both ways.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--weights", nargs="+", default=["random", "random-pre-ln", "minilm", "electra"],
                        choices=["random", "random-pre-ln", "minilm", "electra"],
                        help="electra: bertbook's ELECTRA against ElectraForPreTraining and ElectraForMaskedLM "
                             "(its own models; --models does not apply)")
    parser.add_argument("--models", nargs="+", default=list(hf.MODEL_TYPES), choices=list(hf.MODEL_TYPES))
    parser.add_argument("--tolerance", type=float, default=hf.TOLERANCE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available here; use --device cpu.", file=sys.stderr)
        return 2
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars between the table rows
    torch.set_float32_matmul_precision("highest")  # true float32 on GPUs too (no TF32 shortcuts)
    bert_weights = tuple(w for w in args.weights if w != "electra")
    rows = hf.parity_report(bert_weights, tuple(args.models), device=device, seed=args.seed) if bert_weights else []
    if "electra" in args.weights:
        rows += electra.parity_report(device=device, seed=args.seed)
    print(f"bertbook vs transformers, float32 on {device}: largest absolute difference per output")
    print("random: bertbook weights -> transformers; random-pre-ln: pre-LayerNorm bertbook -> transformers' "
          "RobertaPreLayerNorm; minilm: MiniLM's weights transformers -> bertbook; electra / electra-hf: "
          "post-LayerNorm ELECTRA bertbook -> transformers / transformers -> bertbook")
    print(hf.format_report(rows, args.tolerance))
    bad = [r for r in rows if hf.worst(r) > args.tolerance or not r["round_trip"]]
    if bad:
        print(f"FAILED: {len(bad)} of {len(rows)} rows above {args.tolerance:g} or not round-tripping exactly.")
        return 1
    print(f"all {len(rows)} rows within {args.tolerance:g}; weights round-trip exactly.")
    return 0



# ----------------------------------------------------------------------------------------------------------
# python -m bertbook pretrain
# ----------------------------------------------------------------------------------------------------------

def _last_evals(history) -> list[dict]:
    """The latest evaluation on each held-out set."""
    return list({e["name"]: e for e in history.eval}.values())


def cli_pretrain(argv: list[str]) -> int:
    """``python -m bertbook pretrain``: the same :func:`bertbook.train.pretrain` as notebook 05; under ``torchrun`` on
    several GPUs or nodes. The last line printed is a JSON summary."""
    from . import train

    parser = argparse.ArgumentParser(prog="python -m bertbook pretrain",
                                     description="Pretrain BERT (masked LM + optional sentence objective) on a "
                                                 "preset. Use torchrun --nproc_per_node=N for several GPUs.")
    parser.add_argument("--preset", default=os.environ.get("BERTBOOK_PRESET", "laptop"), choices=list(PRESETS))
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default artifacts/<preset>/pretrain); the checkpoint is OUT/checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="train for this many seconds instead of max_steps (the schedule follows the clock)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                        help="stop (with a checkpoint) after this many steps; --resume continues")
    parser.add_argument("--set", action="append", default=[], metavar="GROUP.FIELD=VALUE",
                        help="override a preset field, e.g. --set pretrain.max_steps=200 (repeatable)")
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="start from this checkpoint's weights and tokenizer (continued pretraining, e.g. "
                             "on reviews after books), with a fresh optimizer and schedule; 'reference' is the "
                             "shipped reference model")
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to OUT/tensorboard")
    parser.add_argument("--tracker", choices=("none", "tensorboard", "wandb"), default="none",
                        help="where the curves go: TensorBoard (OUT/tensorboard) or W&B offline (OUT/wandb)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    bad = [item for item in args.set if "=" not in item]
    if bad:
        print(f"error: --set {bad[0]!r}: use --set GROUP.FIELD=VALUE, e.g. --set pretrain.max_steps=200",
              file=sys.stderr)
        return 2
    try:
        overrides = dict(item.split("=", 1) for item in args.set)
        P = get_preset(args.preset, **overrides)
        t0 = time.time()
        init_from = args.init_from
        if init_from == "reference":  # the shipped reference model (bertbook.reference)
            from .reference import reference

            init_from = reference()  # its files checked first
        history = train.pretrain(P, args.out, resume=args.resume, time_budget_s=args.time_budget,
                           stop_after=args.stop_after, progress=not args.no_progress,
                           tensorboard=args.tensorboard, device=args.device, init_from=init_from,
                           tracker=args.tracker)
    except (ConfigError, FileExistsError, train.TrainingDiverged, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # started by pretrain under torchrun
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        last = history.train[-1] if history.train else {}
        summary = {"preset": P.name, "step": last.get("step"), "finished": history.finished,
                   "train_seconds": last.get("seconds"), "wall_seconds": time.time() - t0,
                   "tokens": last.get("tokens"), "checkpoint": history.checkpoint,
                   **{f"{e['name']}_{k}": e[k] for e in _last_evals(history) for k in ("loss", "accuracy",
                                                                                         "perplexity")}}
        print(json.dumps(summary))
    return 0



# ----------------------------------------------------------------------------------------------------------
# python -m bertbook bench
# ----------------------------------------------------------------------------------------------------------

def cli_bench(argv: list[str]) -> int:
    """``python -m bertbook bench [--json] [--quick] [--device cpu|cuda|all]``."""
    import torch

    from . import bench

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
        print("error: --device cuda, but no CUDA device is available here.", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    result = bench.run_bench(devices, args.quick, args.repeats, args.steps, args.gpu_batch, args.tokenize_chars)
    print(bench.format_table(result))
    if args.json:
        print(json.dumps(result))
    return 0



# ----------------------------------------------------------------------------------------------------------
# python -m bertbook finetune
# ----------------------------------------------------------------------------------------------------------

def cli_reference(argv: list[str]) -> int:
    """``python -m bertbook reference``: check every file of the reference model (SHA-256) and recompute its
    held-out accuracy on the fixed slice; ``reference export CHECKPOINT`` turns a finished run into it."""
    parser = argparse.ArgumentParser(prog="python -m bertbook reference",
                                     description="The reference model in models/reference-laptop: 'check' (the "
                                                 "default) verifies its files and recomputes its accuracy on a "
                                                 "fixed held-out slice; 'export CHECKPOINT' writes it from a "
                                                 "finished pretraining run (make reference does both steps).")
    parser.add_argument("action", nargs="?", choices=("check", "export"), default="check")
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None,
                        help="for export: the run's checkpoint folder (e.g. build/reference-laptop/checkpoint)")
    parser.add_argument("--out", type=Path, default=None, help="the reference folder (default models/reference-laptop)")
    parser.add_argument("--overwrite", action="store_true", help="for export: replace an existing reference")
    args = parser.parse_args(argv)
    from . import reference as ref

    if args.action == "export":
        if args.checkpoint is None:
            parser.error("export needs the run's checkpoint folder, e.g. build/reference-laptop/checkpoint")
        try:
            out = ref.export_reference(args.checkpoint, args.out, overwrite=args.overwrite)
        except (FileExistsError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"reference model written to {out}")
    model, tokenizer, record = ref.load_reference(args.out)
    now = ref.check_slice(model, tokenizer, get_preset(record["preset"]["name"]))
    kept = record["check_slice"]
    print(f"{record['command']}\n{record['steps']:,} steps, {record['tokens'] / 1e6:.1f} M tokens, "
          f"{record['train_seconds'] / 3600:.2f} h on {record['machine']}")
    for name, m in record["held_out"].items():
        print(f"held-out {name}: MLM accuracy {m['accuracy']:.1%}, perplexity {m['perplexity']:.1f}")
    ok = abs(now["accuracy"] - kept["accuracy"]) <= kept["tolerance"]
    print(f"fixed slice ({kept['name']}, {kept['batches']} batches): accuracy {now['accuracy']:.2%} now, "
          f"{kept['accuracy']:.2%} recorded: {'the same' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


def cli_course(argv: list[str]) -> int:
    from . import course, paths

    parser = argparse.ArgumentParser(prog="python -m bertbook course",
                                     description="Execute every notebook headless on a preset.")
    parser.add_argument("--preset", default=os.environ.get("BERTBOOK_PRESET", "laptop"), choices=list(PRESETS))
    parser.add_argument("--out", type=Path, help="folder for the executed copies and summary")
    parser.add_argument("--in-place", action="store_true", help="write outputs back into notebooks/")
    parser.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. --only 01 02")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    if not args.in_place and args.out is None:
        args.out = paths.project_root() / "build" / f"course-{args.preset}"
    t0 = time.time()
    records = course.run_course(args.preset, None if args.in_place else args.out, args.only, args.in_place,
                         args.timeout)
    total = time.time() - t0
    summary = {"preset": args.preset, "machine": course.machine(), "python": sys.version.split()[0],
               "total_seconds": round(total, 1), "notebooks": records}
    lines = [f"# bertbook course run: preset {args.preset}", "",
             f"machine: {summary['machine']}; total {total / 60:.1f} min", "",
             "| notebook | status | minutes |", "|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['status']} | {r['seconds'] / 60:.1f} |" for r in records]
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (args.out / "summary.md").write_text(text)
        print(f"executed notebooks and summary in {args.out}")
    print(text)
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cli_presets(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bertbook presets")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in PRESETS:
        p = get_preset(name)
        print(json.dumps(p.to_dict(), indent=2) if args.json else p.summary() + "\n")
    return 0
