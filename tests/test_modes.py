"""The mode-coverage metrics: exact counts on constructed samples, the sources, a short training."""

from __future__ import annotations

import math

import pytest
import torch

from distgan.metrics.modes import (
    SOURCES,
    count_stacked_modes,
    grid25,
    min_covered_count,
    ring8,
    score_modes,
    stacked_dataset,
)
from distgan.train.synthetic import train_synthetic

RING, GRID = SOURCES["ring8"], SOURCES["grid25"]


def at_centers(source, counts: list[int], offset: float) -> torch.Tensor:
    """``counts[i]`` samples at centre i, each moved by ``offset`` (< σ) in a rotating direction."""
    points = []
    for i, c in enumerate(counts):
        angles = torch.arange(c, dtype=torch.float32)
        direction = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (c, 2)
        points.append(source.centers[i] + offset * direction)
    return torch.cat(points)  # (sum(counts), 2)


def kl_to_uniform(counts: list[int], m: int) -> float:
    total = sum(counts)
    return sum(c / total * math.log(c / total * m) for c in counts if c > 0)


def test_exact_counts_on_constructed_samples():
    # 2,500 samples so a mode needs 20: modes 0..3 get 20, 40, 100, 300; mode 4 gets 19, one
    # short; the rest of the 2,500 lie far outside [-1, 1]², nearest to some centre but not near.
    counts = [20, 40, 100, 300, 19]
    near = at_centers(GRID, counts, offset=0.5 * GRID.sigma)
    far = torch.full((2500 - near.shape[0], 2), 5.0)
    score = score_modes(torch.cat([near, far]), GRID)
    assert score["modes"] == 4
    assert score["modes_total"] == 25
    assert score["high_quality"] == sum(counts) / 2500
    assert score["reverse_kl"] == pytest.approx(kl_to_uniform(counts, 25), rel=1e-9)


def test_takes_image_shaped_samples():
    samples = at_centers(RING, [30] * 8, offset=0.0).view(-1, 2, 1, 1)  # as G returns them
    score = score_modes(samples, RING)
    assert (score["modes"], score["high_quality"]) == (8, 1.0)
    assert score["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_far_samples_score_nothing():
    far = torch.randn(1000, 2) * 0.1 + torch.tensor([3.0, -3.0])
    score = score_modes(far, RING)
    assert (score["modes"], score["high_quality"]) == (0, 0.0)
    assert math.isnan(score["reverse_kl"])  # no high-quality samples: p_gen is undefined


def test_high_quality_boundary_is_three_sigma():
    center, sigma = GRID.centers[12], GRID.sigma  # (0, 0), whose neighbours are 40σ away
    inside = center + torch.tensor([2.9 * sigma, 0.0])
    outside = center + torch.tensor([0.0, -3.1 * sigma])
    score = score_modes(torch.stack([inside, outside]), GRID, min_count=1)
    assert score["high_quality"] == 0.5
    assert score["modes"] == 1


@pytest.mark.parametrize("n, needed", [(2500, 20), (1000, 8), (5000, 40), (100, 1), (10, 1)])
def test_min_count_is_20_per_2500(n, needed):
    assert min_covered_count(n) == needed
    # Exactly ``needed`` samples in mode 0 cover it, one fewer in mode 1 does not.
    near = at_centers(RING, [needed, needed - 1], offset=0.1 * RING.sigma)
    far = torch.full((n - near.shape[0], 2), 9.0)
    assert score_modes(torch.cat([near, far]), RING)["modes"] == 1


@pytest.mark.parametrize("sample, source", [(ring8, RING), (grid25, GRID)])
def test_sources_fill_every_mode_evenly(sample, source):
    n = 20_000
    x = sample(n, torch.Generator().manual_seed(0))
    assert x.shape == (n, 2, 1, 1)
    assert x.abs().max() < 1  # inside tanh's range
    nearest = torch.cdist(x.flatten(1), source.centers).argmin(1)
    per_mode = torch.bincount(nearest, minlength=source.n_modes).float()
    expected = n / source.n_modes
    assert (per_mode - expected).abs().max() < 5 * math.sqrt(expected)  # 5 binomial std devs
    score = score_modes(x, source)
    assert score["modes"] == source.n_modes
    # A 2-D Gaussian puts 1 - exp(-9/2) = 98.89% of its mass within 3σ.
    assert score["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.003)
    assert score["reverse_kl"] < 0.01


def test_sources_keep_the_literature_sigma_to_spacing_ratio():
    # Ring: radius 2, σ 0.02 (Metz et al. 2017); grid: spacing 2, σ 0.05 (VEEGAN).
    assert RING.sigma / RING.centers.norm(dim=1).mean() == pytest.approx(0.02 / 2)
    spacing = torch.cdist(GRID.centers, GRID.centers).add(torch.eye(25) * 9).min()
    assert GRID.sigma / spacing == pytest.approx(0.05 / 2)


# Stacked modes: class l is drawn as a flat image of intensity 20·l + 10, so an exact classifier
# reads the class back from a channel's mean.


def flat_images(labels: torch.Tensor) -> torch.Tensor:
    return (20 * labels + 10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)


def classify_by_intensity(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) in [-1, 1] -> (B,) the class whose intensity the image has."""
    level = (x.mean(dim=(1, 2, 3)) + 1) * 127.5  # (B,) back to 0..255
    return ((level - 10) / 20).round().long()


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 127.5 - 1


def test_stacked_dataset_mode_ids_match_the_stacked_channels():
    labels = torch.arange(200) % 10
    stacked, ids = stacked_dataset(flat_images(labels), labels, 3000, torch.Generator())
    assert stacked.shape == (3000, 3, 28, 28) and stacked.dtype == torch.uint8
    per_channel = ((stacked[:, :, 0, 0].long() - 10) // 20).long()  # (n, 3) labels drawn
    assert torch.equal(ids, 100 * per_channel[:, 0] + 10 * per_channel[:, 1] + per_channel[:, 2])
    assert len(ids.unique()) > 900  # 3,000 draws over 1,000 modes: ~950 distinct expected


def test_stacked_dataset_takes_numpy_arrays():
    labels = torch.tensor([3, 7])
    stacked, ids = stacked_dataset(flat_images(labels).numpy(), labels.numpy(), 50)
    assert set(ids.tolist()) <= {333, 337, 373, 377, 733, 737, 773, 777}
    assert stacked.dtype == torch.uint8


def test_count_stacked_modes_is_exact_with_an_exact_classifier():
    # Modes 0, 123, 987 and 555 with 1, 2, 3 and 4 samples.
    built = {0: 1, 123: 2, 987: 3, 555: 4}
    ids = torch.tensor([m for m, c in built.items() for _ in range(c)])
    digits = torch.stack([ids // 100, ids // 10 % 10, ids % 10], dim=1)  # (10, 3)
    images = flat_images(digits.flatten()).reshape(len(ids), 3, 28, 28)
    result = count_stacked_modes(to_unit(images), classify_by_intensity, batch=3)
    assert result["modes"] == 4
    assert result["modes_total"] == 1000
    assert result["reverse_kl"] == pytest.approx(kl_to_uniform(list(built.values()), 1000))


def test_count_stacked_modes_of_real_stacks_sees_their_modes():
    labels = torch.arange(10)
    stacked, ids = stacked_dataset(flat_images(labels), labels, 500, torch.Generator())
    result = count_stacked_modes(to_unit(stacked), classify_by_intensity)
    assert result["modes"] == len(ids.unique())


def test_training_on_ring8_moves_samples_onto_the_modes():
    source = SOURCES["ring8"]
    G0, _ = train_synthetic(source, "nonsaturating", steps=0, z_dim=2)
    G, history = train_synthetic(source, "nonsaturating", steps=300, z_dim=2, log_every=100)
    z = torch.randn(2500, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = score_modes(G0(z), source), score_modes(G(z), source)
    assert after["high_quality"] > before["high_quality"]
    assert [h["step"] for h in history] == [100, 200, 300]
    assert all(math.isfinite(h["d_loss"]) and math.isfinite(h["g_loss"]) for h in history)


def test_synthetic_training_returns_the_ema_and_stops_at_its_time_limit():
    source = SOURCES["ring8"]
    # The same seed trains the same G; with ema_decay the G returned is the average, which
    # lags behind the raw G it averages.
    G, _ = train_synthetic(source, "nonsaturating", steps=50, z_dim=2, log_every=50)
    G_ema, history = train_synthetic(
        source, "nonsaturating", steps=50, z_dim=2, log_every=50, ema_decay=0.9
    )
    raw = torch.cat([p.flatten() for p in G.parameters()])
    avg = torch.cat([p.flatten() for p in G_ema.parameters()])
    assert not torch.allclose(raw, avg)
    assert history[-1]["step"] == 50
    # A time limit ends the run early, with a last history entry at the step it stopped.
    _, history = train_synthetic(source, "nonsaturating", steps=10**6, z_dim=2, seconds=0.5)
    assert history[-1]["step"] < 10**6 and 0.5 <= history[-1]["seconds"] < 5


def test_synthetic_training_carries_r1_on_every_16th_step_and_counts_both_rules():
    source = SOURCES["ring8"]
    kwargs = {"steps": 32, "z_dim": 2, "log_every": 1}
    _, plain = train_synthetic(source, "nonsaturating", **kwargs)
    _, with_r1 = train_synthetic(source, "nonsaturating", r1_gamma=0.1, **kwargs)
    assert [h["step"] for h in with_r1 if "r1" in h] == [1, 17]  # lazy: steps 0 and 16 of 32
    assert not any("r1" in h for h in plain)
    # R1 changed D's update, so the two runs part after the first step that carried it.
    assert with_r1[1]["d_loss"] != plain[1]["d_loss"]
    # The literature's rule (one high-quality sample) never counts fewer modes than the strict.
    assert all(h["modes_literature"] >= h["modes"] for h in with_r1)
