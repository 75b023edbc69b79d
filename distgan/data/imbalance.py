"""Imbalanced data: long-tailed subsets (the CIFAR-10-LT protocol) and class-balanced sampling.

    keep = long_tail_rows(labels, ratio=100, seed=0)       # rows (M,) to keep, sorted
    long_tail_counts({0: 6000, 1: 6000, 2: 6000}, 100)      # {0: 6000, 1: 600, 2: 60}
    prior = class_prior(manifest_counts, "balanced")        # (K,) the class of each real draw
    weights = sample_weights(labels, prior)                 # (N,) a row's chance to be drawn

The long-tail protocol (Cao et al. 2019, LDAM; the CIFAR-10-LT of the class-balanced GAN
papers): with the K classes sorted by label (k = 0..K-1) and an imbalance ratio R ≥ 1 (largest
class / smallest), class k keeps ``floor(n_k · R^(-k/(K-1)))`` of its n_k images: class 0 keeps
all, class K-1 keeps 1/R. Which images of a class are kept is a choice seeded by ``seed``.

Class balance (``train.class_balance``) is the distribution real batches draw classes from:
``none`` the data's own frequencies, ``balanced`` every class equally often, ``sqrt`` in
proportion to the square root of each class's count. A conditional G's fake labels are drawn
from the same prior, so D sees reals and fakes of each class equally often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CLASS_BALANCES = ("none", "balanced", "sqrt")  # specs.py's choices (kept in sync by a test)
RARE_SHARE = 1 / 3  # the rare classes: this share of the classes (rounded up), fewest images


def long_tail_counts(counts: dict[int, int], ratio: float) -> dict[int, int]:
    """Images each class keeps under the long-tail protocol: class at sorted position k of K
    keeps ``floor(counts[label] · ratio^(-k/(K-1)))`` (at least 1). ``counts``: label -> images."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"the imbalance ratio must be a number ≥ 1, got {ratio!r}")
    labels = sorted(counts)
    last = max(len(labels) - 1, 1)
    return {
        label: max(1, math.floor(counts[label] * ratio ** (-k / last) + 1e-9))
        for k, label in enumerate(labels)
    }


def long_tail_rows(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """The rows (M,) of ``labels`` (N,) that a long-tailed subset keeps, in their order: for each
    class its ``long_tail_counts`` share, chosen at random by ``seed``. The same seed keeps the
    same rows; another seed keeps other rows, in the same counts."""
    values, counts = np.unique(labels, return_counts=True)
    keep = long_tail_counts(dict(zip(values.tolist(), counts.tolist(), strict=True)), ratio)
    rng = np.random.default_rng(seed)
    rows = [
        rng.choice(np.flatnonzero(labels == label), keep[label], replace=False)
        for label in values.tolist()  # in label order, so a class's draw depends only on the seed
    ]
    return np.sort(np.concatenate(rows))


def class_prior(counts: dict[int, int] | np.ndarray, balance: str) -> np.ndarray:
    """The class distribution (K,) float64 that real batches draw from under ``balance``, for
    ``counts`` (label -> images, or an array (K,) indexed by label). K is the largest label + 1;
    a label without images gets probability 0."""
    if isinstance(counts, dict):
        array = np.zeros(max(counts) + 1 if counts else 0)
        for label, n in counts.items():
            array[label] = n
        counts = array
    counts = np.asarray(counts, dtype=np.float64)
    if balance == "none":
        weights = counts
    elif balance == "balanced":
        weights = (counts > 0).astype(np.float64)
    elif balance == "sqrt":
        weights = np.sqrt(counts)
    else:
        raise ValueError(f"unknown class balance {balance!r}; one of {', '.join(CLASS_BALANCES)}")
    if weights.sum() <= 0:
        raise ValueError("no class has any image")
    return weights / weights.sum()


def sample_weights(labels: torch.Tensor, prior: np.ndarray) -> torch.Tensor:
    """Each row's chance (N,) float64 to be drawn, so that a draw's class follows ``prior`` (K,):
    ``prior[y] / (rows of class y)``. Computed on the rows at hand (a worker's shard), so every
    worker draws the prior whatever classes its shard holds; a class absent from them is not
    drawn, and the others share its probability."""
    labels = labels.cpu().long()
    per_class = torch.bincount(labels, minlength=len(prior)).double()  # (K,)
    prior_t = torch.as_tensor(prior, dtype=torch.float64)
    weights = prior_t[labels] / per_class[labels]  # (N,)
    return weights / weights.sum()


def rare_classes(counts: dict[int, int]) -> tuple[int, ...]:
    """The rare classes, sorted: the third (rounded up) of the classes with images that have the
    fewest (ties go to the larger label, the tail's end under the long-tail protocol)."""
    present = [label for label, n in counts.items() if n > 0]
    k = max(1, math.ceil(RARE_SHARE * len(present)))
    return tuple(sorted(sorted(present, key=lambda label: (counts[label], -label))[:k]))


@dataclass(frozen=True)
class ClassPrior:
    """What the per-class metrics compare against: the training data's images per class
    (``counts`` (K,)), the prior its real batches drew from (``prior`` (K,), under ``balance``)
    and the rare classes (``rare``)."""

    counts: np.ndarray
    prior: np.ndarray
    balance: str
    rare: tuple[int, ...]

    @classmethod
    def of(cls, label_counts: dict[int, int], balance: str) -> ClassPrior:
        k = max(label_counts) + 1
        counts = np.array([label_counts.get(c, 0) for c in range(k)], dtype=np.int64)
        return cls(counts, class_prior(counts, balance), balance, rare_classes(label_counts))

    def to_json(self) -> dict:
        return {
            "class_balance": self.balance,
            "train_counts": self.counts.tolist(),
            "prior": [round(float(p), 6) for p in self.prior],
            "rare_classes": list(self.rare),
            "rare_rule": f"the {len(self.rare)} classes (a third, rounded up) with the fewest "
            "training images",
        }
