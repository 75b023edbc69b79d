"""The reference MLP GAN (Goodfellow et al. 2014 style, as in most tutorials).

G: z (100) -> 128 -> 256 -> 512 -> C*H*W, LeakyReLU(0.2), tanh output.
D: C*H*W -> 512 -> 256 -> 128 -> 1, LeakyReLU(0.2), raw logits out.
``width`` scales the first hidden layer of G (and the last of D); the default is 128.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.models.registry import register_model


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = shape
        self.net = nn.Sequential(*_mlp([z_dim, width, 2 * width, 4 * width, math.prod(shape)]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.net(z))  # (B, C*H*W)
        return x.view(-1, *self.shape)  # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, shape: tuple[int, int, int]):
        super().__init__()
        self.net = nn.Sequential(*_mlp([math.prod(shape), 4 * width, 2 * width, width, 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)  # (B,)


@register_model("mlp")
def build(z_dim: int, width: int, shape: tuple[int, int, int]) -> tuple[nn.Module, nn.Module]:
    width = width or 128
    return MLPGenerator(z_dim, width, shape), MLPDiscriminator(width, shape)
