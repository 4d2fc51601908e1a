"""Pretraining: one plain training loop, and the run around it that makes it real.

Taught in notebook 05. The loop is :func:`pretrain`; its body is :func:`train_step`, one optimizer step on
one screen (forward, loss, backward, clip, step), which notebook 05 writes out inline and checks against
this one. Around it are named functions, not closures inside it: :func:`start_run` builds or resumes all the
loop needs, :func:`evaluate_run` scores the held-out sets, :func:`checkpoint_run` saves the run so that it
resumes exactly. The recipe is BERT's (Devlin et al. 2019, appendix A.2) with the later fixes that make
small budgets work (Liu et al. 2019, RoBERTa; Geiping & Goldstein 2023, Cramming):

- gradients are accumulated over several micro-batches; the global gradient norm is clipped (0: not);
- bf16 autocast where the hardware computes it;
- a run can be bounded by wall-clock time instead of steps; the schedule then follows the clock;
- under ``torchrun`` every process trains on its own micro-batches (DistributedDataParallel).

The optimizer and the learning-rate schedule are in ``optim``, the held-out scores in ``evaluate``, the
files of a resumable checkpoint in ``runstate``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import get_preset
from .corpus import EVAL_SETS, PretrainData, corpus_cache, eval_batches, eval_text, example_seed, tokenizer_hash
from .electra import Electra, evaluate_electra
from .utils import machine
from .evaluate import evaluate_mlm
from .masking import MaskVocab, num_sentence_labels
from .model import BertForPreTraining
from .optim import TrainingDiverged, check_finite, clip_gradients, lr_factor, make_optimizer, make_scheduler
from .paths import artifacts_dir
from .runstate import (CHECKPOINT, check_resumable, find_checkpoint, load_training_state, read_run, read_weights,
                       rng_state, save_checkpoint, set_rng_state)
from .tokenizer import get_tokenizer, load_tokenizer
from .tracking import open_tracker
from .utils import autocast, autocast_dtype

__all__ = ["TrainingDiverged", "build_model", "compute_loss", "train_step", "History", "Clock", "Run", "start_run",
           "evaluate_run", "checkpoint_run", "pretrain", "get_pretrained"]


# ---------------------------------------------------------------------------------------------------------
# 1. The step: forward, loss, backward, clip, step
# ---------------------------------------------------------------------------------------------------------


def build_model(preset, vocab_size: int):
    """The model pretrained by notebook 05: ``BertForPreTraining`` sized by the preset, with the tokenizer's
    vocabulary size (and no dropout when ``pretrain.dropout`` is off). Without a sentence objective the
    pooler and sentence head get no gradient, so they are frozen (and left out of the optimizer).
    With ``pretrain.objective="electra"``: `electra.Electra` (notebook 11), this encoder as the discriminator
    beside a generator ``pretrain.generator_size`` as wide, trained with MLM + ``rtd_weight`` x RTD."""

    objective = preset.pretrain.sentence_objective
    config = dataclasses.replace(preset.model, vocab_size=vocab_size)
    if not preset.pretrain.dropout:  # short budgets: every step must count, nothing to regularise yet
        config = dataclasses.replace(config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if preset.pretrain.objective == "electra":
        return Electra(config, generator_size=preset.pretrain.generator_size, rtd_weight=preset.pretrain.rtd_weight)
    model = BertForPreTraining(config, num_sentence_labels=max(2, num_sentence_labels(objective)))
    if objective == "none":
        for p in itertools.chain(model.bert.pooler.parameters(), model.sentence_classifier.parameters()):
            p.requires_grad_(False)
    return model


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """One forward pass; MLM logits only at the masked positions (the loss is the same, the cost a
    fraction). Returns the model output, whose ``loss`` is MLM + sentence loss (ELECTRA: the generator's MLM
    + rtd_weight x the discriminator's RTD loss, from the same masked batch)."""
    return model(**batch, masked_only=True)


def train_step(model: nn.Module, micro_batches: list[dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
               max_grad_norm: float = 0.0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimizer step, the whole of training (notebook 05 writes it inline and checks it against this).

    For each micro-batch: forward (MLM logits at the masked positions only), loss, backward, each loss
    divided by the number of micro-batches so that the gradients add up to their mean. Then clip the global
    gradient norm, refuse non-finite numbers (``TrainingDiverged``, the weights untouched), step, zero.
    Clipping: ``max_grad_norm > 0`` scales the gradients down to that global norm when they exceed it;
    ``max_grad_norm = 0`` (the default) turns clipping off, and the norm is still measured and returned.
    (`optim.clip_gradients` and `optim.check_finite`: the rule of every step in the package.)
    Under DistributedDataParallel the gradients are all-reduced once, with the last micro-batch.
    Returns ``[loss, mlm_loss, sentence_loss, grad_norm]`` as one tensor on the device.
    """
    A = len(micro_batches)
    device = micro_batches[0]["input_ids"].device
    losses = torch.zeros(3, device=device)  # loss, mlm_loss, sentence_loss: the mean over micro-batches
    for i, batch in enumerate(micro_batches):
        wait = A > 1 and i < A - 1 and hasattr(model, "no_sync")  # DDP: no all-reduce before the last one
        with model.no_sync() if wait else nullcontext(), autocast(device, dtype):
            out = compute_loss(model, batch)
        (out.loss / A).backward()
        sentence = out.sentence_loss if out.sentence_loss is not None else torch.zeros_like(out.loss)
        losses += torch.stack([out.loss, out.mlm_loss, sentence]).detach().float() / A
    grad_norm = clip_gradients(model, max_grad_norm)
    check_finite(losses[0], grad_norm, optimizer)  # the total loss is NaN if any of its parts is
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.cat([losses, grad_norm.detach().float().view(1)])  # (4,)


# ---------------------------------------------------------------------------------------------------------
# 2. What a run records, and its clock
# ---------------------------------------------------------------------------------------------------------


@dataclass
class History:
    """What a run recorded: one dict per optimizer step (``train``) and per evaluation (``eval``)."""

    train: list[dict] = field(default_factory=list)  # step, loss, mlm_loss, sentence_loss, lr, grad_norm, ...
    eval: list[dict] = field(default_factory=list)  # step, name, loss, accuracy, perplexity
    checkpoint: str | None = None  # folder of the latest checkpoint
    finished: bool = False  # reached max_steps (or the time budget)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**{k: d[k] for k in ("train", "eval", "checkpoint", "finished") if k in d})

    def last_eval(self, name: str = "gutenberg") -> dict | None:
        """The most recent evaluation on ``name`` ('gutenberg' or 'wikitext-2')."""
        found = [e for e in self.eval if e["name"] == name]
        return found[-1] if found else None


class Clock:
    """Training time for time-budgeted runs (Cramming): progress = seconds trained / budget."""

    def __init__(self, budget_s: float, elapsed: float = 0.0):
        self.budget_s, self.elapsed, self._t0 = budget_s, elapsed, None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, count: bool = True) -> None:
        if count and self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
        self._t0 = None

    def progress(self) -> float:
        return min(1.0, self.elapsed / self.budget_s) if self.budget_s else 0.0

    def done(self) -> bool:
        return bool(self.budget_s) and self.elapsed >= self.budget_s


# ---------------------------------------------------------------------------------------------------------
# 3. Several processes (torchrun): rank 0 first, one clock, mean losses
# ---------------------------------------------------------------------------------------------------------


def _init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; starts the process group if needed."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, local


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _rank0_first(world: int, rank: int, fn: Callable):
    """Run ``fn`` on rank 0 first (it may build a cache), then on the others (they read it)."""
    if rank == 0:
        result = fn()
    _barrier(world)
    if rank != 0:
        result = fn()
    return result


def _sync_clock(run: Run) -> None:
    """Under torchrun every process follows rank 0's clock, so that all stop at the same step."""
    if run.P.pretrain.time_budget_s and run.world > 1:
        import torch.distributed as dist

        t = torch.tensor([run.clock.elapsed], dtype=torch.float64, device=run.device)
        dist.broadcast(t, 0)
        run.clock.elapsed = float(t)


def _mean_over_processes(run: Run, stats: torch.Tensor) -> list[float]:
    if run.world > 1:
        import torch.distributed as dist

        dist.all_reduce(stats[:3])  # the losses; the gradient norm is already the same everywhere
        stats[:3] /= run.world
    return stats.tolist()


# ---------------------------------------------------------------------------------------------------------
# 4. Starting or resuming a run
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a pretraining run holds between steps: made by :func:`start_run`, advanced by :func:`pretrain`."""

    P: Any  # the preset, with the run's time budget filled in
    run_dir: Path
    device: torch.device
    rank: int  # this process's rank, and the number of processes (torchrun)
    world: int
    tokenizer: Any
    tokenizer_hash: str
    data: Any  # corpus.PretrainData: the masked micro-batches
    eval_sets: dict  # name -> fixed held-out batches (rank 0 only)
    model: nn.Module
    train_model: nn.Module  # the model, or its DistributedDataParallel / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    clock: Clock
    history: History
    start: int  # the step it starts (or resumes) at
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    say: Callable = print
    progress: bool = True
    callback: Callable[[dict], None] | None = None
    tracker: Any = None  # a bertbook.tracking.Tracker: none, TensorBoard or W&B offline (notebook 09)
    init_from: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def tokens_per_step(self) -> int:
        pc = self.P.pretrain
        return self.world * pc.grad_accum_steps * pc.batch_size * pc.seq_len

    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        """This process's micro-batches of optimizer step ``step``, on the device."""
        A = self.P.pretrain.grad_accum_steps
        return [{k: v.to(self.device, non_blocking=True) for k, v in
                 self.data.batch(step, self.rank * A + micro, self.world * A).items()} for micro in range(A)]


def _open_run(P, run_dir: Path, resume: bool, init_from: str | os.PathLike | None, world: int, rank: int):
    """The tokenizer (the preset's, or that of the checkpoint the run starts from) and the run's saved
    record when it resumes (None for a new run). Refuses to overwrite a checkpoint or to resume another
    configuration."""

    if init_from is not None:
        tok = _rank0_first(world, rank, lambda: load_tokenizer(Path(init_from)))
    else:
        tok = _rank0_first(world, rank, lambda: get_tokenizer(P))
    tok_hash = tokenizer_hash(tok)
    ckpt = _rank0_first(world, rank, lambda: find_checkpoint(run_dir))  # rank 0 repairs a half-done swap
    if ckpt is not None and not resume:
        step = read_run(ckpt)["step"]
        raise FileExistsError(f"{run_dir} already holds a pretraining checkpoint (step {step}). Pass resume=True "
                              f"(--resume) to continue it, or choose another folder; nothing was overwritten.")
    saved = read_run(ckpt) if ckpt is not None else None
    if saved is not None:
        check_resumable(saved, P, tok_hash, ckpt)
    return tok, tok_hash, ckpt, saved


def _training_objects(P, vocab_size: int, dev: torch.device, clock: Clock, init_from=None):
    """Model (with the same initial weights in every process, or those of ``init_from``), AdamW and the
    learning-rate schedule (following the clock for a time budget)."""
    pc = P.pretrain
    torch.manual_seed(pc.seed)
    model = build_model(P, vocab_size).to(dev)
    if init_from is not None:  # continued pretraining (e.g. books, then reviews): weights only, fresh optimizer
        model.load_state_dict(read_weights(Path(init_from), device=dev))
    optimizer = make_optimizer(model, pc.learning_rate, pc.weight_decay, pc.adam_betas)
    if clock.budget_s:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: lr_factor(clock.progress(), pc.warmup_frac, pc.schedule))
    else:
        scheduler = make_scheduler(optimizer, round(pc.warmup_frac * pc.max_steps), pc.max_steps, pc.schedule)
    return model, optimizer, scheduler


def start_run(P, run_dir: Path, resume: bool = False, init_from: str | os.PathLike | None = None, *,
              device: str | None = None, progress: bool = True, verbose: bool = True,
              callback: Callable[[dict], None] | None = None, tensorboard: bool = False,
              tracker: str = "none") -> Run | History:
    """Everything :func:`pretrain` needs: tokenizer, data, held-out batches, model, optimizer, schedule,
    restored from the checkpoint when resuming. Returns the finished run's History if there is nothing to do."""

    pc = P.pretrain
    rank, world, local = _init_distributed()
    main = rank == 0
    say = print if (verbose and main) else (lambda *a, **k: None)
    dev = torch.device(device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls that remain use TF32 tensor cores
    run_dir.mkdir(parents=True, exist_ok=True)
    tok, tok_hash, ckpt, saved = _open_run(P, run_dir, resume, init_from, world, rank)
    if saved is not None and saved["finished"]:
        say(f"The run in {run_dir} is already finished (step {saved['step']}); loaded its history.")
        return dataclasses.replace(History.from_dict(saved["history"]), checkpoint=str(ckpt), finished=True)

    cache = _rank0_first(world, rank, lambda: corpus_cache(P, tok, "train", progress=progress and main))
    vocab = MaskVocab.from_tokenizer(tok)
    data = PretrainData(cache, vocab, pc.seq_len, pc.batch_size, pc.mask_prob, pc.whole_word_mask,
                        pc.sentence_objective, pc.seed)
    eval_sets = {name: eval_batches(eval_text(name, P.data.eval_max_chars, P), tok, vocab, pc.seq_len,
                                    pc.batch_size, pc.eval_batches) for name in EVAL_SETS} if main else {}
    clock = Clock(pc.time_budget_s)
    model, optimizer, scheduler = _training_objects(P, len(tok), dev, clock, init_from if saved is None else None)
    history, start = History(), 0
    if saved is not None:
        model.load_state_dict(read_weights(ckpt, device=dev))
        state = load_training_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if len(state["rng"]) == world:
            set_rng_state(state["rng"][rank])
        else:  # another number of processes: dropout streams restart from the step
            torch.manual_seed(example_seed(pc.seed, "dropout", rank, saved["step"]))
        history, start, clock.elapsed = History.from_dict(saved["history"]), saved["step"], saved["train_seconds"]
        say(f"Resuming {run_dir} at step {start}.")
    else:
        torch.manual_seed(example_seed(pc.seed, "dropout", rank))  # each process its own dropout masks
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[local] if dev.type == "cuda" else None)
    if pc.compile:
        train_model = torch.compile(train_model)
    # where the numbers go (tensorboard=True is short for tracker="tensorboard"); only rank 0 logs
    chosen = "tensorboard" if tensorboard else tracker
    logs = open_tracker(chosen if main else "none", run_dir, {"preset": P.to_dict(), "init_from": str(init_from)})
    return Run(P=P, run_dir=run_dir, device=dev, rank=rank, world=world, tokenizer=tok, tokenizer_hash=tok_hash,
               data=data, eval_sets=eval_sets, model=model, train_model=train_model, optimizer=optimizer,
               scheduler=scheduler, clock=clock, history=history, start=start, dtype=autocast_dtype(pc.precision, dev),
               say=say, progress=progress, callback=callback, tracker=logs,
               init_from=str(init_from) if init_from is not None else None)


# ---------------------------------------------------------------------------------------------------------
# 5. Around the step: reporting, held-out scores, checkpoints, divergence
# ---------------------------------------------------------------------------------------------------------


def report(run: Run, record: dict) -> None:
    """Hand a train or eval record to the tracker and to the caller's ``callback``."""
    name = record.get("name", "train")
    run.tracker.log(record["step"], {f"{name}/{k}": v for k, v in record.items()
                                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"})
    if run.callback is not None:
        run.callback(record)


def evaluate_run(run: Run, step: int) -> None:
    """Score the model on every held-out set (rank 0), record and report it; without a progress bar, one line.
    ELECTRA: the generator's MLM scores, and the discriminator's RTD accuracy (`electra.evaluate_electra`)."""
    if not run.main:
        return
    score = evaluate_electra if isinstance(run.model, Electra) else evaluate_mlm
    for name, batches in run.eval_sets.items():
        record = {"kind": "eval", "step": step, "name": name, **score(run.model, batches, run.device, run.dtype)}
        run.history.eval.append(record)
        report(run, record)
    if not run.progress:
        last = run.history.train[-1] if run.history.train else {}
        run.say(f"step {step}: train loss {last.get('loss', float('nan')):.3f}, held-out " + ", ".join(
            f"{r['name']} MLM accuracy {r['accuracy']:.1%}"
            + (f" (RTD {r['rtd_accuracy']:.1%})" if "rtd_accuracy" in r else "")
            for r in run.history.eval[-len(run.eval_sets):])
            + f" [{run.clock.elapsed:.0f} s]", flush=True)


def run_record(run: Run, step: int, finished: bool) -> dict:
    """The checkpoint's ``pretrain.json``: preset, progress, tokens, machine and history."""

    budget = run.P.pretrain.time_budget_s
    return {"preset": run.P.to_dict(), "step": step, "finished": finished,
            "total_steps": None if budget else run.P.pretrain.max_steps, "time_budget_s": budget,
            "train_seconds": run.clock.elapsed, "tokens": step * run.tokens_per_step,
            "tokenizer": run.tokenizer_hash, "world_size": run.world, "init_from": run.init_from,
            "machine": machine(), "history": run.history.to_dict()}


def checkpoint_run(run: Run, step: int, finished: bool) -> None:
    """Write the run's checkpoint (rank 0), with every process's random state."""
    states = [rng_state()]
    if run.world > 1:
        import torch.distributed as dist

        states = [None] * run.world
        dist.all_gather_object(states, rng_state())
    if run.main:
        run.history.checkpoint, run.history.finished = str(run.run_dir / CHECKPOINT), finished
        save_checkpoint(run.run_dir, run.model, run.tokenizer, run.optimizer, run.scheduler,
                        run_record(run, step, finished), states)
    _barrier(run.world)


def _diverged(run: Run, step: int, err: TrainingDiverged) -> TrainingDiverged:
    last = find_checkpoint(run.run_dir)
    where = (f"The last good checkpoint is {last} (step {read_run(last)['step']})" if last
             else "No checkpoint was written yet")
    return TrainingDiverged(f"The {err.what} became {err.value} at step {step + 1} (learning rate {err.lr:.3g}); "
                            f"the run stopped without saving. {where}. Lower "
                            f"pretrain.learning_rate, lengthen pretrain.warmup_frac or keep gradient clipping on "
                            f"(pretrain.max_grad_norm), then resume or start again.")


# ---------------------------------------------------------------------------------------------------------
# 6. The loop
# ---------------------------------------------------------------------------------------------------------


def pretrain(preset=None, out_dir: str | os.PathLike | None = None, resume: bool = False,
             time_budget_s: float | None = None, callback: Callable[[dict], None] | None = None, *,
             stop_after: int | None = None, progress: bool = True, tensorboard: bool = False,
             tracker: str = "none", device: str | None = None, verbose: bool = True,
             init_from: str | os.PathLike | None = None) -> History:
    """Pretrain BERT on the preset's corpus; return the :class:`History` (notebook 05).

    ``out_dir`` (default ``artifacts/<preset>/pretrain``) receives ``checkpoint/`` (weights, config,
    tokenizer, optimizer, scheduler and random state, replaced atomically every
    ``pretrain.checkpoint_every`` steps and at the end). An existing checkpoint is never overwritten unless
    ``resume=True``, which continues it exactly where it stopped (a finished run is returned as it is).
    ``time_budget_s`` (or ``pretrain.time_budget_s``) bounds the run by training time instead of steps; the
    learning-rate schedule then follows the clock. ``stop_after`` ends the run after that many steps
    without changing its schedule (resume it later). ``init_from`` (a checkpoint folder) starts from its
    weights and tokenizer with a fresh optimizer and schedule: continued, domain-adaptive pretraining.
    ``callback(record)`` receives every train and eval record (``record["kind"]``); so does ``tracker``
    ("tensorboard" or "wandb", see `bertbook.tracking`; ``tensorboard=True`` is short for the first),
    which writes them under ``out_dir``. Under ``torchrun`` every process trains on its own micro-batches
    (DistributedDataParallel); rank 0 evaluates, logs and writes checkpoints. ``pretrain.objective="electra"``
    trains ELECTRA with this same loop (notebook 11, `bertbook.electra`); its checkpoint's ``bert.`` tensors
    are the discriminator's encoder, which ``model.load_encoder(checkpoint)`` loads for fine-tuning.
    """
    from tqdm.auto import tqdm

    P = preset or get_preset()
    P = P.override(**{"pretrain.time_budget_s": float(P.pretrain.time_budget_s if time_budget_s is None
                                                       else time_budget_s)})
    run_dir = Path(out_dir) if out_dir is not None else artifacts_dir(P.name, "pretrain")
    run = start_run(P, run_dir, resume, init_from, device=device, progress=progress, verbose=verbose,
                    callback=callback, tensorboard=tensorboard, tracker=tracker)
    if isinstance(run, History):
        return run
    pc, budget, clock, history = P.pretrain, P.pretrain.time_budget_s, run.clock, run.history
    n_params = sum(p.numel() for p in run.model.parameters())
    run.say(f"Pretraining {n_params / 1e6:.1f} M parameters on {run.data.cache.n_tokens:,} tokens of "
            f"{P.data.corpus} ({run.tokens_per_step:,} tokens per step, {run.world} process(es), "
            f"{run.device.type}{', bf16' if run.dtype else ''}) for "
            + (f"{budget:g} s" if budget else f"{pc.max_steps} steps"))
    # tqdm drops a total that n overshoots (and the format below then fails): keep n within the budget
    bar = tqdm(total=budget or pc.max_steps, initial=min(clock.elapsed, budget) if budget else run.start,
               unit="s" if budget else "step", disable=not (progress and run.main), desc="pretraining",
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}{postfix}]")
    run.model.train()
    for step in itertools.count(run.start) if budget else range(run.start, pc.max_steps):
        clock.start()
        lr = run.optimizer.param_groups[0]["lr"]
        try:
            stats = train_step(run.train_model, run.micro_batches(step), run.optimizer, pc.max_grad_norm, run.dtype)
        except TrainingDiverged as err:
            bar.close()
            raise _diverged(run, step, err) from None
        loss, mlm, sent, gnorm = _mean_over_processes(run, stats)
        clock.stop(count=step > run.start or not budget)  # a process's first step (compilation) is not counted
        _sync_clock(run)
        run.scheduler.step()
        done = step + 1
        finished = clock.done() if budget else done == pc.max_steps
        record = {"kind": "train", "step": done, "loss": loss, "mlm_loss": mlm, "lr": lr, "grad_norm": gnorm,
                  "tokens": done * run.tokens_per_step, "seconds": clock.elapsed}
        if pc.sentence_objective != "none":
            record["sentence_loss"] = sent
        if pc.objective == "electra" and pc.rtd_weight > 0:
            record["rtd_loss"] = (loss - mlm) / pc.rtd_weight  # the loss is MLM + rtd_weight x RTD
        history.train.append(record)
        if run.main:
            report(run, record)
            bar.update((min(clock.elapsed, budget) - bar.n) if budget else 1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
        if done % pc.eval_every == 0 or finished:
            evaluate_run(run, done)
        if done % pc.checkpoint_every == 0 or finished or done == stop_after:
            checkpoint_run(run, done, finished)
        if finished or done == stop_after:
            break
    bar.close()
    run.tracker.close()
    ev = history.last_eval("gutenberg")
    if ev is not None:
        run.say(f"step {history.train[-1]['step'] if history.train else run.start}: held-out MLM loss "
                f"{ev['loss']:.3f}, accuracy {ev['accuracy']:.1%}, perplexity {ev['perplexity']:.1f}; "
                f"checkpoint in {run_dir / CHECKPOINT}")
    return history


def get_pretrained(preset=None) -> Path:
    """The folder of the preset's pretraining checkpoint (``artifacts/<preset>/pretrain/checkpoint``), for
    ``BertForPreTraining.from_pretrained`` and ``model.load_encoder``. If there is none (or it is
    unfinished), pretrain now on the preset, which notebook 05 does step by step."""

    P = preset or get_preset()
    run_dir = artifacts_dir(P.name, "pretrain")
    ckpt = find_checkpoint(run_dir)
    if ckpt is not None and read_run(ckpt)["finished"]:
        return ckpt
    print(f"No finished pretraining checkpoint for preset {P.name!r} in {run_dir}: pretraining now "
          f"(notebook 05 explains this step).")
    history = pretrain(P, run_dir, resume=True)
    return Path(history.checkpoint)
