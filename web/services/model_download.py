"""A registry model's directory as a tar stream: safetensors weights + configs + tokenizer, never pickle files.

The tar holds one top directory named after the model; extracted, it opens as it is: ``from_pretrained(dir)`` for a
language model, :func:`worker.ml.gan.models.load_generator` for a GAN generator (``generator.safetensors`` +
``generator.json``). Files are read in 1 MiB chunks while the response is sent, so a large model never sits in
memory; headers are built first, so the response has a ``Content-Length``.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.models import Model
from shared.storage import get_storage
from shared.weights import PICKLE_SUFFIXES
from web.errors import Conflict

CHUNK = 1 << 20
BLOCK = 512


@dataclass(frozen=True)
class Entry:
    path: Path  # the file's name in the model directory (local models: its full path)
    size: int
    header: bytes
    key: str | None = None  # a stored model's file: its object key


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _stored_entries(model: Model, top: str) -> list[Entry]:
    """A stored model's files, from its manifest (no download: the tar streams them from the store)."""
    manifest = get_storage().manifest(model.object_key)[0]
    mtime = int(model.created_at.timestamp()) if model.created_at else 0
    out = []
    for rel, meta in sorted(manifest["files"].items()):
        if any(part.startswith(".") for part in rel.split("/")) or Path(rel).suffix in PICKLE_SUFFIXES:
            continue
        header = _header(f"{top}/{rel}", meta["size"], mtime)
        out.append(Entry(Path(rel), meta["size"], header, key=f"{model.object_key}/{rel}"))
    return out


def _files(root: Path) -> list[Path]:
    """Regular files under ``root`` (symlinks followed, as in a hub snapshot), minus pickles and temp/hidden files."""
    out = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or f.suffix in PICKLE_SUFFIXES or not f.is_file():
            continue
        out.append(f)
    return out


def archive_name(model: Model) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip(".-") or model.id


def plan(model: Model) -> list[Entry]:
    """The tar's entries; 409 for a model with no files here (a hub id) or whose directory is gone."""
    if model.object_key:
        entries = _stored_entries(model, archive_name(model))
        if not any(e.path.suffix == ".safetensors" for e in entries):
            raise Conflict(f"model {model.name!r} has no safetensors weights", code="not_downloadable")
        return entries
    if not model.path:
        raise Conflict(
            f"model {model.name!r} is a hub model with no files here: load it by its hub id "
            f"{model.hub_id or model.name!r}",
            code="not_downloadable",
        )
    root = Path(model.path)
    if not root.is_dir():
        raise Conflict(f"the files of model {model.name!r} are missing on this server", code="model_files_missing")
    top = archive_name(model)
    entries = []
    for f in _files(root):
        st = f.stat()
        entries.append(
            Entry(f, st.st_size, _header(f"{top}/{f.relative_to(root).as_posix()}", st.st_size, int(st.st_mtime)))
        )
    if not any(e.path.suffix == ".safetensors" for e in entries):
        raise Conflict(f"model {model.name!r} has no safetensors weights", code="not_downloadable")
    return entries


def tar_size(entries: list[Entry]) -> int:
    return sum(len(e.header) + e.size + (-e.size % BLOCK) for e in entries) + 2 * BLOCK


def tar_stream(entries: list[Entry]) -> Iterator[bytes]:
    """The tar bytes; exactly ``tar_size(entries)`` of them (a file that changed size meanwhile ends the stream)."""
    for e in entries:
        yield e.header
        sent = 0
        with get_storage().open(e.key) if e.key else open(e.path, "rb") as f:
            while sent < e.size and (chunk := f.read(min(CHUNK, e.size - sent))):
                sent += len(chunk)
                yield chunk
        if sent != e.size:
            raise OSError(f"{e.path} changed size while being sent")
        yield b"\0" * (-e.size % BLOCK)
    yield b"\0" * (2 * BLOCK)
