"""The command line: ``python -m bertbook <command> ...`` for long runs, checks and benchmarks.

Each command lives in the module that owns the concept and is imported only when called, so a quick
command does not pay for importing torch. A module provides ``cli_<command>(argv) -> int``.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("bertbook.data", "list the datasets, where each was found, and verify checksums"),
    "parity": ("bertbook.hf", "check bertbook against transformers (largest difference per output)"),
    "pretrain": ("bertbook.train", "pretrain a masked language model on a preset"),
    "bench": ("bertbook.bench", "training speed of bertbook vs transformers, side by side"),
    "finetune": ("bertbook.finetune", "fine-tune a classifier (imdb, sst2) and print test metrics"),
    "predict": ("bertbook.finetune", "classify a text with a fine-tuned model"),
    "results": ("bertbook.finetune", "compute the results table (baselines vs pretrained models)"),
    "course": ("bertbook.course", "execute every notebook headless on a preset and summarise"),
    "presets": ("bertbook.course", "print the presets"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m bertbook <command> [options]   (<command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
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
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return int(getattr(module, f"cli_{command}")(rest) or 0)
    except Exception as exc:
        # A missing or damaged file (bertbook.model.CheckpointError) is the user's to fix: its message says
        # which file and what to do, so print that, not a traceback. (Only a command that loaded a checkpoint
        # can raise one, and it has imported bertbook.model, so a quick command still skips torch.)
        model = sys.modules.get("bertbook.model")
        if model is None or not isinstance(exc, model.CheckpointError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
