"""A lost node: how long a run waits for capacity to come back, and the one line it ends with.

    failure_config = failure_config_for(spec)   # in RunConfig, before TorchTrainer.fit()
    try:
        trainer.fit()
    except Exception as e:
        if (lost := classify(e)) is not None:     # a node or a worker was lost, or never placed
            raise ClusterError(lost_message(lost, run, step, checkpoint_step, spec))

Ray Train restarts the worker group from the latest checkpoint in the run's storage after a
worker dies, up to ``scale.max_failures`` times. Each restart waits for its placement group at
most ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` (set here from ``scale.wait_minutes``), and with
``controller_failure_limit=0`` a group that cannot be placed in that time ends the run, where
Ray's default (-1) would retry forever in silence (DESIGN.md, Ray 2.60 facts).

An elastic job (``scale.workers: [MIN, MAX]``) needs a watch in the driver besides: while Ray
Train's autoscaling coordinator reserves it room for fewer than MIN workers (a node lost, another
run holding the cluster), its elastic policy tries no group at all, so that timeout never runs,
and it waits forever without a word. ``CapacityWatch`` says once that it waits, and ends the run
after the same time without a worker group::

    watch = CapacityWatch(spec, plan.cpus_per_worker, out)
    watch.check()                                 # in the driver's poll loop; raises NoWorkerGroup
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass

from distgan.errors import UserError
from distgan.specs import JobSpec
from distgan.storage import Location

START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray propagates it to its controller
# Even a cluster with room takes seconds to place a worker group (a loaded head, a node just
# back), so scale.wait_minutes: 0 still waits this long before a group counts as unplaceable.
MIN_START_S = 20.0
NODE_LOST, WORKER_LOST, NOT_PLACED = "node lost", "worker lost", "workers not placed"
_NODE_ID = re.compile(r"\b[0-9a-f]{56}\b")  # Ray's node ids, as its error texts print them


def failure_config_for(spec: JobSpec):
    """Ray Train's FailureConfig for the job; also sets how long a worker group may wait to be
    placed (``scale.wait_minutes``) in this process's environment, from which ``fit()`` hands
    it to Ray Train's controller. A preemption Ray sees coming is counted apart from other
    failures, with the same limit."""
    import ray.train

    os.environ[START_TIMEOUT_ENV] = f"{start_timeout_s(spec):g}"
    n = spec.scale.max_failures
    return ray.train.FailureConfig(
        max_failures=n, max_preemption_failures=n, controller_failure_limit=0
    )


def start_timeout_s(spec: JobSpec) -> float:
    """How long a run may be without a worker group before it ends: ``scale.wait_minutes``."""
    return max(60 * spec.scale.wait_minutes, MIN_START_S)


class NoWorkerGroup(Exception):
    """An elastic run has had no worker group for ``scale.wait_minutes`` (``CapacityWatch``)."""


class CapacityWatch:
    """Ends an elastic run that has had no worker group (alive or starting) for
    ``start_timeout_s``, having said once, after ``TELL_AFTER_S``, that it waits and for what.
    ``check()`` asks Ray's State API at most every ``CHECK_S`` seconds; when that cannot answer
    (a cluster without its dashboard), the run waits as Ray has it. The driver that gives up
    ends Ray Train's controller (``end_train_controller``)."""

    CHECK_S = 2.0
    TELL_AFTER_S = 15.0  # a group normally starts within seconds, a restarted one too

    def __init__(self, spec: JobSpec, cpus_per_worker: float, out, clock=time.monotonic):
        self.spec, self.cpus, self.out, self.clock = spec, cpus_per_worker, out, clock
        self.limit = start_timeout_s(spec)
        self.since = clock()  # when a worker group was last seen alive (or the run began)
        self.next_check, self.told = 0.0, False

    def check(self) -> None:
        now = self.clock()
        if now < self.next_check:
            return
        self.next_check = now + self.CHECK_S
        if worker_group_alive() is not False:
            self.since, self.told = now, False
            return
        if not self.told and now - self.since >= self.TELL_AFTER_S:
            need = self.spec.scale.min_workers
            print(
                f"distgan: no worker group is running: Ray Train waits for room for at least "
                f"{need} workers ({need * self.cpus:g} CPUs); the run ends if the cluster has "
                f"none within {_minutes(self.limit)} (scale.wait_minutes: "
                f"{self.spec.scale.wait_minutes:g})",
                file=self.out,
                flush=True,
            )
            self.told = True
        if now - self.since >= self.limit:
            raise NoWorkerGroup(f"no worker group for {now - self.since:.0f} s")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:g} min"


def worker_group_alive() -> bool | None:
    """Whether Ray Train has a worker group for this driver's job, alive or on its way (its
    actors being placed or started: Ray's own start timeout covers those); None when Ray
    cannot say. Below MIN, the elastic policy creates no worker actor at all."""
    try:
        return bool(_job_actors("RayTrainWorker", ("state", "!=", "DEAD"), limit=1))
    except Exception:  # noqa: BLE001 - without the State API the watch does nothing
        return None


def _job_actors(class_name: str, state: tuple[str, str, str], **options) -> list:
    """The State API's actors of ``class_name`` in this driver's job whose state passes
    ``state`` (a filter); raises what the State API raises."""
    import ray
    from ray.util.state import list_actors

    job = ray.get_runtime_context().get_job_id()
    filters = [("class_name", "=", class_name), state, ("job_id", "=", job)]
    return list_actors(filters=filters, raise_on_missing_output=False, **options)


def end_train_controller() -> int:
    """SIGKILLs the Ray Train controller of this driver's job, which Ray Train places on the
    driver's own node, and returns how many it ended (0 when the State API cannot say). For a
    driver that gives up on a run whose ``trainer.fit()`` still waits in another thread: the
    controller's death ends that wait. A thread left inside ``ray.get`` when Ray shuts down
    crashes the process (a segfault) once it connects to Ray again, and no API hands the driver
    the controller's handle to abort it."""
    import ray

    try:
        actors = _job_actors("TrainController", ("state", "=", "ALIVE"), detail=True)
    except Exception:  # noqa: BLE001 - without the State API Ray's shutdown ends it
        return 0
    node = ray.get_runtime_context().get_node_id()
    ended = 0
    for actor in (a for a in actors if a.node_id == node):  # pids of this node only
        try:
            os.kill(int(actor.pid), signal.SIGKILL)
            ended += 1
        except (OSError, TypeError, ValueError):  # gone already, or not a pid of this machine
            pass
    return ended


@dataclass(frozen=True)
class Lost:
    """What a failed ``fit()`` lost: ``reason`` (NODE_LOST, WORKER_LOST or NOT_PLACED), the
    nodes that died while it ran (``"127.0.0.1 (2 CPUs)"``), and whether it ended because the
    group could not be placed again (rather than after ``scale.max_failures`` restarts)."""

    reason: str
    nodes: tuple[str, ...] = ()
    not_placed: bool = False


def _chain(error: BaseException, context: bool = True):
    """The error and every error inside it: causes (and with ``context`` the errors being
    handled when each was raised), Ray Train's wrapped controller and worker failures, a health
    check's failure."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__ if context else None, getattr(e, "cause", None)]
        todo += [getattr(e, "controller_failure", None), getattr(e, "health_check_failure", None)]
        todo += list((getattr(e, "worker_failures", None) or {}).values())


def user_error_in(error: BaseException) -> UserError | None:
    """The user's mistake behind a failed ``fit()`` (a shard whose bytes are not the manifest's,
    raised in a worker's Ray Data task), to be said in one line; None if it was something else.

    Ray wraps it: a ``WorkerGroupError`` maps ranks to their errors, and a ``RayTaskError`` is
    also an instance of the error it carries, whose text is a traceback: its ``cause`` is the
    original."""
    for e in _chain(error, context=False):
        if isinstance(e, UserError) and not isinstance(getattr(e, "cause", None), UserError):
            # Ray Data appends its retry advice to the text: the first line is the user's.
            kind = next(c for c in type(e).__mro__ if c.__module__ == UserError.__module__)
            return kind(str(e).strip().splitlines()[0])
    return None


def classify(error: BaseException) -> Lost | None:
    """What a failed ``fit()`` lost, or None for any other failure (a bug, a user's error in a
    worker), which keeps its traceback."""
    from ray.exceptions import NodeDiedError, RayActorError
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    errors = list(_chain(error))
    not_placed = any(isinstance(e, (WorkerGroupStartupTimeoutError, NoWorkerGroup)) for e in errors)
    died = any(isinstance(e, (RayActorError, NodeDiedError)) for e in errors)
    if not (not_placed or died):
        return None
    nodes = lost_nodes(" ".join(str(e) for e in errors))
    if nodes:
        return Lost(NODE_LOST, nodes, not_placed)
    return Lost(WORKER_LOST if died else NOT_PLACED, (), not_placed)


def disk_full(error: BaseException) -> bool:
    """Whether the run failed because its storage was full (ENOSPC, in distgan's writes or in
    Ray Train's copy of a checkpoint)."""
    return any(
        getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e)
        for e in _chain(error)
    )


def disk_full_message(run: Location, step: int, saved: int | None) -> str:
    """One line: the storage is full, what is saved, and how to go on once there is room."""
    where = f"{run}: the run's storage is full (no space left on device) at step {step}"
    if saved is None:
        return f"{where}, before its first checkpoint; make room there and start again"
    return (
        f"{where}; its last complete checkpoint is at step {saved}. Make room there, then "
        f"continue with: {resume_command(run)}"
    )


def lost_nodes(error_text: str = "") -> tuple[str, ...]:
    """The nodes that died while this process ran (those the error names first), each as
    ``"ADDRESS (RESOURCES)"``; empty when Ray cannot say."""
    try:
        import ray
        from ray.util.state import list_nodes

        named = set(_NODE_ID.findall(error_text))
        since_ms = _process_start_s() * 1000
        dead = [
            n for n in list_nodes(detail=True, limit=1000, raise_on_missing_output=False)
            if n.state == "DEAD" and (n.node_id in named or (n.end_time_ms or 0) >= since_ms)
        ]  # fmt: skip
        if not dead:  # the State API's view lags the GCS's by a moment
            return tuple(
                _describe(n["NodeManagerAddress"], n.get("Resources", {}))
                for n in ray.nodes()
                if not n.get("Alive") and n.get("NodeID") in named
            )
        return tuple(_describe(n.node_ip, n.resources_total or {}) for n in dead)
    except Exception:  # noqa: BLE001 - the message goes out without the node's name
        return ()


def _process_start_s() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001
        return time.time()


def _describe(address: str, resources: dict) -> str:
    parts = [f"{resources[k]:g} {k}s" for k in ("GPU", "CPU") if resources.get(k)]
    return f"{address} ({', '.join(parts)})" if parts else address


def resume_command(run: Location) -> str:
    """The command that continues the run, as the user types it: ``distgan submit --resume
    URI`` (with its ``?endpoint_override=...`` query) for a job submitted to a cluster,
    ``distgan train --resume RUN`` for a local run."""
    return f"distgan {'submit' if submitted() else 'train'} --resume {shlex.quote(run.typed)}"


def submitted() -> bool:
    """Whether this process is the driver of a job that ``distgan submit`` sent (Ray hands the
    job's metadata to its entrypoint)."""
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    except ValueError:
        return False
    return "distgan_job" in (job.get("metadata") or {})


def lost_message(lost: Lost, spec: JobSpec, run: Location, step: int, saved: int | None) -> str:
    """One line: what was lost, why the run ended, the step and checkpoint it reached, and the
    command that continues it."""
    s = spec.scale
    if lost.reason == NODE_LOST:
        what = f"the run lost node {' and '.join(lost.nodes)}"
    elif lost.reason == WORKER_LOST:
        what = "a training worker died (its process or its node was lost)"
    else:
        what = "the cluster has no room for the run's workers"
    if lost.not_placed:
        why = (
            f"no capacity for its {s.min_workers} workers came back within scale.wait_minutes "
            f"({s.wait_minutes:g} min)"
        )
    else:
        why = f"it had restarted scale.max_failures ({s.max_failures}) times already"
    if saved is None:
        return f"{what}, and {why}; it reached step {step}, before its first checkpoint (run {run})"
    return (
        f"{what}, and {why}; it reached step {step}, its last checkpoint is at step {saved}. "
        f"Continue with: {resume_command(run)}"
    )
