"""The training schedule: steps, logging, sample grids, checkpoints and stopping. No Ray here.

    run(state, source, spec, device=..., report=..., outputs=RunOutputs(run_dir) or None, ...)

One step is ``optim.n_critic`` D updates (one real batch each) and one G update. Every
``train.log_every`` steps the metrics are averaged over all ranks and rank 0 writes them to the
run's ``metrics.jsonl``; every ``train.checkpoint_every`` steps, and at the end, they go to
``report`` with the whole state (every rank calls it: Ray's report is a barrier). Reporting only
with checkpoints matters on a GPU: Ray Train 2.60 holds one unconsumed report per worker and
drains it every 2 s, so a report every log step blocked a fast worker (measured on an H200: the
quickstart ran at 6k img/s with a report every 100 steps, against 23k with one every 500).

The run stops at ``train.steps`` or after ``train.max_minutes`` of training (a resumed run's
earlier parts count), whichever comes first, or when the driver asks (``distgan stop``, Ctrl-C);
``stopping.StopCheck`` keeps the time limit to within a step and has every rank stop at the same
step, with a final checkpoint. With ``optim.lr_decay`` the learning rates fall with
the run's progress towards that end (``schedule.py``); the rates in use go into the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from distgan import dist
from distgan.images import to_uint8
from distgan.models import unwrap
from distgan.schedule import RateSchedule
from distgan.specs import JobSpec
from distgan.step import train_step
from distgan.train.checkpoint import TrainState, rng_state, snapshot
from distgan.train.guard import ROLLED_BACK, STOP, Guard
from distgan.train.outputs import RunOutputs
from distgan.train.stopping import StopCheck

GRID_SIZE = 64  # samples in each grid (8×8)
GRID_COLUMNS = 8
GRID_CLASSES = 10  # a conditional G's grid: one row per class, the first 10 classes

# (metrics, checkpoint snapshot or None) -> None; called by every rank at the same steps.
Report = Callable[[dict[str, float], "dict[str, Any] | None"], None]


class BatchSource(Protocol):
    # Images (B, C, H, W), or (images, labels (B,)) for a conditional model.
    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Any]: ...


class Evaluator(Protocol):
    """Scores G during training. A collective: every rank calls it at the same steps."""

    metric: str  # the figure that ranks checkpoints
    higher_is_better: bool

    def __call__(self, state: TrainState) -> dict[str, float]: ...  # figures (rank 0)


class _Meter:
    """Running means of the step metrics between two log steps (as tensors: no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
            self.counts[k] = self.counts.get(k, 0) + 1

    def reduce(self) -> dict[str, float]:
        """Means over the interval and over all ranks; resets the meter."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        local = torch.stack([self.sums[k] / self.counts[k] for k in keys])
        means = dist.all_reduce_mean(local).tolist()
        self.sums, self.counts = {}, {}
        return dict(zip(keys, means))


def _batches(source: BatchSource, state: TrainState) -> Iterator[Any]:
    """Real batches forever, epoch after epoch, keeping the position in ``state``."""
    while True:
        seen = 0
        for x in source.epoch_batches(state.epoch, skip=state.batch_in_epoch):
            state.batch_in_epoch += 1
            seen += 1
            yield x
        if seen == 0 and state.batch_in_epoch == 0:
            raise RuntimeError("the data source yielded no batch in a whole epoch")
        state.epoch += 1
        state.batch_in_epoch = 0


@contextmanager
def sampling_generator(state: TrainState) -> Iterator[torch.nn.Module]:
    """G_ema (or G when the run keeps no EMA) in eval mode, restored afterwards."""
    G = state.ema.model if state.ema else unwrap(state.nets.G)
    was_training = G.training
    G.eval()
    try:
        yield G
    finally:
        G.train(was_training)


@torch.no_grad()
def sample_grid(
    state: TrainState, z: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    with sampling_generator(state) as G:
        return G(z) if labels is None else G(z, labels)


def grid_inputs(
    z: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """The grid's latents, labels and columns: ``z`` as it is for an unconditional G; for a
    conditional one, GRID_COLUMNS latents repeated in one row per class (up to GRID_CLASSES), so
    that a column shows one latent across the classes."""
    if not num_classes:
        return z, None, None
    rows = min(num_classes, GRID_CLASSES)
    labels = torch.arange(rows, device=z.device).repeat_interleave(GRID_COLUMNS)  # (rows·8,)
    return z[:GRID_COLUMNS].repeat(rows, 1), labels, GRID_COLUMNS


def run(
    state: TrainState,
    source: BatchSource,
    spec: JobSpec,
    *,
    device: torch.device,
    report: Report,
    outputs: RunOutputs | None,
    job_yaml: str,
    evaluate: Evaluator | None = None,
) -> dict[str, float]:
    """Trains from ``state.step`` to the end; returns the last metrics.

    With ``evaluate``, every ``eval.every`` steps and at every checkpoint the generator is scored
    and the figures go into that step's metrics and checkpoint; rank 0 keeps the best checkpoint
    by ``evaluate.metric`` in ``best/``.
    """
    t = spec.train
    world = dist.world_size()
    z_dim = spec.model.z_dim
    # The grid's latents are the same in every run of a job and across resumes.
    fixed_z = torch.randn(GRID_SIZE, z_dim, generator=torch.Generator().manual_seed(t.seed))
    fixed_z, fixed_labels, grid_columns = grid_inputs(fixed_z.to(device), state.game.num_classes)

    # Non-finite steps are skipped, then rolled back, then stop the run (train/guard.py).
    guard = Guard(spec, dist.rank(), outputs.checkpoints_uri if outputs else None)
    guard.remember(state)

    def sample_z(n: int) -> torch.Tensor:
        return guard.latents(torch.randn(n, z_dim, device=device), state.step + 1)

    batches = _batches(source, state)
    meter = _Meter()
    earlier = state.train_seconds  # a resumed run's clock goes on from its checkpoint
    # train.max_minutes and the driver's stop request (distgan stop, Ctrl-C), agreed by every
    # rank after any step: a clock check each step, a collective about once a second. The
    # ranks start its clock together, so rank 0's elapsed_s (metrics.jsonl) is the limit's.
    stops = StopCheck(
        60 * t.max_minutes, earlier, state.step,
        outputs.stop_requested if outputs is not None else None, device,
    )  # fmt: skip
    started = stops.started
    last_time, last_images = started, state.images_seen
    metrics: dict[str, float] = {}
    waited = 0.0  # seconds spent waiting for real batches since the last log step
    # A run (re)started from a checkpoint says so in its first metrics line: after a worker's
    # death Ray Train restarts the group from the latest checkpoint, and the driver tells the
    # user from which step the run goes on.
    resumed_from = state.step or None
    group_started = time.time()  # tells two restarts from the same checkpoint apart
    # optim.lr_decay: the rates fall with the run's progress towards its expected end.
    rates = RateSchedule(spec.optim, t, state.step, earlier)
    last_step = state.step
    while state.step < t.steps:
        rates.apply(state.nets, state.step, state.lr_scale)
        before = time.perf_counter()
        reals = [next(batches) for _ in range(spec.optim.n_critic)]
        waited += time.perf_counter() - before
        labels = None
        if state.game.num_classes:  # conditional: each batch is (images, labels)
            reals, labels = [x for x, _ in reals], [y for _, y in reals]
        log_now = (state.step + 1) % t.log_every == 0 or state.step + 1 == t.steps
        step_metrics = train_step(
            state.nets, state.game, reals, sample_z,
            measure=log_now, real_labels=labels, step=state.step,
            ada_p=state.ada.p if state.ada else 0.0,
            observe=state.ada.observe if state.ada else None,
            path_length=state.path_length,
        )  # fmt: skip
        skipped = bool(step_metrics["skipped"])  # the same on every rank
        meter.add({"skipped": step_metrics["skipped"]} if skipped else step_metrics)
        state.step += 1
        if state.ema is not None:
            state.ema.update(unwrap(state.nets.G), state.step)
        state.images_seen += sum(x.shape[0] for x in reals) * world
        if state.ada is not None:  # a collective every few steps: every rank alike
            state.ada.update(t.batch_size)
        verdict = guard.after_step(state, skipped)
        if verdict == ROLLED_BACK:  # state is the last good checkpoint's again
            batches = _batches(source, state)
            last_time, last_images, waited = time.monotonic(), state.images_seen, 0.0
            last_step = state.step
            continue
        if verdict == STOP:
            return {**metrics, "step": state.step, "stopped": guard.stop_message(state)}
        step = state.step

        eval_now = evaluate is not None and step % spec.eval.every == 0
        checkpoint_now = step % t.checkpoint_every == 0 or eval_now
        sample_now = step % t.sample_every == 0
        ending = stops.after_step(step)  # the same on every rank
        if not (log_now or checkpoint_now or sample_now or ending):
            continue
        now = time.monotonic()
        # The last step: its metrics, samples and checkpoint are written, whatever the cadence.
        final = step == t.steps or ending is not None
        # optim.lr_decay's expected end from the recent speed (a collective under a time limit)
        speed = (step - last_step) / max(now - last_time, 1e-9)
        rates.update(step, earlier + now - started, speed, device)
        metrics = meter.reduce()
        metrics.update(
            step=step,
            epoch=state.epoch,
            images_seen=state.images_seen,
            workers=world,  # an elastic run's count changes when Ray Train resizes its group
            images_per_s=(state.images_seen - last_images) / max(now - last_time, 1e-9),
            elapsed_s=earlier + now - started,
            lr_g=state.nets.opt_g.param_groups[0]["lr"],
            lr_d=state.nets.opt_d.param_groups[0]["lr"],
            # The share of the interval this rank spent waiting for data (the input pipeline's
            # stall): near 0 when the data keeps up with the step.
            data_stall=waited / max(now - last_time, 1e-9),
        )
        if state.ada is not None:  # ADA's p, and the signs of D on the reals it follows
            metrics["ada_p"] = state.ada.p
            if state.ada.r_t is not None:
                metrics["ada_rt"] = state.ada.r_t
        if resumed_from is not None:
            metrics.update(resumed_from=resumed_from, started_at=group_started)
            resumed_from = None
        last_time, last_images, waited, last_step = now, state.images_seen, 0.0, step
        if device.type == "cuda":  # this rank's peak, in GiB (rank 0's goes to metrics.jsonl)
            metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        if evaluate is not None and (checkpoint_now or final):
            metrics.update(evaluate(state))
        metrics.update(guard.flags(metrics, state))
        if outputs is not None:
            outputs.write_metrics(metrics)
        if outputs is not None and (sample_now or final):
            grid = to_uint8(sample_grid(state, fixed_z, fixed_labels))
            outputs.write_samples(step, grid, grid_columns)
        ckpt = None
        if checkpoint_now or final:
            rngs = dist.all_gather_object(rng_state())
            guard.remember(state)
            if outputs is not None:  # rank 0 alone writes checkpoints
                outputs.events.flush()  # TensorBoard's events reach the storage with each one
                ckpt = snapshot(state, job_yaml, rngs, metrics)
                if evaluate is not None:
                    outputs.update_best(ckpt, evaluate.metric, evaluate.higher_is_better)
        if checkpoint_now or final:
            report(metrics, ckpt)
        if final:
            break
    return metrics
