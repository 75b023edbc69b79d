"""The second judge's architecture: a feature network built unlike ``features.FeatureNet``.

    net = StridedNet((1, 28, 28), num_classes=10)
    features, logits = net(images)  # (N, 64), (N, 10); images (N, 1, 28, 28) in [-1, 1]

A generator can learn the quirks of the network that scores it (through AC-GAN's head, or through
the choices made by looking at its figures). A second network judges apart only if it shares
as little as possible with the first, so where FeatureNet has 3×3 convolutions, BatchNorm, ReLU,
max pooling and a global average pool into 128 features, this one has 5×5 strided convolutions,
no normalization, GELU, and a flattened map (it sees where things are) into 64 features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class StridedNet(nn.Module):
    """Three stride-2 convolutions (24, 48, 96 channels; GELU), flattened, a 64-d linear feature
    layer, then GELU and the linear classifier. The flattened map ties it to the image size it
    was built for (``in_shape``). The features are the feature layer's output before the GELU,
    as FeatureNet's are taken before its ReLU: no dimension is dead, the values closer to
    Gaussian, as FID assumes."""

    dim = 64

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, height, width = in_shape
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 24, 5, stride=2, padding=2),  # (N, 24, H/2, W/2)
            nn.GELU(),
            nn.Conv2d(24, 48, 5, stride=2, padding=2),  # (N, 48, H/4, W/4)
            nn.GELU(),
            nn.Conv2d(48, 96, 3, stride=2, padding=1),  # (N, 96, H/8, W/8), rounded up
            nn.GELU(),
            nn.Flatten(),
        )
        cells = math.ceil(height / 8) * math.ceil(width / 8)  # 4×4 for 28 px
        self.feature = nn.Linear(96 * cells, self.dim)
        self.classifier = nn.Linear(self.dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) in [-1, 1] -> (features (N, 64), logits (N, K))."""
        features = self.feature(self.trunk(x))
        return features, self.classifier(nn.functional.gelu(features))
