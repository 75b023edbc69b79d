"""What every Ray Train worker runs: the only module that calls ``ray.train`` inside a worker.

``train_loop_per_worker(config)`` builds G and D, wraps each in DDP, restores a checkpoint when
Ray hands one over (after a worker failure) or when the run is resumed, reads this worker's
shard of the Ray Data set, and hands over to ``train/loop.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from distgan.augment import parse_policy
from distgan.config import dump_yaml, from_dict
from distgan.data.imbalance import class_prior, sample_weights
from distgan.data.reader import InMemoryBatches, StreamingBatches, load_shard
from distgan.ema import make_ema
from distgan.losses import get_loss
from distgan.models import apply_speed_options, models_for_job, unwrap
from distgan.schedule import set_rates
from distgan.step import Nets
from distgan.train import checkpoint as ckpts
from distgan.train.loop import run
from distgan.train.outputs import RunOutputs

_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_nets(
    spec, shape: tuple[int, int, int], device: torch.device, wrap, num_classes: int = 0
) -> Nets:
    """G, D (each passed through ``wrap``, e.g. Ray's prepare_model), Adam for each, the loss.
    ``num_classes``: the data's classes, for a conditional model (``model.conditional``)."""
    t = spec.train
    G, D = models_for_job(spec.model, shape, num_classes, classifier=spec.loss.ac_weight > 0)
    G, D = (apply_speed_options(m.to(device), t.channels_last, t.compile) for m in (G, D))
    G, D = wrap(G, False), wrap(D, True)
    o = spec.optim
    precision = spec.train.precision
    return Nets(
        G=G,
        D=D,
        opt_g=torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2)),
        opt_d=torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2)),
        loss=get_loss(spec.loss.kind),
        gp_weight=spec.loss.gp_weight,
        clip=spec.loss.clip,
        r1_gamma=spec.loss.r1_gamma,
        r1_every=spec.loss.r1_every,
        ac_weight=spec.loss.ac_weight,
        augment=parse_policy(t.diffaugment),
        num_classes=unwrap(G).num_classes,
        autocast_dtype=_AUTOCAST[precision],
        scaler_g=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        scaler_d=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
    )


def batch_source(spec, shard, shape, cache: bool, rank: int, world: int, device, prior):
    """This worker's real batches from its Ray Data ``shard`` (a DataIterator): kept in memory
    (``cache``, ``train.deterministic``, or class-balanced draws, which read the labels even for
    an unconditional G) or streamed. ``prior``: the class prior (K,) of ``train.class_balance``
    (None for data without labels)."""
    per_worker = spec.train.batch_size // world
    labelled = spec.model.conditional  # batches of (images, labels)
    weighted = spec.train.class_balance != "none"
    if not (spec.train.deterministic or cache or weighted):
        return StreamingBatches(shard, shape, per_worker, spec.train.seed, device, labelled)
    data = load_shard(shard, shape, labelled or weighted)
    images, labels = data if labelled or weighted else (data, None)
    if spec.train.deterministic:
        # Every worker is handed the whole dataset in file order (launch.py); it keeps its rows.
        images = images[rank::world].clone()
        labels = None if labels is None else labels[rank::world].clone()
    weights = sample_weights(labels, prior) if weighted else None
    return InMemoryBatches(
        images, per_worker, spec.train.seed, rank, device, labels if labelled else None, weights
    )


def _prepare(model: torch.nn.Module, is_discriminator: bool) -> torch.nn.Module:
    # D sees a real and a fake batch per step; DDP's buffer broadcast must not run between them.
    kwargs = {"broadcast_buffers": False} if is_discriminator else None
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    spec = from_dict(config["job"], source=config["job_source"])
    shape = tuple(config["shape"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        # Ray reserves a fraction of a CPU per worker for scheduling; compute uses the node's
        # cores shared among the workers on it.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
    ray.data.DataContext.get_current().enable_progress_bars = False

    if spec.train.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(spec.train.seed)  # the same initial weights on every rank
    nets = build_nets(spec, shape, device, _prepare, config.get("num_classes", 0))
    # The class prior of the real batches (train.class_balance), the same on every worker;
    # None for data without labels.
    counts = config.get("class_counts")
    prior = class_prior(counts, spec.train.class_balance) if counts else None
    if nets.num_classes and prior is not None:  # the fakes' labels follow the reals' classes
        nets.label_prior = torch.as_tensor(prior, dtype=torch.float32, device=device)
    ema = make_ema(unwrap(nets.G), spec.train)
    state = ckpts.TrainState(nets, ema, shape)
    torch.manual_seed(spec.train.seed + 1 + rank)  # different latents on each rank

    restored = ray.train.get_checkpoint()  # set by Ray after a worker failure
    if restored is not None:
        with restored.as_directory() as folder:
            ckpts.restore(state, ckpts.load(folder, device), rank, source=str(restored.path))
    elif config.get("resume_from"):
        path = config["resume_from"]
        ckpts.restore(state, ckpts.load(path, device), rank, source=path)

    # The job's rates and betas (× the guard's factor) win over the checkpoint's, so that a
    # resumed run trains with the rates it was given; optim.lr_decay scales them in the loop.
    set_rates(nets, spec.optim, state.lr_scale)

    shard = ray.train.get_dataset_shard("train")
    source = batch_source(spec, shard, shape, config["cache"], rank, world, device, prior)

    def report(metrics: dict[str, float], snapshot: dict | None) -> None:
        name = ckpts.checkpoint_dir_name(int(metrics["step"]))
        if snapshot is None:
            ray.train.report(metrics, checkpoint_dir_name=name)
        else:
            # Rank 0 writes state.pt into the run's storage itself, whole or not at all; Ray
            # Train then registers that folder from a small marker of its own (its copy writes
            # straight under the final name, which a full disk would leave half written).
            ckpts.save_into_run(snapshot, outputs.run, name)
            with tempfile.TemporaryDirectory(prefix="distgan-ckpt-") as folder:
                (Path(folder) / ckpts.MARKER).write_text(json.dumps({"step": snapshot["step"]}))
                checkpoint = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        # Ray Train keeps one unconsumed report per worker and registers its checkpoint when the
        # controller next polls (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, launch.py). This second
        # report waits for that, so a worker killed from here on restarts from this checkpoint,
        # never the one before: at most one checkpoint interval is lost.
        ray.train.report(metrics)

    evaluate = None
    if config.get("eval"):
        from distgan.train.evaluation import InTrainingEvaluator

        evaluate = InTrainingEvaluator(spec, config["eval"], device)
    # A resumed (or restarted) run's metrics.jsonl keeps its lines up to the checkpoint's step.
    outputs = RunOutputs(config["run_dir"], resume_step=state.step) if rank == 0 else None
    try:
        return run(
            state,
            source,
            spec,
            device=device,
            report=report,
            outputs=outputs,
            job_yaml=dump_yaml(spec),
            evaluate=evaluate,
        )
    finally:
        if isinstance(source, StreamingBatches):
            source.close()  # its reading thread
        if outputs is not None:
            outputs.events.close()
