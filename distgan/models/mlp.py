"""The reference MLP GAN (Goodfellow et al. 2014 style, as in most tutorials).

G: z (100) -> 128 -> 256 -> 512 -> C*H*W, LeakyReLU(0.2), tanh output.
D: C*H*W -> 512 -> 256 -> 128 -> 1, LeakyReLU(0.2), raw logits out.
``width`` scales the first hidden layer of G (and the last of D); the default is 128.

Options (``ModelOptions``): a linear output (``output: linear``, for 2-D mixtures whose modes lie
outside [-1, 1]), spectral norm, packing (D's input is m samples side by side) and minibatch std
(before D's last layer). No classes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.models.layers import MinibatchStd, pack, spectral_normalize
from distgan.models.registry import ModelOptions, register_model


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, shape: tuple[int, int, int], output: str = "tanh"):
        super().__init__()
        self.shape = shape
        self.num_classes = 0
        self.squash = output == "tanh"
        self.net = nn.Sequential(*_mlp([z_dim, width, 2 * width, 4 * width, math.prod(shape)]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z)  # (B, C*H*W)
        if self.squash:
            x = torch.tanh(x)
        return x.view(-1, *self.shape)  # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, shape: tuple[int, int, int], options: ModelOptions):
        super().__init__()
        self.pack = options.pack
        self.mbstd = MinibatchStd(options.mbstd_group) if options.mbstd_group else None
        sizes = [options.pack * math.prod(shape), 4 * width, 2 * width, width]
        head = nn.Linear(width + (self.mbstd is not None), 1)
        self.net = nn.Sequential(*_mlp(sizes), nn.LeakyReLU(0.2, inplace=True), head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = pack(x, self.pack).flatten(1)  # (B/m, m*C*H*W)
        if self.mbstd is None:
            return self.net(h).squeeze(1)  # (B/m,)
        return self.net[-1](self.mbstd(self.net[:-1](h))).squeeze(1)


@register_model("mlp")
def build(
    z_dim: int, width: int, shape: tuple[int, int, int], options: ModelOptions
) -> tuple[nn.Module, nn.Module]:
    if options.num_classes:
        raise ValueError("mlp has no conditional version; use dcgan or resnet")
    width = width or 128
    G = MLPGenerator(z_dim, width, shape, options.output)  # G first: the same seed, the same G
    D = MLPDiscriminator(width, shape, options)
    if options.spectral_norm:
        spectral_normalize(D)
    return G, D
