"""The laptop preset's measured results, as the README and notebooks 05-06 quote them.

    python scripts/laptop_results.py pretrain     # the preset's pretraining run, scored (results/laptop_pretrain.json)
    python scripts/laptop_results.py finetune     # the results table, 3 seeds (results/laptop_results.json, .md)

``pretrain`` runs `bertbook.train.pretrain` exactly as notebook 05 does (the preset's own budget and recipe),
then scores the checkpoint on the held-out book, the held-out reviews and WikiText-2 next to the context-free
unigram baseline on the same masked tokens, and asks it to fill in the blanks of the notebook's prompts.
``finetune`` is ``python -m bertbook results --preset laptop --tasks imdb sst2 --seeds 3 --rows bow random
pretrained --random-lrs 3e-4 1e-3 --pretrained-lrs 1e-4 3e-4 1e-3`` (pooling and learning rate chosen on
the first seed's validation accuracy), with MiniLM's rows and learning curve added from the earlier
run of the same command in ``results/laptop_results_minilm_2026-11-28.json`` (they do not depend on our
pretraining, and cost 40 minutes of CPU to remeasure). Artifacts go to ``$BERTBOOK_ARTIFACTS`` (default
``build/laptop-results``, git-ignored).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BERTBOOK_ARTIFACTS", str(ROOT / "build" / "laptop-results"))
os.environ["BERTBOOK_PRESET"] = "laptop"

MINILM_RUN = "laptop_results_minilm_2026-11-28.json"
# learning rates tried on the first seed with each pooling, the best on validation kept: each init its own
RANDOM_LRS = ["3e-4", "1e-3"]
PRETRAINED_LRS = ["1e-4", "3e-4", "1e-3"]
PROMPTS = [
    "it is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a [MASK].",
    "the whale swam towards the [MASK].",
    "she opened the [MASK] and looked out into the garden.",
    "this is one of the best [MASK] i have ever seen.",
    "the acting was terrible and the plot made no [MASK].",
    "i would not recommend this movie to [MASK].",
]


def pretrain_stage(out: Path) -> dict:
    import torch

    from bertbook import corpus, evaluate, train, utils
    from bertbook.config import get_preset
    from bertbook.utils import device, machine
    from bertbook.masking import MaskVocab
    from bertbook.model import BertForPreTraining
    from bertbook.paths import artifacts_dir
    from bertbook.tokenizer import load_tokenizer

    P = get_preset("laptop")
    pc = P.pretrain
    print(P.summary(), flush=True)
    history = train.pretrain(P, artifacts_dir(P.name, "pretrain"), resume=True, progress=False)
    tok = load_tokenizer(Path(history.checkpoint))
    model = BertForPreTraining.from_pretrained(history.checkpoint).to(device()).eval()
    cache = corpus.corpus_cache(P, tok, "train", progress=False)
    vocab = MaskVocab.from_tokenizer(tok)
    last = history.train[-1]
    dtype = utils.autocast_dtype(pc.precision, device())  # the run's own precision, as notebook 05 evaluates
    autocast = "bf16" if dtype else "fp32"
    result = {"preset": P.to_dict(), "machine": machine(), "autocast": autocast,
              "threads": torch.get_num_threads(), "steps": last["step"], "tokens": last["tokens"],
              "train_seconds": last["seconds"], "eval": {}, "curve": {}, "fill_mask": {}}
    for name in corpus.EVAL_SETS:
        batches = corpus.eval_batches(corpus.eval_text(name, P.data.eval_max_chars, P), tok, vocab, pc.seq_len,
                                      pc.batch_size, pc.eval_batches)
        result["eval"][name] = {"model": evaluate.evaluate_mlm(model, batches, device(), dtype),
                                "unigram": evaluate.unigram_baseline(cache.ids, batches, len(tok))}
        result["curve"][name] = [(e["step"], e["accuracy"]) for e in history.eval if e["name"] == name]
        m, u = result["eval"][name]["model"], result["eval"][name]["unigram"]
        print(f"{name:>13}: MLM accuracy {m['accuracy']:.1%} (unigram {u['accuracy']:.1%}), loss {m['loss']:.3f} "
              f"(unigram {u['loss']:.3f})", flush=True)
    for text in PROMPTS:
        guesses = evaluate.fill_mask(model, tok, text, top_k=5)[0]
        result["fill_mask"][text] = guesses
        print(text, "->", ", ".join(f"{t} ({p:.2f})" for t, p in guesses), flush=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str]) -> int:
    stage = argv[0] if argv else "all"
    if stage in ("pretrain", "all"):
        pretrain_stage(ROOT / "results" / "laptop_pretrain.json")
    if stage in ("finetune", "all"):
        from bertbook.cli import cli_results

        out = ROOT / "results" / "laptop_results.json"
        code = cli_results(["--preset", "laptop", "--tasks", "imdb", "sst2", "--seeds", "3",
                            "--rows", "bow", "random", "pretrained", "--random-lrs", *RANDOM_LRS,
                            "--pretrained-lrs", *PRETRAINED_LRS, "--out", str(out)])
        if code:
            return code
        # MiniLM's rows do not depend on our pretraining: they are taken, marked as such, from the run of
        # the same command on the same slices before the recipe changed (results/laptop_results_minilm_*.json)
        earlier = json.loads((ROOT / "results" / MINILM_RUN).read_text())
        table = json.loads(out.read_text())
        for task in ("imdb", "sst2"):
            row = next(r for r in earlier["results"] if r["task"] == task and r["model"] == "minilm")
            table["results"].append({**row, "from": MINILM_RUN})
        table["learning_curve"] = [{**r, "from": MINILM_RUN} for r in earlier["learning_curve"]]
        out.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
