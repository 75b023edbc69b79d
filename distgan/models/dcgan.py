"""DCGAN (Radford et al. 2016) for 28×28, 32×32 and 64×64 images, 1 or 3 channels.

G: z -> linear to (8w or 4w, 4×4 or 7×7) -> [ConvTranspose 4/2/1, BatchNorm, ReLU] ... -> tanh.
D: [Conv 4/2/1, LeakyReLU(0.2)] ... -> linear to one logit. D has no BatchNorm: its statistics
would mix real and fake batches and trip DDP's buffer broadcast (see DESIGN.md).
``width`` is the base channel count w (default 64).
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.registry import register_model

# resolution -> (size of the first feature map, number of 2× upsamplings)
_LAYOUT = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _layout(shape: tuple[int, int, int]) -> tuple[int, int]:
    c, h, w = shape
    if h != w or h not in _LAYOUT or c not in (1, 3):
        raise ValueError(
            f"dcgan serves 28×28, 32×32 or 64×64 images with 1 or 3 channels, not {c}×{h}×{w}"
        )
    return _LAYOUT[h]


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, shape: tuple[int, int, int]):
        super().__init__()
        start, ups = _layout(shape)
        ch = width * 2 ** (ups - 1)  # channels of the first feature map
        self.start = (ch, start, start)
        self.project = nn.Sequential(
            nn.Linear(z_dim, ch * start * start, bias=False),
            nn.Unflatten(1, self.start),
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        for _ in range(ups - 1):
            blocks += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        blocks += [nn.ConvTranspose2d(ch, shape[0], 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z))  # (B, z) -> (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int, shape: tuple[int, int, int]):
        super().__init__()
        start, ups = _layout(shape)
        layers: list[nn.Module] = []
        ch_in, ch = shape[0], width
        for _ in range(ups):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            ch_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers)  # (B, C, H, W) -> (B, ch_in, start, start)
        self.head = nn.Linear(ch_in * start * start, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)  # (B,)


def _init_weights(m: nn.Module) -> None:
    # DCGAN's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@register_model("dcgan")
def build(z_dim: int, width: int, shape: tuple[int, int, int]) -> tuple[nn.Module, nn.Module]:
    width = width or 64
    G, D = DCGANGenerator(z_dim, width, shape), DCGANDiscriminator(width, shape)
    G.apply(_init_weights)
    D.apply(_init_weights)
    return G, D
