"""The command line of fine-tuning: ``finetune``, ``predict`` and ``results`` (``python -m bertbook ...``).

Part of `bertbook.cli`, which dispatches every command; heavy modules are imported inside each command so
that ``--help`` and the quick commands start without loading torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import PRESETS, ConfigError, get_preset
from .utils import atomic_write, jsonable

__all__ = ["cli_finetune", "cli_predict", "cli_results"]


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
    """``finetune --peft lora|adapter|prefix|head``: `results.run_efficient`; saves only what was trained."""
    from . import classifier as C, efficient as E, paths, results as R

    if args.task not in R.TASKS:
        parser.error(f"--peft is for --task {' or '.join(R.TASKS)}")
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
        out = args.out or paths.artifacts_dir(P.name, f"finetune-{args.task}-{C.init_name(args.init)}-{args.peft}")
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise FileExistsError(f"{out} already holds a model; pass --overwrite to replace it or choose another "
                                  f"--out.")
        tracker = _open_tracker(args, out)
        record = R.run_efficient(P, args.task, args.init, method, out=out, overwrite=True, tracker=tracker,
                                 verbose=not args.quiet)
        tracker.close()
    except (ValueError, OSError, ImportError) as exc:  # ConfigError is a ValueError; FileExistsError an OSError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record.pop("_run")
    if not args.quiet:
        print(f"{method.label}: {record['trainable']:,} trainable parameters of {record['total']:,} "
              f"({100 * record['trainable'] / record['total']:.2f}%); saved {record['saved_bytes']:,} bytes")
    print(json.dumps(record, default=jsonable))
    return 0


def cli_finetune(argv: list[str]) -> int:
    """``python -m bertbook finetune --task imdb --init pretrained --preset laptop --out DIR``; the tasks of
    notebooks 08 and 10 (``--task wikiann|wnut17|semeval|squad|scitldr|dailydialog|tatoeba-zh``) go to
    `bertbook.tasks.run_task`."""
    from . import classifier as C, paths, results as R, tasks

    parser = argparse.ArgumentParser(prog="python -m bertbook finetune",
                                     description="Fine-tune a sentiment classifier, or an encoder with a task head "
                                                 "(entities, relations, answers); the last line printed is the "
                                                 "test metrics as JSON.")
    parser.add_argument("--task", choices=(*R.TASKS, *tasks.TASKS), default="imdb")
    parser.add_argument("--init", default="pretrained",
                        help="random | pretrained (the preset's notebook-05 checkpoint) | reference (the laptop "
                             "model pretrained for hours, in models/reference-laptop) | minilm | a checkpoint folder")
    _preset_arg(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the fine-tuned model (default artifacts/<preset>/finetune-<task>-<init>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument("--train-examples", type=int, default=None, help="override finetune.train_examples")
    parser.add_argument("--max-length", type=int, default=None, help="override the tokens per example")
    parser.add_argument("--truncation", choices=("head", "head+tail"), default=None)
    parser.add_argument("--pooling", choices=("markers", "cls"), default=None,
                        help="semeval: read the relation from the entity markers (default) or from [CLS]")
    parser.add_argument("--encoder-kind", choices=("cross", "bi"), default=None,
                        help="dailydialog: context and candidate in one input (cross, default) or encoded apart "
                             "and compared by cosine (bi)")
    parser.add_argument("--quiet", action="store_true", help="print only the JSON line")
    _efficient_args(parser)
    args = parser.parse_args(argv)
    if args.encoder_kind is not None and args.task != "dailydialog":
        parser.error("--encoder-kind is for --task dailydialog")
    if args.peft is not None:
        return _finetune_efficient(parser, args)
    P = get_preset(args.preset)
    if args.task in tasks.TASKS:
        return _finetune_task(parser, args, P)
    if args.pooling is not None:
        parser.error("--pooling is for --task semeval")
    out = args.out or paths.artifacts_dir(P.name, f"finetune-{args.task}-{C.init_name(args.init)}")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} already holds a model; pass --overwrite to replace it or choose another --out.",
              file=sys.stderr)
        return 2
    try:
        tracker = _open_tracker(args, out)
        run = R.run_finetune(P, args.task, args.init, out=out, train_examples=args.train_examples,
                           max_length=args.max_length, truncation=args.truncation, overwrite=True,
                           verbose=not args.quiet, tracker=tracker)
        tracker.close()
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run.record, default=jsonable))
    return 0


def _finetune_task(parser: argparse.ArgumentParser, args: argparse.Namespace, P) -> int:
    """``finetune --task wikiann|...|tatoeba-zh``: `tasks.run_task` on the preset's slice."""
    from . import tasks

    kind = tasks.TASKS[args.task][0]
    if args.truncation is not None:
        parser.error(f"--truncation is for imdb and sst2; --task {args.task} reads "
                     f"{'windows over the paragraph' if kind == 'qa' else 'whole sentences'}")
    if args.pooling is not None and kind != "relations":
        parser.error("--pooling is for --task semeval")
    changes = {}
    examples_field, length_field = tasks.SIZE_FIELDS[kind]
    if args.train_examples is not None:
        changes[f"tasks.{examples_field}"] = args.train_examples
    if args.max_length is not None:
        changes[f"tasks.{length_field}"] = args.max_length
    try:
        P = P.override(**changes)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = {"pooling": args.pooling} if args.pooling else {}
    if args.encoder_kind is not None:
        options["encoder_kind"] = args.encoder_kind
    out = args.out or tasks.task_folder(P, args.task, args.init, **options)
    try:  # refuses a folder that holds a model before training, unless --overwrite
        run = tasks.run_task(P, args.task, args.init, out=out, overwrite=args.overwrite, verbose=not args.quiet,
                             **options)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run.record, default=jsonable))
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
    from . import classifier as C, efficient as E, tasks

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
    parser.add_argument("--candidates", default=None, metavar="FILE",
                        help="for a dailydialog model: the possible next turns, one per line; each text is then "
                             "a dialogue so far, its turns separated by ' | '")
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
        which += ", ".join(map(str, empty[:5])) + (" ..." if len(empty) > 5 else "")
        which += f" of {where}" if source else ""
        print(f"error: {which} {'are' if many else 'is'} empty or only whitespace, so there is nothing to classify; "
              f"no label was given for any text. Give every text some words"
              + (" (remove the empty lines)." if source else "."), file=sys.stderr)
        return 2
    if _task_of(args.model) in tasks.TASKS:
        return _predict_task(args, texts)
    if args.question is not None:
        print("error: --question is for a model fine-tuned with --task squad.", file=sys.stderr)
        return 2
    if args.candidates is not None:
        print("error: --candidates is for a model fine-tuned with --task dailydialog.", file=sys.stderr)
        return 2
    try:
        load = E.load_efficient if E.is_efficient(args.model) else C.load_finetuned  # only the trained weights?
        model, tokenizer, info = load(args.model)
    except (FileNotFoundError, ValueError) as exc:  # a missing folder, a damaged file (CheckpointError)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    as_json = args.json or source is not None
    chunk = 256  # print as it goes: a long file shows its first results early
    for start in range(0, len(texts), chunk):
        batch = texts[start:start + chunk]
        for text, pred in zip(batch, C.classify(model, tokenizer, batch, info)):
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


def _read_candidates(path: str) -> list[str]:
    """The candidate replies of ``predict --candidates FILE``, one per line; a ValueError says what is wrong."""
    try:
        candidates = _read_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the candidates from {path}: {exc}") from None
    if not candidates:
        raise ValueError(f"{path} holds no candidate: write the possible next turns into it, one per line.")
    empty = [n + 1 for n, c in enumerate(candidates) if not c.strip()]
    if empty:
        raise ValueError(f"line {empty[0]} of {path} is empty: write one candidate per line, with no empty lines.")
    return candidates


def _predict_task(args: argparse.Namespace, texts: list[str]) -> int:
    """``predict`` with a task model: one JSON line per text (entities with character spans, a relation
    label, an answer span, or the candidates ranked as next turns). A text the task cannot read gets an
    error line; the others are answered."""
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
    if info["task"] == "dailydialog" and args.candidates is None:
        print("error: a dailydialog model chooses the next turn among candidates: pass --candidates FILE (one "
              "candidate per line), and each text as the dialogue so far, turns separated by ' | '.",
              file=sys.stderr)
        return 2
    if info["task"] != "dailydialog" and args.candidates is not None:
        print(f"error: --candidates is for a model fine-tuned with --task dailydialog; this one is {info['task']}.",
              file=sys.stderr)
        return 2
    candidates = None
    if args.candidates is not None:
        try:
            candidates = _read_candidates(args.candidates)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    failed = 0
    for n, text in enumerate(texts, start=1):
        try:
            if info["task"] == "squad":
                out = module.predict(model, tokenizer, info, text, args.question)
            elif info["task"] == "dailydialog":
                out = module.predict(model, tokenizer, info, text, candidates)
            else:
                out = module.predict(model, tokenizer, info, text)
        except ValueError as exc:
            print(f"error: text {n}: {exc}", file=sys.stderr)
            failed += 1
            continue
        out = {k: v for k, v in out.items() if k not in ("words", "tags")}
        print(json.dumps({"text": text, **out}), flush=True)
    return 2 if failed else 0


def cli_results(argv: list[str]) -> int:
    """``python -m bertbook results --preset laptop --out results.md``: the results table."""
    from . import results as R
    from .reference import reference_dir

    parser = argparse.ArgumentParser(prog="python -m bertbook results",
                                     description="Bag of words vs bertbook (random, pretrained, reference) vs "
                                                 "MiniLM.")
    _preset_arg(parser)
    parser.add_argument("--tasks", nargs="+", choices=R.TASKS, default=list(R.TASKS))
    # the reference row where the checkout has the reference model (models/reference-laptop)
    default_rows = [r for r in R.MODEL_NAMES if r != "reference" or reference_dir().is_dir()]
    parser.add_argument("--rows", nargs="+", choices=list(R.MODEL_NAMES), default=default_rows)
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
    parser.add_argument("--reference-lrs", nargs="+", type=float, default=None, metavar="LR",
                        help="learning rates tried for the reference row on the first seed (default: "
                             "--pretrained-lrs)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    P = get_preset(args.preset)
    rows: list[dict] = []
    curve: list[dict] = []

    def write() -> str:
        text = R.render_markdown(rows)
        if curve:
            text += f"\nMiniLM learning curve (IMDB)\n\n{R.render_markdown(curve)}"
        if args.out is not None:  # rewritten after every row, so a long run keeps what it finished
            if args.out.suffix == ".json":
                atomic_write(args.out, json.dumps({"results": rows, "learning_curve": curve}, indent=2,
                                                   default=jsonable) + "\n")
            else:
                atomic_write(args.out, text)
        return text

    for task in args.tasks:
        for row in args.rows:
            rows += R.results_table(P, [task], [row], verbose=not args.quiet, seeds=args.seeds,
                                  poolings=args.poolings,
                                  learning_rates={"random": args.random_lrs, "pretrained": args.pretrained_lrs,
                                                  "reference": args.pretrained_lrs if args.reference_lrs is None
                                                  else args.reference_lrs})
            write()
    if args.curve:
        available = len(R.load_task_examples("imdb", P.finetune.seed)["train"])
        for n in args.curve_sizes or R.curve_sizes(P, available):
            curve += R.learning_curve(P, [n], reuse=rows, verbose=not args.quiet)
            write()
    text = write()
    if args.out is not None:
        print(f"wrote {args.out}")
    print(text)
    return 0



# ----------------------------------------------------------------------------------------------------------
# python -m bertbook course
# ----------------------------------------------------------------------------------------------------------
