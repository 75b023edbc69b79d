"""The driver's side of a run: it follows the run's records in storage and prints them.

    metrics = fit_with_progress(trainer, run, spec.train, sys.stdout)   # trainer.fit() in a thread

The driver may run on another machine than rank 0 (a cluster's head, a laptop submitting a job),
so it reads no local file: each new line of the run's ``metrics.jsonl`` in its storage becomes one
progress line with an ETA, a restarted worker group becomes one line saying from which checkpoint
the run goes on (in place of the raylet's paragraph), and ``distgan stop`` (SIGTERM) asks the
workers for a final checkpoint.
"""

from __future__ import annotations

import json
import signal
import threading
import time

from distgan.errors import UserError
from distgan.progress import duration
from distgan.specs import METRIC_NAMES
from distgan.storage import Location
from distgan.train.failures import end_train_controller, user_error_in
from distgan.train.outputs import METRICS, read_metrics, request_stop, write_status


def eta_seconds(
    m: dict, total: int, max_minutes: float = 0.0, anchor: dict | None = None
) -> tuple[float, bool] | None:
    """Seconds until the run ends after the metrics record ``m``, and whether the time limit
    (``train.max_minutes``, counted like ``elapsed_s`` over the whole run) ends it before
    ``total`` steps. None when no speed is known yet.

    The speed is the mean since ``anchor`` (the first record this session printed; eval pauses
    included), or for that first record the last interval's images/s over images per step.
    """
    step, elapsed = m["step"], m.get("elapsed_s", 0.0)
    if anchor is not None and step > anchor["step"] and elapsed > anchor.get("elapsed_s", 0.0):
        steps_per_s = (step - anchor["step"]) / (elapsed - anchor["elapsed_s"])
    elif m.get("images_per_s", 0) > 0 and m.get("images_seen", 0) > 0 and step > 0:
        steps_per_s = m["images_per_s"] / (m["images_seen"] / step)
    else:
        return None
    left = max(0, total - step) / steps_per_s
    if max_minutes > 0 and 60 * max_minutes - elapsed < left:
        return max(0.0, 60 * max_minutes - elapsed), True
    return left, False


_WORKER_DIED = "A worker died or was killed while executing"


def quiet_worker_deaths() -> None:
    """Drops the raylet's many-line worker-death warning from this driver's output.

    Ray prints every error the raylet publishes to the driver (``print_to_stdstream`` in its
    error-listener thread), and a killed training worker gives a paragraph about OOM killers and
    ``--enable-resource-isolation``. distgan says it in one line instead, from the run's records:
    which step the run had reached and from which checkpoint the restarted workers go on
    (``fit_with_progress``). Every other message goes through unchanged.
    """
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "distgan_quiet", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool):
        lines = [line for line in data.get("lines", []) if _WORKER_DIED not in str(line)]
        if data.get("pid") == "raylet" and len(lines) < len(data.get("lines", [])):
            if not lines:
                return
            data = {**data, "lines": lines}
        original(data, ignore_prefix)

    print_to_stdstream.distgan_quiet = True
    ray_worker.print_to_stdstream = print_to_stdstream


def progress_line(m: dict, total: int, max_minutes: float = 0.0, anchor: dict | None = None) -> str:
    """One line a person reads per log interval; ``anchor``: see ``eta_seconds``."""
    eta = eta_seconds(m, total, max_minutes, anchor) if m["step"] < total else None
    parts = [
        f"step {int(m['step']):>{len(str(total))}}/{total}",
        f"d_loss {m.get('d_loss', float('nan')):.3f}",
        f"g_loss {m.get('g_loss', float('nan')):.3f}",
        f"D(x) {m.get('d_real', float('nan')):.2f}",
        f"D(G(z)) {m.get('d_fake', float('nan')):.2f}",
        f"{m.get('images_per_s', 0):,.0f} img/s",
        *(f"{k} {m[k]:.4g}" for k in METRIC_NAMES if k in m),
        *(["D wins"] if m.get("d_wins") else []),  # the divergence guard's flags
        *([f"skipped {m['skipped']:.2f}/step"] if m.get("skipped") else []),
        *([f"rollbacks {int(m['rollbacks'])} lr ×{m['lr_scale']:g}"] if m.get("rollbacks") else []),
        *([f"GPU {m['gpu_mem_gb']:.1f} GB"] if "gpu_mem_gb" in m else []),
        duration(m.get("elapsed_s", 0)),
        *([f"ETA {duration(eta[0])}" + (" (max_minutes)" if eta[1] else "")] if eta else []),
    ]
    return "  ".join(parts)


def last_step(run: Location, default: int) -> int:
    logged = read_metrics(run)
    return int(logged[-1]["step"]) if logged else default


POLL_S = 0.25  # how soon a signal is answered
STOPPING = (
    "distgan: stopping: the workers write a final checkpoint at the step they reach (a second "
    "Ctrl-C stops at once, losing the steps since the last one)"
)
ABANDON_WAIT_S = 15.0  # how long a driver that gives up waits for fit() to return


class Stopped(KeyboardInterrupt):
    """The run was stopped by ``signum`` (SIGINT: Ctrl-C; SIGTERM: ``distgan stop``, Ray's job
    stop, a scheduler). ``at_once``: a second signal ended it without its final checkpoint.
    The process exits with ``exit_code`` (130 or 143, the shell's 128 + the signal)."""

    def __init__(self, signum: int, at_once: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.at_once = signum, at_once

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Interrupts:
    """SIGINT and SIGTERM while the driver follows a run: the first is recorded (the run is
    asked to stop with a final checkpoint), a second raises ``Stopped(at_once=True)``.

    Installed after ``ray.init``, which puts its own SIGTERM handler (and a C++ stack dump) in
    place of any installed before it. Outside the main thread (a Tune trial) signals are not this
    code's to handle, and nothing is installed.
    """

    def __enter__(self) -> Interrupts:
        self.signum: int | None = None
        self.previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise Stopped(self.signum, at_once=True)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def fit_with_progress(
    trainer, run: Location, t, out, on_record=None, workers=None, watch=None
) -> dict:
    """Runs ``trainer.fit()`` in a thread; prints rank 0's new metrics lines as they land in the
    run's storage (the driver may be on another machine than rank 0: it reads no local file).
    ``t``: the job's train section (steps, max_minutes). ``workers``: the count the run was
    started with; None (an elastic job, whose count Ray Train picks): say the first one seen,
    and say it again whenever it changes. ``watch``: an elastic run's ``CapacityWatch``, which
    ends it (``NoWorkerGroup``) when no worker group runs for ``scale.wait_minutes``.

    A first SIGINT or SIGTERM asks the workers to stop: they agree on a step within about a
    second (``stopping.StopCheck``), write a final checkpoint there and end; then ``Stopped`` is
    raised. A second signal raises ``Stopped(at_once=True)`` without waiting for them.
    """
    outcome: dict = {}
    done = threading.Event()

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = e
        finally:
            done.set()

    # An Event, not Thread.join: a signal handler raising inside join() can leave the thread
    # marked as ended while it still runs (CPython's lock-based join).
    thread = threading.Thread(target=fit, name="distgan-fit", daemon=True)
    thread.start()
    shown = [json.loads(line) for line in _metrics_lines(run)]  # earlier parts: not shown
    shown_step = int(shown[-1]["step"]) if shown else -1
    groups = {m["started_at"] for m in shown if "started_at" in m}  # worker groups seen
    # Whether this session's first worker group was seen (a new run's first says nothing).
    started = not shown
    anchor = None  # the first record of this session: the ETA's speed is measured from it
    told = workers  # the worker count last told (rank 0 writes its world size into each record)

    def show_new_lines() -> None:
        nonlocal shown_step, anchor, told, started
        for line in _metrics_lines(run):
            m = json.loads(line)
            count = m.get("workers", told)
            if m.get("started_at") is not None and m["started_at"] not in groups:
                groups.add(m["started_at"])
                if not started:  # this part's own start (a resume): the lines go on from there
                    started = True
                    shown_step = min(shown_step, m["resumed_from"])
                else:
                    # Ray Train restarted the worker group: its lines go on from the checkpoint,
                    # which may be the step shown last (a worker killed just after it).
                    # With another count, an elastic job's cluster changed size (Ray resizes a
                    # group by restarting it); with the same, a worker died.
                    why = (
                        f"the worker group restarted with {count} workers (was {told})"
                        if count != told
                        else "a training worker died"
                    )
                    print(
                        f"distgan: {why} after step {shown_step}; the workers go on from the "
                        f"checkpoint at step {m['resumed_from']} in {run}",
                        file=out,
                        flush=True,
                    )
                    shown_step, anchor, told = m["resumed_from"], None, count
            if m["step"] > shown_step:
                if count != told:
                    print(f"distgan: training on {count} worker{'s' * (count != 1)}",
                          file=out, flush=True)  # fmt: skip
                    told = count
                anchor = anchor or m
                print(progress_line(m, t.steps, t.max_minutes, anchor), file=out, flush=True)
                shown_step = m["step"]
                if on_record is not None:
                    on_record(m)

    polls, asked = 0, False
    try:
        with Interrupts() as interrupts:
            while not done.wait(timeout=POLL_S):
                if interrupts.signum is not None and not asked:
                    asked = True
                    request_stop(run)
                    # Marked now, in case the process is killed before the final checkpoint lands:
                    # the run is whole up to its last checkpoint either way.
                    write_status(run, "stopped", last_step(run, 0))
                    print(STOPPING, file=out, flush=True)
                polls += 1
                if polls % (4 if run.is_local else 8) == 0:  # every second; object storage: 2 s
                    show_new_lines()
                    if watch is not None:
                        watch.check()
            show_new_lines()  # the lines written since the last poll
    except BaseException as e:
        if not done.is_set() and not (isinstance(e, Stopped) and e.at_once):
            # Given up while fit() still runs in its thread (no worker group for
            # scale.wait_minutes, an error here): its controller is ended, so that fit()
            # returns before Ray's connection does (failures.end_train_controller).
            end_train_controller()
            done.wait(timeout=ABANDON_WAIT_S)
        raise
    if "error" in outcome:
        raise user_error_in(outcome["error"]) or outcome["error"]
    if asked:
        raise Stopped(interrupts.signum)  # with the final checkpoint written
    return outcome["result"].return_value or {}


def _metrics_lines(run: Location) -> list[str]:
    try:
        text = run.read_text(METRICS) if run.is_file(METRICS) else ""
    except UserError:  # a transient storage hiccup costs one progress poll, not the run
        return []
    return [line for line in text.splitlines() if line.strip()]


def wait_seconds(t0: float) -> str:
    s = int(time.monotonic() - t0)
    return f"{s // 60}m{s % 60:02d}s"
