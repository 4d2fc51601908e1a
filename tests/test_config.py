"""Presets: validation messages, overrides, and the numbers that the notebooks rely on."""

import dataclasses

import pytest

from bertbook.config import PRESETS, ConfigError, ModelConfig, get_preset


def test_presets_are_valid_and_differ_only_in_numbers():
    assert set(PRESETS) == {"ci", "laptop", "gpu"}
    for name, preset in PRESETS.items():
        assert preset.name == name
        # every group is the same dataclass type in every preset: presets are data, not code paths
        for group in ("model", "pretrain", "finetune", "data"):
            assert type(getattr(preset, group)) is type(getattr(PRESETS["ci"], group))
    assert PRESETS["ci"].model.num_parameters() < PRESETS["laptop"].model.num_parameters() \
        < PRESETS["gpu"].model.num_parameters()


def test_bert_base_parameter_count_matches_transformers():
    from transformers import BertConfig, BertModel

    cfg = ModelConfig(vocab_size=1000, hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=200, max_position_embeddings=64)
    hf = BertModel(BertConfig(**cfg.to_dict()))
    assert cfg.num_parameters() == sum(p.numel() for p in hf.parameters())
    assert ModelConfig().num_parameters() == 109_482_240  # BERT-base, "110M"


def test_heads_must_divide_width_with_a_helpful_message():
    with pytest.raises(ConfigError, match="not divisible by.*Choose a head count"):
        ModelConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ConfigError, match="not divisible"):
        get_preset("ci", **{"model.num_attention_heads": 3})


@pytest.mark.parametrize("key,value,match", [
    ("pretrain.mask_prob", 1.5, "mask_prob must be between 0 and 1"),
    ("pretrain.schedule", "exponential", "schedule must be"),
    ("finetune.truncation", "middle", "truncation must be"),
    ("model.hidden_dropout_prob", 1.0, r"must be in \[0, 1\)"),
    ("pretrain.seq_len", 4096, "longer than model.max_position_embeddings"),
    ("data.corpus", "wikipedia", "data.corpus must be"),
    ("model.vocab_size", 0, "positive integer"),
])
def test_invalid_values_say_what_to_change(key, value, match):
    with pytest.raises(ConfigError, match=match):
        get_preset("ci", **{key: value})


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ConfigError, match="Choose one of: ci, laptop, gpu"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="Fields of model"):
        get_preset("ci", **{"model.hidden": 12})
    with pytest.raises(ConfigError, match="group.field"):
        get_preset("ci", hidden_size=12)


def test_environment_chooses_preset_and_overrides(monkeypatch):
    monkeypatch.setenv("BERTBOOK_PRESET", "laptop")
    monkeypatch.setenv("BERTBOOK_SET", "model.num_hidden_layers=3, pretrain.whole_word_mask=true,"
                                        "pretrain.learning_rate=2e-4")
    p = get_preset()
    assert p.name == "laptop"
    assert p.model.num_hidden_layers == 3
    assert p.pretrain.whole_word_mask is True
    assert p.pretrain.learning_rate == pytest.approx(2e-4)
    # keyword overrides win over the environment
    assert get_preset(**{"model.num_hidden_layers": 5}).model.num_hidden_layers == 5
    monkeypatch.setenv("BERTBOOK_SET", "pretrain.max_steps=many")
    with pytest.raises(ConfigError, match="expected a value like"):
        get_preset()
    monkeypatch.setenv("BERTBOOK_SET", "pretrain.max_steps")
    with pytest.raises(ConfigError, match="group.field=value"):
        get_preset()


def test_presets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["ci"].model.hidden_size = 1  # type: ignore[misc]


def test_default_preset_is_laptop(monkeypatch):
    monkeypatch.delenv("BERTBOOK_PRESET", raising=False)
    monkeypatch.delenv("BERTBOOK_SET", raising=False)
    assert get_preset().name == "laptop"


def test_size_panel_logic_reports_counts_and_errors():
    from bertbook.course import size_text
    from bertbook.widgets import size_panel

    assert "109,482,240 parameters" in size_text(12, 768, 12)
    assert "FLOPs" in size_text(12, 768, 12, million_tokens=1)
    assert size_text(12, 768, 5).startswith("not a valid model") and "not divisible" in size_text(12, 768, 5)
    panel = size_panel()
    slider = panel.children[2]  # heads
    slider.value = 7
    assert "not a valid model" in panel.children[-1].value
    slider.value = 12
    assert "parameters" in panel.children[-1].value
