"""Uploaded image datasets, read safely with Pillow and numpy alone (no torch): the web inspects uploads with this,
the GAN training reads them with it (``worker/ml/gan/data.py`` turns the pixels into tensors).

Two formats: an MNIST IDX images file (optionally gzipped), whose header (magic, type, dimensions) and exact length
are validated by hand, and a zip of PNG/JPEG images.

A zip is read member by member **in memory** (nothing is extracted to disk) and rejected with
:class:`ImageDatasetError` when a member name is absolute or climbs out (``..``), a member is a symlink, there are
too many members, the uncompressed total is over the cap (declared sizes are checked first and the bytes actually
inflated are counted as they are read, so a lying header or a decompression bomb stops at the cap; Python's
zipfile also stops at the declared size and fails the CRC), or an image's pixel count is over the cap (checked
from the header, before decoding; PIL's own bomb check stays on, so nothing changes PIL's process-wide setting).
Members that are not PNG/JPEG images are skipped (``__MACOSX/`` and dotfiles without being counted); a zip with
no image at all is an error. Caps are the module constants, overridable per call with :class:`Limits`.
"""

from __future__ import annotations

import gzip
import io
import re
import stat
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_MEMBERS = 70_000  # zip entries (and IDX images): MNIST's 60,000 fit
MAX_UNCOMPRESSED_BYTES = 1 << 30  # 1 GiB inflated in all, counted as read
MAX_IMAGE_PIXELS = 2048 * 2048  # per image, checked before decoding
IMAGE_FORMATS = ("PNG", "JPEG")
BUILTIN_SOURCES = ("digits", "mnist")
_IDX_MAGIC_UBYTE = 0x08
_CHUNK = 1 << 20


class ImageDatasetError(ValueError):
    """An image dataset is unusable or unsafe; the message says why (it is shown to the user)."""


@dataclass(frozen=True)
class Limits:
    """Caps applied to uploaded image datasets."""

    max_members: int = MAX_MEMBERS
    max_bytes: int = MAX_UNCOMPRESSED_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS


def read_capped(fh, budget: int, name: str) -> bytearray:
    """Read ``fh`` to the end, refusing to inflate more than ``budget`` bytes (decompression bombs, lying headers)."""
    buf = bytearray()
    while chunk := fh.read(min(_CHUNK, budget - len(buf) + 1)):
        buf += chunk
        if len(buf) > budget:
            raise ImageDatasetError(f"{name} inflates past the {budget:,}-byte cap on uncompressed data")
    return buf


def _check_member(info: zipfile.ZipInfo) -> None:
    """Reject names that are absolute or climb out with ``..``, and symlinks."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ImageDatasetError(f"zip member {name!r} has an absolute path")
    if ".." in re.split(r"[\\/]", name):
        raise ImageDatasetError(f"zip member {name!r} climbs out of the archive with '..'")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ImageDatasetError(f"zip member {name!r} is a symbolic link")


def _ignored(info: zipfile.ZipInfo) -> bool:
    parts = [p for p in re.split(r"[\\/]", info.filename) if p]
    return info.is_dir() or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _open_image(data: bytes, name: str, limits: Limits) -> Image.Image | None:
    """Decode a PNG/JPEG member (pixel cap checked from the header first); None when it is not an image."""
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageDatasetError(f"zip member {name!r} is a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageDatasetError(f"zip member {name!r} is {width}×{height}: over the {limits.max_pixels:,}-pixel cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageDatasetError(f"zip member {name!r} is a damaged {img.format} image: {exc}") from exc
    return img


def scan_zip(path: Path, limits: Limits, visit: Callable[[str, Image.Image], None]) -> tuple[int, int]:
    """Check the archive, then ``visit`` each decoded image in name order; ``(images, skipped members)``."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                raise ImageDatasetError(f"the zip has {len(infos):,} members: over the {limits.max_members:,} cap")
            for info in infos:
                _check_member(info)
            wanted = sorted((i for i in infos if not _ignored(i)), key=lambda i: i.filename)
            declared = sum(i.file_size for i in wanted)
            if declared > limits.max_bytes:
                raise ImageDatasetError(
                    f"the zip declares {declared:,} uncompressed bytes: over the {limits.max_bytes:,} cap"
                )
            return _visit_members(zf, wanted, limits, visit)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
        raise ImageDatasetError(f"{path.name} is not a readable zip: {exc}") from exc


def _visit_members(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: Limits, visit: Callable[[str, Image.Image], None]
) -> tuple[int, int]:
    budget, count, skipped = limits.max_bytes, 0, 0
    for info in infos:
        with zf.open(info) as fh:
            data = read_capped(fh, budget, f"zip member {info.filename!r}")
        budget -= len(data)
        img = _open_image(data, info.filename, limits)
        if img is None:
            skipped += 1
            continue
        visit(info.filename, img)
        count += 1
    if not count:
        raise ImageDatasetError(f"the zip holds no PNG or JPEG image ({skipped} other members)")
    return count, skipped


def inspect_image_dataset(path: str | Path, limits: Limits = Limits()) -> dict:
    """Validate an uploaded file without training: ``{"format", "count", "sizes", "channels", "skipped"}``.

    ``sizes`` lists the distinct ``[width, height]`` seen (at most 20); ``channels`` is 3 if any image has colour.
    Raises :class:`ImageDatasetError` for everything :func:`load_images` would reject.
    """
    path = existing_file(path)
    kind = sniff(path)
    if kind != "zip":
        images = read_idx(path, kind, limits)  # (N, rows, cols)
        return {
            "format": kind,
            "count": len(images),
            "sizes": [[images.shape[2], images.shape[1]]],
            "channels": 1,
            "skipped": 0,
        }
    sizes: set[tuple[int, int]] = set()
    colour = [False]

    def visit(name: str, img: Image.Image) -> None:
        sizes.add(img.size)
        colour[0] |= img.mode not in ("1", "L", "LA", "I", "I;16", "F")

    count, skipped = scan_zip(path, limits, visit)
    return {
        "format": "zip",
        "count": count,
        "sizes": [list(s) for s in sorted(sizes)[:20]],
        "channels": 3 if colour[0] else 1,
        "skipped": skipped,
    }


def existing_file(source: str | Path) -> Path:
    path = Path(source)
    if not path.is_file():
        raise ImageDatasetError(f"unknown image source {str(source)!r}: use one of {BUILTIN_SOURCES} or a file")
    return path


def sniff(path: Path) -> str:
    """The upload's kind from its first bytes: "zip", "idx" or "idx.gz"; anything else is rejected."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"PK":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "idx.gz"
    if len(head) == 4 and head[:2] == b"\0\0" and head[2] == _IDX_MAGIC_UBYTE:
        return "idx"
    raise ImageDatasetError(f"{path.name} is neither a zip of PNG/JPEG images nor an MNIST IDX images file")


def read_idx(path: Path, kind: str, limits: Limits) -> np.ndarray:
    """An IDX images file (optionally gzipped) as ``(N, rows, cols)`` uint8, with its header validated."""
    if kind == "idx":
        if path.stat().st_size > limits.max_bytes:
            raise ImageDatasetError(f"{path.name} is larger than the {limits.max_bytes:,}-byte cap")
        data = bytearray(path.stat().st_size)  # writable: torch wraps the pixels without a copy
        with open(path, "rb") as fh:
            fh.readinto(data)
    else:
        try:
            with gzip.open(path, "rb") as fh:
                data = read_capped(fh, limits.max_bytes, path.name)
        except (OSError, EOFError) as exc:
            raise ImageDatasetError(f"{path.name} is not a readable gzip file: {exc}") from exc
    return parse_idx(data, path.name, limits)


def parse_idx(data: bytearray, name: str, limits: Limits) -> np.ndarray:
    """Check magic ``00 00 08 03``, dimensions and exact length; the pixels as ``(N, rows, cols)`` uint8."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _IDX_MAGIC_UBYTE:
        raise ImageDatasetError(f"{name} is not an IDX file of unsigned bytes")
    ndim = data[3]
    if ndim != 3:
        what = "a labels file" if ndim == 1 else f"{ndim}-dimensional"
        raise ImageDatasetError(f"{name} is {what}; expected an IDX images file (3 dimensions: count, rows, cols)")
    if len(data) < 16:
        raise ImageDatasetError(f"{name} is truncated: its IDX header is incomplete")
    count, rows, cols = (int(v) for v in np.frombuffer(data, dtype=">u4", count=3, offset=4))
    if not count or not rows or not cols:
        raise ImageDatasetError(f"{name} declares an empty dataset ({count}×{rows}×{cols})")
    if count > limits.max_members or rows * cols > limits.max_pixels:
        raise ImageDatasetError(
            f"{name} declares {count:,} images of {rows}×{cols}: over the caps "
            f"({limits.max_members:,} images, {limits.max_pixels:,} pixels each)"
        )
    if len(data) != 16 + count * rows * cols:
        raise ImageDatasetError(
            f"{name} has {len(data) - 16:,} bytes of pixels; its header declares "
            f"{count * rows * cols:,} ({count}×{rows}×{cols})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def fit_image(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """Centre-crop to a square, resize to ``image_size`` and convert: ``(S, S)`` or ``(S, S, 3)`` uint8."""
    img = img.convert("L" if channels == 1 else "RGB")
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if side != image_size or width != height:
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)
