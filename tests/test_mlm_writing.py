"""Writing with a masked LM (notebook 10): left to right, Mask-Predict, and what each costs."""

import dataclasses

import pytest
import torch

from bertbook import mlm_writing as W
from bertbook.attention import causal_mask
from bertbook.config import get_preset
from bertbook.model import BertForMaskedLM, ModelOutput
from bertbook.tokenizer import train_tokenizer

TEXT = "the cat sat on the mat . the dog ran to the park . a bird sang in the tree . " * 40


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXT, vocab_size=120, min_frequency=1)


class Scripted(torch.nn.Module):
    """A stand-in masked LM: at every position it prefers ``favourite[position]`` and is the more sure the
    further right the position is, unless the input there is already a real token."""

    def __init__(self, favourite: dict[int, int], vocab_size: int) -> None:
        super().__init__()
        self.favourite, self.vocab_size = favourite, vocab_size
        self.seen: list[torch.Tensor] = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, **_) -> ModelOutput:
        self.seen.append(input_ids.clone())
        logits = torch.zeros(1, input_ids.shape[1], self.vocab_size)
        for position, token in self.favourite.items():
            logits[0, position, token] = 1.0 + position  # later positions more confident
        return ModelOutput(logits=logits)


def test_causal_mask_is_lower_triangular_and_refuses_empty():
    mask = causal_mask(4)
    assert mask.dtype == torch.bool and mask.tolist()[0] == [True, False, False, False] and mask.all(-1)[-1]
    assert int(mask.sum()) == 10
    with pytest.raises(ValueError, match="at least 1"):
        causal_mask(0)


def test_left_to_right_fills_one_blank_per_pass_in_order(tokenizer):
    prompt_ids = tokenizer("the cat", add_special_tokens=False)["input_ids"]
    start = 1 + len(prompt_ids)
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("sat", "on", "mat")]
    model = Scripted({start + i: w for i, w in enumerate(words)}, len(tokenizer))
    out = W.write_left_to_right(model, tokenizer, "the cat", new_tokens=3)
    assert out.text == "the cat sat on mat"
    assert out.passes == 3 and out.positions == 3 * (len(prompt_ids) + 3 + 2)
    assert [s.count("[MASK]") for s in out.steps] == [3, 2, 1, 0]
    assert out.steps[1].startswith("the cat sat [MASK]")  # the leftmost blank first
    # every pass sees the whole sequence, with the later blanks still masked
    assert [int((ids == tokenizer.mask_token_id).sum()) for ids in model.seen] == [3, 2, 1]


def test_mask_predict_guesses_all_then_remasks_the_least_confident(tokenizer):
    prompt_ids = tokenizer("the dog", add_special_tokens=False)["input_ids"]
    start = 1 + len(prompt_ids)
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("ran", "to", "the", "park")]
    model = Scripted({start + i: w for i, w in enumerate(words)}, len(tokenizer))
    out = W.mask_predict(model, tokenizer, "the dog", new_tokens=4, iterations=3)
    assert out.passes == 3 and out.text == "the dog ran to the park"
    # pass 1 sees 4 blanks; pass 2 re-masks 4 * 2 // 3 = 2, pass 3 re-masks 4 * 1 // 3 = 1
    assert [int((ids == tokenizer.mask_token_id).sum()) for ids in model.seen] == [4, 2, 1]
    # the least confident blanks are the leftmost ones here (confidence grows with the position)
    last = model.seen[2][0]
    assert last[start] == tokenizer.mask_token_id and last[start + 1] != tokenizer.mask_token_id


def test_writing_runs_on_the_course_model_and_never_writes_special_tokens(tokenizer):
    torch.manual_seed(0)
    model = BertForMaskedLM(dataclasses.replace(get_preset("ci").model, vocab_size=len(tokenizer)))
    for write in (W.write_left_to_right, W.mask_predict):
        out = write(model, tokenizer, "a bird", new_tokens=5)
        assert "[MASK]" not in out.text and "[CLS]" not in out.text and "[SEP]" not in out.text
        assert out.text.startswith("a bird") and len(out.steps) == out.passes + 1
    assert model.training  # eval mode is restored


def test_bad_requests_say_what_to_pass(tokenizer):
    model = Scripted({}, len(tokenizer))
    with pytest.raises(ValueError, match="prompt"):
        W.write_left_to_right(model, tokenizer, "   ")
    with pytest.raises(ValueError, match="new_tokens"):
        W.mask_predict(model, tokenizer, "the cat", new_tokens=0)
    with pytest.raises(ValueError, match="iterations"):
        W.mask_predict(model, tokenizer, "the cat", iterations=0)


def test_writing_cost_counts_passes_and_positions():
    left, refine, cache = W.writing_cost(6, 10, iterations=4)
    assert (left["passes"], left["positions"]) == (10, 10 * 18)
    assert (refine["passes"], refine["positions"]) == (4, 4 * 18)
    assert (cache["passes"], cache["positions"]) == (10, 15)
