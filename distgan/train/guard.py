"""The divergence guard: what a run does when GAN training itself fails. No Ray here.

    guard = Guard(spec, rank, checkpoints_dir)    # checkpoints_dir: rank 0's, for the message
    guard.remember(state)                         # at the start and at every checkpoint
    z = guard.latents(z, step)                    # the testing aid guard.inject_nan
    verdict = guard.after_step(state, skipped)    # OK, ROLLED_BACK or STOP
    metrics.update(guard.flags(metrics, state))   # at log steps: rollbacks, lr_scale, d_wins

A step whose loss or gradient is not finite is skipped by ``step.py`` (every rank agrees, since
DDP averages the NaN onto all of them). After ``guard.max_bad_steps`` skipped steps in a row the
guard puts the whole state back as it was at the last good checkpoint (weights, optimizers, EMA,
step, data position, RNG) and multiplies the learning rates by ``guard.lr_factor``; when that
has happened ``guard.max_rollbacks`` times, the next divergence stops the run with a message
that names the last good checkpoint. The copy it rolls back to lives in memory (on the CPU), so
a rollback needs neither the run's storage nor any communication between ranks.

A discriminator whose mean loss over a log interval falls below ``guard.d_win_loss`` is flagged
(``d_wins`` in the metrics and "D wins" in the progress line): G then gets almost no gradient.
Only the losses whose D loss is never negative are flagged (not wgan, wgan-gp).
"""

from __future__ import annotations

from typing import Any

import torch

from distgan.schedule import set_rates
from distgan.specs import JobSpec
from distgan.storage import display, join
from distgan.train.checkpoint import (
    TrainState,
    checkpoint_dir_name,
    restore,
    rng_state,
    set_rng_state,
    snapshot,
)

OK, ROLLED_BACK, STOP = "ok", "rolled back", "stop"
_NONNEGATIVE_D_LOSS = ("minimax", "nonsaturating", "hinge", "lsgan")


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of nested dicts, lists and tuples whose tensors are cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def inject_range(text: str) -> range:
    """``'13-15'`` -> range(13, 16); ``''`` -> an empty range (job_rules.py checks the form)."""
    if not text:
        return range(0)
    first, last = (int(part) for part in text.split("-"))
    return range(first, last + 1)


class Guard:
    """Counts non-finite steps, rolls back, lowers the learning rates, flags a winning D."""

    def __init__(self, spec: JobSpec, rank: int, checkpoints_dir: str | None = None):
        self.spec = spec
        self.g = spec.guard
        self.rank = rank
        self.checkpoints_dir = checkpoints_dir  # a path or a URI (storage.py), for messages
        self.bad_in_row = 0
        self.rollbacks = 0
        self.good: dict[str, Any] | None = None  # the state at the last good checkpoint (CPU)
        self.good_rng: dict[str, Any] | None = None
        self.good_step = 0
        self.inject = inject_range(self.g.inject_nan)
        self.injected: set[int] = set()

    def remember(self, state: TrainState) -> None:
        """Keeps a copy of ``state`` to roll back to, unless the last step was a skipped one."""
        if self.bad_in_row:
            return
        self.rollbacks = max(self.rollbacks, state.rollbacks)
        ckpt = snapshot(state, job_yaml="", rng_states=[], metrics={})
        self.good = _cpu_copy(ckpt)
        self.good_rng = _cpu_copy(rng_state())
        self.good_step = state.step

    def latents(self, z: torch.Tensor, step: int) -> torch.Tensor:
        """``z``, or NaN on rank 0 when ``step`` is one of guard.inject_nan (a testing aid)."""
        if self.rank == 0 and step in self.inject and step not in self.injected:
            return z * float("nan")
        return z

    def after_step(self, state: TrainState, skipped: bool) -> str:
        """OK, ROLLED_BACK (``state`` is now the last good checkpoint's) or STOP."""
        if state.step in self.inject:
            self.injected.add(state.step)  # each injected step once, so a rollback recovers
        if not skipped:
            self.bad_in_row = 0
            return OK
        self.bad_in_row += 1
        if self.bad_in_row < self.g.max_bad_steps:
            return OK
        if self.rollbacks >= self.g.max_rollbacks or self.good is None:
            return STOP
        lr_scale = state.lr_scale * self.g.lr_factor
        restore(state, self.good, self.rank, source="the guard's copy of the last checkpoint")
        set_rng_state(self.good_rng)
        self.rollbacks += 1
        state.rollbacks, state.lr_scale = self.rollbacks, lr_scale
        set_rates(state.nets, self.spec.optim, lr_scale)  # the loop's lr_decay scales these
        self.bad_in_row = 0
        return ROLLED_BACK

    def flags(self, metrics: dict[str, float], state: TrainState) -> dict[str, float]:
        """Figures for a log step's metrics: rollbacks so far, the lr scale, and d_wins (0/1)."""
        d_loss = metrics.get("d_loss", float("inf"))
        wins = (
            self.spec.loss.kind in _NONNEGATIVE_D_LOSS
            and self.g.d_win_loss > 0
            and d_loss < self.g.d_win_loss
        )
        return {"rollbacks": state.rollbacks, "lr_scale": state.lr_scale, "d_wins": float(wins)}

    def stop_message(self, state: TrainState) -> str:
        """One line: what happened, where the last good checkpoint is, and what to do."""
        if self.good_step and self.checkpoints_dir is not None:
            folder = display(join(self.checkpoints_dir, checkpoint_dir_name(self.good_step)))
            where = f"the last good checkpoint is {folder}"
        elif self.good_step:
            where = f"the last good checkpoint is step {self.good_step}"
        else:
            where = "no good checkpoint was written yet"
        o, f = self.spec.optim, self.g.lr_factor
        return (
            f"training diverged: {self.bad_in_row} non-finite steps in a row up to step "
            f"{state.step}, after {self.rollbacks} rollback(s) (guard.max_rollbacks="
            f"{self.g.max_rollbacks}); {where}; continue from it with lower learning rates, e.g. "
            f"--set optim.lr_g={o.lr_g * f:g} --set optim.lr_d={o.lr_d * f:g}"
        )
