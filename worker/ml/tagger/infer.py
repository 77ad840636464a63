"""Bulk tagging: batched and length-sorted; entities merged from sub-tokens as the HF pipeline's
``aggregation_strategy="simple"`` does, with character offsets into the original text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from worker.ml.common import Device, Report, no_report


@dataclass(frozen=True)
class Entity:
    label: str
    text: str
    start: int
    end: int
    score: float

    def as_dict(self) -> dict:
        return {"label": self.label, "text": self.text, "start": self.start, "end": self.end, "score": self.score}


def _split(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "I", tag


def group_entities(text: str, tokens: list[tuple[int, int, str, float]]) -> list[Entity]:
    """Merge scored sub-tokens ``(start, end, tag, score)`` into entities (``simple`` aggregation).

    Consecutive tokens of one type form an entity unless a ``B-`` starts a new one; the entity's score is the mean of
    its tokens' scores; its text is ``text[start:end]``, so offsets are always into the original text.
    """
    out: list[Entity] = []
    group: list[tuple[int, int, str, float]] = []
    kind = ""

    def close() -> None:
        if group:
            start, end = group[0][0], group[-1][1]
            score = sum(t[3] for t in group) / len(group)
            out.append(Entity(kind, text[start:end], start, end, round(score, 4)))

    for tok in tokens:
        prefix, typ = _split(tok[2])
        if prefix == "O":
            close()
            group, kind = [], ""
            continue
        if typ != kind or prefix in ("B", "S"):
            close()
            group, kind = [], typ
        group.append(tok)
    close()
    return out


class Tagger:
    """A loaded token classifier: ``tag(texts)`` returns the entities of each text."""

    def __init__(self, model, tokenizer, labels: Sequence[str], device: Device, max_length: int = 512):
        self.model, self.tokenizer, self.labels, self.device = model, tokenizer, list(labels), device
        self.max_length = min(max_length, getattr(model.config, "max_position_embeddings", max_length))

    @torch.no_grad()
    def tag_batch(self, texts: Sequence[str]) -> list[list[Entity]]:
        enc = self.tokenizer(
            list(texts),
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping")  # (B, T, 2)
        inputs = {k: v.to(self.device.torch_device) for k, v in enc.items() if k != "token_type_ids"}
        probs = self.model(**inputs).logits.float().softmax(-1).cpu()  # (B, T, L)
        score, best = probs.max(-1)  # (B, T)
        results = []
        for row, text in enumerate(texts):
            words = enc.word_ids(row)
            tokens, previous = [], None
            for t, word in enumerate(words):
                start, end = offsets[row, t].tolist()
                if word is None or end <= start:
                    continue
                if word == previous and tokens:  # a later sub-token: extend its word, keep the first's tag
                    s0, _, tag, sc = tokens[-1]
                    tokens[-1] = (s0, end, tag, sc)
                else:
                    tokens.append((start, end, self.labels[int(best[row, t])], float(score[row, t])))
                previous = word
            results.append(group_entities(text, tokens))
        return results

    def tag(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        report: Report = no_report,
        on_batch: Callable[[list[int], list[list[Entity]]], None] | None = None,
    ) -> list[list[Entity]]:
        """Tag ``texts`` in length-sorted batches; ``on_batch(indices, entities)`` after each (results stored early)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[Entity] | None] = [None] * len(texts)
        done = 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            found = self.tag_batch([texts[i] for i in idx])
            for i, ents in zip(idx, found, strict=True):
                out[i] = ents
            if on_batch is not None:
                on_batch(idx, found)
            done += len(idx)
            report(done, len(texts))
        return [e or [] for e in out]
