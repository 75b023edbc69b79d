"""A pause in Ray Train's control loop while it waits for room for its workers.

Ray Train 2.60's controller, with an elastic ``ScalingConfig(num_workers=(MIN, MAX))``, asks its
scaling policy again and again while no worker group runs (before the first start, and after a
lost node): when the policy answers "not yet" (room for fewer than MIN workers, or the
autoscaling coordinator has not answered), the loop goes round again at once, with no wait. Its
actor then keeps a whole core of the driver's node busy for as long as the run waits for
capacity (``scale.wait_minutes``; minutes, where an autoscaler is adding a node), a core the
head's own processes and the other jobs there need. Measured: 21 CPU-seconds in a 20-second
wait on the 2-CPU test head (``tests/test_elastic_ray.py`` checks that it stays idle).

``PacedWait`` is a controller callback (``RunConfig(callbacks=[...])`` hands a callback that is
not a ``UserCallback`` to the controller as it is): after an iteration that left the controller
in the very state it was in (the policy's "not yet"), it sleeps ``PAUSE_S`` in the controller.
Every other iteration goes on at once; a running group's loop waits on its own poll (Ray
Train's health check interval) and is never paused.

    RunConfig(callbacks=[PacedWait(), ...])
"""

from __future__ import annotations

import time

from ray.train.v2._internal.execution.callback import ControllerCallback

PAUSE_S = 0.25  # a start or a restart comes that much later at most; the policy asks no faster


class PacedWait(ControllerCallback):
    """Sleeps ``PAUSE_S`` after each iteration of the controller that changed nothing."""

    def after_controller_state_update(self, previous_state, current_state) -> None:
        if current_state is previous_state and not current_state.is_terminal():
            time.sleep(PAUSE_S)
