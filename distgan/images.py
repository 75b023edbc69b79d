"""Image tensors to uint8 arrays and sample grids on disk.

save_grid(to_uint8(G(z)), "samples/step_000500.png")
save_grid(images, "per_class.png", nrow=8, row_names=["T-shirt/top", "Trouser", ...])
png(images[0].transpose(1, 2, 0))   # one image, no border
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, C, H, W) uint8."""
    x = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).cpu().numpy()


GRID_PAD = 2  # pixels between a grid's images and around them


def grid(images: np.ndarray, nrow: int | None = None, pad: int = GRID_PAD) -> np.ndarray:
    """(N, C, H, W) uint8 -> one (rows·(H+pad)+pad, cols·(W+pad)+pad, C) uint8 image."""
    n, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        out[y : y + h, x : x + w] = images[i].transpose(1, 2, 0)
    return out


def label_rows(g: np.ndarray, names: list[str], cell: int, pad: int = GRID_PAD) -> np.ndarray:
    """A grid image from ``grid`` (rows of ``cell``-pixel images) with a margin on its left that
    names each row: ``names[i]`` beside row i (a conditional grid has one row per class).
    Returns (H, margin + W, C) uint8."""
    font = label_font()
    width = max(int(font.getlength(name)) for name in names) + 2 * pad
    out = np.zeros((g.shape[0], width + g.shape[1], g.shape[2]), np.uint8)
    out[:, width:] = g
    image = Image.fromarray(out[:, :, 0] if g.shape[2] == 1 else out)
    draw = ImageDraw.Draw(image)
    white = 255 if g.shape[2] == 1 else (255, 255, 255)
    for i, name in enumerate(names):
        y = pad + i * (cell + pad) + cell // 2  # the row's middle
        draw.text((pad, y), name, fill=white, font=font, anchor="lm")
    labelled = np.asarray(image)
    return labelled[:, :, None] if labelled.ndim == 2 else labelled


def grid_png(
    images: np.ndarray, nrow: int | None = None, row_names: list[str] | None = None
) -> bytes:
    """The PNG bytes of a grid of (N, C, H, W) uint8 images; ``row_names`` labels its rows
    (``label_rows``), e.g. with ``data.class_name``."""
    g = grid(images, nrow)
    if row_names:
        g = label_rows(g, row_names, images.shape[2])
    return png(g)


def png(image: np.ndarray) -> bytes:
    """The PNG bytes of one (H, W, C) uint8 image, C = 1 (grey) or 3 (RGB)."""
    mode = "L" if image.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if mode == "L" else image, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(
    images: np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    row_names: list[str] | None = None,
) -> Path:
    """Writes a PNG grid of (N, C, H, W) uint8 images (written to a temporary name, renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(grid_png(images, nrow, row_names))
    tmp.replace(path)
    return path


def label_font(size: int = 11) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, which matplotlib ships: it has the accented letters and many symbols of
    class names (``étoiles rouges ★``) that Pillow's default font draws as boxes."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)
