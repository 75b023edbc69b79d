"""ADA's controller (Karras et al. 2020): the augmentation probability p, tuned so that D stays
as sure of the reals as ``target`` says.

    tuner = AdaTuner(target=spec.train.ada_target)   # 0.6 is the paper's
    logits = D(augment(x, tuner.p))                  # distgan.ada, reals and fakes alike
    tuner.observe(real_logits)                       # in each D step
    p = tuner.update(spec.train.batch_size)          # once a step, on every rank

The overfitting heuristic r_t = E[sign(D(real))] over the last ``interval`` steps is 0 when D
cannot tell reals from fakes and nears 1 when it has learnt the reals by heart. Every ``interval``
steps, p moves by sign(r_t - target) · (batch_size · interval) / (speed_kimg · 1000), clamped to
[0, 1]: from 0 to 1 in ``speed_kimg`` thousand images at the most.

Under DDP each rank sees its own reals; the sums of signs are all-reduced (``distgan.dist``) at
each adjustment, so every rank computes the same r_t and holds the same p. That is one collective
every ``interval`` steps: every rank must call ``update`` equally often. It lives apart from
``distgan.ada`` because the step, which imports that, knows nothing of torch.distributed.
"""

from __future__ import annotations

from typing import Any

import torch

from distgan import dist

Tensor = torch.Tensor


class AdaTuner:
    """The paper's controller of ADA's p, starting at p = 0."""

    def __init__(self, target: float, interval: int = 4, speed_kimg: float = 500.0):
        self.target = target
        self.interval = interval
        self.speed_kimg = speed_kimg
        self.r_t: float | None = None  # E[sign(D(real))] over the last interval; None before one
        self._p = 0.0
        # Since the last adjustment: the sum of signs (a 0-d tensor on the logits' device, so
        # that observing costs no host sync) and how many logits it holds.
        self._signs: Tensor | None = None
        self._count = 0
        self._steps = 0

    @property
    def p(self) -> float:
        """The probability of each augmentation, the same on every rank."""
        return self._p

    def observe(self, real_logits: Tensor) -> None:
        """Counts the signs of D's logits on a real batch (any shape)."""
        signs = real_logits.detach().float().sign().sum()
        if self._signs is not None:  # a resumed sum sits on the CPU: it moves once
            signs = signs + self._signs.to(signs.device)
        self._signs = signs
        self._count += real_logits.numel()

    def update(self, batch_size: int) -> float:
        """Called once a step with the global batch size; every ``interval``-th call adjusts p
        from the signs observed since the last adjustment, on every rank alike. Returns p."""
        self._steps += 1
        if self._steps < self.interval:
            return self._p
        self._steps = 0
        if self._signs is None:  # nothing observed (on any rank: they observe alike)
            return self._p
        stats = torch.stack([self._signs, torch.full_like(self._signs, self._count)])
        # The mean over ranks of (sum, count) has the ratio of the sums over ranks.
        signs, count = dist.all_reduce_mean(stats).tolist()
        self._signs, self._count = None, 0
        self.r_t = signs / count
        direction = (self.r_t > self.target) - (self.r_t < self.target)  # sign(r_t - target)
        adjust = direction * batch_size * self.interval / (self.speed_kimg * 1000)
        self._p = min(max(self._p + adjust, 0.0), 1.0)
        return self._p

    def state_dict(self) -> dict[str, Any]:
        """p, r_t and this rank's signs since the last adjustment, as plain numbers (loadable
        weights-only). p is every rank's; the pending signs are this rank's own: a checkpoint
        that keeps rank 0's alone resumes with the same p and a first adjustment that weighs
        rank 0's pending signs for all, one that keeps each rank's (as the RNG states) exactly."""
        signs = 0.0 if self._signs is None else float(self._signs)
        return {
            "p": self._p,
            "r_t": self.r_t,
            "signs": signs,
            "count": self._count,
            "steps": self._steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._p = float(state["p"])
        self.r_t = state["r_t"]
        self._count = int(state["count"])
        self._signs = torch.tensor(float(state["signs"])) if self._count else None
        self._steps = int(state["steps"])
