"""Text dataset formats: parsing and validation shared by the upload endpoint and the worker.

- ``.txt``: for training, documents separated by blank lines (one document if there are none); for generation,
  one prompt per non-empty line.
- ``.jsonl``: one JSON object per line, with ``text`` (training) and/or ``prompt`` (+ optional ``id``) (generation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_LINES = 2_000_000
_BLANK = re.compile(r"\n[ \t]*\n+")


class TextDataError(ValueError):
    """The file is not a usable text dataset; the message says why."""


@dataclass(frozen=True)
class Prompt:
    index: int
    prompt: str
    id: str | None = None


def decode(data: bytes) -> str:
    """UTF-8 text with no NUL bytes (a binary file is refused)."""
    if b"\x00" in data:
        raise TextDataError("the file looks binary (it contains NUL bytes); upload UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextDataError(f"the file is not valid UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise TextDataError("the file is empty")
    if text.count("\n") > MAX_LINES:
        raise TextDataError(f"the file has more than {MAX_LINES} lines")
    return text


def json_objects(text: str, error: type[TextDataError] = TextDataError) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL text; ``error`` names the first line that is not
    a JSON object."""
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"line {n} is not valid JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise error(f"line {n} is not a JSON object")
        yield n, obj


def _jsonl(text: str) -> list[dict]:
    rows = [obj for _, obj in json_objects(text)]
    if not rows:
        raise TextDataError("the file has no JSON lines")
    return rows


def documents(text: str, fmt: str) -> list[str]:
    """Training documents."""
    if fmt == "txt":
        return [d.strip() for d in _BLANK.split(text) if d.strip()]
    docs = [r["text"] for r in _jsonl(text) if isinstance(r.get("text"), str) and r["text"].strip()]
    return docs


def prompts(text: str, fmt: str) -> list[Prompt]:
    """Generation prompts, indexed by their position in the file."""
    if fmt == "txt":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return [Prompt(i, ln) for i, ln in enumerate(lines)]
    out = []
    for i, row in enumerate(r for r in _jsonl(text) if "prompt" in r):
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise TextDataError(f"record {i}: `prompt` must be a non-empty string")
        pid = row.get("id")
        out.append(Prompt(i, row["prompt"], None if pid is None else str(pid)))
    return out


def stats(data: bytes, fmt: str) -> dict:
    """Validate and describe an upload: bytes, lines, documents, prompts, approximate tokens."""
    text = decode(data)
    docs = documents(text, fmt)
    n_prompts = len(prompts(text, fmt))
    if not docs and not n_prompts:
        raise TextDataError("no usable records: .jsonl lines need a `text` or a `prompt` field")
    return {
        "bytes": len(data),
        "lines": text.count("\n") + (0 if text.endswith("\n") else 1),
        "documents": len(docs),
        "prompts": n_prompts,
        "approx_tokens": sum(len(d) for d in docs) // 4,
        "chars": len(text),
    }


def read_documents(path: Path, fmt: str) -> list[str]:
    return documents(decode(Path(path).read_bytes()), fmt)


def read_prompts(path: Path, fmt: str) -> list[Prompt]:
    return prompts(decode(Path(path).read_bytes()), fmt)
