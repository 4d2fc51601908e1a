"""The short-budget pretraining recipe: pre-LayerNorm (checked against transformers' RobertaPreLayerNorm),
the triangle schedule, the dropout switch, and the review corpus (IMDB's training reviews, labels dropped)."""

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from bertbook import data, hf, optim, train
from bertbook import checkpoint as C
from bertbook import model as M
from bertbook.config import ConfigError, ModelConfig, get_preset
from bertbook.corpus import eval_text

CFG = ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=32, layer_norm_position="pre")


# ------------------------------------------------------------------------------------------- pre-LayerNorm

@pytest.mark.parametrize("kind", ["BertModel", "BertForMaskedLM"])
def test_pre_layer_norm_equals_transformers_roberta_prelayernorm(kind):
    torch.manual_seed(0)
    ours = getattr(M, kind)(CFG)
    hf._perturb_norms(ours, 0)  # LayerNorms away from identity: a misplaced one would show
    theirs = hf.to_hf(ours)
    assert type(theirs).__name__ == hf._PRE_LN_TYPES[kind]
    for padding in (False, True):
        row = hf.compare(ours, theirs, padding)
        assert hf.worst(row) <= hf.TOLERANCE, row


def test_pre_layer_norm_differs_from_post_and_has_a_final_norm():
    torch.manual_seed(0)
    pre = M.BertModel(CFG)
    post = M.BertModel(dataclasses.replace(CFG, layer_norm_position="post"))
    assert set(pre.state_dict()) - set(post.state_dict()) == {"final_norm.weight", "final_norm.bias"}
    post.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith("final_norm")})
    hf._perturb_norms(pre, 1)
    hf._perturb_norms(post, 1)
    ids = torch.randint(5, 300, (2, 12))
    assert not torch.allclose(pre(ids).last_hidden_state, post(ids).last_hidden_state, atol=1e-3)
    assert CFG.num_parameters() == sum(p.numel() for p in pre.parameters())


def test_pre_layer_norm_names_map_one_to_one_and_other_heads_are_refused():
    names = [hf.hf_prelayernorm_name(n) for n in M.BertForMaskedLM(CFG).state_dict()]
    assert len(set(names)) == len(names)
    assert hf.hf_prelayernorm_name("bert.layers.1.ffn_norm.weight") == \
        "roberta_prelayernorm.encoder.layer.1.intermediate.LayerNorm.weight"
    assert hf.hf_prelayernorm_name("final_norm.bias") == "LayerNorm.bias"
    with pytest.raises(TypeError, match="model.bert"):
        hf.to_hf(M.BertForSequenceClassification(CFG, num_labels=2))


def test_checkpoint_of_other_layer_norm_placement_is_refused(tmp_path):
    M.BertForMaskedLM(CFG).save_pretrained(tmp_path / "pre")
    post = M.BertForSequenceClassification(dataclasses.replace(CFG, layer_norm_position="post"), num_labels=2)
    with pytest.raises(C.CheckpointError, match="layer_norm_position"):
        post.load_encoder(tmp_path / "pre")
    assert C.checkpoint_config(tmp_path / "pre").layer_norm_position == "pre"


def test_layer_norm_position_is_validated():
    with pytest.raises(ConfigError, match="'post'.*'pre'"):
        ModelConfig(layer_norm_position="middle")


# ---------------------------------------------------------------------------------------- the triangle

def test_triangle_schedule_starts_at_a_quarter_peaks_then_falls_to_zero():
    f = lambda p: optim.lr_factor(p, 0.75, "triangle")  # noqa: E731
    assert f(0.0) == pytest.approx(0.25)
    assert f(0.375) == pytest.approx(0.625)
    assert f(0.75) == pytest.approx(1.0)
    assert f(0.875) == pytest.approx(0.5)
    assert f(1.0) == pytest.approx(0.0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = optim.make_scheduler(opt, warmup_steps=75, total_steps=100, kind="triangle")
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 75
    with pytest.raises(ConfigError, match="warmup_frac"):
        get_preset("ci", **{"pretrain.schedule": "triangle", "pretrain.warmup_frac": 0.0})


def test_dropout_switch_turns_every_dropout_off_for_pretraining_only():
    P = get_preset("ci", **{"pretrain.dropout": False})
    model = train.build_model(P, 2000)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    rates += [m.dropout_p for m in M.attention_modules(model) if hasattr(m, "dropout_p")]
    assert rates and all(r == 0.0 for r in rates)
    on = train.build_model(get_preset("ci", **{"pretrain.dropout": True}), 2000)
    assert any(m.p > 0 for m in on.modules() if isinstance(m, torch.nn.Dropout))
    assert P.model.hidden_dropout_prob == 0.1  # fine-tuning keeps the model's dropout


# -------------------------------------------------------------------------------------- the review corpus

def test_review_corpus_never_holds_validation_or_test_reviews():
    imdb = data.load_classification("imdb", seed=0, clean_html=True)
    train_texts, val_texts = data.review_texts("train"), data.review_texts("validation")
    assert len(train_texts) == 22_500 and len(val_texts) == 2_500
    # IMDB itself repeats some reviews word for word (92 texts occur twice in its training file), so a
    # held-out review can have a twin in train; nothing else may be shared
    counts = Counter(train_texts + val_texts)
    shared = set(val_texts) & set(train_texts)
    assert len(shared) < 20 and all(counts[t] > 1 for t in shared)
    assert sorted(train_texts + val_texts) == sorted(ex["text"] for s in ("train", "validation") for ex in imdb[s])
    assert all("<br" not in t for t in train_texts[:500])
    with pytest.raises(ValueError, match="test reviews"):
        data.review_texts("test")


def test_mixed_corpus_interleaves_its_parts():
    chunks = data.iter_corpus_text("gutenberg-small+imdb-reviews", "validation", chunk_chars=100_000)
    first = [next(chunks) for _ in range(4)]
    books = data.load_corpus("gutenberg-small", "validation", max_chars=50)
    assert first[0].startswith(books[:50]) and first[1].startswith(data.review_texts("validation")[0][:30])
    assert data.corpus_shards("gutenberg-large+imdb-reviews", 3) == 3
    assert data.corpus_shards("gutenberg-small+imdb-reviews", 3) is None
    with pytest.raises(ConfigError, match="data.corpus"):
        get_preset("ci", **{"data.corpus": "gutenberg-small+wikipedia"})


def test_held_out_texts():
    P = get_preset("ci", **{"data.corpus": "imdb-reviews"})
    books = eval_text("gutenberg", 2000, P)
    assert books == data.load_corpus("gutenberg-small", "validation", max_chars=2000)
    reviews = eval_text("imdb-reviews", 2000, P)
    assert reviews.startswith(data.review_texts("validation")[0][:100])


def test_tokenizer_trained_on_other_settings_is_refused(tmp_path, monkeypatch):
    from bertbook.tokenizer import get_tokenizer

    monkeypatch.setenv("BERTBOOK_ARTIFACTS", str(tmp_path))
    small = {"data.corpus_max_chars": 50_000, "data.tokenizer_train_chars": 50_000}
    tok = get_tokenizer(get_preset("ci", **small))
    assert len(get_tokenizer(get_preset("ci", **small))) == len(tok)  # same settings: loaded
    with pytest.raises(ValueError, match="corpus 'gutenberg-small\+imdb-reviews' there vs 'imdb-reviews' now"):
        get_tokenizer(get_preset("ci", **small, **{"data.corpus": "imdb-reviews"}))
    (tmp_path / "ci" / "tokenizer" / "training_settings.json").write_text("{not json")
    with pytest.raises(C.CheckpointError, match="training_settings.json"):
        get_tokenizer(get_preset("ci", **small))


# ------------------------------------------------------------------------------------------- the sweep

def test_every_sweep_row_is_a_valid_laptop_preset_that_changes_few_settings(script):
    sweep = script("sweep_pretrain")
    for name, (what, settings) in sweep.ROWS.items():
        settings = dict(settings)
        factor = settings.pop("steps_factor", 1)
        assert isinstance(factor, int) and factor >= 1, name
        P = get_preset("laptop", **settings)  # a misspelt or impossible setting raises here
        for key, value in settings.items():
            group, field = key.split(".")
            got = getattr(getattr(P, group), field)
            assert (list(got) if isinstance(got, tuple) else got) == (list(value) if isinstance(value, tuple)
                                                                      else value), (name, key)
        base = sweep.BERT if name.startswith("bert") else sweep.RECIPE
        changed = {k for k in settings if base.get(k) != settings[k]}
        assert len(changed) <= 4, (name, changed)  # one idea per row (a model size is up to 4 fields)
        assert what, name


def test_sweep_table_prints_every_row(script):
    sweep = script("sweep_pretrain")
    ev = {"accuracy": 0.1, "unigram_accuracy": 0.03}
    row = {"row": "recipe", "what": "w", "steps": 250, "tokens": 1_024_000, "train_seconds": 150.0,
           "eval": {"imdb-reviews": ev, "gutenberg": ev, "wikitext-2": ev}}
    lines = sweep.table([row, {**row, "row": "bert"}]).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| recipe |") and "10.0%" in lines[2] and "1.02 M" in lines[2]


def test_laptop_results_finetune_stage_runs_the_results_command_and_adds_minilm(script, monkeypatch, tmp_path):
    """scripts/laptop_results.py finetune: the 3-seed command, then MiniLM's rows from the stored earlier run."""
    monkeypatch.setenv("BERTBOOK_PRESET", "ci")  # the script sets both; monkeypatch restores them afterwards
    monkeypatch.setenv("BERTBOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    lr = script("laptop_results")
    from bertbook import cli

    seen = {}

    def fake_results(argv):
        seen["argv"] = argv
        Path(argv[argv.index("--out") + 1]).write_text(json.dumps({"results": [{"task": "imdb", "model": "random"}]}))
        return 0

    monkeypatch.setattr(cli, "cli_results", fake_results)
    (tmp_path / "results").mkdir()
    shutil.copy(lr.ROOT / "results" / lr.MINILM_RUN, tmp_path / "results")
    monkeypatch.setattr(lr, "ROOT", tmp_path)
    assert lr.main(["finetune"]) == 0
    assert seen["argv"][:2] == ["--preset", "laptop"] and seen["argv"][seen["argv"].index("--seeds") + 1] == "3"
    table = json.loads((tmp_path / "results" / "laptop_results.json").read_text())
    assert [(r["task"], r["model"]) for r in table["results"]] == [("imdb", "random"), ("imdb", "minilm"),
                                                                   ("sst2", "minilm")]
    assert all(r["from"] == lr.MINILM_RUN for r in table["results"][1:] + table["learning_curve"])
