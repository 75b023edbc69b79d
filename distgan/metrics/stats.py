"""The statistics that score a generator, computed on feature arrays (numpy, float64).

Inputs are features of real and generated images, (N, d), and class probabilities, (N, K), from
the feature network; nothing here knows about images or models.

| function            | paper                          | reads as                               |
|---------------------|--------------------------------|----------------------------------------|
| frechet_distance    | Heusel et al. 2017 (FID)       | distance of two Gaussian fits, lower   |
| kid                 | Bińkowski et al. 2018 (KID)    | unbiased MMD², cubic kernel, lower     |
| precision_recall    | Kynkäänniemi et al. 2019       | fidelity / diversity in [0, 1], higher |
| classifier_score    | Salimans et al. 2016 (IS form) | in [1, K], higher                      |
| class_coverage      | -                              | share of classes G draws, higher       |

scipy is not needed: the matrix square root of FID goes through symmetric eigendecompositions.
"""

from __future__ import annotations

import numpy as np


def _as_features(f: np.ndarray, what: str = "features") -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{what}: expected an (N, d) array, got shape {f.shape}")
    return f


def mean_cov(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), N >= 2."""
    f = _as_features(f)
    if len(f) < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {len(f)}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (d, d)."""
    w, v = np.linalg.eigh(sigma)
    # Rounding leaves eigenvalues of singular covariances slightly below zero.
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2): means (d,), covariances (d, d).

    ‖μ1 - μ2‖² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^½), where Tr (Σ1 Σ2)^½ is the sum of the square roots of
    the eigenvalues of Σ1^½ Σ2 Σ1^½: that matrix is similar to Σ1 Σ2 but symmetric positive
    semi-definite, so its eigenvalues are real and a rank-deficient Σ (N < d, duplicated
    features) gives zeros rather than NaN. Returns a float >= 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shapes disagree: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
            f"mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )
    root1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
    inner = root1 @ sigma2 @ root1  # (d, d)
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    # The distance is a squared Wasserstein distance, so anything below 0 is rounding.
    return max(float(value), 0.0)


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)³ for rows x (n, d) and y (m, d) -> (n, m)."""
    k = x @ y.T / x.shape[1] + 1.0
    return k * k * k  # cheaper than np.power


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of samples x (m, d) and y (m, d) under the cubic kernel."""
    m = len(x)
    kxx, kyy, kxy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    # A point against itself carries no information about the distributions: drop the diagonals.
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kid(
    f_real: np.ndarray,
    f_fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance of features f_real (N, d) and f_fake (M, d).

    The unbiased MMD² under k(x, y) = (x·y / d + 1)³ on ``subsets`` pairs of random subsets of
    m = min(subset_size, N, M) rows each, drawn without replacement from a generator seeded by
    ``seed``. Returns (mean, std) over the subsets; the mean can be slightly negative when the
    two distributions agree, since the estimator is unbiased.
    """
    f_real, f_fake = _as_features(f_real, "f_real"), _as_features(f_fake, "f_fake")
    if f_real.shape[1] != f_fake.shape[1]:
        raise ValueError(f"feature widths differ: {f_real.shape[1]} vs {f_fake.shape[1]}")
    m = min(subset_size, len(f_real), len(f_fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got subsets of {m}")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = f_real[rng.choice(len(f_real), m, replace=False)]
        y = f_fake[rng.choice(len(f_fake), m, replace=False)]
        values[i] = _mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows of a (n, d) and b (m, d) -> (n, m)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.clip(d2, 0.0, None)  # cancellation can dip a zero distance below 0


def _kth_neighbour_sq_radii(f: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance (N,) from each row of f (N, d) to its k-th nearest other row."""
    if len(f) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(f)}")
    radii = np.empty(len(f))
    for start in range(0, len(f), chunk):
        d2 = _sq_distances(f[start : start + chunk], f)  # (c, N)
        # Index k of the sorted row skips exactly one zero: the point itself.
        radii[start : start + chunk] = np.partition(d2, k, axis=1)[:, k]
    return radii


def precision_recall(
    f_real: np.ndarray, f_fake: np.ndarray, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of features (N, d) and (M, d).

    A set's manifold is the union of closed balls around its points, each with radius the
    distance to the point's k-th nearest neighbour in the same set. Precision is the share of
    fakes inside the real manifold, recall the share of reals inside the fake manifold. Distances
    are taken ``chunk`` rows at a time, so memory is O(chunk · max(N, M)). Returns (precision,
    recall), both in [0, 1].
    """
    f_real, f_fake = _as_features(f_real, "f_real"), _as_features(f_fake, "f_fake")
    if f_real.shape[1] != f_fake.shape[1]:
        raise ValueError(f"feature widths differ: {f_real.shape[1]} vs {f_fake.shape[1]}")
    r_real = _kth_neighbour_sq_radii(f_real, k, chunk)  # (N,)
    r_fake = _kth_neighbour_sq_radii(f_fake, k, chunk)  # (M,)
    fake_in_real = np.empty(len(f_fake), dtype=bool)
    real_in_fake = np.zeros(len(f_real), dtype=bool)
    # One pass over the fake-real distances serves both directions.
    for start in range(0, len(f_fake), chunk):
        d2 = _sq_distances(f_fake[start : start + chunk], f_real)  # (c, N)
        fake_in_real[start : start + chunk] = (d2 <= r_real[None, :]).any(axis=1)
        real_in_fake |= (d2 <= r_fake[start : start + chunk, None]).any(axis=0)
    return float(fake_in_real.mean()), float(real_in_fake.mean())


def classifier_score(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))) of class probabilities (N, K), p(y) their mean over N.

    The Inception Score's form: 1 when every sample gets the same distribution, K when samples
    are confidently classified and spread evenly over the K classes. Zero probabilities
    contribute 0 (the limit of p log p), so one-hot rows are exact.
    """
    p = _as_features(probs, "probs")
    py = p.mean(axis=0, keepdims=True)  # (1, K)
    log_p = np.log(p, out=np.zeros_like(p), where=p > 0)
    # py > 0 wherever some p > 0, and p = 0 zeroes the term wherever py would be 0.
    log_py = np.log(py, out=np.zeros_like(py), where=py > 0)
    kl = (p * (log_p - log_py)).sum(axis=1)  # (N,)
    return float(np.exp(kl.mean()))


def class_histogram(labels_or_probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class (num_classes,), from integer labels (N,) or probabilities (N, K).

    With probabilities, a sample counts for its most probable class.
    """
    a = np.asarray(labels_or_probs)
    if a.ndim == 2:
        if a.shape[1] != num_classes:
            raise ValueError(f"probs have {a.shape[1]} classes, expected {num_classes}")
        labels = a.argmax(axis=1)
    elif a.ndim == 1:
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {a.dtype}")
        labels = a.astype(np.int64)
        if a.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got {labels.min()} to {labels.max()}"
            )
    else:
        raise ValueError(f"expected labels (N,) or probs (N, K), got shape {a.shape}")
    return np.bincount(labels, minlength=num_classes)


FAIR_SHARE = 0.5  # class_coverage counts a class as drawn from this share of N / num_classes up


def class_coverage(
    labels_or_probs: np.ndarray, num_classes: int, fair_share: float = FAIR_SHARE
) -> float:
    """Share of the num_classes classes that get >= fair_share · N / num_classes samples.

    Input: integer labels (N,) or probabilities (N, K), read through argmax. 1.0 means no class
    is starved; a generator collapsed onto c classes scores about c / num_classes.
    """
    counts = class_histogram(labels_or_probs, num_classes)
    return float((counts >= fair_share * counts.sum() / num_classes).mean())
