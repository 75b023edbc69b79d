"""What every Ray Train worker runs: the only module that calls ``ray.train`` inside a worker.

``train_loop_per_worker(config)`` has ``train/build.py`` build the training state with G and D
each wrapped in DDP, from the checkpoint Ray hands over (after a worker failure) or the one the
run is resumed from, reads this worker's rows of the data (through Ray Data, or streamed from
the shards), and hands over to ``train/loop.py``. Ray's glue only: what is trained, and how, is
decided elsewhere.
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

from distgan.config import dump_yaml, from_dict
from distgan.data.manifest import ShardInfo
from distgan.data.reader import StreamingBatches, load_rows, rank_rows
from distgan.storage import open_location
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
from distgan.train.complexity import record_model_cost
from distgan.train.loop import run
from distgan.train.outputs import RunOutputs


def batch_source(
    spec, shard, data, shards, shape, cache: bool, rank: int, world: int, device, class_counts,
    count: int,
):  # fmt: skip
    """This worker's real batches: kept in memory (``cache``, or class-balanced draws, which
    read the labels even for an unconditional G), from its Ray Data ``shard`` (a DataIterator
    over the whole dataset in file order), or streamed from the ``shards`` (ShardInfo) in ``data``
    (a Location) every epoch. Which rows, and in what order, depend on (seed, epoch, rank) alone
    (data/reader.py). ``class_counts``: label -> images of the whole dataset (None for data
    without labels); ``count``: its images."""
    per_worker = spec.train.batch_size // world
    labelled = spec.model.conditional  # batches of (images, labels)
    weighted = spec.train.class_balance != "none"
    seed = spec.train.seed
    if not (cache or weighted):
        return StreamingBatches(
            data, shards, shape, per_worker, seed, rank, world, device, with_labels=labelled
        )
    images, labels = load_rows(shard, shape, rank_rows(count, world, rank), labelled or weighted)
    return memory_batches(spec, images, labels, class_counts, device, rank, per_worker)


def _prepare(model: torch.nn.Module, is_discriminator: bool) -> torch.nn.Module:
    # D runs more than one forward a step (the penalties' second pass, R1 or GP): DDP's buffer
    # broadcast before each would overwrite, in place, the spectral-norm vectors that autograd
    # still needs. The ranks' buffers stay equal without it (models/layers.spectral_normalize).
    kwargs = {"broadcast_buffers": False} if is_discriminator else None
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    spec = from_dict(config["job"], source=config["job_source"])
    shape = tuple(config["shape"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        # OMP_NUM_THREADS as distgan's user set it (train/threads.py), else the node's cores
        # shared among the workers on it: Ray reserves a fraction of a CPU per worker for
        # scheduling, and sets the variable here from that fraction.
        local = ctx.get_local_world_size()
        torch.set_num_threads(config.get("threads") or max(1, (os.cpu_count() or 1) // local))
    ray.data.DataContext.get_current().enable_progress_bars = False

    # After a worker failure Ray hands over the latest checkpoint it registered; a resumed run
    # starts from the one it was resumed from. Both can be there (a resume reuses the run's Ray
    # storage), and Ray's can lag: a driver killed before Ray registered its last checkpoint.
    # The newer wins.
    checkpoint, origin = None, ""
    restored = ray.train.get_checkpoint()
    resume_from = config.get("resume_from")
    if restored is not None and ckpts.step_of(restored.path) >= ckpts.step_of(resume_from or ""):
        with restored.as_directory() as folder:
            checkpoint, origin = ckpts.load(folder, device), str(restored.path)
    elif resume_from:
        checkpoint, origin = ckpts.load(resume_from, device), resume_from
    counts = config.get("class_counts")
    state = build_state(
        spec, shape, device, num_classes=config.get("num_classes", 0), class_counts=counts,
        wrap=_prepare, rank=rank, checkpoint=checkpoint, source=origin,
    )  # fmt: skip

    shard = ray.train.get_dataset_shard("train")
    data = open_location(config["data"], field="data.source")
    shards = [ShardInfo(**s) for s in config["shards"]]
    source = batch_source(
        spec, shard, data, shards, shape, config["cache"], rank, world, device, counts,
        config["count"],
    )  # fmt: skip

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
        # never the one before: at most one checkpoint interval is lost. It carries the step
        # alone, so that a search (tune/trials.py) sees each evaluation once.
        ray.train.report({"step": metrics["step"]})

    evaluate = None
    if config.get("eval"):
        from distgan.train.evaluation import InTrainingEvaluator

        evaluate = InTrainingEvaluator(spec, config["eval"], device)
    # A resumed (or restarted) run's metrics.jsonl keeps its lines up to the checkpoint's step.
    outputs = RunOutputs(config["run_dir"], resume_step=state.step) if rank == 0 else None
    if outputs is not None:  # here, not in the driver: FLOP counting imports torch._dynamo,
        # which building the optimizers above already did (about 1 CPU-s a driver otherwise)
        record_model_cost(outputs.run, spec, shape, config.get("num_classes", 0))
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
            outputs.close()
