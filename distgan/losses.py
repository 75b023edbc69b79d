"""The adversarial losses, as functions of D's logits. None of them calls ``.backward()``.

Each loss gives per-sample values (shape (B,)); the step takes the mean. With r = D(x) and
f = D(G(z)) the raw logits and σ the logistic function:

| kind          | D minimises                          | G minimises          |
|---------------|--------------------------------------|----------------------|
| minimax       | -log σ(r) - log(1 - σ(f))            | log(1 - σ(f))        |
| nonsaturating | same as minimax                      | -log σ(f)            |
| wgan          | f - r        (D's weights clipped)   | -f                   |
| wgan-gp       | f - r + λ (‖∇D(x̂)‖ - 1)²             | -f                   |
| hinge         | relu(1 - r) + relu(1 + f)            | -f                   |
| lsgan         | ½ (r - 1)² + ½ f²                    | ½ (f - 1)²           |

Any loss may add R1 (``loss.r1_gamma``): γ/2 · ‖∇ₓ D(x)‖² on real x (Mescheder et al. 2018).

log σ(x) = -softplus(-x) and log(1 - σ(x)) = -softplus(x), which stay finite for any logit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


@dataclass(frozen=True)
class Loss:
    name: str
    d: Callable[[Tensor, Tensor], Tensor]  # (real logits, fake logits) -> per-sample D loss
    g: Callable[[Tensor], Tensor]  # fake logits -> per-sample G loss
    gradient_penalty: bool = False  # wgan-gp: add λ·GP to D's loss
    clip_weights: bool = False  # wgan: clamp D's weights after each D step
    probability: bool = False  # D's output reads as a probability through σ


def _logistic_d(r: Tensor, f: Tensor) -> Tensor:
    return F.softplus(-r) + F.softplus(f)


def _wasserstein_d(r: Tensor, f: Tensor) -> Tensor:
    return f - r


def _critic_g(f: Tensor) -> Tensor:
    return -f


LOSSES: dict[str, Loss] = {
    "minimax": Loss("minimax", _logistic_d, lambda f: -F.softplus(f), probability=True),
    "nonsaturating": Loss("nonsaturating", _logistic_d, lambda f: F.softplus(-f), probability=True),
    "wgan": Loss("wgan", _wasserstein_d, _critic_g, clip_weights=True),
    "wgan-gp": Loss("wgan-gp", _wasserstein_d, _critic_g, gradient_penalty=True),
    "hinge": Loss("hinge", lambda r, f: F.relu(1 - r) + F.relu(1 + f), _critic_g),
    "lsgan": Loss(
        "lsgan", lambda r, f: 0.5 * (r - 1) ** 2 + 0.5 * f**2, lambda f: 0.5 * (f - 1) ** 2
    ),
}


def get_loss(kind: str) -> Loss:
    return LOSSES[kind]


Critic = Callable[[Tensor], Tensor]  # D, or D with its labels and augmentation bound: x -> logits


def gradient_penalty(D: nn.Module | Critic, real: Tensor, fake: Tensor) -> Tensor:
    """Per-sample (‖∇ₓ D(x̂)‖₂ - 1)² at x̂ = εx + (1-ε)G(z), ε ~ U[0, 1] (Gulrajani et al. 2017).

    The gradient is taken out of place with ``create_graph=True``, so that one ordinary backward
    of the total D loss reaches D's weights and DDP syncs the gradients once.
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)  # (B, C, H, W)
    (grad,) = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1) ** 2  # (B,)


def r1_penalty(D: nn.Module | Critic, real: Tensor) -> Tensor:
    """Per-sample ‖∇ₓ D(x)‖₂² at the real images x (Mescheder et al. 2018); the step weighs it
    by γ/2 (and by the interval of lazy regularisation, as StyleGAN2 does).

    Out of place with ``create_graph=True``, like ``gradient_penalty``: one ordinary backward of
    the total D loss reaches D's weights, and DDP syncs the gradients once.
    """
    x = real.detach().requires_grad_(True)  # (B, C, H, W)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return grad.flatten(1).square().sum(1)  # (B,)
