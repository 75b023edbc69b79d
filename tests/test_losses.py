"""The adversarial losses against closed forms worked out by hand, and the gradient penalty.

With r = D(x) and f = D(G(z)) the logits, σ the logistic function. The expected values are
written with ``math`` on plain floats, independent of the torch code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distgan.losses import LOSSES, get_loss, gradient_penalty

R = [2.0, -1.0, 0.0]  # real logits
F = [0.5, -3.0, 0.0]  # fake logits


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def relu(x: float) -> float:
    return max(0.0, x)


def logistic_d(r: float, f: float) -> float:
    return -math.log(sigmoid(r)) - math.log(1.0 - sigmoid(f))


EXPECTED_D = {
    "minimax": logistic_d,
    "nonsaturating": logistic_d,
    "wgan": lambda r, f: f - r,
    "wgan-gp": lambda r, f: f - r,
    "hinge": lambda r, f: relu(1.0 - r) + relu(1.0 + f),
    "lsgan": lambda r, f: 0.5 * (r - 1.0) ** 2 + 0.5 * f**2,
}
EXPECTED_G = {
    "minimax": lambda f: math.log(1.0 - sigmoid(f)),
    "nonsaturating": lambda f: -math.log(sigmoid(f)),
    "wgan": lambda f: -f,
    "wgan-gp": lambda f: -f,
    "hinge": lambda f: -f,
    "lsgan": lambda f: 0.5 * (f - 1.0) ** 2,
}


def test_every_config_loss_kind_is_registered():
    from distgan.specs import LOSS_KINDS

    assert set(LOSSES) == set(LOSS_KINDS) == set(EXPECTED_D)
    for kind in LOSS_KINDS:
        assert get_loss(kind) is LOSSES[kind]
        assert LOSSES[kind].name == kind


@pytest.mark.parametrize("kind", sorted(EXPECTED_D))
def test_d_loss_matches_the_closed_form(kind):
    out = LOSSES[kind].d(torch.tensor(R, dtype=torch.float64), torch.tensor(F, dtype=torch.float64))
    assert out.shape == (len(R),)
    expected = [EXPECTED_D[kind](r, f) for r, f in zip(R, F)]
    assert out.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("kind", sorted(EXPECTED_G))
def test_g_loss_matches_the_closed_form(kind):
    out = LOSSES[kind].g(torch.tensor(F, dtype=torch.float64))
    assert out.shape == (len(F),)
    expected = [EXPECTED_G[kind](f) for f in F]
    assert out.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hinge_margin_is_inactive_for_confident_logits():
    # D is not pushed further once r >= 1 and f <= -1.
    out = LOSSES["hinge"].d(torch.tensor([1.5, 1.0]), torch.tensor([-2.0, -1.0]))
    assert out.tolist() == [0.0, 0.0]


def test_losses_give_one_value_per_sample_in_float32():
    r, f = torch.randn(7), torch.randn(7)
    for kind, loss in LOSSES.items():
        assert loss.d(r, f).shape == (7,), kind
        assert loss.g(f).shape == (7,), kind
        assert loss.d(r, f).dtype == torch.float32, kind


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_losses_stay_finite_for_extreme_logits(kind):
    big = torch.tensor([100.0, -100.0, 1e4, -1e4], requires_grad=True)
    loss = LOSSES[kind]
    d = loss.d(big, big.flip(0))
    g = loss.g(big)
    assert torch.isfinite(d).all() and torch.isfinite(g).all()
    (d.sum() + g.sum()).backward()
    assert torch.isfinite(big.grad).all()


def test_logistic_losses_are_linear_in_the_tails():
    # A naive log(σ(x)) gives -inf at x = -100 in float32; log σ(x) = -softplus(-x) gives -100.
    r, f = torch.tensor([-100.0]), torch.tensor([100.0])
    assert LOSSES["nonsaturating"].d(r, f).item() == pytest.approx(200.0)
    assert LOSSES["nonsaturating"].g(-f).item() == pytest.approx(100.0)
    assert LOSSES["minimax"].g(f).item() == pytest.approx(-100.0)


def test_flags_of_each_loss():
    flags = {
        kind: (loss.clip_weights, loss.gradient_penalty, loss.probability)
        for kind, loss in LOSSES.items()
    }
    assert flags == {
        "minimax": (False, False, True),
        "nonsaturating": (False, False, True),
        "wgan": (True, False, False),
        "wgan-gp": (False, True, False),
        "hinge": (False, False, False),
        "lsgan": (False, False, False),
    }


# --- the gradient penalty ------------------------------------------------------------------


class LinearCritic(nn.Module):
    """D(x) = w·x on the flattened input: ∇ₓD = w everywhere, so GP = (‖w‖ - 1)² exactly."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w  # (B,)


@pytest.mark.parametrize("w", [[3.0, 4.0, 0.0, 0.0], [0.1, -0.2, 0.3, 0.0], [0.6, 0.8, 0.0, 0.0]])
def test_gradient_penalty_of_a_linear_critic(w):
    w = torch.tensor(w, dtype=torch.float64)
    D = LinearCritic(w)
    real = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(D, real, fake)
    assert gp.shape == (5,)
    expected = (math.sqrt(sum(v * v for v in w.tolist())) - 1.0) ** 2
    torch.testing.assert_close(gp, torch.full((5,), expected, dtype=torch.float64))


def test_gradient_penalty_is_differentiable_in_the_critic_weights():
    w = torch.tensor([0.5, -2.0, 1.0, 2.0], dtype=torch.float64)  # ‖w‖ = 3.1622...
    D = LinearCritic(w)
    real = torch.randn(6, 4, dtype=torch.float64)
    fake = torch.randn(6, 4, dtype=torch.float64)
    gradient_penalty(D, real, fake).mean().backward()
    norm = w.norm().item()
    expected = 2.0 * (norm - 1.0) * w / norm  # d/dw (‖w‖ - 1)²
    torch.testing.assert_close(D.w.grad, expected)
    assert real.grad is None and fake.grad is None


def test_gradient_penalty_interpolates_between_real_and_fake():
    # D(x) = ½‖x - c‖² has ∇ = x - c; with real = c + a, fake = c + b on one axis the penalty
    # at x̂ = εreal + (1-ε)fake lies between those of the two end points.
    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * (x.flatten(1) ** 2).sum(1)

    torch.manual_seed(0)
    real = torch.tensor([[3.0, 0.0]]).repeat(200, 1)
    fake = torch.tensor([[1.0, 0.0]]).repeat(200, 1)
    gp = gradient_penalty(Quadratic(), real, fake)
    # ‖x̂‖ = 1 + 2ε with ε ~ U[0, 1]: GP = (2ε)² lies in [0, 4] and spreads over that range.
    assert gp.min() >= 0.0 and gp.max() <= 4.0
    assert gp.max() - gp.min() > 2.0
