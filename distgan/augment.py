"""DiffAugment (Zhao et al. 2020): differentiable augmentations of everything D sees.

    x = diff_augment(x, ("color", "translation", "cutout"))   # (B, C, H, W) -> (B, C, H, W)

A GAN's D overfits a small dataset; augmenting only the reals would teach G the augmented
distribution. DiffAugment applies the same policy to reals and fakes, in D's step and in G's,
and keeps every operation differentiable so that G's gradient flows through it. Each sample gets
its own random draw. The operations are those of the authors' PyTorch code:

- color: brightness + U(-0.5, 0.5), saturation × U(0, 2), contrast × U(0.5, 1.5)
- translation: shift by up to 1/8 of the side, in whole pixels, the vacated border zero
- cutout: a square of half the side set to zero, at a random centre

Plain PyTorch: the step (``distgan.step``) calls it, config names the policy
(``train.diffaugment: "color,translation,cutout"``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _uniform(x: Tensor) -> Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)  # (B, 1, 1, 1)


def brightness(x: Tensor) -> Tensor:
    return x + (_uniform(x) - 0.5)


def saturation(x: Tensor) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W): the grey level of each pixel
    return (x - mean) * (_uniform(x) * 2) + mean


def contrast(x: Tensor) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def _grid(x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Index grids (B, h, w) of sample, row and column."""
    return torch.meshgrid(
        torch.arange(x.shape[0], device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    B, _, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (B, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (B, 1, 1), device=x.device)
    b, i, j = _grid(x, H, W)
    # Indices into the image padded by one zero pixel: anything shifted in from outside reads it.
    i = (i + dy + 1).clamp(0, H + 1)
    j = (j + dx + 1).clamp(0, W + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    return padded[b, i, j].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = torch.randint(0, H + (1 - ch % 2), (B, 1, 1), device=x.device)
    cx = torch.randint(0, W + (1 - cw % 2), (B, 1, 1), device=x.device)
    b, i, j = _grid(x, ch, cw)
    i = (i + cy - ch // 2).clamp(0, H - 1)
    j = (j + cx - cw // 2).clamp(0, W - 1)
    mask = torch.ones(B, H, W, dtype=x.dtype, device=x.device)
    mask[b, i, j] = 0
    return x * mask.unsqueeze(1)


AUGMENTATIONS: dict[str, tuple[Callable[[Tensor], Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color, translation"`` -> ``("color", "translation")``; ``""`` -> ``()`` (no
    augmentation). ValueError for an unknown name (config checks job files before this)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown DiffAugment {unknown[0]!r}; known: {', '.join(AUGMENTATIONS)}")
    return names


def diff_augment(x: Tensor, policy: tuple[str, ...]) -> Tensor:
    """``x`` (B, C, H, W) through each augmentation of ``policy``, in order."""
    for name in policy:
        for op in AUGMENTATIONS[name]:
            x = op(x)
    return x
