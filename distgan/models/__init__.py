"""Generator and discriminator architectures, registered by name.

    G, D = build_models("dcgan", z_dim=100, width=32, shape=(1, 28, 28))
    x = G(torch.randn(8, 100))   # (8, 1, 28, 28) in [-1, 1]
    logits = D(x)                # (8,)
    x = generate(G, z_dim=100, n=1000, seed=0)   # (1000, 1, 28, 28) in [-1, 1], batched

An architecture is a function ``(z_dim, width, shape) -> (G, D)`` registered with
``@register_model("name")``. It raises ``ValueError`` for a shape it cannot serve; the caller
turns that into a user-facing error naming the job field.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models import dcgan, mlp  # noqa: F401  (each registers its architecture)
from distgan.models.registry import MODELS


def build_models(
    arch: str, z_dim: int, width: int, shape: tuple[int, int, int]
) -> tuple[nn.Module, nn.Module]:
    """Builds (G, D) for images of ``shape`` = (C, H, W). ``width`` 0 means the arch's default."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[arch](z_dim, width, tuple(shape))


PROBE_SIDES = range(1, 257)  # the square image sides that ``square_sides`` tries


def square_sides(arch: str, channels: int) -> list[int] | None:
    """The square sides (of ``PROBE_SIDES``) of ``channels``-channel images that ``arch`` serves,
    found by building it at each one (on the meta device: no weights are allocated), so that a new
    architecture is covered by its own ``ValueError``. None when it serves every side tried."""
    sides = []
    for side in PROBE_SIDES:
        try:
            with torch.device("meta"):
                build_models(arch, 1, 8, (channels, side, side))
        except ValueError:
            continue
        sides.append(side)
    return None if len(sides) == len(PROBE_SIDES) else sides


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or any ``.module``) wrapper."""
    return getattr(model, "module", model)


@torch.no_grad()
def generate(G: nn.Module, z_dim: int, n: int, seed: int, batch: int = 500, device="cpu"):
    """``n`` samples (n, C, H, W) in [-1, 1] on the CPU; the same seed gives the same latents."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    return torch.cat([G(z[i : i + batch].to(device)).float().cpu() for i in range(0, n, batch)])
