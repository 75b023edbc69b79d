"""JobSpec -> Ray Train ``TorchTrainer``: resources, data, run directory, progress lines.

    result = launch(spec, run_dir, job_source="jobs/quickstart.yaml")

The driver reads the shard manifest, connects to Ray (``RAY_ADDRESS``, or a new local instance
on 127.0.0.1), checks that the cluster can place the workers (Ray would otherwise wait forever),
hands ``ray.data.read_parquet(shards)`` to the trainer, and prints one progress line per log
interval from the run's ``metrics.jsonl`` while ``fit()`` runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distgan.config import METRIC_NAMES, JobSpec, to_dict
from distgan.data import EMBEDDED_DIR, ShardManifest, read_manifest, verify_shards
from distgan.errors import ClusterError, DataError, JobError
from distgan.models import models_for_job
from distgan.train.checkpoint import CHECKPOINTS
from distgan.train.outputs import is_uri

# Quiet Ray's internals so the user sees distgan's progress (see DESIGN.md, "Log noise").
RAY_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "0",
    # The controller takes each worker's report (and registers its checkpoint) at this period;
    # Ray's default of 2 s would stall every checkpoint step that long (worker.py).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # read_parquet starts 32 footer-reader actors (a process each) by default, built for
    # thousands of remote files; distgan's shards are local and few, and one actor with its
    # 128 IO threads reads their footers. On 2 cores the 32 processes cost ~10 s a run.
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1",
}
MEMORY_CACHE_LIMIT = 4 << 30  # bytes of uint8 pixels a worker keeps in memory under cache: auto


@dataclass(frozen=True)
class Plan:
    """How the job maps onto the cluster."""

    workers: int
    cpus_per_worker: float
    use_gpu: bool
    cache: bool
    evaluation: dict | None = None  # the workers' evaluation config (train/evaluation.py)


def data_dir(spec: JobSpec) -> Path:
    source = spec.data.source
    return EMBEDDED_DIR if source == "embedded" else Path(source).expanduser()


def resolve_data(spec: JobSpec, job_source: str) -> ShardManifest:
    folder = data_dir(spec)
    try:
        return read_manifest(folder)
    except DataError as e:
        raise DataError(f"{job_source}: data.source: {e}") from None


def check_model(spec: JobSpec, manifest: ShardManifest, job_source: str) -> None:
    if spec.model.conditional and not manifest.labels:
        raise JobError(
            f"{job_source}: model.conditional: the data at {manifest.root} has no labels; set "
            "model.conditional: false, or import labelled data (distgan data import ... --labels)"
        )
    try:
        models_for_job(spec.model, manifest.shape, manifest.num_classes)
    except ValueError as e:
        raise JobError(f"{job_source}: model.arch: {e}; pick another arch or dataset") from None


def plan(spec: JobSpec, manifest: ShardManifest, cluster_cpus: float, cluster_gpus: float) -> Plan:
    """Sizes the workers so that Ray Data always keeps a CPU (DESIGN.md: CPU starvation)."""
    s = spec.scale
    if s.use_gpu:
        if cluster_gpus < s.workers:
            raise ClusterError(
                f"scale.workers: {s.workers} workers with one GPU each need {s.workers} GPUs; the "
                f"Ray cluster has {cluster_gpus:g}. Lower scale.workers or set scale.use_gpu: false"
            )
        cpus = s.cpus_per_worker or 1.0
    else:
        cpus = s.cpus_per_worker or min(1.0, (cluster_cpus - 1) / s.workers)
        if cpus < 0.1:
            raise ClusterError(
                f"scale.workers: {s.workers} CPU workers need more than the {cluster_cpus:g} CPUs "
                "of the Ray cluster (one CPU stays free for Ray Data). Lower scale.workers"
            )
    if cpus * s.workers > cluster_cpus:
        raise ClusterError(
            f"scale.cpus_per_worker: {s.workers} workers × {cpus:g} CPUs exceed the "
            f"{cluster_cpus:g} CPUs of the Ray cluster. Lower scale.cpus_per_worker or workers"
        )
    c, h, w = manifest.shape
    per_worker_bytes = manifest.count * c * h * w // s.workers
    if spec.data.cache == "auto":
        cache = per_worker_bytes <= MEMORY_CACHE_LIMIT
    else:
        cache = spec.data.cache == "memory"
    return Plan(s.workers, cpus, s.use_gpu, cache)


@contextmanager
def ray_session():
    """Connects to ``RAY_ADDRESS`` or starts a local Ray on 127.0.0.1 (and stops only that)."""
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # A new local instance turns token authentication on (Ray's default, which distgan
        # keeps) and warns about it on every run; the warning is noise here.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    kwargs = dict(
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": dict(RAY_ENV)},
    )
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=True, **kwargs)
    except ConnectionError as e:
        raise ClusterError(
            f"RAY_ADDRESS={address}: cannot reach a Ray cluster there ({e}); start one with "
            "`ray start --head` or unset RAY_ADDRESS to run locally"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _cluster_resources() -> tuple[float, float]:
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))


def _progress_line(m: dict, total: int) -> str:
    elapsed = int(m.get("elapsed_s", 0))
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
        f"{elapsed // 60}:{elapsed % 60:02d}",
    ]
    return "  ".join(parts)


def check_job(spec: JobSpec, job_source: str) -> ShardManifest:
    """The checks that need no Ray: the manifest, each shard's Parquet footer, schema and row
    count (not its hash: that reads every byte), and that the model serves the data's shape.
    Returns the manifest; DataError or JobError naming the job file and the field."""
    manifest = resolve_data(spec, job_source)
    try:
        verify_shards(manifest, hashes=False)
    except DataError as e:
        raise DataError(f"{job_source}: data.source: {e}") from None
    check_model(spec, manifest, job_source)
    return manifest


def preflight(
    spec: JobSpec, job_source: str, manifest: ShardManifest | None = None
) -> tuple[ShardManifest, Plan]:
    """Everything that can fail before a run directory exists: data, model, cluster resources,
    and (with ``eval.every``) the feature network and the real reference statistics.

    Needs a Ray connection (``ray_session``) for the cluster's resources. ``manifest``: what
    ``check_job`` returned, when the caller ran it already.
    """
    if manifest is None:
        manifest = check_job(spec, job_source)
    try:
        p = plan(spec, manifest, *_cluster_resources())
    except ClusterError as e:
        raise ClusterError(f"{job_source}: {e}") from None
    if spec.eval.every:
        from distgan.train.evaluation import prepare_evaluation

        evaluation = prepare_evaluation(spec, data_dir(spec), manifest, job_source)
        p = dataclasses.replace(p, evaluation=evaluation)
    return manifest, p


def launch(
    spec: JobSpec,
    run_dir: Path,
    manifest: ShardManifest,
    p: Plan,
    job_source: str,
    resume_from: str | None = None,
    out=None,
    callbacks: tuple = (),
) -> dict:
    """Trains ``spec`` into ``run_dir`` on the connected Ray cluster; returns the last metrics.

    ``callbacks``: Ray Train user callbacks (a Tune trial passes the one that reports to Tune).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from distgan.train.worker import train_loop_per_worker

    run_dir = Path(run_dir).resolve()  # workers run in other working directories
    out = out or sys.stdout
    ray.data.DataContext.get_current().enable_progress_bars = False
    columns = ["image", "label"] if spec.model.conditional else ["image"]
    dataset = ray.data.read_parquet(manifest.shard_paths).select_columns(columns)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": to_dict(spec),
            "job_source": job_source,
            "shape": list(manifest.shape),
            "num_classes": manifest.num_classes,
            "run_dir": str(run_dir),
            "cache": p.cache,
            "resume_from": resume_from,
            "eval": p.evaluation,
        },
        torch_config=TorchConfig(backend="nccl" if p.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=p.workers,
            use_gpu=p.use_gpu,
            resources_per_worker={"CPU": p.cpus_per_worker, **({"GPU": 1} if p.use_gpu else {})},
            placement_strategy=spec.scale.placement,
        ),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS,
            storage_path=checkpoint_storage(spec, run_dir),
            failure_config=ray.train.FailureConfig(max_failures=spec.scale.max_failures),
            checkpoint_config=_checkpoint_config(spec, p),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks),
        ),
        datasets={"train": dataset},
        dataset_config=_data_config(spec),
    )
    device = "GPU" if p.use_gpu else "CPU"
    print(
        f"distgan: {run_dir} · {spec.model.arch} · {spec.loss.kind} · "
        f"{p.workers} {device} worker{'s' * (p.workers > 1)} · "
        f"{manifest.count:,} images {'×'.join(map(str, manifest.shape))}"
        + (f" · resuming from {resume_from}" if resume_from else ""),
        file=out,
        flush=True,
    )
    metrics = _fit_with_progress(trainer, run_dir, spec.train.steps, out)
    if is_uri(spec.run.storage):
        copy_run_files(run_dir, checkpoint_storage(spec, run_dir))
    return metrics


def checkpoint_storage(spec: JobSpec, run_dir: Path) -> str:
    """Ray Train's storage_path: the run directory, or ``<run.storage URI>/<run dir name>``
    (Ray writes the checkpoints there through pyarrow)."""
    if is_uri(spec.run.storage):
        return f"{spec.run.storage.rstrip('/')}/{run_dir.name}"
    return str(run_dir)


def copy_run_files(run_dir: Path, uri: str) -> None:
    """Copies the run's own files (job.resolved.yaml, metrics.jsonl, samples/, best/) beside
    its checkpoints under ``uri``, once training is done."""
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(uri)
    local = pyarrow.fs.LocalFileSystem()
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if relative.parts[0] == CHECKPOINTS or not path.is_file():
            continue  # Ray Train wrote the checkpoints to the URI already
        target = f"{base}/{relative.as_posix()}"
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)  # a no-op on object stores
        pyarrow.fs.copy_files(str(path), target, local, fs)


def _data_config(spec: JobSpec):
    """Splits the data among the workers, or with ``train.deterministic`` hands every worker the
    whole dataset in file order (each keeps every world-th row): Ray Data's split hands blocks to
    whichever worker asks first, so the rows a worker gets vary from run to run."""
    import ray.train
    from ray.data import ExecutionOptions

    if not spec.train.deterministic:
        return ray.train.DataConfig()
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


def _fit_with_progress(trainer, run_dir: Path, total: int, out) -> dict:
    """Runs ``trainer.fit()`` in a thread; prints rank 0's new metrics lines as they land."""
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = e

    thread = threading.Thread(target=fit, name="distgan-fit", daemon=True)
    thread.start()
    path = run_dir / "metrics.jsonl"
    offset = path.stat().st_size if path.exists() else 0  # a resumed run's earlier lines
    while thread.is_alive():
        thread.join(timeout=1.0)
        if not path.exists():
            continue
        with open(path) as f:
            f.seek(offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits
        offset += len(complete.encode())
        for line in complete.splitlines():
            print(_progress_line(json.loads(line), total), file=out, flush=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"].return_value or {}


def wait_seconds(t0: float) -> str:
    s = int(time.monotonic() - t0)
    return f"{s // 60}m{s % 60:02d}s"
