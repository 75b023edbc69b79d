"""Paths through G's latent space: spherical interpolation and SeFa's closed-form directions.

    path = slerp(z0, z1, torch.linspace(0, 1, 8))          # (8, d), endpoints z0 and z1
    name, W = latent_layer(G, z_dim)                         # W (out, d): the layer z meets first
    directions, eigenvalues = sefa_directions(W, k=5)        # (5, d) unit rows, eigenvalues (5,)

SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021): the
directions n that the first latent-to-feature map W changes most, i.e. maximising |W n|², are
the eigenvectors of WᵀW with the largest eigenvalues.
"""

from __future__ import annotations

import torch
from torch import nn

_PARALLEL = 1e-6  # below this angle (radians) slerp is linear interpolation (sin ω ≈ 0)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` to ``b`` (d,) at fractions ``t`` (T,) -> (T, d).

    Moves along the great circle at a constant angular speed; when |a| = |b| every point keeps
    that norm, which linear interpolation would shrink towards the origin, where a Gaussian
    latent is rarely drawn.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]  # t (T, 1)
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega < _PARALLEL:
        out = (1 - t64) * a64 + t64 * b64
    else:
        out = (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / torch.sin(omega)
    return out.to(a.dtype)


def latent_layer(G: nn.Module, z_dim: int) -> tuple[str, torch.Tensor]:
    """The layer that first maps the latent z to features, and its weight as W (out, z_dim).

    Found by running G once and watching which Linear or ConvTranspose2d receives z itself (or a
    reshape of it, such as (B, z_dim, 1, 1)), so it serves any architecture built of those
    layers. A ConvTranspose2d weight (z_dim, C, kh, kw) becomes W (C·kh·kw, z_dim).
    Returns (the module's name in G, W detached, float64). ValueError if z meets neither.
    """
    names = {m: n for n, m in G.named_modules()}
    z = torch.randn(2, z_dim)
    found: list[nn.Module] = []

    def watch(module, inputs):
        x = inputs[0] if inputs else None
        is_z = isinstance(x, torch.Tensor) and x.data_ptr() == z.data_ptr()
        if not found and is_z and x.numel() == z.numel():
            found.append(module)

    hooks = [
        m.register_forward_pre_hook(watch)
        for m in G.modules()
        if isinstance(m, (nn.Linear, nn.ConvTranspose2d))
    ]
    was_training = G.training
    try:
        G.eval()
        with torch.no_grad():
            G(z, torch.zeros(2, dtype=torch.long)) if getattr(G, "num_classes", 0) else G(z)
    finally:
        G.train(was_training)
        for h in hooks:
            h.remove()
    if not found:
        raise ValueError(
            f"{type(G).__name__}: no Linear or ConvTranspose2d layer takes the latent z directly"
        )
    layer = found[0]
    weight = layer.weight.detach().double()
    if isinstance(layer, nn.ConvTranspose2d):
        weight = weight.flatten(1).T  # (z_dim, C, kh, kw) -> (C·kh·kw, z_dim)
    return names[layer], weight


def sefa_directions(W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` eigenvectors of WᵀW for W (out, d): unit rows (k, d), and their eigenvalues
    (k,), largest first. Each direction's sign is fixed so that its largest-magnitude entry is
    positive (an eigenvector's sign is arbitrary; this makes the pictures reproducible)."""
    W = W.double()
    values, vectors = torch.linalg.eigh(W.T @ W)  # ascending; vectors are columns (d, d)
    order = torch.argsort(values, descending=True)[:k]
    directions = vectors[:, order].T  # (k, d)
    biggest = directions.abs().argmax(dim=1)
    signs = torch.sign(directions[torch.arange(len(directions)), biggest])
    directions = directions * signs[:, None]
    return directions / directions.norm(dim=1, keepdim=True), values[order]
