"""Image datasets for GAN training: the built-in digits, MNIST, and uploaded files (MNIST IDX or a zip of images).

Every source ends as one in-memory ``float32`` tensor ``(N, C, H, W)`` in ``[-1, 1]`` (the reference's
``Normalize((0.5,), (0.5,))``), resized to the job's square ``image_size`` and converted to its ``channels``.
Training then gathers batches from that tensor directly: no DataLoader, no per-item transforms.

Uploaded files are untrusted: a zip goes through :mod:`worker.ml.gan.archive` (in-memory, capped, no traversal or
symlinks); an IDX file's header (magic, type, dimensions) and exact length are validated here by hand with numpy,
and a gzipped one is inflated under the same byte cap. Every refusal is an :class:`ImageDatasetError`.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from worker.ml.gan.archive import ImageDatasetError, Limits, read_capped, scan_zip

logger = logging.getLogger(__name__)

__all__ = ["ImageDatasetError", "Limits", "inspect_image_dataset", "load_images"]

BUILTIN_SOURCES = ("digits", "mnist")
_IDX_MAGIC_UBYTE = 0x08


def load_images(
    source: str | Path, image_size: int, channels: int, limits: Limits = Limits(), mnist_root: Path | None = None
) -> torch.Tensor:
    """Load ``source`` ("digits", "mnist" or a file path) as ``(N, channels, image_size, image_size)`` in [-1, 1]."""
    if channels not in (1, 3) or image_size < 1:
        raise ValueError(f"need channels 1 or 3 and a positive image_size, not {channels} and {image_size}")
    if str(source) == "digits":
        from sklearn.datasets import load_digits

        gray = torch.from_numpy(load_digits().images / 16.0).float()  # (1797, 8, 8) in [0, 1]
        out = _resize_gray(gray, image_size)
    elif str(source) == "mnist":
        out = _resize_gray(_mnist_uint8(mnist_root).float() / 255.0, image_size)
    else:
        path = _existing(source)
        kind = _sniff(path)
        if kind == "zip":
            out = _zip_tensor(path, image_size, channels, limits)
        else:
            out = _resize_gray(torch.from_numpy(_read_idx(path, kind, limits)).float() / 255.0, image_size)
    if out.size(1) != channels:
        out = out.expand(-1, channels, -1, -1).contiguous()  # gray → RGB
    logger.info("loaded %d images from %s as %s", len(out), source, tuple(out.shape[1:]))
    return out * 2.0 - 1.0  # (N, C, H, W) in [-1, 1]


def inspect_image_dataset(path: str | Path, limits: Limits = Limits()) -> dict:
    """Validate an uploaded file without training: ``{"format", "count", "sizes", "channels", "skipped"}``.

    ``sizes`` lists the distinct ``[width, height]`` seen (at most 20); ``channels`` is 3 if any image has colour.
    Raises :class:`ImageDatasetError` for everything :func:`load_images` would reject.
    """
    path = _existing(path)
    kind = _sniff(path)
    if kind != "zip":
        images = _read_idx(path, kind, limits)  # (N, rows, cols)
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


def _existing(source: str | Path) -> Path:
    path = Path(source)
    if not path.is_file():
        raise ImageDatasetError(f"unknown image source {str(source)!r}: use one of {BUILTIN_SOURCES} or a file")
    return path


def _sniff(path: Path) -> str:
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


def _resize_gray(gray: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(N, h, w)`` floats in [0, 1] → ``(N, 1, image_size, image_size)``, resized in chunks (bounded memory)."""
    gray = gray.unsqueeze(1)  # (N, 1, h, w)
    if gray.shape[-2:] == (image_size, image_size):
        return gray.contiguous()
    parts = [
        F.interpolate(chunk, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        for chunk in gray.split(4096)
    ]
    return torch.cat(parts).clamp_(0.0, 1.0)  # (N, 1, S, S)


def _mnist_uint8(root: Path | None) -> torch.Tensor:
    """MNIST's 60,000 training images ``(N, 28, 28)`` uint8 through torchvision (optional; needs the network)."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:
        raise ImageDatasetError(
            "the 'mnist' source needs torchvision, which is not installed: upload the MNIST "
            "IDX file (train-images-idx3-ubyte.gz) as a dataset instead"
        ) from exc
    root = Path(root) if root is not None else Path.home() / ".cache" / "genqueue" / "mnist"
    try:
        return MNIST(str(root), train=True, download=True).data  # (60000, 28, 28) uint8
    except (OSError, RuntimeError) as exc:
        raise ImageDatasetError(
            f"could not download MNIST ({exc}); offline, upload the MNIST IDX file "
            "(train-images-idx3-ubyte.gz) as a dataset instead"
        ) from exc


def _read_idx(path: Path, kind: str, limits: Limits) -> np.ndarray:
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
    return _parse_idx(data, path.name, limits)


def _parse_idx(data: bytearray, name: str, limits: Limits) -> np.ndarray:
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


def _fit(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """Centre-crop to a square, resize to ``image_size`` and convert: ``(S, S)`` or ``(S, S, 3)`` uint8."""
    img = img.convert("L" if channels == 1 else "RGB")
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if side != image_size or width != height:
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)


def _zip_tensor(path: Path, image_size: int, channels: int, limits: Limits) -> torch.Tensor:
    """A zip of images as ``(N, channels, S, S)`` floats in [0, 1]."""
    arrays: list[np.ndarray] = []
    scan_zip(path, limits, lambda name, img: arrays.append(_fit(img, image_size, channels)))
    stacked = np.stack(arrays).reshape(len(arrays), image_size, image_size, channels)  # (N, S, S, C)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (N, C, S, S)
