"""StyleGAN2's path length regularisation of G, with its running mean of the lengths.

    pl = PathLengthPenalty()        # .to(device) with G; a state_dict entry of the checkpoint
    penalty = pl(G, z[: B // 2])    # (B/2,) per-sample penalty, G called as G(z, return_ws=True)

G must give its per-layer styles (``models.stylegan2``: ``return_ws``). It lives apart from the
model because it keeps the mean the same on every DDP rank (``distgan.dist``), which the models
and the step, plain PyTorch, know nothing of; ``step.train_step`` takes it as an argument.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.dist import all_reduce_mean

Tensor = torch.Tensor


class PathLengthPenalty(nn.Module):
    """StyleGAN2's path length regularisation (Karras et al. 2020, eq. 4), per sample:
    (‖J_wᵀ y‖₂ − a)², J_w the Jacobian of G's image with respect to its ws, y ~ N(0, I)/√(H·W)
    an image of noise, and a the running mean of the lengths ‖J_wᵀ y‖₂ (squares summed over
    w's features, averaged over the num_ws layers, as StyleGAN2 does).

    Each call moves a ← a + decay·(mean length − a), the mean taken over every DDP rank so that
    a stays the same on all, and returns the penalties against the moved a (gradient-free).
    ``a`` is the buffer ``mean``: save the module's state_dict in checkpoints, and move it to
    G's device. G may be wrapped in DDP: it is called through the wrapper (``return_ws``), so
    the penalty's backward syncs G's gradients as an ordinary loss's does.

    The paper's schedule (the step's business): weight 2, lazily every 4th G step with the
    weight × 4, on half the G batch (pl batch = batch / 2), decay 0.01.
    """

    def __init__(self, decay: float = 0.01):
        super().__init__()
        self.decay = decay
        self.register_buffer("mean", torch.zeros(()))

    def forward(self, G: nn.Module, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Penalties (B,) of latents z (B, z_dim) (and labels (B,) for a conditional G), with
        the graph to G's parameters (``create_graph``)."""
        img, ws = G(z, return_ws=True) if labels is None else G(z, labels, return_ws=True)
        y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)  # (B, num_ws, w)
        lengths = grad.square().sum(2).mean(1).sqrt()  # (B,)
        with torch.no_grad():
            self.mean.lerp_(all_reduce_mean(lengths.mean()), self.decay)
        return (lengths - self.mean.clone()).square()
