"""The quality statistics against references and closed forms, and the metric registry.

FID is checked against the classic formula with ``scipy.linalg.sqrtm`` and against Gaussians
whose distance is known in closed form; KID against an O(n²) loop; precision and recall on a
1-D case counted by hand and on a collapsed generator; the classifier score against
``scipy.special.rel_entr``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.special

from distgan.metrics import METRICS, FeatureSet, compute_metrics, get_metric, register_metric
from distgan.metrics.stats import (
    class_coverage,
    class_histogram,
    classifier_score,
    frechet_distance,
    kid,
    mean_cov,
    precision_recall,
)
from distgan.specs import METRIC_NAMES


def gaussian(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """n samples (n, d) of a correlated Gaussian with mean ``shift`` in every coordinate.

    The covariance depends on d only, so two calls with one d sample one distribution.
    """
    # I + G / (2√d) has its eigenvalues within 1/2 of 1: a well-conditioned covariance.
    mix = np.eye(d) + np.random.default_rng(d).standard_normal((d, d)) / (2 * np.sqrt(d))
    return rng.standard_normal((n, d)) @ mix + shift


def fid_reference(mu1, sigma1, mu2, sigma2) -> float:
    """The classic formula (pytorch-fid): Tr (Σ1 Σ2)^½ through scipy's general sqrtm."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# --- FID ---------------------------------------------------------------------------------------


def test_mean_cov_is_the_unbiased_estimate():
    f = np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    mu, sigma = mean_cov(f)
    np.testing.assert_allclose(mu, [3.0, 2.0])
    # deviations (-2, 0), (0, -2), (2, 2), divided by N - 1 = 2
    np.testing.assert_allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])


@pytest.mark.parametrize("d", [16, 64])
def test_fid_matches_scipy_sqrtm_reference(d):
    rng = np.random.default_rng(d)
    real, fake = gaussian(rng, 500, d), 1.5 * gaussian(rng, 500, d, shift=0.4)
    stats = (*mean_cov(real), *mean_cov(fake))
    expected = fid_reference(*stats)
    assert expected > 1.0
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    rng = np.random.default_rng(1)
    a, b = mean_cov(gaussian(rng, 500, 64)), mean_cov(gaussian(rng, 500, 64, shift=0.2))
    assert 0.0 <= frechet_distance(*a, *a) < 1e-6
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-10)


def test_fid_of_commuting_gaussians_has_a_closed_form():
    rng = np.random.default_rng(2)
    d = 8
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # The same variances along a shared rotated basis: Σ1 and Σ2 commute, the distance is equal.
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rotated = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-9)


def test_fid_is_finite_and_non_negative_for_singular_covariances():
    rng = np.random.default_rng(3)
    few = gaussian(rng, 10, 64)  # N < d: rank 9
    duplicated = np.repeat(gaussian(rng, 200, 8), 4, axis=1)  # (200, 32), rank 8
    for f in (few, duplicated):
        mu, sigma = mean_cov(f)
        same = frechet_distance(mu, sigma, mu, sigma)
        assert np.isfinite(same) and 0.0 <= same < 1e-5 * np.trace(sigma)
        # A shift of the mean alone adds its squared length and nothing else.
        shifted = frechet_distance(mu + 0.5, sigma, mu, sigma)
        assert shifted == pytest.approx(0.25 * len(mu), abs=1e-5 * np.trace(sigma))
    other = mean_cov(gaussian(rng, 10, 64, shift=1.0))
    value = frechet_distance(*mean_cov(few), *other)
    assert np.isfinite(value) and value > 0.0


# --- KID ---------------------------------------------------------------------------------------


def mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³, summed one pair at a time."""
    m, d = x.shape
    k = lambda a, b: (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_pairwise_reference():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.5
    # subset_size beyond N clamps to m = 6: every subset is a whole set, and MMD² ignores order.
    mean, std = kid(x, y, subsets=3, subset_size=100)
    assert mean == pytest.approx(mmd2_reference(x, y), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(5)
    real, same = gaussian(rng, 1000, 16), gaussian(np.random.default_rng(6), 1000, 16)
    null, _ = kid(real, same, subsets=20, subset_size=200)
    # The biased estimator (diagonals kept) reads about 0.14 here.
    assert abs(null) < 0.02
    shifts = (0.25, 0.5, 1.0, 2.0)
    levels = [kid(real, same + s, subsets=20, subset_size=200)[0] for s in shifts]
    assert levels[0] > 0.05
    assert all(lo < hi for lo, hi in zip(levels, levels[1:]))


def test_kid_std_is_the_spread_over_subsets():
    rng = np.random.default_rng(16)
    x, y = rng.standard_normal((400, 4)), rng.standard_normal((400, 4)) + 0.3
    _, std = kid(x, y, subsets=40, subset_size=50)
    singles = [kid(x, y, subsets=1, subset_size=50, seed=s)[0] for s in range(40)]
    # Two independent estimates of one spread, each from 40 subsets.
    assert 0.7 < std / np.std(singles) < 1.4


def test_kid_is_seeded():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((300, 4)), rng.standard_normal((300, 4))
    assert kid(x, y, subsets=5, subset_size=50, seed=1) == kid(
        x, y, subsets=5, subset_size=50, seed=1
    )
    assert kid(x, y, subsets=5, subset_size=50, seed=1) != kid(
        x, y, subsets=5, subset_size=50, seed=2
    )


# --- precision and recall ----------------------------------------------------------------------


def test_precision_recall_counted_by_hand_in_one_dimension():
    real = np.array([[0.0], [1.0], [3.0], [10.0]])
    fake = np.array([[-2.0], [0.5], [17.0], [18.0], [30.0]])
    # k=1, real radii: 0→1, 1→1, 3→2, 10→7; manifold [-1, 1] ∪ [0, 2] ∪ [1, 5] ∪ [3, 17].
    #   fakes inside: 0.5, and 17 on the edge of 10's ball → 2/5.
    # k=1, fake radii: -2→2.5, 0.5→2.5, 17→1, 18→1, 30→12; manifold [-4.5, 3] ∪ [16, 42].
    #   reals inside: 0, 1, and 3 on the edge of 0.5's ball → 3/4.
    assert precision_recall(real, fake, k=1, chunk=2) == (2 / 5, 3 / 4)
    # k=2, real radii: 0→3, 1→2, 3→3, 10→9; manifold [-3, 19]: all fakes but 30 → 4/5.
    # k=2, fake radii: -2→19, 0.5→16.5, 17→13, 18→12, 30→13; manifold [-21, 43] → 4/4.
    assert precision_recall(real, fake, k=2, chunk=3) == (4 / 5, 1.0)


def test_precision_recall_does_not_depend_on_the_chunk():
    rng = np.random.default_rng(9)
    real, fake = gaussian(rng, 300, 5), gaussian(rng, 250, 5, shift=0.5)
    assert precision_recall(real, fake, chunk=7) == precision_recall(real, fake, chunk=1024)


def test_precision_recall_of_one_distribution_are_high():
    rng = np.random.default_rng(10)
    precision, recall = precision_recall(gaussian(rng, 1000, 4), gaussian(rng, 1000, 4))
    assert precision > 0.8 and recall > 0.8


def test_collapsed_generator_has_precision_but_no_recall():
    rng = np.random.default_rng(11)
    centres = 10.0 * rng.standard_normal((10, 8))  # 10 well-separated modes
    mode = np.repeat(np.arange(10), 100)  # (1000,)
    real = centres[mode] + rng.standard_normal((1000, 8))
    # G draws only modes 0-2, reproducing real points there up to tiny noise.
    fake = real[mode < 3] + 1e-3 * rng.standard_normal((300, 8))
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9
    assert 0.25 < recall < 0.4


def test_far_away_fakes_have_no_precision():
    rng = np.random.default_rng(12)
    real = gaussian(rng, 500, 8)
    assert precision_recall(real, gaussian(rng, 500, 8, shift=100.0)) == (0.0, 0.0)


# --- classifier score and class coverage -------------------------------------------------------


def test_classifier_score_extremes():
    k = 10
    even = np.eye(k)[np.arange(50) % k]  # one-hot, 5 samples per class
    assert classifier_score(even) == pytest.approx(k, rel=1e-12)
    assert classifier_score(np.eye(k)[np.zeros(50, dtype=int)]) == pytest.approx(1.0, rel=1e-12)
    assert classifier_score(np.full((50, k), 1.0 / k)) == pytest.approx(1.0, rel=1e-12)


def test_classifier_score_matches_scipy_kl():
    probs = np.random.default_rng(13).dirichlet(np.full(6, 0.3), size=200)  # (200, 6)
    py = probs.mean(axis=0)
    expected = math.exp(scipy.special.rel_entr(probs, py).sum(axis=1).mean())
    assert classifier_score(probs) == pytest.approx(expected, rel=1e-10)


def starved_labels() -> np.ndarray:
    """1000 labels of 10 classes: 0-6 get 130 each, 7 gets exactly the fair share 50, 8-9 get 20."""
    counts = [130] * 7 + [50, 20, 20]
    return np.repeat(np.arange(10), counts)


def test_class_coverage_from_labels_and_from_probs():
    labels = starved_labels()
    np.testing.assert_array_equal(class_histogram(labels, 10), [130] * 7 + [50, 20, 20])
    # fair share 0.5 · 1000 / 10 = 50: class 7 is on the line and counts, 8 and 9 do not.
    assert class_coverage(labels, 10) == 0.8
    assert class_coverage(labels, 10, fair_share=0.4) == 0.8
    assert class_coverage(labels, 10, fair_share=0.1) == 1.0
    rng = np.random.default_rng(14)
    probs = np.eye(10)[labels] * 0.5 + rng.uniform(0, 0.05, (1000, 10))  # argmax is the label
    probs /= probs.sum(axis=1, keepdims=True)
    assert class_coverage(probs, 10) == 0.8


def test_class_histogram_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="labels must lie in"):
        class_histogram(np.array([0, 3, 10]), 10)


# --- the registry ------------------------------------------------------------------------------


def feature_sets(with_probs: bool = True) -> tuple[FeatureSet, FeatureSet]:
    rng = np.random.default_rng(15)
    probs = rng.dirichlet(np.full(5, 0.2), size=200) if with_probs else None
    return FeatureSet(gaussian(rng, 200, 6)), FeatureSet(gaussian(rng, 200, 6, 0.3), probs)


def test_registry_names_and_directions():
    assert set(METRICS) == set(METRIC_NAMES)
    assert {n: m.higher_is_better for n, m in METRICS.items()} == {
        "fid": False,
        "kid": False,
        "precision": True,
        "recall": True,
        "classifier_score": True,
        "class_coverage": True,
        "intra_fid": False,
        "class_kl": False,
        "rare_recall": True,
    }
    assert METRICS["classifier_score"].uses == {"fake_probs"}
    assert METRICS["fid"].uses == {"real_features", "fake_features"}


def test_compute_metrics_gives_each_metric_its_own_figures():
    real, fake = feature_sets()
    overall = [n for n in METRIC_NAMES if "real_labels" not in METRICS[n].uses]  # not per class
    figures = compute_metrics(overall, real, fake)
    assert list(figures) == [
        "fid", "kid", "kid_std", "precision", "recall", "classifier_score", "class_coverage"
    ]  # fmt: skip
    assert figures["fid"] == frechet_distance(*mean_cov(real.features), *mean_cov(fake.features))
    assert (figures["kid"], figures["kid_std"]) == kid(real.features, fake.features)
    pr = precision_recall(real.features, fake.features)
    assert (figures["precision"], figures["recall"]) == pr
    assert figures["classifier_score"] == classifier_score(fake.probs)
    assert figures["class_coverage"] == class_coverage(fake.probs, 5)
    assert compute_metrics(["recall"], real, fake) == {"recall": pr[1]}


def test_feature_set_stats_are_computed_once():
    real, _ = feature_sets()
    first = real.stats()
    assert real.stats() is first
    np.testing.assert_array_equal(first[0], real.features.mean(axis=0))


@pytest.fixture
def counted_pair():
    """Two metrics registered on one compute function that counts its calls; removed after."""
    calls = []

    @register_metric("test_pair_b", higher_is_better=True, uses={"real_features"})
    @register_metric("test_pair_a", higher_is_better=True, uses={"real_features"})
    def pair(real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
        calls.append(1)
        return {"test_pair_a": 1.0, "test_pair_b": 2.0}

    yield calls
    del METRICS["test_pair_a"], METRICS["test_pair_b"]


def test_metrics_sharing_a_compute_function_compute_once(counted_pair):
    real, fake = feature_sets()
    figures = compute_metrics(["test_pair_a", "test_pair_b"], real, fake)
    assert figures == {"test_pair_a": 1.0, "test_pair_b": 2.0}
    assert len(counted_pair) == 1
    assert METRICS["precision"].compute is METRICS["recall"].compute


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'fid' is already registered"):
        register_metric("fid", higher_is_better=False, uses={"real_features"})


def test_unknown_metric_suggests_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown metric 'fdi'; did you mean 'fid'\? known: "):
        get_metric("fdi")
    with pytest.raises(
        ValueError,
        match="'zzz'; known: class_coverage, class_kl, classifier_score, fid, intra_fid, kid",
    ):
        compute_metrics(["zzz"], *feature_sets())


def test_classifier_score_without_probs_is_a_clear_error():
    real, fake = feature_sets(with_probs=False)
    with pytest.raises(
        ValueError, match="classifier_score needs a feature network that classifies"
    ):
        compute_metrics(["fid", "classifier_score"], real, fake)
