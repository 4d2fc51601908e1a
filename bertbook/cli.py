"""The command line: ``python -m bertbook <command> ...`` for long runs, checks and benchmarks.

Every command is a function ``cli_<command>(argv) -> int`` below. Each imports the concept module it
drives when it runs, so that a quick command (``data``, ``presets``) does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import PRESETS, ConfigError, get_preset
from .utils import atomic_write

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

    from . import hf

    parser = argparse.ArgumentParser(prog="python -m bertbook parity",
                                     description="Compare bertbook with transformers on random and MiniLM weights.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--weights", nargs="+", default=["random", "random-pre-ln", "minilm"],
                        choices=["random", "random-pre-ln", "minilm"])
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
    rows = hf.parity_report(tuple(args.weights), tuple(args.models), device=device, seed=args.seed)
    print(f"bertbook vs transformers, float32 on {device}: largest absolute difference per output")
    print("random: bertbook weights -> transformers; random-pre-ln: pre-LayerNorm bertbook -> transformers' "
          "RobertaPreLayerNorm; minilm: MiniLM's weights transformers -> bertbook")
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
    parser.add_argument("--init-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="start from this checkpoint's weights and tokenizer (continued pretraining, e.g. "
                             "on reviews after books), with a fresh optimizer and schedule")
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
        history = train.pretrain(P, args.out, resume=args.resume, time_budget_s=args.time_budget,
                           stop_after=args.stop_after, progress=not args.no_progress,
                           tensorboard=args.tensorboard, device=args.device, init_from=args.init_from,
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

def _preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None, choices=list(PRESETS),
                        help="ci, laptop or gpu (default: $BERTBOOK_PRESET or laptop)")




def _efficient_args(parser: argparse.ArgumentParser) -> None:
    """The options of fine-tuning a fraction of the weights (notebook 09), and of tracking."""
    parser.add_argument("--peft", choices=("lora", "adapter", "prefix", "head"), default=None,
                        help="train only LoRA updates, adapters, prefixes or the head; the encoder stays frozen")
    parser.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: the preset's)")
    parser.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha; the update is scaled by alpha/r")
    parser.add_argument("--lora-targets", default=None, metavar="NAMES",
                        help="comma-separated: query,key,value,out,fc1,fc2, or all (default: query,value)")
    parser.add_argument("--adapter-size", type=int, default=None, help="adapter bottleneck width")
    parser.add_argument("--prefix-length", type=int, default=None, help="prefix vectors per layer")
    parser.add_argument("--tracker", choices=("none", "tensorboard", "wandb"), default="none",
                        help="log the curves to TensorBoard or W&B offline, in logs/<name> beside the model")


def _open_tracker(args: argparse.Namespace, out: Path):
    """The run's tracker, writing to ``<out's folder>/logs/<out's name>`` (the model folder is replaced on save)."""
    from .tracking import open_tracker

    return open_tracker(args.tracker, out.parent / "logs" / out.name, {k: str(v) for k, v in vars(args).items()})


def _finetune_efficient(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``finetune --peft lora|adapter|prefix|head``: `efficient.run_efficient`; saves only what was trained."""
    from . import efficient as E, finetune as F, paths

    if args.task not in F.TASKS:
        parser.error(f"--peft is for --task {' or '.join(F.TASKS)}")
    lora = {"r": args.lora_r, "alpha": args.lora_alpha, "targets": args.lora_targets}
    if args.peft != "lora" and any(v is not None for v in lora.values()):
        parser.error("--lora-r, --lora-alpha and --lora-targets go with --peft lora")
    if args.init == "random":
        parser.error("--peft trains a few weights on top of a pretrained base: use --init pretrained, minilm or a "
                     "checkpoint folder (from random weights, fine-tune everything without --peft)")
    changes = {"finetune.train_examples": args.train_examples, "finetune.max_length": args.max_length,
               "finetune.minilm_max_length": args.max_length, "finetune.truncation": args.truncation}
    settings = {**lora, "bottleneck": args.adapter_size, "prefix_length": args.prefix_length}
    try:
        P = get_preset(args.preset, **{k: v for k, v in changes.items() if v is not None})
        method = E.method_from_preset(P, args.peft, **{k: v for k, v in settings.items() if v is not None})
        out = args.out or paths.artifacts_dir(P.name, f"finetune-{args.task}-{F.init_name(args.init)}-{args.peft}")
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise FileExistsError(f"{out} already holds a model; pass --overwrite to replace it or choose another "
                                  f"--out.")
        tracker = _open_tracker(args, out)
        record = E.run_efficient(P, args.task, args.init, method, out=out, overwrite=True, tracker=tracker,
                                 verbose=not args.quiet)
        tracker.close()
    except (ValueError, OSError, ImportError) as exc:  # ConfigError is a ValueError; FileExistsError an OSError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record.pop("_run")
    if not args.quiet:
        print(f"{method.label}: {record['trainable']:,} trainable parameters of {record['total']:,} "
              f"({100 * record['trainable'] / record['total']:.2f}%); saved {record['saved_bytes']:,} bytes")
    print(json.dumps(record, default=F.jsonable))
    return 0


def cli_finetune(argv: list[str]) -> int:
    """``python -m bertbook finetune --task imdb --init pretrained --preset laptop --out DIR``; the tasks of
    notebook 08 (``--task wikiann|wnut17|semeval|squad``) go to `bertbook.tasks.run_task`."""
    from . import finetune as F, paths, tasks

    parser = argparse.ArgumentParser(prog="python -m bertbook finetune",
                                     description="Fine-tune a sentiment classifier, or an encoder with a task head "
                                                 "(entities, relations, answers); the last line printed is the "
                                                 "test metrics as JSON.")
    parser.add_argument("--task", choices=(*F.TASKS, *tasks.TASKS), default="imdb")
    parser.add_argument("--init", default="pretrained",
                        help="random | pretrained (the preset's notebook-05 checkpoint) | minilm | a checkpoint "
                             "folder")
    _preset_arg(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the fine-tuned model (default artifacts/<preset>/finetune-<task>-<init>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument("--train-examples", type=int, default=None, help="override finetune.train_examples")
    parser.add_argument("--max-length", type=int, default=None, help="override the tokens per example")
    parser.add_argument("--truncation", choices=("head", "head+tail"), default=None)
    parser.add_argument("--pooling", choices=("markers", "cls"), default=None,
                        help="semeval: read the relation from the entity markers (default) or from [CLS]")
    parser.add_argument("--quiet", action="store_true", help="print only the JSON line")
    _efficient_args(parser)
    args = parser.parse_args(argv)
    if args.peft is not None:
        return _finetune_efficient(parser, args)
    P = get_preset(args.preset)
    if args.task in tasks.TASKS:
        return _finetune_task(parser, args, P)
    if args.pooling is not None:
        parser.error("--pooling is for --task semeval")
    out = args.out or paths.artifacts_dir(P.name, f"finetune-{args.task}-{F.init_name(args.init)}")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} already holds a model; pass --overwrite to replace it or choose another --out.",
              file=sys.stderr)
        return 2
    try:
        tracker = _open_tracker(args, out)
        run = F.run_finetune(P, args.task, args.init, out=out, train_examples=args.train_examples,
                           max_length=args.max_length, truncation=args.truncation, overwrite=True,
                           verbose=not args.quiet, tracker=tracker)
        tracker.close()
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run.record, default=F.jsonable))
    return 0


def _finetune_task(parser: argparse.ArgumentParser, args: argparse.Namespace, P) -> int:
    """``finetune --task wikiann|wnut17|semeval|squad``: `tasks.run_task` on the preset's slice."""
    from . import finetune as F, tasks

    kind = tasks.TASKS[args.task][0]
    if args.truncation is not None:
        parser.error(f"--truncation is for imdb and sst2; --task {args.task} reads "
                     f"{'windows over the paragraph' if kind == 'qa' else 'whole sentences'}")
    if args.pooling is not None and kind != "relations":
        parser.error("--pooling is for --task semeval")
    changes = {}
    if args.train_examples is not None:
        field = {"ner": "ner", "relations": "relation", "qa": "qa"}[kind]
        changes[f"tasks.{field}_train_examples"] = args.train_examples
    if args.max_length is not None:
        changes["tasks.qa_max_length" if kind == "qa" else "tasks.max_length"] = args.max_length
    try:
        P = P.override(**changes)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = {"pooling": args.pooling} if args.pooling else {}
    out = args.out or tasks.task_folder(P, args.task, args.init, **options)
    try:  # refuses a folder that holds a model before training, unless --overwrite
        run = tasks.run_task(P, args.task, args.init, out=out, overwrite=args.overwrite, verbose=not args.quiet,
                             **options)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run.record, default=F.jsonable))
    return 0


def _read_lines(path: str) -> list[str]:
    """The texts of a file (``-``: standard input), one per line; a final newline ends the last text."""
    if path == "-":
        if sys.stdin.isatty():
            print("Reading texts from standard input, one per line (end with Ctrl-D).", file=sys.stderr)
        content = sys.stdin.read()
    else:
        content = Path(path).read_text(encoding="utf-8")
    lines = [line.removesuffix("\r") for line in content.split("\n")]  # not splitlines: it also cuts at \u2028
    return lines[:-1] if lines and lines[-1] == "" else lines


def cli_predict(argv: list[str]) -> int:
    """``python -m bertbook predict --model DIR "a text" ["another" ...]``: label and probability per text.
    ``--file PATH`` (one text per line) or standard input (no text, or ``-``) print one JSON line per text."""
    from . import finetune as F, tasks

    parser = argparse.ArgumentParser(prog="python -m bertbook predict",
                                     description="Classify texts with a fine-tuned model (bertbook or MiniLM). "
                                                 "Texts read from --file or standard input (one per line) print "
                                                 "one JSON line each, in the order read.")
    parser.add_argument("--model", type=Path, required=True, help="a folder written by `finetune`")
    parser.add_argument("texts", nargs="*", help="texts to classify; none, or -, reads standard input")
    parser.add_argument("--file", default=None, metavar="PATH", help="read the texts from PATH, one per line")
    parser.add_argument("--json", action="store_true", help="one JSON object per text (always, for --file and "
                                                            "standard input)")
    parser.add_argument("--question", default=None,
                        help="for a squad model: the question; each text is then a paragraph to answer it from")
    args = parser.parse_args(argv)
    if args.file is not None and args.texts:
        print("error: give the texts on the command line or with --file, not both.", file=sys.stderr)
        return 2
    source = args.file if args.file is not None else "-" if args.texts in ([], ["-"]) else None
    try:
        texts = args.texts if source is None else _read_lines(source)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read the texts from {source}: {exc}", file=sys.stderr)
        return 2
    where = "standard input" if source == "-" else source
    if not texts:
        print(f"error: {where} holds no text to classify (one text per line).", file=sys.stderr)
        return 2
    empty = [i + 1 for i, text in enumerate(texts) if not text.strip()]
    if empty:  # a label for nothing would look like an answer
        many = len(empty) > 1
        which = ("lines " if many else "line ") if source else ("texts " if many else "text ")
        which += ", ".join(map(str, empty[:5])) + (" ..." if len(empty) > 5 else "") + (f" of {where}" if source else "")
        print(f"error: {which} {'are' if many else 'is'} empty or only whitespace, so there is nothing to classify; "
              f"no label was given for any text. Give every text some words"
              + (" (remove the empty lines)." if source else "."), file=sys.stderr)
        return 2
    if _task_of(args.model) in tasks.TASKS:
        return _predict_task(args, texts)
    if args.question is not None:
        print("error: --question is for a model fine-tuned with --task squad.", file=sys.stderr)
        return 2
    try:
        model, tokenizer, info = F.load_finetuned(args.model)
    except (FileNotFoundError, ValueError) as exc:  # a missing folder, a damaged file (CheckpointError)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    as_json = args.json or source is not None
    chunk = 256  # print as it goes: a long file shows its first results early
    for start in range(0, len(texts), chunk):
        batch = texts[start:start + chunk]
        for text, pred in zip(batch, F.classify(model, tokenizer, batch, info)):
            if as_json:
                print(json.dumps({"text": text, "label": pred["label"], "probability": pred["probability"]}))
            else:
                print(f"{pred['label']}\t{pred['probability']:.4f}")
        sys.stdout.flush()
    return 0


def _task_of(folder: Path) -> str | None:
    """The task a fine-tuned folder was trained for, as its ``finetune.json`` says (None if unreadable)."""
    try:
        return json.loads((folder / "finetune.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None  # load_finetuned then explains what is missing or damaged


def _predict_task(args: argparse.Namespace, texts: list[str]) -> int:
    """``predict`` with a task model: one JSON line per text (entities with character spans, a relation
    label, or an answer span). A text the task cannot read gets an error line; the others are answered."""
    from . import tasks

    model, tokenizer, info = tasks.load_task_model(args.model)
    module = tasks.task_module(info["task"])
    if info["task"] == "squad" and not (args.question or "").strip():
        print("error: a squad model answers a question about each text: pass --question \"...\".", file=sys.stderr)
        return 2
    if info["task"] != "squad" and args.question is not None:
        print(f"error: --question is for a model fine-tuned with --task squad; this one is {info['task']}.",
              file=sys.stderr)
        return 2
    failed = 0
    for n, text in enumerate(texts, start=1):
        try:
            out = (module.predict(model, tokenizer, info, text, args.question) if info["task"] == "squad"
                   else module.predict(model, tokenizer, info, text))
        except ValueError as exc:
            print(f"error: text {n}: {exc}", file=sys.stderr)
            failed += 1
            continue
        out = {k: v for k, v in out.items() if k not in ("words", "tags")}
        print(json.dumps({"text": text, **out}), flush=True)
    return 2 if failed else 0


def cli_results(argv: list[str]) -> int:
    """``python -m bertbook results --preset laptop --out results.md``: the results table."""
    from . import finetune as F

    parser = argparse.ArgumentParser(prog="python -m bertbook results",
                                     description="Bag of words vs bertbook (random, pretrained) vs MiniLM.")
    _preset_arg(parser)
    parser.add_argument("--tasks", nargs="+", choices=F.TASKS, default=list(F.TASKS))
    parser.add_argument("--rows", nargs="+", choices=list(F.MODEL_NAMES), default=list(F.MODEL_NAMES))
    parser.add_argument("--curve", action="store_true", help="also the MiniLM learning curve on IMDB")
    parser.add_argument("--curve-sizes", nargs="+", type=int, default=None,
                        help="training-set sizes of the curve (default: n/8, n/2, n of the preset)")
    parser.add_argument("--out", type=Path, default=None, help="write the table to FILE.md or FILE.json")
    parser.add_argument("--seeds", type=int, default=3,
                        help="fine-tune each bertbook row this many times (seeds seed, seed+1, ...): mean and spread")
    parser.add_argument("--poolings", nargs="+", choices=["cls", "mean"], default=["cls", "mean"],
                        help="text vectors tried on the first seed; the best on validation is kept")
    parser.add_argument("--random-lrs", nargs="+", type=float, default=[], metavar="LR",
                        help="learning rates tried for row (b) on the first seed (default: the preset's)")
    parser.add_argument("--pretrained-lrs", nargs="+", type=float, default=[], metavar="LR",
                        help="learning rates tried for row (c) on the first seed (default: the preset's)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    P = get_preset(args.preset)
    rows: list[dict] = []
    curve: list[dict] = []

    def write() -> str:
        text = F.render_markdown(rows) + (f"\nMiniLM learning curve (IMDB)\n\n{F.render_markdown(curve)}" if curve else "")
        if args.out is not None:  # rewritten after every row, so a long run keeps what it finished
            if args.out.suffix == ".json":
                atomic_write(args.out, json.dumps({"results": rows, "learning_curve": curve}, indent=2,
                                                   default=F.jsonable) + "\n")
            else:
                atomic_write(args.out, text)
        return text

    for task in args.tasks:
        for row in args.rows:
            rows += F.results_table(P, [task], [row], verbose=not args.quiet, seeds=args.seeds,
                                  poolings=args.poolings,
                                  learning_rates={"random": args.random_lrs, "pretrained": args.pretrained_lrs})
            write()
    if args.curve:
        available = len(F.load_task_examples("imdb", P.finetune.seed)["train"])
        for n in args.curve_sizes or F.curve_sizes(P, available):
            curve += F.learning_curve(P, [n], reuse=rows, verbose=not args.quiet)
            write()
    text = write()
    if args.out is not None:
        print(f"wrote {args.out}")
    print(text)
    return 0



# ----------------------------------------------------------------------------------------------------------
# python -m bertbook course
# ----------------------------------------------------------------------------------------------------------

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
