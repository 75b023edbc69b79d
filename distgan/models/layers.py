"""Layers behind the model options, shared by the architectures.

    x = pack(x, 2)                  # (B, C, H, W) -> (B/2, 2C, H, W): PacGAN
    h = MinibatchStd(4)(h)          # (N, C, H, W) -> (N, C+1, H, W)
    h = normalize(norm, h, y)       # BatchNorm2d, or ConditionalBatchNorm2d with labels y (B,)
    logit = head(h) + projection(h, embed, y)   # the projection discriminator
    spectral_normalize(D)           # every conv, linear and embedding of D

Plain PyTorch; none of them holds state beyond ordinary parameters and BatchNorm statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

Tensor = torch.Tensor


def pack(x: Tensor, m: int) -> Tensor:
    """PacGAN (Lin et al. 2018): m consecutive samples become one input of m× the channels.

    (B, C, ...) -> (B/m, m·C, ...). D's step concatenates [reals, fakes] with B a multiple of m
    (config checks it), so a pack never mixes real and fake samples.
    """
    if m == 1:
        return x
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


class MinibatchStd(nn.Module):
    """StyleGAN's minibatch standard deviation (Karras et al. 2018): one more feature per sample,
    the standard deviation of the features over its group, averaged over features and pixels.

    Groups are ``group`` consecutive samples (StyleGAN strides them instead): D's batch is
    [reals, fakes], each a multiple of the group (config checks it), so no group mixes the two.
    """

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]  # x: (N, C) or (N, C, H, W)
        g = min(self.group, n)
        if n % g:
            raise ValueError(f"minibatch std: a batch of {n} does not split into groups of {g}")
        y = x.float().reshape(n // g, g, *x.shape[1:])  # (N/g, g, C, ...)
        # The variance over the group by hand: torch's var over a middle dim takes a slow path
        # on CPU (15 ms a call for a DCGAN D's batch of 64, half the step).
        y = y - y.mean(dim=1, keepdim=True)
        y = (y.square().mean(dim=1) + 1e-8).sqrt()  # (N/g, C, ...)
        y = y.flatten(1).mean(1).to(x.dtype).repeat_interleave(g)  # (N,)
        y = y.view(n, 1, *[1] * (x.dim() - 2)).expand(n, 1, *x.shape[2:])  # (N, 1, ...)
        return torch.cat([x, y], dim=1)  # (N, C+1, ...)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a per-class gain and bias (de Vries et al. 2017;
    SNGAN's conditional G). Gains start at 1 and biases at 0: a plain BatchNorm at first."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        # x (B, C, H, W), y (B,) class indices
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


def batch_norm(channels: int, num_classes: int) -> nn.Module:
    """BatchNorm2d, or its conditional version when the model has classes."""
    if num_classes:
        return ConditionalBatchNorm2d(channels, num_classes)
    return nn.BatchNorm2d(channels)


def normalize(norm: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    return norm(x, y) if isinstance(norm, ConditionalBatchNorm2d) else norm(x)


class LabelSequential(nn.Sequential):
    """nn.Sequential (same parameter names) whose conditional BatchNorms also get the labels."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        for layer in self:
            x = normalize(layer, x, y)
        return x


def projection(h: Tensor, embed: nn.Embedding, y: Tensor) -> Tensor:
    """<embed(y), h> of the projection discriminator (Miyato & Koyama 2018), added to its logit.

    h (N, F) features of N inputs; y (N·m,) labels of the N·m samples when D packs m samples
    into an input: the embeddings of a pack's labels are summed. Returns (N,).
    """
    e = embed(y).view(h.shape[0], -1, h.shape[1]).sum(1)  # (N, F)
    return (e * h).sum(1)


def class_head(features: int, options) -> nn.Linear | None:
    """AC-GAN's auxiliary classifier (Odena et al. 2017): ``num_classes`` logits from D's
    ``features``, when ``options.classifier`` (``registry.ModelOptions``); else None.

    It reads one sample per input, so it refuses a packed D, and needs the data's classes.
    """
    if not options.classifier:
        return None
    if not options.num_classes:
        raise ValueError("AC-GAN's classifier head needs a conditional model (model.conditional)")
    if options.pack != 1:
        raise ValueError(
            f"AC-GAN's classifier head names one sample's class, and D packs {options.pack}"
        )
    return nn.Linear(features, options.num_classes)


def spectral_normalize(model: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv, linear and embedding weight.

    Each weight is divided by its largest singular value, estimated by one power iteration per
    forward in training mode. The iteration's vectors are buffers, drawn at construction and
    then updated from the weights alone: ranks that build D from one seed and keep equal weights
    (DDP) keep equal vectors with no broadcast.
    """
    for m in list(model.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)
    return model


def initialize(G: nn.Module, D: nn.Module, init, options) -> tuple[nn.Module, nn.Module]:
    """``init`` applied to every module of G and D, then spectral norm on D when the options
    (``registry.ModelOptions``) ask for it; returns (G, D)."""
    G.apply(init)
    D.apply(init)
    if options.spectral_norm:
        spectral_normalize(D)
    return G, D
