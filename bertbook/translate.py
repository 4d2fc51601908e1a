"""Translation: BERT reads the English, a small decoder writes the Chinese (notebook 10).

BERT does not write. Every token sees every other one, left and right, so it has no order in which to
produce words: it fills each [MASK] of a finished sentence on its own, and a sentence that does not exist yet
has nothing to be finished around. What it does well is read. A *warm-started encoder-decoder* (Rothe,
Narayan & Severyn 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation Tasks") gives that
reading to a writer: the encoder turns the English sentence into token vectors, and a decoder writes the
translation left to right, looking back at its own characters (causal self-attention) and across at the
English vectors (cross-attention, Vaswani et al. 2017, section 3.2.3). Here the encoder is the course's
(random, our pretrained model, or MiniLM) and the decoder is small and starts from nothing (Rothe et al.'s
"BERT2RND"), trained on Tatoeba's English -> Chinese pairs. Read top to bottom:

1. characters: Chinese is written one character at a time, from a vocabulary of the characters seen at
   least ``MIN_COUNT`` times in the training pairs, plus [PAD] = 0, [BOS], [EOS] and [UNK];
2. data and teacher forcing: the decoder reads ``[BOS] + target`` and learns to write ``target + [EOS]``;
3. the decoder (`decoder.Decoder`), the head that `tasks.TaskModel` puts on the encoder;
4. decoding: greedy, beam search with length normalisation, and the cross-attention of a translation;
5. scores: BLEU and chrF with sacrebleu, against every translation Tatoeba has for a sentence;
6. the baseline (the Chinese of the most similar training sentence) and translating typed text;
7. the proof that the decoder equals transformers' ``BertLMHeadModel`` (and the whole model
   ``EncoderDecoderModel``) to 1e-5, converted both ways, is in `bertbook.decoder`.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, Preset
from .decoder import PAD_ID, Decoder
from .utils import device_of, eval_mode

__all__ = ["SPECIALS", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "MIN_COUNT", "ALPHA", "character_vocabulary",
           "character_index", "encode_characters", "decode_characters", "teacher_forcing", "epochs", "task_data",
           "prepare", "featurize", "make_head",
           "Hypothesis", "length_penalty", "greedy", "beam_search", "score_translation", "translate_with_attention",
           "translation_scores", "evaluate", "retrieve", "retrieval_row", "baseline_rows", "predict"]

SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")  # the first four entries of every character vocabulary
BOS_ID, EOS_ID, UNK_ID = 1, 2, 3  # and PAD_ID = 0, the decoder's padding (decoder.PAD_ID)
MIN_COUNT = 2  # a character enters the vocabulary when the training pairs hold it at least this often
DROPOUT = 0.1  # the decoder's dropout on sub-layer outputs and attention weights, as in BERT and the Transformer
ALPHA = 0.6  # the strength of beam search's length normalisation (see `length_penalty`)
NEVER_WRITTEN = (PAD_ID, BOS_ID, UNK_ID)  # decoding never writes these


# ---------------------------------------------------------------------------------------------------------
# 1. Characters
# ---------------------------------------------------------------------------------------------------------

def character_vocabulary(texts: Sequence[str], min_count: int = MIN_COUNT) -> list[str]:
    """The decoder's vocabulary: the four specials, then every character that occurs at least ``min_count``
    times in ``texts``, most frequent first (ties in code-point order). A character seen once is too rare to
    learn to write; in the targets it becomes [UNK]. On all 21,110 training pairs: 2,811 characters of 3,447."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}.")
    counts = collections.Counter(ch for text in texts for ch in text)
    kept = sorted((ch for ch, n in counts.items() if n >= min_count), key=lambda ch: (-counts[ch], ch))
    return [*SPECIALS, *kept]


def character_index(characters: Sequence[str]) -> dict[str, int]:
    """Character -> id, for `encode_characters`. Refuses a list that does not start with the specials."""
    if tuple(characters[:len(SPECIALS)]) != SPECIALS:
        raise ValueError(f"a character vocabulary starts with {', '.join(SPECIALS)}; this one starts with "
                         f"{list(characters[:4])}. Build it with character_vocabulary(texts).")
    return {ch: i for i, ch in enumerate(characters)}


def encode_characters(text: str, index: dict[str, int]) -> list[int]:
    """One id per character of ``text``; a character outside the vocabulary is [UNK]."""
    return [index.get(ch, UNK_ID) for ch in text]


def decode_characters(ids: Sequence[int], characters: Sequence[str]) -> str:
    """The text of ``ids``, up to the first [EOS]; [PAD] and [BOS] are skipped, [UNK] is written "[UNK]"."""
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(characters[i])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# 2. Data, and teacher forcing
# ---------------------------------------------------------------------------------------------------------

def teacher_forcing(target: Sequence[int], max_length: int) -> tuple[list[int], list[int]]:
    """``(decoder_input_ids, labels)`` for one target: the sequence ``[BOS] + target + [EOS]`` read without
    its last token and written without its first, so at every position the decoder sees the characters so
    far and learns the next one: inputs ``[BOS] a b c``, labels ``a b c [EOS]``. Both hold at most
    ``max_length`` tokens; a target cut to fit ends without [EOS], so the model never learns to stop there."""
    sequence = [BOS_ID, *target, EOS_ID][:max_length + 1]  # (T + 1,)
    return sequence[:-1], sequence[1:]  # (T,), (T,): labels are the inputs shifted left by one


def epochs(P: Preset) -> int:
    """Passes over the training pairs: ``tasks.translation_epochs`` (a decoder starts from nothing)."""
    return P.tasks.translation_epochs


def _items(pairs: Sequence[dict], split: str) -> list[dict]:
    """Pairs with ``references`` (every Chinese translation of the pair's English sentence in the split) and
    their ``attributions``. Validation and test keep one item per English sentence, the first."""
    references: dict[str, list[str]] = collections.defaultdict(list)
    attributions: dict[str, list[str]] = collections.defaultdict(list)
    for p in pairs:
        references[p["en"]].append(p["zh"])
        attributions[p["en"]].append(p["attribution"])
    items, seen = [], set()
    for p in pairs:
        if split != "train" and p["en"] in seen:
            continue
        seen.add(p["en"])
        items.append({**p, "references": references[p["en"]], "attributions": attributions[p["en"]],
                      "split": split})
    return items


def task_data(P: Preset, task: str = "tatoeba-zh") -> dict[str, list[dict]]:
    """The preset's slice of Tatoeba English-Mandarin (`data_generation.load_tatoeba`, split by sentence with
    ``tasks.seed``): ``tasks.translation_train_pairs`` training pairs and ``tasks.eval_examples`` validation and
    test sentences, seeded samples. Items keep the pair (``en``, ``zh``, ``attribution``, ids) and add
    ``references`` and ``attributions``: the split never separates the translations of one English sentence
    (977 sentences have two or more), so each validation and test sentence is one item scored against all of
    them, and a training sentence with several translations is trained on each."""
    from .data_generation import load_tatoeba
    from .tasks import take

    cfg = P.tasks
    splits = load_tatoeba(cfg.seed)
    sizes = {"train": cfg.translation_train_pairs, "validation": cfg.eval_examples, "test": cfg.eval_examples}
    return {split: take(_items(splits[split], split), n, cfg.seed) for split, n in sizes.items()}


def prepare(encoder: nn.Module, tokenizer, P: Preset, task: str = "tatoeba-zh", layer_norm_position: str = "pre",
            min_count: int = MIN_COUNT) -> dict:
    """What the decoder and the features need, saved in ``finetune.json``: the character vocabulary of the
    training slice (a list, rebuilt at load), the length, the beam size and the decoder's shape: as wide as
    the encoder, with its head count and feed-forward width, ``tasks.decoder_layers`` layers, and LayerNorm
    ``layer_norm_position`` ("pre" or "post", see `Decoder`). The options come from `tasks.run_task`:
    ``run_task(P, "tatoeba-zh", "minilm", layer_norm_position="post")``."""
    if layer_norm_position not in ("pre", "post"):
        raise ValueError(f"layer_norm_position must be 'pre' (trains from scratch reliably) or 'post' (BERT's, "
                         f"converts to transformers.BertLMHeadModel), got {layer_norm_position!r}.")
    cfg = P.tasks
    characters = character_vocabulary([item["zh"] for item in task_data(P, task)["train"]], min_count)
    e = encoder.config  # bertbook's ModelConfig or transformers' BertConfig: the same field names
    decoder = ModelConfig(vocab_size=len(characters), hidden_size=e.hidden_size, num_hidden_layers=cfg.decoder_layers,
                          num_attention_heads=e.num_attention_heads, intermediate_size=e.intermediate_size,
                          hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT,
                          max_position_embeddings=cfg.translation_max_length, type_vocab_size=1,
                          pad_token_id=PAD_ID, layer_norm_position=layer_norm_position)
    return {"characters": characters, "min_count": min_count, "max_length": cfg.translation_max_length,
            "beam_size": cfg.beam_size, "decoder_config": decoder.to_dict()}


def featurize(tokenizer, items: Sequence[dict], info: dict) -> list[dict]:
    """One feature per item: the English ``input_ids`` (``[CLS] ... [SEP]``, at most ``max_length`` tokens)
    and, from the item's Chinese, ``decoder_input_ids`` and ``labels`` (`teacher_forcing`). `tasks.pad_features`
    pads each to its own length."""
    index = character_index(info["characters"])
    feats = []
    for item, ids in zip(items, _source_ids(tokenizer, [item["en"] for item in items], info), strict=True):
        decoder_input_ids, labels = teacher_forcing(encode_characters(item["zh"], index), info["max_length"])
        feats.append({"input_ids": ids, "decoder_input_ids": decoder_input_ids, "labels": labels})
    return feats


def make_head(hidden_size: int, info: dict) -> nn.Module:
    """The decoder of the shape `prepare` saved in ``info``."""
    config = ModelConfig.from_dict(info["decoder_config"])
    if config.hidden_size != hidden_size:
        raise ValueError(f"the saved decoder is {config.hidden_size} wide but the encoder is {hidden_size}: "
                         f"fine-tune again with this encoder.")
    return Decoder(config)


# ---------------------------------------------------------------------------------------------------------
# 4. Decoding: greedy, beam search, and where the decoder looked
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Hypothesis:
    """A translation as the decoder scored it."""

    ids: list[int]  # the characters written, without [BOS] and [EOS]
    log_prob: float  # log p(characters, and [EOS] when finished | English)
    finished: bool  # ended with [EOS]; False when it stopped at the length limit

    @property
    def length(self) -> int:
        """The tokens whose log-probabilities ``log_prob`` sums: the characters, and [EOS] if written."""
        return len(self.ids) + int(self.finished)

    def score(self, alpha: float = ALPHA) -> float:
        """``log_prob / length_penalty(length, alpha)``: what beam search maximises."""
        return self.log_prob / length_penalty(self.length, alpha)


def length_penalty(length: int, alpha: float = ALPHA) -> float:
    """GNMT's length normalisation, lp(Y) = ((5 + |Y|) / (5 + 1))^alpha (Wu et al. 2016, section 7).

    A sum of log-probabilities only falls as a translation grows, so an unnormalised beam search prefers
    short outputs (an early [EOS]); dividing by lp(Y) removes most of that bias. ``alpha=0`` is no
    normalisation, ``alpha=1`` is close to the average log-probability per token."""
    return ((5 + length) / 6) ** alpha


def _next_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log p(next token) (..., V), with [PAD], [BOS] and [UNK] excluded: a character that may be right
    beats one that is surely wrong. Every search and `score_translation` use this same distribution."""
    never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    never[list(NEVER_WRITTEN)] = True
    return torch.log_softmax(logits.float().masked_fill(never, float("-inf")), dim=-1)  # (..., V)


def _encode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The encoder's token vectors (B, S, D): read once per sentence, whatever the decoder does next."""
    return model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids)).last_hidden_state


def _source_ids(tokenizer, texts: Sequence[str], info: dict) -> list[list[int]]:
    """The English token ids, ``[CLS] ... [SEP]``, at most ``max_length``. A "[SEP]" or "[PAD]" typed in the
    text is split like any other word (``split_special_tokens``): text is data, never a control token."""
    return [tokenizer(t, truncation=True, max_length=info["max_length"], split_special_tokens=True)["input_ids"]
            for t in texts]


@torch.no_grad()
def _greedy(model: nn.Module, sources: Sequence[Sequence[int]], info: dict, pad_id: int = 0,
            batch_size: int = 64) -> list[Hypothesis]:
    """Greedy decoding of token-id sources, a batch at a time: at every step each sentence writes its most
    probable next character, until all have written [EOS] or ``max_length`` tokens."""
    from .finetune import batch_order
    from .tasks import pad_features, to_device

    out: list = [None] * len(sources)
    device = device_of(model)
    with eval_mode(model):
        for idx in batch_order([len(s) for s in sources], batch_size, shuffle=False):
            batch = to_device(pad_features([{"input_ids": list(sources[i])} for i in idx], pad_id), device)
            memory = _encode(model, batch["input_ids"], batch["attention_mask"])  # (B, S, D)
            B = memory.shape[0]
            written = torch.full((B, 1), BOS_ID, device=device)  # (B, 1): [BOS]
            log_prob = torch.zeros(B, dtype=torch.float64, device=device)  # (B,)
            done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
            for _ in range(info["max_length"]):
                logits = model.head(memory, attention_mask=batch["attention_mask"],
                                    decoder_input_ids=written).logits[:, -1]  # (B, V): the next token's
                logp = _next_log_probs(logits)  # (B, V)
                token = logp.argmax(dim=-1)  # (B,)
                log_prob += torch.where(done, 0.0, logp.gather(1, token[:, None])[:, 0].double())
                token = token.masked_fill(done, PAD_ID)  # a finished sentence only pads
                written = torch.cat([written, token[:, None]], dim=1)  # (B, t + 1)
                done |= token == EOS_ID
                if done.all():
                    break
            for row, i in enumerate(idx):
                ids = written[row, 1:].tolist()
                finished = EOS_ID in ids
                out[i] = Hypothesis(ids[:ids.index(EOS_ID)] if finished else ids, float(log_prob[row]), finished)
    return out


@torch.no_grad()
def _beam(model: nn.Module, source: Sequence[int], info: dict, beam_size: int, alpha: float = ALPHA) -> Hypothesis:
    """Beam search for one sentence (its beams are the batch). Each step extends every live beam by every
    character and keeps the ``beam_size`` best sums of log-probabilities; an [EOS] among the ``beam_size`` best
    candidates finishes a hypothesis. The search stops when ``beam_size`` hypotheses have finished or at
    ``max_length`` tokens (live beams then count, unfinished); the answer is the best by ``score(alpha)``."""
    device = device_of(model)
    with eval_mode(model):
        ids = torch.tensor([list(source)], device=device)  # (1, S)
        mask = torch.ones_like(ids)  # (1, S)
        memory = _encode(model, ids, mask)  # (1, S, D): once, shared by every beam
        alive: list[tuple[list[int], float]] = [([BOS_ID], 0.0)]  # (tokens written, log-probability)
        finished: list[Hypothesis] = []
        for _ in range(info["max_length"]):
            k = len(alive)
            prefixes = torch.tensor([tokens for tokens, _ in alive], device=device)  # (k, t)
            logits = model.head(memory.expand(k, -1, -1), attention_mask=mask.expand(k, -1),
                                decoder_input_ids=prefixes).logits[:, -1]  # (k, V)
            logp = _next_log_probs(logits).double()  # (k, V)
            total = torch.tensor([s for _, s in alive], dtype=torch.float64, device=device)[:, None] + logp  # (k, V)
            V = total.shape[1]
            values, flat = total.view(-1).topk(min(2 * beam_size, k * V))  # (2 beam_size,): best candidates
            next_alive = []
            for rank, (value, index) in enumerate(zip(values.tolist(), flat.tolist())):
                if value == float("-inf"):
                    break
                beam, token = divmod(index, V)
                if token == EOS_ID:
                    if rank < beam_size:
                        finished.append(Hypothesis(alive[beam][0][1:], value, True))
                else:
                    next_alive.append((alive[beam][0] + [token], value))
                    if len(next_alive) == beam_size:
                        break
            alive = next_alive
            if len(finished) >= beam_size or not alive:
                break
        else:
            finished += [Hypothesis(tokens[1:], s, False) for tokens, s in alive]
    return max(finished, key=lambda h: h.score(alpha))


def greedy(model: nn.Module, tokenizer, info: dict, texts: Sequence[str], batch_size: int = 64) -> list[str]:
    """Translate English ``texts`` greedily: every step writes the most probable next character. Each
    sentence is encoded once; the decoder re-reads the characters so far at every step (no cache, as in
    nanoGPT's ``generate``). Taught in notebook 10."""
    hyps = _greedy(model, _source_ids(tokenizer, texts, info), info, tokenizer.pad_token_id or 0, batch_size)
    return [decode_characters(h.ids, info["characters"]) for h in hyps]


def beam_search(model: nn.Module, tokenizer, info: dict, texts: Sequence[str], beam_size: int | None = None,
                alpha: float = ALPHA) -> list[str]:
    """Translate English ``texts`` with beam search (default beam: ``info["beam_size"]``, the preset's
    ``tasks.beam_size``), choosing among finished hypotheses by log-probability over `length_penalty`."""
    k = info["beam_size"] if beam_size is None else beam_size
    if k < 1:
        raise ValueError(f"beam_size must be at least 1 (1 is greedy), got {k}.")
    return [decode_characters(_beam(model, ids, info, k, alpha).ids, info["characters"])
            for ids in _source_ids(tokenizer, texts, info)]


@torch.no_grad()
def score_translation(model: nn.Module, tokenizer, info: dict, text: str, translation: str,
                      alpha: float = ALPHA) -> float:
    """The score beam search maximises, recomputed in one teacher-forced pass: log p(translation, [EOS] |
    text) over `length_penalty`. A translation of ``max_length`` characters stopped at the limit and is
    scored without [EOS]; one that holds a character the decoder cannot write scores -inf."""
    target = encode_characters(translation, character_index(info["characters"]))
    L = info["max_length"]
    finished = len(target) < L
    sequence = [BOS_ID, *target, *([EOS_ID] if finished else [])][:L + 1]  # (T + 1,)
    device = device_of(model)
    with eval_mode(model):
        ids = torch.tensor([_source_ids(tokenizer, [text], info)[0]], device=device)  # (1, S)
        memory = _encode(model, ids, torch.ones_like(ids))  # (1, S, D)
        written = torch.tensor([sequence[:-1]], device=device)  # (1, T)
        logp = _next_log_probs(model.head(memory, decoder_input_ids=written).logits[0])  # (T, V)
    log_prob = float(logp.double().gather(1, torch.tensor(sequence[1:], device=device)[:, None]).sum())
    return Hypothesis(target, log_prob, finished).score(alpha)


@torch.no_grad()
def translate_with_attention(model: nn.Module, tokenizer, info: dict, text: str, beam_size: int = 1,
                             layer: int = -1) -> tuple[list[str], list[str], np.ndarray]:
    """Translate one sentence and show where the decoder looked: ``(characters, pieces, weights)``.

    ``characters`` are the T_out characters written (greedy, or beam search for ``beam_size`` > 1), ``pieces``
    the S English word pieces read ([CLS] and [SEP] included), and ``weights`` (T_out, S) the cross-attention
    of layer ``layer`` (default: the last, nearest the choice of the character) averaged over its heads: row t
    is the attention while writing character t, and sums to 1 over the pieces."""
    source = _source_ids(tokenizer, [text], info)[0]
    hyp = (_greedy(model, [source], info, tokenizer.pad_token_id or 0)[0] if beam_size == 1
           else _beam(model, source, info, beam_size))
    characters = [info["characters"][i] for i in hyp.ids]
    pieces = tokenizer.convert_ids_to_tokens(source)
    device = device_of(model)
    with eval_mode(model):
        ids = torch.tensor([source], device=device)  # (1, S)
        memory = _encode(model, ids, torch.ones_like(ids))  # (1, S, D)
        written = torch.tensor([([BOS_ID] + hyp.ids)[:info["max_length"]]], device=device)  # (1, T)
        attentions = model.head(memory, decoder_input_ids=written, output_attentions=True).attentions
    weights = attentions[layer][0].mean(dim=0)[:len(characters)]  # (H, T, S) -> (T_out, S)
    return characters, pieces, weights.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------------------
# 5. Scores: BLEU and chrF
# ---------------------------------------------------------------------------------------------------------

def translation_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU (Papineni et al. 2002) and chrF (Popović 2015) in percent, with sacrebleu (Post 2018).

    ``references[i]`` holds every accepted translation of sentence i (one or more). BLEU counts word n-grams;
    Chinese has no spaces, so ``tokenize="zh"`` makes every Chinese character a word (and splits other text as
    the standard 13a tokenizer does). chrF is the F-score (recall weighted twice) of character n-grams up to 6
    long, which fits Chinese and gives partial credit where BLEU's 4-gram precision is still zero."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one list of references per prediction, got {len(predictions)} predictions and "
                         f"{len(references)} reference lists.")
    if any(not refs for refs in references):
        raise ValueError("every sentence needs at least one reference translation.")
    n = max(len(refs) for refs in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(n)]  # sacrebleu's layout
    bleu = BLEU(tokenize="zh").corpus_score(list(predictions), streams).score
    chrf = CHRF().corpus_score(list(predictions), streams).score
    return {"bleu": float(bleu), "chrf": float(chrf)}


def evaluate(model: nn.Module, tokenizer, items: Sequence[dict], feats: Sequence[dict], info: dict,
             beam_size: int | None = None) -> dict:
    """BLEU and chrF of greedy translations against every reference of each sentence; ``score`` is chrF.

    chrF chooses the epoch to keep: on a few hundred sentences a young model's BLEU is often exactly 0 (no
    4-gram matches anywhere), which cannot tell two epochs apart, while chrF moves with every character
    pair got right, and it agrees with human judgements more often than BLEU (Kocmi et al. 2021).
    ``beam_size=None`` runs beam search (``info["beam_size"]``) on the test split only, adding ``bleu_beam``,
    ``chrf_beam`` and ``beam_predictions``, so that validation after every epoch stays cheap."""
    if not items:
        raise ValueError("no sentences to translate: the validation or test slice is empty.")
    references = [item.get("references") or [item["zh"]] for item in items]
    sources = [f["input_ids"] for f in feats]
    predictions = [decode_characters(h.ids, info["characters"])
                   for h in _greedy(model, sources, info, tokenizer.pad_token_id or 0)]
    scores = translation_scores(predictions, references)
    out: dict[str, Any] = {**scores, "score": scores["chrf"]}
    k = beam_size if beam_size is not None else info["beam_size"] if items[0].get("split") == "test" else 1
    if k > 1:
        beams = [decode_characters(_beam(model, s, info, k).ids, info["characters"]) for s in sources]
        beam_scores = translation_scores(beams, references)
        out.update(bleu_beam=beam_scores["bleu"], chrf_beam=beam_scores["chrf"], beam_predictions=beams)
    out["predictions"] = predictions
    return out


# ---------------------------------------------------------------------------------------------------------
# 6. The baseline, and translating typed text
# ---------------------------------------------------------------------------------------------------------

def retrieve(train_items: Sequence[dict], texts: Sequence[str]) -> list[str]:
    """The retrieval baseline: for each English text, the Chinese of the training pair whose English is
    nearest by TF-IDF cosine (words lower-cased, one-letter words such as "I" kept). It writes nothing new,
    so it measures how far remembering the training pairs goes; a text with no known word gets the first pair."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # scikit-learn is slow to import: only here

    vectorizer = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b")
    X = vectorizer.fit_transform([item["en"] for item in train_items])  # (N, vocab), rows of length 1
    cosine = vectorizer.transform(list(texts)) @ X.T  # (n, N), sparse
    best = np.asarray(cosine.argmax(axis=1)).ravel()  # (n,)
    return [train_items[i]["zh"] for i in best]


def retrieval_row(P: Preset, splits: dict | None = None) -> dict:
    """The retrieval baseline's row on the preset's test sentences, beside the fine-tuned rows of `run_task`."""
    from .utils import machine

    splits = splits or task_data(P)
    t0 = time.perf_counter()
    test = splits["test"]
    scores = translation_scores(retrieve(splits["train"], [item["en"] for item in test]),
                                [item["references"] for item in test])
    return {"task": "tatoeba-zh", "model": "retrieval", "preset": P.name, "train_examples": len(splits["train"]),
            "test_examples": len(test), **scores, "score": scores["chrf"],
            "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}


def baseline_rows(P: Preset, splits: dict | None = None) -> list[dict]:
    """The baselines of notebook 10's translation table: the retrieval row (`retrieval_row`). Copying the
    English, or writing the most frequent characters, would score near 0 BLEU and say nothing."""
    return [retrieval_row(P, splits)]


def predict(model: nn.Module, tokenizer, info: dict, text: str) -> dict:
    """Translate one English sentence: ``{"translation", "characters", "pieces", "attention", "truncated"}``
    with beam search (``info["beam_size"]``); ``attention`` is `translate_with_attention`'s (T_out, S) matrix
    as lists, ``truncated`` says the English was longer than ``max_length`` tokens and only its start was read.
    The text is data: markup, or a "[SEP]" typed in it, is read as words like any other (`_source_ids`)."""
    if not text or not text.strip():
        raise ValueError("The text is empty: type an English sentence to translate into Chinese.")
    characters, pieces, weights = translate_with_attention(model, tokenizer, info, text, beam_size=info["beam_size"])
    return {"translation": "".join(characters), "characters": characters, "pieces": pieces,
            "attention": np.round(weights, 4).tolist(),
            "truncated": len(tokenizer(text, split_special_tokens=True)["input_ids"]) > info["max_length"]}

