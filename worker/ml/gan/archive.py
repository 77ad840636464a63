"""Reading an uploaded zip of images safely: in memory, capped, and refusing anything that could escape.

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

import io
import re
import stat
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_MEMBERS = 70_000  # zip entries (and IDX images): MNIST's 60,000 fit
MAX_UNCOMPRESSED_BYTES = 1 << 30  # 1 GiB inflated in all, counted as read
MAX_IMAGE_PIXELS = 2048 * 2048  # per image, checked before decoding
IMAGE_FORMATS = ("PNG", "JPEG")
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
