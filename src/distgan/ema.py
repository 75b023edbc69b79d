"""An exponential moving average of G's weights (Karras et al.; Yazıcı et al. 2019).

    ema = EMA(G, decay=0.999)
    ... after each G step: ema.update(G)
    samples = ema.model(z)

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

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)  # p_ema += (1-d)(p - p_ema)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
