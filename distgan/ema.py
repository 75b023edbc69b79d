"""An exponential moving average of G's weights (Karras et al.; Yazıcı et al. 2019).

    ema = EMA(G, decay=0.999)
    ... after G step number `step` (1, 2, ...): ema.update(G, step)
    samples = ema.model(z)

With ``step`` given, the decay ramps up as min(decay, (1 + step) / (10 + step)) (the warm-up of
TensorFlow's ExponentialMovingAverage): at step 300 a 0.999 average would still hold 74% of G's
random initial weights, so short runs and early evaluations would score noise. The ramp depends
on the step alone, so a resumed run averages exactly as an uninterrupted one.

Buffers (BatchNorm statistics) are copied, not averaged. Knows nothing of DDP: pass the plain
module (``distgan.models.unwrap``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int | None) -> float:
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
