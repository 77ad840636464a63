"""Dataset uploads: validated, stored in the artifact store with a SHA-256, deduplicated per owner."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from shared.ids import new_id
from shared.models import Dataset, User
from shared.settings import get_settings
from shared.storage import TooLarge, get_storage, spool
from shared.tagdata import CONLL_EXTENSIONS, is_tagged_jsonl
from shared.tagdata import stats as tagged_stats
from shared.textdata import TextDataError
from shared.textdata import stats as text_stats
from web.errors import ApiError, Invalid

logger = logging.getLogger(__name__)

TEXT_FORMATS = {".txt": "txt", ".jsonl": "jsonl"}  # a .jsonl of {"tokens", "tags"} records is tagged data


def detect_format(filename: str) -> tuple[str, str]:
    """(kind, format) from the file name; images are confirmed by content later."""
    name = filename.lower()
    if name.endswith(CONLL_EXTENSIONS):
        return "tagged", "conll"
    for ext, fmt in TEXT_FORMATS.items():
        if name.endswith(ext):
            return "text", fmt
    if name.endswith(".zip"):
        return "images", "zip"
    if "idx3-ubyte" in name or name.endswith((".idx", ".idx.gz")):
        return "images", "idx"
    raise Invalid(
        f"unsupported file type {filename!r}: upload .txt or .jsonl text, .conll (or .jsonl) tagged text, "
        "a .zip of images or an MNIST IDX file",
        code="unsupported_type",
    )


def upload(s: Session, user: User, file: FileStorage | None, name: str | None) -> tuple[Dataset, bool]:
    """Store and register an upload; returns (dataset, created). The same bytes again return the same dataset."""
    if file is None or not file.filename:
        raise Invalid("send the file as multipart form field `file`", code="missing_file")
    kind, fmt = detect_format(file.filename)
    settings = get_settings()
    cap = settings.max_text_upload_bytes if kind in ("text", "tagged") else settings.max_image_upload_bytes
    ds_id = new_id("ds")
    rel = f"datasets/{ds_id}/{Path(file.filename).name}"
    # Spooled to a local temporary file in chunks (never whole in memory), validated there, uploaded only if new.
    with tempfile.TemporaryDirectory(prefix="genqueue-upload-") as tmp:
        local = Path(tmp, "upload")
        try:
            size, sha = spool(file.stream, local, cap)
        except TooLarge as exc:
            raise ApiError(f"the {kind} upload is over the limit of {cap} bytes", code="too_large", status=413) from exc
        stats = _validate(local, kind, fmt)
        existing = s.scalars(select(Dataset).where(Dataset.owner_id == user.id, Dataset.sha256 == sha)).first()
        if existing is not None:
            return existing, False
        store = get_storage()
        store.put_file(rel, local)
    try:
        ds = Dataset(
            id=ds_id,
            owner_id=user.id,
            name=(name or Path(file.filename).name)[:255],
            kind=stats.pop("kind", kind),
            format=stats.pop("format", fmt),
            size=size,
            sha256=sha,
            stats=stats,
            path=rel,
        )
        s.add(ds)
        s.commit()
        return ds, True
    except BaseException:
        store.delete(f"datasets/{ds_id}")
        raise


def _validate(path: Path, kind: str, fmt: str) -> dict:
    if kind in ("text", "tagged"):
        data = path.read_bytes()
        tagged = kind == "tagged" or (fmt == "jsonl" and is_tagged_jsonl(data))
        try:
            if tagged:
                return {**tagged_stats(data, fmt), "kind": "tagged"}
            return text_stats(data, fmt)
        except TextDataError as exc:  # a TagDataError too: the message names the line
            raise Invalid(str(exc), code="invalid_dataset") from exc
    from shared.imagedata import ImageDatasetError, inspect_image_dataset

    try:
        return inspect_image_dataset(path)
    except ImageDatasetError as exc:
        raise Invalid(str(exc), code="invalid_dataset") from exc
