"""A G and D of your own: `model.arch: "mymodels:tiny"` in a job beside this file.

The builder tiny(z_dim, width, shape, options) returns the (G, D) that distgan trains. G(z, y=None)
gives images (B, C, H, W) in [-1, 1]; D(x, y=None) gives one logit per image, (B,).
"""

from torch import nn


class Generator(nn.Module):
    def __init__(self, z_dim, width, shape):
        super().__init__()
        c, h, w = shape
        self.num_classes = 0  # every G says how many classes it draws (0: unconditional)
        self.net = nn.Sequential(
            nn.Linear(z_dim, 2 * width * (h // 4) * (w // 4)),
            nn.Unflatten(1, (2 * width, h // 4, w // 4)),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # H/2 × W/2
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),  # H × W
            nn.Tanh(),
        )

    def forward(self, z, y=None):
        return self.net(z)  # (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(self, width, shape):
        super().__init__()
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1),  # H/2 × W/2
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # H/4 × W/4
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), 1),
        )

    def forward(self, x, y=None):
        return self.net(x).flatten()  # (B,) logits


def tiny(z_dim, width, shape, options):
    # A ValueError says what the builder does not serve; distgan shows it as the job's error.
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"tiny needs image sides that are multiples of 4, not {shape}")
    if options.num_classes or options.pack > 1 or options.mbstd_group or options.spectral_norm:
        raise ValueError("tiny serves the plain model: no classes, pack, mbstd or spectral norm")
    width = width or 32
    return Generator(z_dim, width, shape), Discriminator(width, shape)
