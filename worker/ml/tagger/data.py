"""Tokenizers and batches for token classification.

Sub-word alignment: each word's *first* sub-token carries the word's label, the others get ``IGNORE`` (-100) and do
not count in the loss or the metrics. Batches are length-bucketed (sentences of similar length together) and padded
to the longest in the batch, not to ``max_length`` as the seed did: that is most of the speed-up on short sentences.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

IGNORE = -100
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(words: Iterable[str], vocab_size: int = 4096, lowercase: bool = False) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained on ``words`` (a scratch tagger's vocabulary comes from its data)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(words, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@dataclass
class Encoded:
    """One sentence as model inputs: sub-token ids and aligned labels (``IGNORE`` where not scored)."""

    input_ids: list[int]
    labels: list[int]


def encode(
    tokenizer, sentences: Sequence[tuple[Sequence[str], Sequence[str]]], label2id: dict[str, int], max_length: int
) -> list[Encoded]:
    """Tokenize word lists (``is_split_into_words``) and align labels to each word's first sub-token."""
    if not sentences:
        return []
    enc = tokenizer(
        [list(words) for words, _ in sentences], is_split_into_words=True, truncation=True, max_length=max_length
    )
    out = []
    for i, (_, tags) in enumerate(sentences):
        labels, previous = [], None
        for word in enc.word_ids(i):
            labels.append(IGNORE if word is None or word == previous else label2id[tags[word]])
            previous = word
        out.append(Encoded(enc["input_ids"][i], labels))
    return out


def pad_batch(items: Sequence[Encoded], pad_id: int, length: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to ``length`` (default: the longest item) and build the attention mask."""
    width = length or max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(items), width), dtype=torch.long)  # (B, T)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def bucketed_batches(n_items: int, lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches of item indices: shuffled, then sorted by length within windows of 50 batches, so a
    batch pads little while the order stays random across windows (and batches are shuffled again)."""
    order = list(range(n_items))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, n_items, window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def split_validation(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded split: (train, validation); at least one item each when there are two or more."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = min(len(items) - 1, max(1, round(len(items) * fraction))) if len(items) > 1 else 0
    val = [items[i] for i in sorted(order[:n_val])]
    train = [items[i] for i in sorted(order[n_val:])]
    return train, val
