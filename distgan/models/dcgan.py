"""DCGAN (Radford et al. 2016) for 28×28, 32×32, 64×64, 128×128 and 256×256 images, 1 or 3
channels.

G: z -> linear to (8w or 4w, 4×4 or 7×7) -> [ConvTranspose 4/2/1, BatchNorm, ReLU] ... -> tanh.
D: [Conv 4/2/1, LeakyReLU(0.2)] ... -> linear to one logit. D has no BatchNorm: its statistics
would mix real and fake batches and trip DDP's buffer broadcast (see DESIGN.md).
``width`` is the base channel count w (default 64). Channels halve at each 2× upsampling of G
(and double at each of D's halvings) from at most ``MAX_MULTIPLE`` w: the paper's 64×64 layout
(8w at 4×4) stays as it is, and 128 and 256 pixels add layers of 8w rather than 16w and 32w.

Options (``ModelOptions``): spectral norm, minibatch std (before D's head), packing (D's first
conv reads m× the channels), classes (G's BatchNorms conditional, D a projection head) and
AC-GAN's classifier head on D.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models.layers import (
    LabelSequential,
    MinibatchStd,
    batch_norm,
    class_head,
    initialize,
    pack,
    projection,
)
from distgan.models.registry import ModelOptions, register_model

# resolution -> (size of the first feature map, number of 2× upsamplings)
_LAYOUT = {28: (7, 2), 32: (4, 3), 64: (4, 4), 128: (4, 5), 256: (4, 6)}
MAX_MULTIPLE = 8  # the most channels of a layer, in units of the width w


def _layout(shape: tuple[int, int, int]) -> tuple[int, int]:
    c, h, w = shape
    if h != w or h not in _LAYOUT or c not in (1, 3):
        raise ValueError(
            "dcgan serves 28×28, 32×32, 64×64, 128×128 or 256×256 images with 1 or 3 channels, "
            f"not {c}×{h}×{w}"
        )
    return _LAYOUT[h]


def _channels(width: int, ups: int) -> list[int]:
    """Channels of G's feature maps, from the first (smallest) to the last: (ups,)."""
    return [width * min(MAX_MULTIPLE, 2 ** (ups - 1 - i)) for i in range(ups)]


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        start, ups = _layout(shape)
        chs = _channels(width, ups)
        ch = chs[0]
        self.start = (ch, start, start)
        self.num_classes = num_classes
        self.project = LabelSequential(
            nn.Linear(z_dim, ch * start * start, bias=False),
            nn.Unflatten(1, self.start),
            batch_norm(ch, num_classes),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        for ch_in, ch in zip(chs, chs[1:]):
            blocks += [
                nn.ConvTranspose2d(ch_in, ch, 4, 2, 1, bias=False),
                batch_norm(ch, num_classes),
                nn.ReLU(inplace=True),
            ]
        blocks += [nn.ConvTranspose2d(ch, shape[0], 4, 2, 1), nn.Tanh()]
        self.body = LabelSequential(*blocks)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(self.project(z, y), y)  # (B, z), labels (B,) -> (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int, shape: tuple[int, int, int], options: ModelOptions):
        super().__init__()
        start, ups = _layout(shape)
        layers: list[nn.Module] = []
        ch_in = shape[0] * options.pack
        for ch in reversed(_channels(width, ups)):  # G's in mirror: w, 2w, ... up to 8w
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            ch_in = ch
        self.pack = options.pack
        self.features = nn.Sequential(*layers)  # (B, C, H, W) -> (B, ch_in, start, start)
        self.mbstd = MinibatchStd(options.mbstd_group) if options.mbstd_group else None
        features = (ch_in + (self.mbstd is not None)) * start * start
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(options.num_classes, features) if options.num_classes else None
        self.classify = class_head(features, options)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, classes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B/m,); with ``classes`` (AC-GAN's head) also class logits (B, K)."""
        h = self.features(pack(x, self.pack))  # (B/m, ch, start, start)
        if self.mbstd is not None:
            h = self.mbstd(h)  # (B/m, ch+1, start, start)
        h = h.flatten(1)
        logits = self.head(h).squeeze(1)  # (B/m,)
        if self.embed is not None:
            logits = logits + projection(h, self.embed, y)
        return (logits, self.classify(h)) if classes else logits


def _init_weights(m: nn.Module) -> None:
    # DCGAN's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@register_model("dcgan")
def build(
    z_dim: int, width: int, shape: tuple[int, int, int], options: ModelOptions
) -> tuple[nn.Module, nn.Module]:
    if options.output != "tanh":
        raise ValueError(f"dcgan's G ends in tanh; output {options.output!r} is served by mlp")
    width = width or 64
    G = DCGANGenerator(z_dim, width, shape, options.num_classes)
    D = DCGANDiscriminator(width, shape, options)
    return initialize(G, D, _init_weights, options)
