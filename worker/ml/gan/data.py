"""Image datasets for GAN training: the built-in digits, MNIST, and uploaded files (MNIST IDX or a zip of images).

Every source ends as one in-memory ``float32`` tensor ``(N, C, H, W)`` in ``[-1, 1]`` (the reference's
``Normalize((0.5,), (0.5,))``), resized to the job's square ``image_size`` and converted to its ``channels``.
Training then gathers batches from that tensor directly: no DataLoader, no per-item transforms.

Uploaded files are untrusted: they are read through :mod:`shared.imagedata` (Pillow and numpy only, also used by
the web to inspect uploads): zips in memory, capped, with no traversal or symlinks; IDX headers and lengths
checked. Every refusal is an :class:`ImageDatasetError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.imagedata import (
    ImageDatasetError,
    Limits,
    existing_file,
    fit_image,
    inspect_image_dataset,
    read_idx,
    scan_zip,
    sniff,
)

logger = logging.getLogger(__name__)

__all__ = ["ImageDatasetError", "Limits", "inspect_image_dataset", "load_images"]


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
        path = existing_file(source)
        kind = sniff(path)
        if kind == "zip":
            out = _zip_tensor(path, image_size, channels, limits)
        else:
            out = _resize_gray(torch.from_numpy(read_idx(path, kind, limits)).float() / 255.0, image_size)
    if out.size(1) != channels:
        out = out.expand(-1, channels, -1, -1).contiguous()  # gray → RGB
    logger.info("loaded %d images from %s as %s", len(out), source, tuple(out.shape[1:]))
    return out * 2.0 - 1.0  # (N, C, H, W) in [-1, 1]


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


def _zip_tensor(path: Path, image_size: int, channels: int, limits: Limits) -> torch.Tensor:
    """A zip of images as ``(N, channels, S, S)`` floats in [0, 1]."""
    arrays: list[np.ndarray] = []
    scan_zip(path, limits, lambda name, img: arrays.append(fit_image(img, image_size, channels)))
    stacked = np.stack(arrays).reshape(len(arrays), image_size, image_size, channels)  # (N, S, S, C)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (N, C, S, S)
