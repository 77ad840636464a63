"""Tagged (token-classification) dataset formats: parsing and validation shared by the upload endpoint and the worker.

- CoNLL (``.conll``, ``.iob``, ``.bio``): one token per line, whitespace-separated columns, the tag in the last
  column; a blank line between sentences; ``-DOCSTART-`` lines are ignored.
- JSONL (``.jsonl`` whose records have ``tokens``): ``{"tokens": [...], "tags": [...]}`` per line.

Tags are BIO/IOB2 (``B-PER``, ``I-PER``, ``O``) or IO (``PER``, ``O``); the label set comes from the data. Plain
Python (no torch): the web validates uploads with it and the worker reads them with it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from shared.defaults import MAX_TAGGER_LABELS
from shared.textdata import TextDataError, decode, json_objects

CONLL_EXTENSIONS = (".conll", ".iob", ".bio", ".conllu")
OUTSIDE = "O"
_TAG = re.compile(r"^(?:[BIES]-)?[A-Za-z0-9_.:$/]{1,60}$")


class TagDataError(TextDataError):
    """The file is not a usable tagged dataset; the message names the line."""


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]


def is_tagged_jsonl(data: bytes) -> bool:
    """Whether a ``.jsonl`` upload is tagged data (its first record has ``tokens``) rather than text."""
    for line in data.splitlines():
        if line.strip():
            try:
                first = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return False
            return isinstance(first, dict) and "tokens" in first
    return False


def parse(text: str, fmt: str) -> list[Sentence]:
    """The sentences of a ``conll`` or ``jsonl`` file; :class:`TagDataError` with the line number otherwise."""
    sentences = _conll(text) if fmt == "conll" else _jsonl(text)
    if not sentences:
        raise TagDataError("the file has no tagged sentences")
    labels = label_list(sentences)
    if len(labels) > MAX_TAGGER_LABELS:
        raise TagDataError(f"the data has {len(labels)} labels, over the limit of {MAX_TAGGER_LABELS}")
    return sentences


class _Tags:
    """Checks each tag's shape, and that one file does not mix BIO (``B-PER``) and IO (``PER``) tags."""

    def __init__(self) -> None:
        self.prefixed: bool | None = None

    def check(self, tag: str, where: str) -> None:
        if not _TAG.match(tag):
            raise TagDataError(f"{where}: {tag[:80]!r} is not a tag (BIO like B-PER, I-PER, O; or IO like PER, O)")
        if tag == OUTSIDE:
            return
        prefixed = tag[1:2] == "-" and tag[0] in "BIES"
        if self.prefixed is None:
            self.prefixed = prefixed
        elif prefixed != self.prefixed:
            raise TagDataError(f"{where}: {tag!r} mixes IO tags (PER) with BIO tags (B-PER, I-PER) in one file")


def _conll(text: str) -> list[Sentence]:
    sentences: list[Sentence] = []
    checker = _Tags()
    tokens: list[str] = []
    tags: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            if tokens:
                sentences.append(Sentence(tokens, tags))
                tokens, tags = [], []
            continue
        cols = line.split()
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise TagDataError(f"line {n}: expected a token and a tag separated by whitespace, got {line[:80]!r}")
        checker.check(cols[-1], f"line {n}")
        tokens.append(cols[0])
        tags.append(cols[-1])
    if tokens:
        sentences.append(Sentence(tokens, tags))
    return sentences


def _jsonl(text: str) -> list[Sentence]:
    sentences = []
    checker = _Tags()
    for n, obj in json_objects(text, TagDataError):
        tokens, tags = obj.get("tokens"), obj.get("tags")
        if not _str_list(tokens) or not _str_list(tags):
            raise TagDataError(f"line {n}: `tokens` and `tags` must be non-empty lists of strings")
        if len(tokens) != len(tags):
            raise TagDataError(f"line {n}: {len(tokens)} tokens but {len(tags)} tags")
        if any(not t.strip() or any(c.isspace() for c in t) for t in tokens):
            raise TagDataError(f"line {n}: a token is empty or contains whitespace")
        for tag in tags:
            checker.check(tag, f"line {n}")
        sentences.append(Sentence(tokens, tags))
    return sentences


def _str_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def label_list(sentences: list[Sentence]) -> list[str]:
    """The label set, ``O`` first, then sorted by entity type and prefix (B before I)."""
    found = {t for s in sentences for t in s.tags} - {OUTSIDE}
    return [OUTSIDE, *sorted(found, key=lambda t: (t.partition("-")[2] or t, t))]


def scheme(labels: list[str]) -> str:
    """``BIO`` when the tags carry B-/I- prefixes, ``IO`` when none does."""
    prefixed = [t for t in labels if t != OUTSIDE and t[:2] in ("B-", "I-", "E-", "S-")]
    return "BIO" if prefixed else "IO"


def stats(data: bytes, fmt: str) -> dict:
    """Validate and describe an upload: sentences, tokens, labels, the tag scheme and per-label counts."""
    sentences = parse(decode(data), fmt)
    counts = Counter(t for s in sentences for t in s.tags)
    labels = label_list(sentences)
    return {
        "bytes": len(data),
        "sentences": len(sentences),
        "tokens": sum(len(s.tokens) for s in sentences),
        "labels": labels,
        "scheme": scheme(labels),
        "label_counts": {label: counts[label] for label in labels},
    }


def read_sentences(path: Path, fmt: str) -> list[Sentence]:
    return parse(decode(Path(path).read_bytes()), fmt)
