"""Mode coverage, the GAN literature's stability test: how many modes of a known mixture G hits.

    score = score_modes(G(torch.randn(2500, 64)), SOURCES["grid25"])   # G from train/synthetic.py
    # {"modes": 25, "modes_total": 25, "high_quality": 0.93, "reverse_kl": 0.02}

    stacked, mode_ids = stacked_dataset(images, labels, 60_000, generator)  # 1,000 modes
    count_stacked_modes(fakes, classify)  # {"modes": 987, "modes_total": 1000, "reverse_kl": ...}

Two protocols:

- 2-D mixtures (Metz et al. 2017, unrolled GANs; Srivastava et al. 2017, VEEGAN): 8 Gaussians
  on a circle and 25 on a grid. A sample is "high quality" when it lies within 3σ of its nearest
  centre; a mode is covered when it holds at least 20 high-quality samples per 2,500 drawn.
- Stacked MNIST (Metz et al. 2017), here on Fashion-MNIST: three random images stacked as the
  channels of one, so 10³ = 1,000 modes; a classifier labels each channel of G's samples.

The literature's mixtures live in [-4, 4]²; G ends in tanh, so ours are scaled into [-0.8, 0.8]²
with the ratio σ / distance between neighbouring centres kept, since that ratio (not the scale)
is what makes the test hard.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

HIGH_QUALITY_SIGMAS = 3.0  # a sample within 3σ of its nearest centre is "high quality"
# Srivastava et al. 2017: a mode counts as covered with ≥ 20 high-quality samples of 2,500.
COVERED_PER_2500 = 20
STACKED_MODES = 1000


@dataclass(frozen=True)
class SyntheticModes:
    """An equal-weight mixture of isotropic 2-D Gaussians: ``centers`` (M, 2), std ``sigma``."""

    name: str
    centers: Tensor  # (M, 2)
    sigma: float

    @property
    def n_modes(self) -> int:
        return self.centers.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points (n, 2, 1, 1): a uniformly drawn centre plus N(0, σ²I) noise.

        The (2, 1, 1) shape is an image of 2 channels, 1×1 pixels, as the mlp arch takes it.
        """
        which = torch.randint(self.n_modes, (n,), generator=generator)  # (n,)
        noise = torch.randn(n, 2, generator=generator) * self.sigma  # (n, 2)
        return (self.centers[which] + noise).view(n, 2, 1, 1)


def _ring8() -> SyntheticModes:
    # Literature: radius 2, σ 0.02, so σ / radius = 0.01. Scaled by 0.4: radius 0.8, σ 0.008.
    angles = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    centers = 0.8 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (8, 2)
    return SyntheticModes("ring8", centers, sigma=0.008)


def _grid25() -> SyntheticModes:
    # Literature: centres at {-4, -2, 0, 2, 4}², σ 0.05, so σ / spacing = 0.025. Scaled by 0.2:
    # centres at {-0.8, -0.4, 0, 0.4, 0.8}², σ 0.01.
    axis = torch.linspace(-0.8, 0.8, 5)
    centers = torch.cartesian_prod(axis, axis)  # (25, 2)
    return SyntheticModes("grid25", centers, sigma=0.01)


SOURCES: dict[str, SyntheticModes] = {"ring8": _ring8(), "grid25": _grid25()}
ring8 = SOURCES["ring8"].sample
grid25 = SOURCES["grid25"].sample


def min_covered_count(n: int) -> int:
    """High-quality samples a mode needs to count as covered among ``n``: 20 per 2,500, ≥ 1."""
    return max(1, math.ceil(COVERED_PER_2500 * n / 2500))


def reverse_kl_uniform(counts: Tensor) -> float:
    """KL(p_gen ‖ uniform) in nats, p_gen the normalised histogram ``counts`` (M,).

    No smoothing is needed in this direction: the uniform p_data is positive on every mode and
    an empty mode adds 0·log 0 = 0. NaN when the histogram is empty, where p_gen is undefined.
    """
    total = counts.sum()
    if total == 0:
        return math.nan
    p = counts.double() / total  # (M,)
    return float(torch.special.xlogy(p, p * counts.numel()).sum())


def score_modes(samples: Tensor, source: SyntheticModes, min_count: int | None = None) -> dict:
    """Scores 2-D ``samples`` (N, 2) or (N, 2, 1, 1) against the mixture ``source``.

    Each sample goes to its nearest centre and is high quality within 3σ of it. A mode is
    covered with ≥ ``min_count`` high-quality samples (default ``min_covered_count(N)``).
    Returns {"modes": covered modes, "modes_total": M, "high_quality": share of the N samples,
    "reverse_kl": KL(p_gen ‖ uniform) over the modes of the high-quality samples (NaN if none)}.
    """
    x = samples.detach().flatten(1).float()  # (N, 2)
    n = x.shape[0]
    min_count = min_covered_count(n) if min_count is None else min_count
    dist = torch.cdist(x, source.centers)  # (N, M)
    nearest_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    good = nearest_dist <= HIGH_QUALITY_SIGMAS * source.sigma  # (N,)
    counts = torch.bincount(nearest[good], minlength=source.n_modes)  # (M,)
    return {
        "modes": int((counts >= min_count).sum()),
        "modes_total": source.n_modes,
        "high_quality": float(good.sum()) / n,
        "reverse_kl": reverse_kl_uniform(counts),
    }


def stacked_dataset(
    images: Tensor, labels: Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Stacked images with 1,000 modes from a 10-class grayscale set.

    ``images`` (N, 1, 28, 28) uint8 and ``labels`` (N,) in 0..9 (tensors or numpy arrays).
    Each of the ``n`` samples takes three images drawn independently (with replacement) as its
    three channels. Returns (stacked (n, 3, 28, 28) uint8, mode ids (n,) = 100·l0 + 10·l1 + l2).
    """
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    idx = torch.randint(images.shape[0], (n, 3), generator=generator)  # (n, 3)
    stacked = images[idx.flatten(), 0].view(n, 3, *images.shape[2:])  # (n, 3, 28, 28)
    l0, l1, l2 = labels[idx].long().unbind(1)  # (n,) each
    return stacked, 100 * l0 + 10 * l1 + l2


@torch.no_grad()
def count_stacked_modes(
    samples: Tensor, classify: Callable[[Tensor], Tensor], batch: int = 1000
) -> dict:
    """Counts the modes of stacked samples (N, 3, 28, 28) float in [-1, 1].

    ``classify(x)`` takes single-channel images (B, 1, 28, 28) in [-1, 1] and returns class
    labels (B,) in 0..9; each channel is labelled on its own, ``batch`` images at a time.
    Returns {"modes": distinct mode ids seen, "modes_total": 1000,
    "reverse_kl": KL(p_gen ‖ uniform over 1000) over the histogram of mode ids}.
    """
    ids = []
    for chunk in samples.split(batch):
        c = chunk.shape[0]
        per_channel = chunk.reshape(c * 3, 1, *chunk.shape[2:])  # (3c, 1, 28, 28), c-major
        lab = torch.as_tensor(classify(per_channel)).long().view(c, 3)  # (c, 3)
        ids.append(100 * lab[:, 0] + 10 * lab[:, 1] + lab[:, 2])
    counts = torch.bincount(torch.cat(ids), minlength=STACKED_MODES)  # (1000,)
    return {
        "modes": int((counts > 0).sum()),
        "modes_total": STACKED_MODES,
        "reverse_kl": reverse_kl_uniform(counts),
    }
