"""Nearest real training images of generated samples, and a memorisation check, in a feature space.

    distances, index = nearest(fake_features, train_features, k=5)   # (n, 5) each, closest first
    check = memorisation(distances[:, 0], test_to_train[:, 0])        # a dict for index.json

A generator that copies its training images puts samples closer to a training image than a real
image it never saw would be. The check states that precisely: the reference is the distribution
of real test images' distances to their nearest training image; a sample whose own nearest
distance is at most that distribution's 5th percentile counts as memorised. A generator whose
samples are as novel as real test images scores about 5%; much more means copies.
"""

from __future__ import annotations

import numpy as np
import torch

from distgan.explore.pictures import Picture, neighbour_grid

PERCENTILE = 5.0  # of the test-to-train nearest distances: the memorisation threshold
_CHUNK = 1024  # queries per distance matrix: (1024, M) float32 at a time


def nearest(query: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``reference`` (M, d) to each row of ``query`` (N, d), in
    Euclidean distance: distances (N, k) float64 and indices (N, k) into ``reference``, closest
    first. Exact (every pair is measured), in chunks of queries."""
    ref = torch.from_numpy(np.asarray(reference, np.float64))
    k = min(k, len(ref))
    distances, index = [], []
    for q in torch.from_numpy(np.asarray(query, np.float64)).split(_CHUNK):
        d, i = torch.cdist(q, ref).topk(k, dim=1, largest=False)  # sorted, smallest first
        distances.append(d)
        index.append(i)
    return torch.cat(distances).numpy(), torch.cat(index).numpy()


def memorisation(fake_nearest: np.ndarray, test_nearest: np.ndarray) -> dict:
    """The memorisation check of samples whose nearest-training-image distances are
    ``fake_nearest`` (N,), against real test images' ``test_nearest`` (T,). A dict for
    ``index.json`` that says how it was computed."""
    threshold = float(np.percentile(test_nearest, PERCENTILE))
    memorised = fake_nearest <= threshold
    return {
        "definition": (
            "share of generated samples whose distance to their nearest training image (in the "
            f"feature space) is at most the {PERCENTILE:g}th percentile of real test images' "
            "distances to their nearest training image; about "
            f"{PERCENTILE / 100:.2f} for samples as novel as unseen real images, more means copies"
        ),
        "memorised_share": float(memorised.mean()),
        "expected_share": PERCENTILE / 100,
        "percentile": PERCENTILE,
        "threshold": threshold,
        "memorised": int(memorised.sum()),
        "generated": int(len(fake_nearest)),
        "test_images": int(len(test_nearest)),
        "generated_median_distance": float(np.median(fake_nearest)),
        "test_median_distance": float(np.median(test_nearest)),
    }


SHOWN = 8  # generated samples per neighbour grid
NEIGHBOURS = 5  # training images beside each


def neighbour_pictures(
    fakes: np.ndarray,
    fake_features: np.ndarray,
    train: np.ndarray,
    train_features: np.ndarray,
    test_features: np.ndarray | None,
) -> tuple[list[Picture], dict]:
    """The neighbour grids of generated ``fakes`` (N, C, H, W) uint8 among the ``train`` images,
    given the features of each (and of real test images, for the memorisation check; None skips
    it). Two grids: the first SHOWN samples (typical ones) and the SHOWN closest to a training
    image (the likeliest copies). Returns (pictures, the summary for index.json)."""
    distances, index = nearest(fake_features, train_features, NEIGHBOURS)
    first = np.arange(min(SHOWN, len(fakes)))
    closest = np.argsort(distances[:, 0], kind="stable")[:SHOWN]
    what = "each row a generated sample (left), a gap, then its {} nearest training images; "
    pictures = [
        neighbour_grid(
            "neighbours.png",
            what.format(index.shape[1]) + "the first samples of the seed; distance at left",
            fakes, train, first, distances, index,
        ),
        neighbour_grid(
            "closest.png",
            what.format(index.shape[1]) + "the samples closest to a training image",
            fakes, train, closest, distances, index,
        ),
    ]  # fmt: skip
    summary = {
        "distance": "Euclidean, in the feature space",
        "generated": len(fakes),
        "training_images": len(train),
    }
    if test_features is None:
        summary["memorisation"] = {"skipped": "no real test split; pass --real-test DATASET"}
    else:
        test_nearest = nearest(test_features, train_features, 1)[0][:, 0]
        summary["memorisation"] = memorisation(distances[:, 0], test_nearest)
    return pictures, summary
