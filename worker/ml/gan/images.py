"""Image tensors → PNG bytes with Pillow (no torchvision): single images with text metadata, grids, and zips."""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` floats in [-1, 1] → ``(N, H, W, C)`` uint8 in [0, 255] (values outside are clipped)."""
    x = images.detach().float().cpu()
    x = ((x + 1.0) * 127.5).round_().clamp_(0.0, 255.0).to(torch.uint8)  # (N, C, H, W)
    return x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)


def png_bytes(pixels: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """Encode ``(H, W, 1|3)`` uint8 as PNG, with each ``text`` item as a tEXt chunk (deterministic bytes)."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(str(key), str(value))
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    img = Image.fromarray(np.ascontiguousarray(pixels.squeeze(-1) if mode == "L" else pixels), mode=mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def make_grid_png(
    images: torch.Tensor, nrow: int = 8, padding: int = 2, text: Mapping[str, str] | None = None
) -> bytes:
    """Tile ``(N, C, H, W)`` images in [-1, 1] into a PNG grid of ``nrow`` per row (like torchvision's make_grid)."""
    pixels = to_uint8(images)  # (N, H, W, C)
    n, h, w, c = pixels.shape
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return png_bytes(grid, text)


def zip_pngs(pngs: Sequence[bytes], names: Sequence[str], extra: Mapping[str, bytes] | None = None) -> bytes:
    """A zip (stored: PNGs are already compressed) of ``pngs`` under ``names`` and the ``extra`` files (such as a
    ``provenance.json``), with a fixed timestamp."""
    if len(pngs) != len(names):
        raise ValueError(f"{len(pngs)} images but {len(names)} names")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for data, name in [*zip(pngs, names, strict=True), *((v, k) for k, v in (extra or {}).items())]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()
