"""Image tensors to uint8 arrays and sample grids on disk.

save_grid(to_uint8(G(z)), "samples/step_000500.png")
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, C, H, W) uint8."""
    x = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).cpu().numpy()


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) uint8 -> one (rows·(H+pad)+pad, cols·(W+pad)+pad, C) uint8 image."""
    n, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        out[y : y + h, x : x + w] = images[i].transpose(1, 2, 0)
    return out


def grid_png(images: np.ndarray, nrow: int | None = None) -> bytes:
    """The PNG bytes of a grid of (N, C, H, W) uint8 images."""
    g = grid(images, nrow)
    mode = "L" if g.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(g[:, :, 0] if mode == "L" else g, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None) -> Path:
    """Writes a PNG grid of (N, C, H, W) uint8 images (written to a temporary name, renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(grid_png(images, nrow))
    tmp.replace(path)
    return path
