"""bertbook: the package behind the course notebooks.

Modules are concepts, each readable top to bottom: ``config`` (presets), ``paths``, ``registry`` (which
datasets exist, their checksums and downloads), ``data`` (the readers of each dataset family),
``data_generation`` (translation pairs, summaries, dialogues), ``tokenizer``, ``attention``, ``model``, ``hf``
(interop with transformers), ``masking``, ``corpus`` (pretraining data), ``optim`` (AdamW and the
learning-rate schedules), ``evaluate`` (held-out MLM scores, the unigram baseline, fill-mask), ``runstate`` (a
pretraining run's resumable checkpoint), ``train`` (the pretraining loop), ``electra`` (learning from every
token: generator and discriminator), ``reference`` (the shipped reference model), ``finetune`` (the
classification loop), ``classifier`` (build, save, load, ask), ``results`` (whole runs and the tables),
``minilm`` (a real pretrained encoder, offline), ``baselines``, ``tasks``, ``ner``, ``relations``, ``qa`` (one
encoder, many heads), ``efficient`` and ``peft_check`` (a fraction of the weights), ``tracking``, ``bench``,
``attention_maps`` (attention out of a model, what heads do), ``viz`` (plots), ``views`` (HTML: bertviz views,
highlighted text), ``widgets``, ``exercises``, ``course`` (notebook start-up and the headless course runner),
``utils`` (small shared helpers) and ``cli`` with ``cli_finetune`` (the command line).
Heavy modules (torch) are imported only when used, so ``python -m bertbook data`` starts fast.
"""

from .config import ConfigError, ModelConfig, Preset, get_preset

__version__ = "0.1.0"
__all__ = ["ConfigError", "ModelConfig", "Preset", "get_preset", "__version__"]
