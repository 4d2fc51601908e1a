"""bertbook: the package behind the course notebooks.

Modules are concepts, each readable top to bottom: ``config`` (presets), ``paths``, ``registry`` (which
datasets exist, their checksums and downloads), ``data`` (the readers of each dataset family),
``tokenizer``, ``attention``, ``model``, ``hf`` (interop with transformers), ``masking``, ``corpus``
(pretraining data), ``optim`` (AdamW and the learning-rate schedules), ``evaluate`` (held-out MLM scores,
the unigram baseline, fill-mask), ``runstate`` (a pretraining run's resumable checkpoint), ``train`` (the
pretraining loop), ``finetune``, ``attention_maps`` (attention out of a model, what heads do), ``viz``
(plots), ``views`` (HTML: bertviz views, highlighted text), ``widgets``, ``exercises``, ``course`` (notebook
start-up and the headless course runner) and ``cli``.
Heavy modules (torch) are imported only when used, so ``python -m bertbook data`` starts fast.
"""

from .config import ConfigError, ModelConfig, Preset, get_preset

__version__ = "0.1.0"
__all__ = ["ConfigError", "ModelConfig", "Preset", "get_preset", "__version__"]
