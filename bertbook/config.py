"""Configuration: one frozen object per concern, presets as plain data.

Taught in notebook 00 (presets) and 03 (the model config). Field names follow
`transformers.BertConfig` so that a config converts to and from Hugging Face without a mapping table.

A preset is three sizes of the *same* course: ``ci`` (every notebook in a minute or two on 2 CPU cores),
``laptop`` (real results on a CPU in about an hour) and ``gpu`` (BERT-base on the large corpus). Nothing
branches on a preset's name; presets differ only in the numbers below.

Choose one with the environment variable ``BERTBOOK_PRESET`` (default ``laptop``) and override any field
with ``BERTBOOK_SET="model.num_hidden_layers=4,pretrain.max_steps=200"`` or
``get_preset("ci", **{"model.hidden_size": 128})``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "ConfigError",
    "ModelConfig",
    "PretrainConfig",
    "FinetuneConfig",
    "DataConfig",
    "EfficientConfig",
    "Preset",
    "PRESETS",
    "get_preset",
    "preset_name",
]

# The pretraining corpora (their files are described in bertbook.data)
CORPORA = ("gutenberg-small", "gutenberg-large")
# Pretraining text made from a labelled dataset, labels dropped: IMDB's training reviews without the 2,500
# carved off for validation (the "validation" split of this corpus); the test reviews are never used.
REVIEWS = "imdb-reviews"
# What data.corpus may name: one corpus, or several joined with "+" (their chunks interleaved)
CORPUS_CHOICES = (*CORPORA, REVIEWS, "gutenberg-small+imdb-reviews", "gutenberg-large+imdb-reviews")


SCHEDULES = ("linear", "cosine", "constant", "triangle")  # learning-rate shapes (optim.lr_factor)


class ConfigError(ValueError):
    """A configuration value is invalid; the message says what to change."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Size and shape of a BERT encoder (names as in `transformers.BertConfig`)."""

    vocab_size: int = 30522  # rows of the token-embedding table (= tokenizer vocabulary size)
    hidden_size: int = 768  # d_model: width of every token vector in the residual stream
    num_hidden_layers: int = 12  # L: number of stacked encoder layers
    num_attention_heads: int = 12  # h: heads per attention layer; d_k = hidden_size / h
    intermediate_size: int = 3072  # width of the feed-forward layer (4 x hidden_size in BERT)
    hidden_act: str = "gelu"  # feed-forward activation (exact erf GELU, as in BERT)
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and on each sub-layer output
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    max_position_embeddings: int = 512  # longest sequence the learned position table covers
    type_vocab_size: int = 2  # segment ids: 0 for sentence A, 1 for sentence B
    layer_norm_eps: float = 1e-12  # epsilon inside every LayerNorm
    initializer_range: float = 0.02  # std of the normal init for weights
    pad_token_id: int = 0  # id of [PAD]; its embedding row gets no gradient
    # where each sub-layer's LayerNorm sits: "post" = LN(x + f(x)) as in BERT (converts to
    # transformers.BertModel); "pre" = x + f(LN(x)) with a final LayerNorm, which trains reliably at high
    # learning rates in short budgets (Xiong et al. 2020; Geiping & Goldstein 2023); converts to
    # transformers' RobertaPreLayerNorm encoder
    layer_norm_position: str = "post"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0,
                   f"model.{name} must be a positive integer, got {value!r}.")
        _check(self.hidden_size % self.num_attention_heads == 0,
               f"model.hidden_size={self.hidden_size} is not divisible by "
               f"model.num_attention_heads={self.num_attention_heads}: every head gets "
               f"hidden_size / num_attention_heads dimensions. Choose a head count that divides "
               f"{self.hidden_size} (for example {_divisors_hint(self.hidden_size)}).")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"model.{name} must be in [0, 1), got {value!r}.")
        _check(self.hidden_act in ("gelu", "gelu_new", "relu"),
               f"model.hidden_act must be 'gelu', 'gelu_new' or 'relu', got {self.hidden_act!r}.")
        _check(self.layer_norm_position in ("post", "pre"),
               f"model.layer_norm_position must be 'post' (BERT) or 'pre' (pre-LayerNorm), "
               f"got {self.layer_norm_position!r}.")
        _check(0 <= self.pad_token_id < self.vocab_size,
               f"model.pad_token_id={self.pad_token_id} is outside the vocabulary (size {self.vocab_size}).")

    @property
    def head_dim(self) -> int:
        """d_k: the width of one head's queries and keys (hidden_size / num_attention_heads)."""
        return self.hidden_size // self.num_attention_heads

    def num_parameters(self, pooler: bool = True) -> int:
        """Parameters of the encoder, counted from the shapes alone (notebooks 00 and 03).

        BERT-base (L=12, H=768, A=12) gives 109,482,240: the "110M" of Devlin et al. (2019). Pre-LayerNorm
        adds one final LayerNorm (2 x hidden_size).
        """
        H, I = self.hidden_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * H + 2 * H
        attention = 4 * (H * H + H) + 2 * H  # W_Q, W_K, W_V, W_O with biases; LayerNorm
        feed_forward = (H * I + I) + (I * H + H) + 2 * H  # two linear layers; LayerNorm
        pooler_params = H * H + H if pooler else 0
        final_norm = 2 * H if self.layer_norm_position == "pre" else 0
        return embeddings + self.num_hidden_layers * (attention + feed_forward) + final_norm + pooler_params

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _divisors_hint(n: int) -> str:
    ds = [d for d in range(1, min(n, 64) + 1) if n % d == 0 and d > 1]
    return ", ".join(str(d) for d in ds[-4:]) or "1"


@dataclass(frozen=True)
class PretrainConfig:
    """Masked-language-model pretraining (notebook 05, `bertbook.train`)."""

    seq_len: int = 128  # tokens per packed training sequence, [CLS] and [SEP] included
    batch_size: int = 32  # sequences per optimizer step (per process), before accumulation
    grad_accum_steps: int = 1  # micro-batches summed before each optimizer step
    max_steps: int = 1000  # optimizer steps (ignored when time_budget_s is set)
    time_budget_s: float = 0.0  # > 0: train for this many seconds; the LR schedule follows the clock
    learning_rate: float = 5e-4  # peak learning rate after warmup
    weight_decay: float = 0.01  # AdamW decay; never applied to biases and LayerNorm weights
    adam_betas: tuple[float, float] = (0.9, 0.98)  # AdamW (beta1, beta2)
    warmup_frac: float = 0.06  # fraction of the run spent warming up linearly from 0
    # 'linear', 'cosine' or 'constant' decay after warmup; or 'triangle' (Cramming's budget triangle):
    # from 25% of the peak up to the peak at warmup_frac of the run, then linearly down to 0
    schedule: str = "linear"
    dropout: bool = True  # False: every dropout off while pretraining (fine-tuning keeps model's dropout)
    max_grad_norm: float = 1.0  # clip the global gradient norm to this (0 disables)
    mask_prob: float = 0.15  # fraction of tokens chosen for prediction (BERT: 15%)
    whole_word_mask: bool = False  # choose whole words instead of single word pieces
    sentence_objective: str = "none"  # 'none', 'nsp', 'sop' or 'msc' (see notebook 04)
    # 'mlm': predict the masked tokens (BERT); 'electra': a small generator fills the masked positions and the
    # model learns to tell replaced tokens from original ones, at every position (notebook 11, bertbook.electra)
    objective: str = "mlm"
    generator_size: float = 0.25  # electra: the generator's width, heads and FFN as a fraction of the model's
    rtd_weight: float = 50.0  # electra: lambda in loss = MLM(generator) + lambda * RTD(discriminator)
    precision: str = "auto"  # 'auto' (bf16 where the GPU or CPU computes it, else fp32), 'bf16' or 'fp32'
    compile: bool = False  # torch.compile the model (worth it on a GPU)
    eval_every: int = 100  # steps between evaluations
    eval_batches: int = 10  # batches of held-out text per evaluation
    checkpoint_every: int = 500  # steps between checkpoints
    seed: int = 0  # seeds the model init, the data order and the masks

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "grad_accum_steps", "max_steps", "eval_every",
                     "eval_batches", "checkpoint_every"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0,
                   f"pretrain.{name} must be a positive integer, got {value!r}.")
        _check(self.seq_len >= 8, f"pretrain.seq_len must be at least 8, got {self.seq_len}.")
        _check(self.learning_rate > 0, f"pretrain.learning_rate must be > 0, got {self.learning_rate}.")
        _check(0.0 < self.mask_prob < 1.0,
               f"pretrain.mask_prob must be between 0 and 1 (BERT uses 0.15), got {self.mask_prob}.")
        _check(0.0 <= self.warmup_frac < 1.0,
               f"pretrain.warmup_frac must be in [0, 1), got {self.warmup_frac}.")
        _check(self.schedule in SCHEDULES,
               f"pretrain.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        _check(self.schedule != "triangle" or self.warmup_frac > 0,
               "pretrain.schedule='triangle' needs pretrain.warmup_frac > 0: it is where the peak sits "
               "(Cramming uses 0.75).")
        _check(self.sentence_objective in ("none", "nsp", "sop", "msc"),
               f"pretrain.sentence_objective must be 'none', 'nsp', 'sop' or 'msc', "
               f"got {self.sentence_objective!r}.")
        _check(self.objective in ("mlm", "electra"),
               f"pretrain.objective must be 'mlm' (BERT's masked LM) or 'electra' (replaced-token detection, "
               f"notebook 11), got {self.objective!r}.")
        _check(isinstance(self.generator_size, (int, float)) and 0.0 < self.generator_size <= 1.0,
               f"pretrain.generator_size must be in (0, 1]: the generator's width as a fraction of the model's "
               f"(ELECTRA finds 1/4 to 1/2 best, e.g. 0.25), got {self.generator_size!r}.")
        _check(isinstance(self.rtd_weight, (int, float)) and self.rtd_weight >= 0,
               f"pretrain.rtd_weight must be >= 0 (ELECTRA uses 50), got {self.rtd_weight!r}.")
        _check(self.objective != "electra" or self.sentence_objective == "none",
               f"pretrain.objective='electra' trains no sentence objective: set pretrain.sentence_objective=none "
               f"(got {self.sentence_objective!r}), or use pretrain.objective=mlm.")
        _check(self.precision in ("auto", "bf16", "fp32"),
               f"pretrain.precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}.")
        _check(self.time_budget_s >= 0, f"pretrain.time_budget_s must be >= 0, got {self.time_budget_s}.")
        _check(self.max_grad_norm >= 0, f"pretrain.max_grad_norm must be >= 0, got {self.max_grad_norm}.")


@dataclass(frozen=True)
class FinetuneConfig:
    """Sequence-classification fine-tuning (notebook 06, `bertbook.finetune`)."""

    max_length: int = 256  # tokens per example after truncation, [CLS] and [SEP] included
    truncation: str = "head"  # 'head' (first tokens) or 'head+tail' (first 1/4 and last 3/4 of the budget)
    batch_size: int = 16  # examples per optimizer step
    epochs: int = 2  # passes over the training examples
    learning_rate: float = 5e-5  # peak learning rate for bertbook from random weights (row b)
    pretrained_learning_rate: float = 5e-5  # ... for bertbook from its pretraining checkpoint (row c)
    pooling: str = "cls"  # the text vector: 'cls' (the pooler on [CLS], as BERT) or 'mean' (mean of the tokens)
    weight_decay: float = 0.01  # AdamW decay; never on biases and LayerNorm weights
    warmup_frac: float = 0.1  # fraction of the steps spent warming up
    max_grad_norm: float = 1.0  # gradient clipping
    classifier_dropout: float = 0.1  # dropout on the pooled [CLS] vector
    train_examples: int = 4000  # labelled training examples used (0 = all)
    val_examples: int = 1000  # validation examples carved from train with a fixed seed
    test_examples: int = 4000  # test examples evaluated (0 = all)
    minilm_max_length: int = 128  # MiniLM is ~15x slower per token; its runs use this length
    minilm_learning_rate: float = 5e-5  # MiniLM's own rate: a from-scratch model's 1e-3 wrecks its weights
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "epochs", "val_examples", "minilm_max_length"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0,
                   f"finetune.{name} must be a positive integer, got {value!r}.")
        for name in ("train_examples", "test_examples"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 0,
                   f"finetune.{name} must be a non-negative integer (0 = all), got {value!r}.")
        _check(self.truncation in ("head", "head+tail"),
               f"finetune.truncation must be 'head' or 'head+tail', got {self.truncation!r}.")
        _check(self.pooling in ("cls", "mean"), f"finetune.pooling must be 'cls' or 'mean', got {self.pooling!r}.")
        for name in ("learning_rate", "pretrained_learning_rate", "minilm_learning_rate"):
            _check(getattr(self, name) > 0, f"finetune.{name} must be > 0, got {getattr(self, name)}.")
        _check(0.0 <= self.classifier_dropout < 1.0,
               f"finetune.classifier_dropout must be in [0, 1), got {self.classifier_dropout}.")


@dataclass(frozen=True)
class DataConfig:
    """Which slice of which dataset a preset uses."""

    # pretraining corpus: 'gutenberg-small', 'gutenberg-large', 'imdb-reviews' (IMDB's training reviews,
    # labels dropped) or two joined with '+', e.g. 'gutenberg-small+imdb-reviews' (see CORPUS_CHOICES)
    corpus: str = "gutenberg-small"
    corpus_max_chars: int = 0  # use only the first N characters of the training text (0 = all)
    large_shards: int = 10  # shards of gutenberg-large to use (1..10)
    tokenizer_train_chars: int = 0  # characters used to train the WordPiece tokenizer (0 = all)
    eval_max_chars: int = 200_000  # characters of held-out text for MLM evaluation
    min_frequency: int = 2  # WordPiece: a piece must occur this often to enter the vocabulary

    def __post_init__(self) -> None:
        _check(self.corpus in CORPUS_CHOICES,
               f"data.corpus must be one of {', '.join(CORPUS_CHOICES)}, got {self.corpus!r}.")
        for name in ("corpus_max_chars", "tokenizer_train_chars", "eval_max_chars"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 0,
                   f"data.{name} must be a non-negative integer (0 = all), got {value!r}.")
        _check(isinstance(self.large_shards, int) and 1 <= self.large_shards <= 10,
               f"data.large_shards must be between 1 and 10, got {self.large_shards!r}.")
        _check(isinstance(self.min_frequency, int) and self.min_frequency >= 1,
               f"data.min_frequency must be >= 1, got {self.min_frequency!r}.")


LORA_TARGETS = ("query", "key", "value", "out", "fc1", "fc2")  # bertbook Linear layers LoRA can adapt


@dataclass(frozen=True)
class EfficientConfig:
    """Fine-tuning a fraction of the weights: LoRA, adapters, prefix tuning (notebook 09, `bertbook.efficient`)."""

    lora_r: int = 8  # r: rank of LoRA's update B A (Hu et al. 2021)
    lora_alpha: float = 16.0  # the update is scaled by alpha / r, so changing r keeps its size
    lora_targets: tuple[str, ...] = ("query", "value")  # which Linear layers get an update (see LORA_TARGETS)
    lora_dropout: float = 0.0  # dropout on the input of the low-rank branch
    lora_ranks: tuple[int, ...] = (2, 8, 32)  # the ranks the comparison table tries
    adapter_size: int = 32  # bottleneck width of each adapter (Houlsby et al. 2019)
    prefix_length: int = 16  # trainable key/value vectors prepended in every layer (Li & Liang 2021)
    head_learning_rate: float = 3e-3  # peak learning rate when only the classifier trains
    lora_learning_rate: float = 1e-3  # ... for LoRA (a zero-started update needs a larger rate than full FT)
    adapter_learning_rate: float = 1e-3  # ... for adapters
    prefix_learning_rate: float = 1e-2  # ... for prefix tuning (Li & Liang: prefixes want large rates)
    train_examples: int = 1000  # labelled training examples per comparison run
    val_examples: int = 500  # validation examples per comparison run (the best epoch is chosen on them)
    test_examples: int = 1000  # test examples per comparison run (0 = all)
    seeds: int = 2  # seeds per row of the comparison (mean and spread)

    def __post_init__(self) -> None:
        for name in ("lora_r", "adapter_size", "prefix_length", "train_examples", "val_examples", "seeds"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0,
                   f"efficient.{name} must be a positive integer, got {value!r}.")
        _check(isinstance(self.test_examples, int) and self.test_examples >= 0,
               f"efficient.test_examples must be a non-negative integer (0 = all), got {self.test_examples!r}.")
        _check(all(isinstance(r, int) and r > 0 for r in self.lora_ranks),
               f"efficient.lora_ranks must be positive integers, got {self.lora_ranks!r}.")
        _check(self.lora_alpha > 0, f"efficient.lora_alpha must be > 0, got {self.lora_alpha}.")
        _check(0.0 <= self.lora_dropout < 1.0, f"efficient.lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
        _check(bool(self.lora_targets) and not unknown,
               f"efficient.lora_targets {list(self.lora_targets)!r}: choose among {', '.join(LORA_TARGETS)}.")
        for name in ("head_learning_rate", "lora_learning_rate", "adapter_learning_rate", "prefix_learning_rate"):
            _check(getattr(self, name) > 0, f"efficient.{name} must be > 0, got {getattr(self, name)}.")


@dataclass(frozen=True)
class TasksConfig:
    """Named entities, relations and answers (notebook 08: `bertbook.ner`, `relations`, `qa`)."""

    ner_train_examples: int = 3000  # training sentences of WikiANN-en / WNUT-17 (0 = all)
    relation_train_examples: int = 3000  # training sentences of SemEval-2010 Task 8 (0 = all)
    qa_train_examples: int = 2000  # training questions of SQuAD (0 = all of the training articles)
    eval_examples: int = 1000  # validation and test examples of each task, each (0 = all)
    max_length: int = 128  # tokens per sentence for entities and relations, [CLS] and [SEP] included
    qa_max_length: int = 256  # tokens per question + context window
    qa_stride: int = 64  # tokens shared by consecutive windows of a long context
    max_answer_tokens: int = 30  # the longest answer span considered, in tokens
    batch_size: int = 16  # examples per optimizer step
    epochs: int = 2  # passes over the training examples
    learning_rate: float = 1e-3  # peak learning rate for bertbook's own encoder (random or pretrained)
    minilm_learning_rate: float = 1e-4  # MiniLM's: a small rate keeps its pretrained weights
    seed: int = 0  # the data slices and the training order
    # notebook 10: summaries (SciTLDR-A), dialogue (DailyDialog), translation (Tatoeba English -> Chinese)
    summary_train_examples: int = 0  # training abstracts of SciTLDR-A (0 = all 1,992)
    summary_max_length: int = 256  # tokens per abstract, a [CLS] before every sentence included
    dialogue_train_examples: int = 4000  # response-selection training examples (a context and its true turn)
    dialogue_context_turns: int = 3  # turns of context before the response
    dialogue_max_length: int = 128  # tokens of context + candidate (cross-encoder), or of each (bi-encoder)
    translation_train_pairs: int = 0  # English-Chinese training pairs of Tatoeba (0 = all 21,110)
    translation_max_length: int = 48  # English tokens, and Chinese characters, per sentence
    translation_epochs: int = 4  # passes over the pairs (a decoder starts from nothing, so it needs more)
    decoder_layers: int = 2  # layers of the translation decoder (its width is the encoder's)
    beam_size: int = 4  # beams of beam search (1 = greedy)

    def __post_init__(self) -> None:
        for name in ("max_length", "qa_max_length", "qa_stride", "max_answer_tokens", "batch_size", "epochs",
                     "summary_max_length", "dialogue_context_turns", "dialogue_max_length",
                     "translation_max_length", "translation_epochs", "decoder_layers", "beam_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"tasks.{name} must be a positive integer, got {value!r}.")
        for name in ("ner_train_examples", "relation_train_examples", "qa_train_examples", "eval_examples",
                     "summary_train_examples", "dialogue_train_examples", "translation_train_pairs"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 0,
                   f"tasks.{name} must be a non-negative integer (0 = all), got {value!r}.")
        _check(self.qa_stride < self.qa_max_length // 2,
               f"tasks.qa_stride={self.qa_stride} must be under half of tasks.qa_max_length={self.qa_max_length}: "
               f"each window has to move forward by more than it shares.")
        for name in ("learning_rate", "minilm_learning_rate"):
            _check(getattr(self, name) > 0, f"tasks.{name} must be > 0, got {getattr(self, name)}.")


@dataclass(frozen=True)
class Preset:
    """A complete course configuration: model, pretraining, fine-tuning and data slice."""

    name: str
    description: str
    model: ModelConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    data: DataConfig
    tasks: TasksConfig = field(default_factory=TasksConfig)  # notebook 08
    efficient: EfficientConfig = field(default_factory=EfficientConfig)  # notebook 09

    def __post_init__(self) -> None:
        _check(self.pretrain.seq_len <= self.model.max_position_embeddings,
               f"pretrain.seq_len={self.pretrain.seq_len} is longer than "
               f"model.max_position_embeddings={self.model.max_position_embeddings}: raise the position "
               f"table or shorten the sequences.")
        _check(self.finetune.max_length <= self.model.max_position_embeddings,
               f"finetune.max_length={self.finetune.max_length} is longer than "
               f"model.max_position_embeddings={self.model.max_position_embeddings}.")

    def override(self, **changes: Any) -> "Preset":
        """A copy with dotted fields changed: ``p.override(**{"model.hidden_size": 256})``."""
        groups: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            group, _, name = key.partition(".")
            sub = getattr(self, group, None)
            if not name or not dataclasses.is_dataclass(sub):
                raise ConfigError(f"Unknown setting {key!r}: use 'group.field' with group one of "
                                  f"model, pretrain, finetune, data, efficient, tasks (e.g. 'model.hidden_size').")
            known = {f.name: f for f in fields(sub)}
            if name not in known:
                raise ConfigError(f"Unknown setting {key!r}. Fields of {group}: {', '.join(known)}.")
            groups.setdefault(group, {})[name] = _coerce(value, getattr(sub, name), key)
        new = {g: replace(getattr(self, g), **kv) for g, kv in groups.items()}
        return replace(self, **new)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        m, p, f, d = self.model, self.pretrain, self.finetune, self.data
        budget = f"{p.time_budget_s:g} s" if p.time_budget_s else f"{p.max_steps} steps"
        return (f"preset {self.name!r}: {self.description}\n"
                f"  model    L={m.num_hidden_layers} H={m.hidden_size} A={m.num_attention_heads} "
                f"FFN={m.intermediate_size} vocab={m.vocab_size}, {m.layer_norm_position}-LayerNorm\n"
                f"  pretrain {d.corpus}, seq {p.seq_len}, batch {p.batch_size}x{p.grad_accum_steps}, "
                f"{budget}, lr {p.learning_rate:g} ({p.schedule}), mask {p.mask_prob:.0%}, "
                f"dropout {'on' if p.dropout else 'off'}\n"
                f"  finetune {f.train_examples or 'all'} examples, length {f.max_length}, "
                f"{f.epochs} epochs, lr {f.learning_rate:g} (pretrained {f.pretrained_learning_rate:g}), "
                f"{f.pooling} pooling")


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Turn a string from the environment into the type of the field it replaces."""
    if not isinstance(value, str) or isinstance(current, str):
        return value
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            return tuple(json.loads(value))
    except ValueError:
        raise ConfigError(f"Setting {key}={value!r}: expected a value like {current!r}.") from None
    return value


# The short-budget pretraining recipe every preset uses, chosen by the ablation sweep in
# results/sweep_laptop.md (notebook 05 shows it): after Geiping & Goldstein 2023 (Cramming) and Izsak et al.
# 2021, pre-LayerNorm (set in each ModelConfig), no dropout while pretraining, the triangle schedule peaking
# at 75% of the run, clipping at 0.5 and 30% of the tokens masked in training (15% in evaluation).
SHORT_BUDGET_RECIPE = {"learning_rate": 1e-3, "schedule": "triangle", "warmup_frac": 0.75, "dropout": False,
                       "max_grad_norm": 0.5, "adam_betas": (0.9, 0.98), "mask_prob": 0.3}

PRESETS: dict[str, Preset] = {
    "ci": Preset(
        name="ci",
        description="tiny, for tests: every notebook in a minute or two on 2 CPU cores",
        model=ModelConfig(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, max_position_embeddings=128, layer_norm_position="pre"),
        pretrain=PretrainConfig(seq_len=64, batch_size=8, max_steps=30, **SHORT_BUDGET_RECIPE,
                                eval_every=15, eval_batches=2, checkpoint_every=15),
        finetune=FinetuneConfig(max_length=64, batch_size=16, epochs=1, learning_rate=1e-3,
                                pretrained_learning_rate=1e-3,
                                train_examples=160, val_examples=64, test_examples=128,
                                minilm_max_length=32),
        data=DataConfig(corpus="gutenberg-small+imdb-reviews", corpus_max_chars=300_000,
                        tokenizer_train_chars=300_000, eval_max_chars=20_000),
        efficient=EfficientConfig(lora_r=4, lora_ranks=(2, 8), adapter_size=8, prefix_length=4,
                                  train_examples=160, val_examples=64, test_examples=128, seeds=2),
        tasks=TasksConfig(ner_train_examples=96, relation_train_examples=96, qa_train_examples=48,
                          eval_examples=48, max_length=48, qa_max_length=128, qa_stride=32, epochs=1,
                          summary_train_examples=64, summary_max_length=128, dialogue_train_examples=96,
                          dialogue_max_length=64, translation_train_pairs=256, translation_max_length=24,
                          translation_epochs=1, decoder_layers=1, beam_size=2),
    ),
    "laptop": Preset(
        name="laptop",
        description="a real CPU course: the whole course in about an hour on 2 cores",
        model=ModelConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                          intermediate_size=1024, max_position_embeddings=256, layer_norm_position="pre"),
        # 2,400 steps (9.8 M tokens: about 13 minutes on an idle 2-core CPU that computes bf16, about 25 on
        # one that does not; a step budget, so that every machine trains the same model) and fine-tuning
        # on 2,000 reviews keep the whole course near an hour on 2 cores.
        pretrain=PretrainConfig(seq_len=128, batch_size=32, max_steps=2400, **SHORT_BUDGET_RECIPE,
                                eval_every=200, eval_batches=10, checkpoint_every=400),
        # mean pooling at 3e-4 for both bertbook rows: what the first seed's validation chose for each, among
        # [CLS] / mean and 1e-4 / 3e-4 / 1e-3 (scripts/laptop_results.py finetune, results/laptop_results.json)
        finetune=FinetuneConfig(max_length=128, batch_size=16, epochs=2, learning_rate=3e-4,
                                pretrained_learning_rate=3e-4, pooling="mean",
                                train_examples=2000, val_examples=500, test_examples=2000,
                                minilm_max_length=128),
        data=DataConfig(corpus="gutenberg-small+imdb-reviews"),
        # sized so that the comparison (scripts/laptop_peft.py) fits in about an hour on 2 cores
        efficient=EfficientConfig(lora_ranks=(4, 16), train_examples=500, val_examples=250, test_examples=500),
        # sized so that notebook 08 (two encoders on four tasks) runs in about 15 minutes on 2 cores, and
        # notebook 10 (three encoders on three tasks) in about 20
        tasks=TasksConfig(ner_train_examples=2000, relation_train_examples=2000, qa_train_examples=1200,
                          eval_examples=500, max_length=96, qa_max_length=192, qa_stride=64, epochs=2,
                          minilm_learning_rate=3e-4, summary_train_examples=300, summary_max_length=192,
                          dialogue_train_examples=1000,
                          translation_train_pairs=2000, translation_epochs=2, translation_max_length=32,
                          beam_size=2),
    ),
    "gpu": Preset(
        name="gpu",
        description="BERT-base on the 250 M-character corpus with bf16: about one GPU-hour",
        model=ModelConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=512, layer_norm_position="pre"),
        pretrain=PretrainConfig(seq_len=128, batch_size=256, max_steps=20000,
                                **{**SHORT_BUDGET_RECIPE, "learning_rate": 7e-4}, precision="auto", compile=True,
                                eval_every=1000, eval_batches=20, checkpoint_every=2000),
        finetune=FinetuneConfig(max_length=512, truncation="head+tail", batch_size=32, epochs=3,
                                learning_rate=3e-5, pretrained_learning_rate=3e-5, train_examples=0, val_examples=2500,
                                test_examples=0, minilm_max_length=256),
        data=DataConfig(corpus="gutenberg-large+imdb-reviews", tokenizer_train_chars=50_000_000,
                        eval_max_chars=1_000_000),
        efficient=EfficientConfig(lora_r=16, lora_ranks=(4, 16, 64), adapter_size=64, prefix_length=32,
                                  lora_learning_rate=5e-4, adapter_learning_rate=5e-4, prefix_learning_rate=5e-3,
                                  train_examples=10000, test_examples=0, seeds=3),
        tasks=TasksConfig(ner_train_examples=0, relation_train_examples=0, qa_train_examples=0, eval_examples=0,
                          max_length=128, qa_max_length=384, qa_stride=128, batch_size=32, epochs=3,
                          learning_rate=1e-4, minilm_learning_rate=5e-5),
    ),
}


def preset_name() -> str:
    """The preset chosen by ``BERTBOOK_PRESET`` (default ``laptop``)."""
    return os.environ.get("BERTBOOK_PRESET", "laptop").strip() or "laptop"


def _env_overrides() -> dict[str, str]:
    raw = os.environ.get("BERTBOOK_SET", "").strip()
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"BERTBOOK_SET item {item!r} needs the form group.field=value, "
                              f"e.g. BERTBOOK_SET='pretrain.max_steps=200'.")
        out[key.strip()] = value.strip()
    return out


def get_preset(name: str | None = None, **overrides: Any) -> Preset:
    """Return a preset by name (default: ``BERTBOOK_PRESET``), with ``BERTBOOK_SET`` and keyword
    overrides applied (keywords win). Taught in notebook 00."""
    name = name or preset_name()
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)} "
                          f"(set BERTBOOK_PRESET).")
    preset = PRESETS[name]
    changes: dict[str, Any] = {**_env_overrides(), **overrides}
    return preset.override(**changes) if changes else preset
