"""An exponential moving average of G's weights (Karras et al.; Yazıcı et al. 2019).

    ema = EMA(G, decay=0.999)                 # or: make_ema(G, spec.train), None without EMA
    ... after G step number `step` (1, 2, ...): ema.update(G, step)
    samples = ema.model(z)

Two schedules of the decay per step:

- fixed (``train.ema_decay``): ramped up as min(decay, (1 + step) / (10 + step)) (the warm-up of
  TensorFlow's ExponentialMovingAverage): at step 300 a 0.999 average would still hold 74% of
  G's random initial weights, so short runs and early evaluations would score noise.
- a half-life in images (``train.ema_kimg``, StyleGAN2-ADA): decay = 0.5 ** (batch / half-life),
  the half-life limited to ``ema_rampup`` × the images G has been trained on (step × batch), so
  that the average forgets the early G as quickly as G changes. The same half-life then serves
  any batch size.

Both depend on the step alone, so a resumed run averages exactly as an uninterrupted one.
Buffers (BatchNorm statistics) are copied, not averaged. Knows nothing of DDP: pass the plain
module (``distgan.models.unwrap``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(
        self,
        model: nn.Module,
        decay: float,
        half_life_kimg: float = 0.0,
        rampup: float = 0.0,
        batch_size: int = 1,
    ):
        self.decay = decay
        self.half_life_kimg = half_life_kimg  # 0: the fixed decay
        self.rampup = rampup  # 0: no ramp-up of the half-life
        self.batch_size = batch_size  # images per G step (the global batch)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int | None) -> float:
        if self.half_life_kimg > 0:
            half_life = self.half_life_kimg * 1000  # images
            if self.rampup > 0 and step is not None:
                half_life = min(half_life, self.rampup * step * self.batch_size)
            return 0.5 ** (self.batch_size / max(half_life, 1e-8))
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        weight = 1.0 - self.decay_at(step)
        torch._foreach_lerp_(ema_params, params, weight)  # p_ema += (1-d)(p - p_ema)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def make_ema(model: nn.Module, train) -> EMA | None:
    """The EMA a job's train section (``config.TrainSpec``) asks for, or None (``train.ema``
    off)."""
    if not train.ema:
        return None
    return EMA(model, train.ema_decay, train.ema_kimg, train.ema_rampup, train.batch_size)
