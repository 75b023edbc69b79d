"""Learning rates over a run: the job's rates, the divergence guard's factor, and the decay of
``optim.lr_decay`` towards ``optim.lr_final`` × the rates by the end of the run.

    rates = RateSchedule(spec.optim, spec.train, step=state.step, seconds=state.train_seconds)
    rates.apply(nets, step, scale=state.lr_scale)   # before each step: lr × scale × decay
    rates.update(step, seconds, steps_per_s)        # at log steps, on every rank alike

A run ends at ``train.steps`` or, with ``train.max_minutes``, when its time is up, whichever
comes first. The step at which time runs out is not known in advance, so ``Horizon`` estimates
it from the recent speed at every log step, as the mean over the ranks: every rank then uses
the same rates, as DDP needs. A job without a time limit decays by its steps alone, the same in
every run, so an exact resume stays exact.
"""

from __future__ import annotations

import math

import torch

from distgan import dist


def decay_factor(kind: str, final: float, progress: float) -> float:
    """The share of the rates at ``progress`` (0 at the start, 1 at the end) of the run, for
    ``optim.lr_decay`` ``kind`` falling to ``final`` (``optim.lr_final``)."""
    p = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return 1.0 - (1.0 - final) * p
    if kind == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


def set_rates(nets, optim, scale: float = 1.0) -> None:
    """G's and D's Adam: the job's learning rates × ``scale``, and the job's betas."""
    for opt, lr in ((nets.opt_g, optim.lr_g), (nets.opt_d, optim.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * scale
            group["betas"] = (optim.beta1, optim.beta2)


class Horizon:
    """The step at which the run is expected to end (``end``): ``train.steps``, or sooner when
    ``train.max_minutes`` runs out first at the speed seen so far."""

    def __init__(self, train, step: int = 0, seconds: float = 0.0):
        self.steps = train.steps
        self.limit = 60.0 * train.max_minutes  # seconds; 0 = none
        self.end = float(train.steps)
        if self.limit and step and seconds:  # a resumed run: its speed so far
            self.end = min(self.end, max(step, step / seconds * self.limit))

    def update(self, step: int, seconds: float, steps_per_s: float, device=None) -> None:
        """At a log step (every rank, the same step): the end, from ``seconds`` of training so
        far and the recent ``steps_per_s``, averaged over the ranks."""
        if not self.limit:
            return
        guess = step + max(0.0, self.limit - seconds) * steps_per_s
        guess = dist.all_reduce_mean(torch.tensor([guess], dtype=torch.float64, device=device))
        self.end = min(float(self.steps), max(float(step), float(guess.item())))

    def progress(self, step: int) -> float:
        return step / max(self.end, 1.0)


class RateSchedule:
    """``optim.lr_decay`` over a run: the rates set before each step, and the expected end
    (``Horizon``) followed from the speed. Does nothing when the job does not decay."""

    def __init__(self, optim, train, step: int = 0, seconds: float = 0.0):
        self.optim = optim
        self.decays = optim.lr_decay != "none"
        self.horizon = Horizon(train, step, seconds)

    def apply(self, nets, step: int, scale: float = 1.0) -> None:
        """The job's rates × ``scale`` (the guard's factor) × the decay at ``step``."""
        if self.decays:
            o = self.optim
            factor = decay_factor(o.lr_decay, o.lr_final, self.horizon.progress(step))
            set_rates(nets, o, scale * factor)

    def update(self, step: int, seconds: float, steps_per_s: float, device=None) -> None:
        """``Horizon.update`` (a collective under a time limit: every rank calls it alike)."""
        if self.decays:
            self.horizon.update(step, seconds, steps_per_s, device)
