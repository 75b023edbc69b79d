"""JobSpec -> Ray Train ``TorchTrainer``: resources, data, run directory, progress lines.

    result = launch(spec, run_dir, job_source="jobs/quickstart.yaml")

The driver reads the shard manifest, connects to Ray (``RAY_ADDRESS``, or a new local instance
on 127.0.0.1), checks that the cluster can place the workers (Ray would otherwise wait forever),
hands the shards to the workers (each file's sha256 checked as it is read: through Ray Data, or
by a streaming worker itself), and prints one progress line per log interval from the run's
``metrics.jsonl`` while ``fit()`` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from distgan.config import to_dict
from distgan.data import ShardManifest, data_location, read_manifest, verify_shards
from distgan.data.folders import FolderManifest, list_folder
from distgan.errors import ClusterError, DataError, JobError, StorageError
from distgan.models import models_for_job
from distgan.models.own import check_own_models
from distgan.specs import METRIC_NAMES, JobSpec
from distgan.storage import Location, check_reachable, display, is_uri, open_location
from distgan.train.checkpoint import CHECKPOINTS, checkpoint_step
from distgan.train.follow import Stopped, fit_with_progress, last_step
from distgan.train.outputs import read_status, request_stop, write_status
from distgan.train.threads import threads_asked

MEMORY_CACHE_LIMIT = 4 << 30  # bytes of uint8 pixels a worker keeps in memory under cache: auto


@dataclass(frozen=True)
class Plan:
    """How the job maps onto the cluster."""

    workers: int
    cpus_per_worker: float
    use_gpu: bool
    cache: bool
    evaluation: dict | None = None  # the workers' evaluation config (train/evaluation.py)
    elastic_min: int = 0  # Ray Train picks the count from elastic_min to workers; 0 = fixed
    threads: int = 0  # PyTorch threads of a CPU worker (threads_asked); 0 = the node's share

    @property
    def num_workers(self) -> int | tuple[int, int]:
        """What ScalingConfig(num_workers=...) takes: a count, or an elastic (min, max)."""
        return (self.elastic_min, self.workers) if self.elastic_min else self.workers

    @property
    def counts(self) -> str:
        """The worker count as the user reads it: '2', or '1-4' for an elastic job."""
        return f"{self.elastic_min}-{self.workers}" if self.elastic_min else str(self.workers)


def resolve_data(spec: JobSpec, job_source: str) -> ShardManifest:
    """The data's manifest: read from ``manifest.json``, or for an image folder (data.resolution
    set) built from its listing (data/folders.py)."""
    d = spec.data
    try:
        if is_uri(d.source):
            check_reachable(open_location(d.source, "data.source"), "data.source", True)
        if d.resolution:
            _check_folder_job(spec, job_source)
            return list_folder(data_location(d.source), d.resolution, d.channels)
        return read_manifest(data_location(d.source))
    except (DataError, StorageError) as e:
        raise type(e)(f"{job_source}: {_field_first(e, 'data.source')}") from None


def _check_folder_job(spec: JobSpec, job_source: str) -> None:
    if spec.eval.every and not spec.eval.real:
        raise JobError(
            f"{job_source}: eval.every: an image folder (data.resolution set) is not a reference "
            "for the metrics; set eval.real to a dataset imported from it (`distgan data import "
            "FOLDER --out DIR --resolution N`), or eval.every: 0"
        )


def _field_first(error: Exception, field: str) -> str:
    """The error's text led by ``field``, once."""
    text = str(error)
    return text if text.startswith(f"{field}:") else f"{field}: {text}"


def check_storage(spec: JobSpec, job_source: str) -> None:
    """One question to the run's storage before anything is written: the endpoint answers, the
    bucket exists and the credentials are accepted."""
    if is_uri(spec.run.storage):
        try:
            check_reachable(open_location(spec.run.storage, "run.storage"), "run.storage")
        except StorageError as e:
            raise StorageError(f"{job_source}: {e}") from None


def check_model(spec: JobSpec, manifest: ShardManifest, job_source: str) -> None:
    if spec.model.conditional and not manifest.labels:
        raise JobError(
            f"{job_source}: model.conditional: the data at {manifest.root} has no labels; set "
            "model.conditional: false, or import labelled data (distgan data import ... --labels)"
        )
    if spec.train.class_balance != "none" and not manifest.labels:
        raise JobError(
            f"{job_source}: train.class_balance: {spec.train.class_balance} draws by class, and "
            f"the data at {manifest.root} has no labels; set train.class_balance: none, or import "
            "labelled data (distgan data import ... --labels)"
        )
    try:
        models_for_job(
            spec.model, manifest.shape, manifest.num_classes, classifier=spec.loss.ac_weight > 0
        )
        check_own_models(spec, manifest.shape, manifest.num_classes)  # one forward of each
    except ValueError as e:
        raise JobError(f"{job_source}: model.arch: {e}; pick another arch or dataset") from None
    except JobError as e:  # a user's own model: its module, or what its builder returns
        raise JobError(f"{job_source}: {e}") from None


def plan(spec: JobSpec, manifest: ShardManifest, cluster_cpus: float, cluster_gpus: float) -> Plan:
    """Sizes the workers so that Ray Data always keeps a CPU (DESIGN.md: CPU starvation). An
    elastic job (scale.workers: [MIN, MAX]) needs room for MIN, and is given to Ray Train with as
    many as fit beside that CPU now, at most MAX: Ray counts a node's whole CPUs, not those left."""
    s = spec.scale
    need = s.min_workers
    if s.use_gpu:
        if cluster_gpus < need:
            raise ClusterError(
                f"scale.workers: {need} workers with one GPU each need {need} GPUs; the "
                f"Ray cluster has {cluster_gpus:g}. Lower scale.workers or set scale.use_gpu: false"
            )
        cpus = s.cpus_per_worker or 1.0
    else:
        share = (cluster_cpus - 1) / s.max_workers  # MAX beside Ray Data's CPU
        cpus = s.cpus_per_worker or min(1.0, max(share, 0.1) if s.elastic else share)
        if cpus < 0.1:
            raise ClusterError(
                f"scale.workers: {need} CPU workers need more than the {cluster_cpus:g} CPUs "
                "of the Ray cluster (one CPU stays free for Ray Data). Lower scale.workers"
            )
    if cpus * need > cluster_cpus - 1:
        # Ray Data's read tasks each ask for a CPU: with none left the job would wait forever.
        raise ClusterError(
            f"scale.cpus_per_worker: {need} workers × {cpus:g} CPUs leave "
            f"{max(0.0, cluster_cpus - cpus * need):g} of the {cluster_cpus:g} CPUs of the "
            "Ray cluster, and Ray Data needs one to read the shards. Lower "
            "scale.cpus_per_worker or scale.workers, or set cpus_per_worker to 0 (it then "
            "leaves that CPU)"
        )
    c, h, w = manifest.shape
    per_worker_bytes = manifest.count * c * h * w // need
    if spec.data.cache == "auto":
        cache = per_worker_bytes <= MEMORY_CACHE_LIMIT
    else:
        cache = spec.data.cache == "memory"
    # Class-balanced draws need the shard in memory (job_rules.py refuses data.cache: stream).
    cache = cache or spec.train.class_balance != "none"
    # An image folder is decoded into memory once (train/folder_data.py), never streamed.
    cache = cache or isinstance(manifest, FolderManifest)
    if not s.elastic:
        return Plan(need, cpus, s.use_gpu, cache)
    fit = int((cluster_cpus - 1) / cpus + 1e-9)
    fit = min(fit, int(cluster_gpus)) if s.use_gpu else fit
    return Plan(min(s.max_workers, fit), cpus, s.use_gpu, cache, elastic_min=need)


def check_job(spec: JobSpec, job_source: str) -> ShardManifest:
    """The checks that need no Ray (``distgan train --dry-run`` runs exactly these): the
    storage answers, the manifest, each shard's Parquet footer, schema and row count (its hash
    is checked by the workers' reader, which reads every byte anyway), that the model serves
    the data's shape (a conditional model's labels belong beside it), and with ``eval.every``
    that the feature network loads and takes the data's images. Returns the manifest;
    DataError, JobError, StorageError or CheckpointError naming the job file and field."""
    check_storage(spec, job_source)
    manifest = resolve_data(spec, job_source)
    try:
        if not isinstance(manifest, FolderManifest):  # a folder's images are checked as decoded
            verify_shards(manifest, hashes=False)
    except DataError as e:
        raise DataError(f"{job_source}: data.source: {e}") from None
    check_model(spec, manifest, job_source)
    if spec.eval.every:
        from distgan.train.evaluation import check_evaluation

        check_evaluation(spec, manifest, job_source)
    return manifest


def preflight(
    spec: JobSpec, job_source: str, manifest: ShardManifest | None = None, out=None
) -> tuple[ShardManifest, Plan]:
    """Everything that can fail before a run directory exists: data, model, cluster resources,
    and (with ``eval.every``) the feature network and the real reference statistics.

    Needs a Ray connection (``ray_session``) for the cluster's resources. ``manifest``: what
    ``check_job`` returned, when the caller ran it already.
    """
    from distgan.train.cluster import check_shared_storage, node_count, plan_with_autoscaler

    if manifest is None:
        manifest = check_job(spec, job_source)
    check_shared_storage(spec, job_source, node_count())
    p = plan_with_autoscaler(spec, manifest, job_source, out or sys.stdout, plan)
    p = dataclasses.replace(p, threads=threads_asked())
    if spec.eval.every:
        from distgan.train.evaluation import prepare_evaluation

        evaluation = prepare_evaluation(spec, manifest, job_source)
        p = dataclasses.replace(p, evaluation=evaluation)
    return manifest, p


def launch(
    spec: JobSpec,
    run: Location | str | Path,
    manifest: ShardManifest,
    p: Plan,
    job_source: str,
    resume_from: str | None = None,
    out=None,
    callbacks: tuple = (),
    on_record=None,
) -> dict:
    """Trains ``spec`` into the run directory ``run`` (a local folder or a location in object
    storage) on the connected Ray cluster; returns the last metrics.

    ``callbacks``: Ray Train user callbacks (a Tune trial passes the one that reports to Tune).
    ``on_record(m)``: called in the driver for each new metrics record (``distgan train``
    rebuilds report.html at checkpoints with it).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from distgan.data.verify import verified_shard_rows
    from distgan.train.failures import (
        CapacityWatch,
        classify,
        disk_full,
        disk_full_message,
        failure_config_for,
        lost_message,
    )  # fmt: skip
    from distgan.train.folder_data import folder_dataset
    from distgan.train.pace import PacedWait
    from distgan.train.process_group import BoundStoreTorchConfig
    from distgan.train.worker import train_loop_per_worker

    if not isinstance(run, Location):  # workers run in other working directories
        run = open_location(str(Path(run).resolve()), field="run.storage")
    out = out or sys.stdout
    ray.data.DataContext.get_current().enable_progress_bars = False
    data = open_location(manifest.root, field="data.source")
    labelled = spec.model.conditional or spec.train.class_balance != "none"
    columns = ["image", "label"] if labelled else ["image"]
    if isinstance(manifest, FolderManifest):
        dataset, manifest = folder_dataset(manifest, out)
    else:
        # Whole shard files, each checked against the manifest's sha256 as it is read, then cut
        # into rows by Parquet row group: the workers train on no byte the manifest did not hash.
        dataset = ray.data.read_binary_files(
            [data.child(s.file).path for s in manifest.shards],
            include_paths=True,
            filesystem=None if data.is_local else data.fs,
        ).map_batches(
            verified_shard_rows,
            batch_size=1,
            fn_kwargs={"sha256": {s.file: s.sha256 for s in manifest.shards}, "columns": columns},
        )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": to_dict(spec),
            "job_source": job_source,
            "shape": list(manifest.shape),
            "num_classes": manifest.num_classes,
            "class_counts": manifest.label_counts,
            "run_dir": run.uri,
            "cache": p.cache,
            "count": manifest.count,
            # A streaming worker reads its own shard files (data/reader.py: StreamingBatches).
            "data": manifest.root,
            "shards": [dataclasses.asdict(s) for s in manifest.shards],
            "resume_from": resume_from,
            "eval": p.evaluation,
            "threads": p.threads,
        },
        torch_config=BoundStoreTorchConfig(backend="nccl" if p.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=p.num_workers,
            use_gpu=p.use_gpu,
            resources_per_worker={"CPU": p.cpus_per_worker, **({"GPU": 1} if p.use_gpu else {})},
            placement_strategy=spec.scale.placement,
        ),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS,
            # Ray Train writes the checkpoints into the run's own storage, through pyarrow.
            storage_path=run.path,
            storage_filesystem=None if run.is_local else run.fs,
            # Restarts from the last checkpoint after a lost worker; ends with a ClusterError
            # when no capacity comes back within scale.wait_minutes (train/failures.py).
            failure_config=failure_config_for(spec),
            checkpoint_config=_checkpoint_config(spec, p),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            # An elastic run waiting for room would keep a core busy without it (pace.py).
            callbacks=[PacedWait(), *callbacks],
        ),
        datasets={"train": dataset},
        dataset_config=_data_config(),
    )
    device = "GPU" if p.use_gpu else "CPU"
    print(
        f"distgan: {run} · {spec.model.arch} · {spec.loss.kind} · "
        f"{p.counts} {device} worker{'s' * (p.workers > 1)} · "
        f"{manifest.count:,} images {'×'.join(map(str, manifest.shape))}"
        + (
            f" · {p.threads} thread{'s' * (p.threads > 1)} a worker (OMP_NUM_THREADS)"
            if p.threads and not p.use_gpu
            else ""
        )
        + (f" · resuming from {display(resume_from)}" if resume_from else ""),
        file=out,
        flush=True,
    )
    step = int(read_status(run).get("step", 0))
    request_stop(run, clear=True)  # an earlier part's request does not stop this one
    write_status(run, "running", step)
    try:
        fixed = None if p.elastic_min else p.workers
        # Below MIN, Ray Train's elastic policy waits with no timeout of its own (failures.py).
        watch = CapacityWatch(spec, p.cpus_per_worker, out) if p.elastic_min else None
        metrics = fit_with_progress(trainer, run, spec.train, out, on_record, fixed, watch)
    except Stopped as e:  # Ctrl-C, SIGTERM, distgan stop: what was saved, and by what
        write_status(run, "stopped", last_step(run, step), signal=str(e), at_once=e.at_once,
                     checkpoint_step=checkpoint_step(run))  # fmt: skip
        raise
    except BaseException as e:
        if isinstance(e, Exception) and disk_full(e):  # what is saved, and how to go on
            reached, saved = last_step(run, step), checkpoint_step(run)
            with contextlib.suppress(StorageError):  # in_place: over the old one if nothing fits
                write_status(run, "failed", reached, error="disk full", checkpoint_step=saved,
                             in_place=True)  # fmt: skip
            raise StorageError(disk_full_message(run, reached, saved)) from None
        lost = classify(e) if isinstance(e, Exception) else None
        if lost is not None:  # a node lost for good: one line, not Ray's traceback
            reached, saved = last_step(run, step), checkpoint_step(run)
            write_status(run, "failed", reached, error=lost.reason, lost=list(lost.nodes),
                         checkpoint_step=saved)  # fmt: skip
            raise ClusterError(lost_message(lost, spec, run, reached, saved)) from None
        status = "stopped" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        write_status(run, status, last_step(run, step), error=type(e).__name__)
        raise
    write_status(run, "done", int(metrics.get("step", 0)), **_best_of(metrics))
    return metrics


def _best_of(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRIC_NAMES if k in metrics}


def _data_config():
    """Hands every worker the whole dataset in file order; a worker that keeps its rows in memory
    reads up to its own (data/reader.py: rank_rows), and a streaming one reads none of it. Ray
    Data's split hands blocks to whichever worker asks first, so the rows a worker got would vary
    from run to run, and a resume would not be exact."""
    import ray.train
    from ray.data import ExecutionOptions

    options = ExecutionOptions(preserve_order=True)
    return ray.train.DataConfig(datasets_to_split=[], execution_options=options)


def _checkpoint_config(spec: JobSpec, p: Plan):
    """Keeps the latest checkpoints, or with evaluation on, the best ones by eval.metric."""
    import ray.train

    if p.evaluation is None:
        return ray.train.CheckpointConfig(num_to_keep=spec.train.keep_checkpoints)
    return ray.train.CheckpointConfig(
        num_to_keep=spec.train.keep_checkpoints,
        checkpoint_score_attribute=spec.eval.metric,
        checkpoint_score_order="max" if p.evaluation["higher_is_better"] else "min",
    )
