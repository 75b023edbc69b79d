"""When every rank stops: ``train.max_minutes`` has run out, or the driver asked (``distgan
stop``, Ctrl-C, SIGTERM). No Ray here.

    stops = StopCheck(limit_s=120, earlier_s=0, step=0, stop_requested=outputs.stop_requested)
    ...after each step:  reason = stops.after_step(state.step)   # None, "time" or "stop"

The ranks start the clock together (a collective in the constructor), then agree through one
small all-reduce at *probe* steps only (a collective each step would cost more than a small
model's step): probes come about every ``PROBE_SECONDS`` and closer together as the time limit
nears (an eighth of the time left each time), so the run ends within a step of its limit, and a
stop request is seen within about a second. Steps are turned into seconds at the slower of two
speeds, the whole part's and the one since the last probe, so a machine that slows down (another
job, a loaded host) brings the next probes closer at once. The probe steps follow from reduced
figures, so every rank probes at the same steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from distgan import dist

PROBE_SECONDS = 1.0  # the most time between two probes
# Near the limit, the next probe is planned at most this share of the time left away (in steps
# at the speed seen so far): the run still ends within a step of its limit if the steps become
# up to 8 times slower after a probe (a loaded machine), for a few dozen more probes a run.
TIME_LEFT_SHARE = 1 / 8
TIME_UP, REQUESTED = "time", "stop"


class StopCheck:
    """Whether the ranks stop after a step; see the module's docstring.

    ``limit_s``: the run's time limit in seconds (0: none), counted over the whole run like
    ``elapsed_s``; ``earlier_s``: the seconds trained by earlier parts of the run; ``step``: the
    step this part starts from; ``stop_requested``: rank 0's look at the driver's request (None
    on the other ranks), called at probe steps only.
    """

    def __init__(
        self,
        limit_s: float,
        earlier_s: float,
        step: int,
        stop_requested: Callable[[], bool] | None = None,
        device: torch.device | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit, self.earlier = limit_s, earlier_s
        self.clock = clock
        # Every rank starts its clock when the last one gets here: rank 0 does more before the
        # loop (its outputs, the models' cost), and a clock started ahead of rank 0's would end
        # the run with rank 0's elapsed_s short of the limit (0.57 s short of 6 s, 2 workers).
        dist.wait_for_all(device)
        self.started = clock()
        self.first_step, self.next_probe = step, step + 1
        self.last_probe = (step, self.started)  # (step, clock) of the last probe
        self.stop_requested = stop_requested
        self.device = device

    def elapsed(self) -> float:
        """Seconds of training over the whole run."""
        return self.earlier + self.clock() - self.started

    def after_step(self, step: int) -> str | None:
        """``"time"`` or ``"stop"`` when every rank ends after ``step``, else None; the same on
        every rank (a collective at probe steps, so every rank calls it after every step)."""
        if step < self.next_probe:
            return None
        now = self.clock()
        elapsed = self.earlier + now - self.started
        time_up = self.limit > 0 and elapsed >= self.limit
        asked = self.stop_requested is not None and self.stop_requested()
        steps_per_s = min(
            (step - self.first_step) / max(now - self.started, 1e-9),
            (step - self.last_probe[0]) / max(now - self.last_probe[1], 1e-9),
        )
        self.last_probe = (step, now)
        gap = PROBE_SECONDS * steps_per_s
        if self.limit > 0:
            gap = min(gap, (self.limit - elapsed) * TIME_LEFT_SHARE * steps_per_s)
        # One all-reduce: any rank's time-up or stop, and the smallest gap (max of its negative).
        agreed = dist.all_reduce_max(
            torch.tensor([float(time_up), float(asked), -gap], dtype=torch.float64,
                         device=self.device)
        )  # fmt: skip
        time_up, asked, gap = agreed[0].item() > 0, agreed[1].item() > 0, -agreed[2].item()
        self.next_probe = step + max(1, int(gap) if math.isfinite(gap) else 1)
        return TIME_UP if time_up else REQUESTED if asked else None
