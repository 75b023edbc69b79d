"""The ResNet GAN of SNGAN (Miyato et al. 2018), built of Gulrajani et al.'s (2017) residual
blocks, for 28, 32, 64, 128 and 256 pixels, 1 or 3 channels.

G: z -> linear to (c0, 4×4; 7×7 for 28) -> up-blocks -> BatchNorm, ReLU, conv 3×3, tanh.
   up-block: [BN, ReLU, upsample 2×, conv 3×3, BN, ReLU, conv 3×3] + [upsample 2×, conv 1×1]
D: optimized block -> blocks -> ReLU -> sum over H, W -> linear to one logit.
   optimized block: [conv 3×3, ReLU, conv 3×3, avgpool 2] + [avgpool 2, conv 1×1]
   block: [ReLU, conv 3×3, ReLU, conv 3×3, (avgpool 2)] + [(conv 1×1), (avgpool 2)]
D has no BatchNorm (see DESIGN.md).

Channels follow SNGAN's configurations, with w = ``width``: at 28 and 32 pixels G has 2w
channels throughout and D w (CIFAR-10: w = 128, the default); at 64, 128 and 256 pixels they
grow and shrink by powers of 2 from 16w, never past it (ImageNet: w = 64, the default; at 256
pixels w = 32, BigGAN's 256 layout at half its width: its 1,024 channels at 4×4 are GPU-sized).

Options (``ModelOptions``): spectral norm (SNGAN's D has it: set ``model.spectral_norm: true``),
minibatch std (before D's last block), packing (D's first conv reads m× the channels),
classes (G's block BatchNorms conditional, D a projection head) and AC-GAN's classifier head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distgan.models.layers import (
    MinibatchStd,
    batch_norm,
    class_head,
    initialize,
    normalize,
    pack,
    projection,
)
from distgan.models.registry import ModelOptions, register_model

Tensor = torch.Tensor

# resolution -> (side of G's first feature map, G's channels per stage in units of w,
#                D's blocks as (channels in units of w, halves the resolution))
_LAYOUT = {
    28: (7, (2, 2, 2), ((1, True), (1, True), (1, False), (1, False))),
    32: (4, (2, 2, 2, 2), ((1, True), (1, True), (1, False), (1, False))),
    64: (4, (16, 8, 4, 2, 1), ((1, True), (2, True), (4, True), (8, True), (16, True))),
    128: (
        4,
        (16, 16, 8, 4, 2, 1),
        ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False)),
    ),
    256: (
        4,
        (16, 16, 8, 8, 4, 2, 1),
        ((1, True), (2, True), (4, True), (8, True), (8, True), (16, True), (16, False)),
    ),
}
_DEFAULT_WIDTH = {28: 128, 32: 128, 64: 64, 128: 64, 256: 32}


def _layout(shape: tuple[int, int, int]):
    c, h, w = shape
    if h != w or h not in _LAYOUT or c not in (1, 3):
        raise ValueError(
            "resnet serves 28×28, 32×32, 64×64, 128×128 or 256×256 images with 1 or 3 "
            "channels, "
            f"not {c}×{h}×{w}"
        )
    return _LAYOUT[h]


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, 1, 1)


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.norm1, self.conv1 = batch_norm(c_in, num_classes), _conv3(c_in, c_out)
        self.norm2, self.conv2 = batch_norm(c_out, num_classes), _conv3(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = F.relu(normalize(self.norm1, x, y))  # (B, c_in, s, s)
        h = self.conv1(F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, c_out, 2s, 2s)
        h = self.conv2(F.relu(normalize(self.norm2, h, y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False):
        super().__init__()
        self.conv1, self.conv2 = _conv3(c_in, c_out), _conv3(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if first or down or c_in != c_out else None
        self.down, self.first = down, first

    def forward(self, x: Tensor) -> Tensor:
        # The first block sees pixels: no ReLU before its conv, and its shortcut pools first
        # (SNGAN's "optimized" block, cheaper at full resolution).
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.down:
            h = F.avg_pool2d(h, 2)  # (B, c_out, s/2, s/2)
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        s = x if self.shortcut is None else self.shortcut(x)
        return h + (F.avg_pool2d(s, 2) if self.down else s)


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        start, stages, _ = _layout(shape)
        chs = [m * width for m in stages]
        self.start = (chs[0], start, start)
        self.num_classes = num_classes
        self.project = nn.Linear(z_dim, chs[0] * start * start)
        self.blocks = nn.ModuleList(GBlock(a, b, num_classes) for a, b in zip(chs, chs[1:]))
        # SNGAN's last BatchNorm is unconditional in its conditional G too.
        self.out = nn.Sequential(
            nn.BatchNorm2d(chs[-1]), nn.ReLU(), _conv3(chs[-1], shape[0]), nn.Tanh()
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.project(z).view(-1, *self.start)  # (B, c0, start, start)
        for block in self.blocks:
            h = block(h, y)  # resolution × 2 each
        return self.out(h)  # (B, C, H, W)


class ResNetDiscriminator(nn.Module):
    def __init__(self, width: int, shape: tuple[int, int, int], options: ModelOptions):
        super().__init__()
        _, _, layout = _layout(shape)
        self.pack = options.pack
        c_in = shape[0] * options.pack
        blocks = []
        for i, (m, down) in enumerate(layout):
            last = i == len(layout) - 1
            extra = 1 if last and options.mbstd_group else 0  # the std feature, before the last
            blocks.append(DBlock(c_in + extra, m * width, down, first=i == 0))
            c_in = m * width
        self.blocks = nn.ModuleList(blocks)
        self.mbstd = MinibatchStd(options.mbstd_group) if options.mbstd_group else None
        self.head = nn.Linear(c_in, 1)
        self.embed = nn.Embedding(options.num_classes, c_in) if options.num_classes else None
        self.classify = class_head(c_in, options)

    def forward(
        self, x: Tensor, y: Tensor | None = None, classes: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B/m,); with ``classes`` (AC-GAN's head) also class logits (B, K)."""
        h = pack(x, self.pack)  # (B/m, m*C, H, W)
        for i, block in enumerate(self.blocks):
            if self.mbstd is not None and i == len(self.blocks) - 1:
                h = self.mbstd(h)  # (B/m, c+1, s, s)
            h = block(h)
        h = F.relu(h).sum(dim=(2, 3))  # (B/m, c): global sum pooling
        logits = self.head(h).squeeze(1)  # (B/m,)
        if self.embed is not None:
            logits = logits + projection(h, self.embed, y)
        return (logits, self.classify(h)) if classes else logits


def _init_weights(m: nn.Module) -> None:
    # SNGAN's initialisation: Xavier-uniform, gain √2 for the 3×3 convs inside residual blocks
    # (they are followed by ReLUs), gain 1 for shortcuts, G's output conv and linear layers.
    if isinstance(m, (GBlock, DBlock)):
        for conv in (m.conv1, m.conv2):
            nn.init.xavier_uniform_(conv.weight, math.sqrt(2))
            nn.init.zeros_(conv.bias)
        if m.shortcut is not None:
            nn.init.xavier_uniform_(m.shortcut.weight)
            nn.init.zeros_(m.shortcut.bias)
    elif isinstance(m, (ResNetGenerator, ResNetDiscriminator)):
        for layer in m.children():
            if isinstance(layer, (nn.Linear, nn.Embedding)):
                nn.init.xavier_uniform_(layer.weight)
                if getattr(layer, "bias", None) is not None:
                    nn.init.zeros_(layer.bias)
        if isinstance(m, ResNetGenerator):
            nn.init.xavier_uniform_(m.out[2].weight)
            nn.init.zeros_(m.out[2].bias)


@register_model("resnet")
def build(
    z_dim: int, width: int, shape: tuple[int, int, int], options: ModelOptions
) -> tuple[nn.Module, nn.Module]:
    if options.output != "tanh":
        raise ValueError(f"resnet's G ends in tanh; output {options.output!r} is served by mlp")
    _layout(shape)
    width = width or _DEFAULT_WIDTH[shape[1]]
    G = ResNetGenerator(z_dim, width, shape, options.num_classes)
    D = ResNetDiscriminator(width, shape, options)
    return initialize(G, D, _init_weights, options)
