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
from distgan.errors import ClusterError, DataError, JobError, StorageError, UserError
from distgan.models import models_for_job
from distgan.progress import duration
from distgan.storage import Location, check_reachable, display, is_uri, open_location
from distgan.train.checkpoint import CHECKPOINTS
from distgan.train.outputs import METRICS, read_status, request_stop, write_status

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


def data_location(spec: JobSpec) -> str:
    """The dataset's folder or URI (``embedded``: the copy inside the package)."""
    source = spec.data.source
    return str(EMBEDDED_DIR) if source == "embedded" else source


def resolve_data(spec: JobSpec, job_source: str) -> ShardManifest:
    try:
        if is_uri(spec.data.source):
            check_reachable(open_location(spec.data.source, "data.source"), "data.source", True)
        return read_manifest(data_location(spec))
    except (DataError, StorageError) as e:
        raise type(e)(f"{job_source}: {_field_first(e, 'data.source')}") from None


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
    # Class-balanced draws need the shard in memory (config.py refuses data.cache: stream).
    cache = cache or spec.train.class_balance != "none"
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
    _quiet_worker_deaths()
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


def _quiet_worker_deaths() -> None:
    """Drops the raylet's many-line worker-death warning from this driver's output.

    Ray prints every error the raylet publishes to the driver (``print_to_stdstream`` in its
    error-listener thread), and a killed training worker gives a paragraph about OOM killers and
    ``--enable-resource-isolation``. distgan says it in one line instead, from the run's records:
    which step the run had reached and from which checkpoint the restarted workers go on
    (``_fit_with_progress``). Every other message goes through unchanged.
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


def _progress_line(
    m: dict, total: int, max_minutes: float = 0.0, anchor: dict | None = None
) -> str:
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


def check_job(spec: JobSpec, job_source: str) -> ShardManifest:
    """The checks that need no Ray (``distgan train --dry-run`` runs exactly these): the
    storage answers, the manifest, each shard's Parquet footer, schema and row count (not its
    hash: that reads every byte), that the model serves the data's shape (a conditional model's
    labels belong beside it), and with ``eval.every`` that the feature network loads and takes
    the data's images. Returns the manifest; DataError, JobError, StorageError or
    CheckpointError naming the job file and field."""
    check_storage(spec, job_source)
    manifest = resolve_data(spec, job_source)
    try:
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
    from ray.train.torch import TorchConfig, TorchTrainer

    from distgan.train.worker import train_loop_per_worker

    if not isinstance(run, Location):  # workers run in other working directories
        run = open_location(str(Path(run).resolve()), field="run.storage")
    out = out or sys.stdout
    ray.data.DataContext.get_current().enable_progress_bars = False
    data = open_location(manifest.root, field="data.source")
    labelled = spec.model.conditional or spec.train.class_balance != "none"
    columns = ["image", "label"] if labelled else ["image"]
    dataset = ray.data.read_parquet(
        [data.child(s.file).path for s in manifest.shards],
        filesystem=None if data.is_local else data.fs,
    ).select_columns(columns)
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
            # Ray Train writes the checkpoints into the run's own storage, through pyarrow.
            storage_path=run.path,
            storage_filesystem=None if run.is_local else run.fs,
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
        f"distgan: {run} · {spec.model.arch} · {spec.loss.kind} · "
        f"{p.workers} {device} worker{'s' * (p.workers > 1)} · "
        f"{manifest.count:,} images {'×'.join(map(str, manifest.shape))}"
        + (f" · resuming from {display(resume_from)}" if resume_from else ""),
        file=out,
        flush=True,
    )
    step = int(read_status(run).get("step", 0))
    request_stop(run, clear=True)  # an earlier part's request does not stop this one
    write_status(run, "running", step)
    try:
        metrics = _fit_with_progress(trainer, run, spec.train, out, on_record)
    except BaseException as e:
        status = "stopped" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"
        write_status(run, status, _last_step(run, step), error=type(e).__name__)
        raise
    write_status(run, "done", int(metrics.get("step", 0)), **_best_of(metrics))
    return metrics


def _last_step(run: Location, default: int) -> int:
    from distgan.train.outputs import read_metrics

    logged = read_metrics(run)
    return int(logged[-1]["step"]) if logged else default


def _best_of(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRIC_NAMES if k in metrics}


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


def _fit_with_progress(trainer, run: Location, t, out, on_record=None) -> dict:
    """Runs ``trainer.fit()`` in a thread; prints rank 0's new metrics lines as they land in the
    run's storage (the driver may be on another machine than rank 0: it reads no local file).
    ``t``: the job's train section (steps, max_minutes)."""
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = e

    thread = threading.Thread(target=fit, name="distgan-fit", daemon=True)
    thread.start()
    shown = [json.loads(line) for line in _metrics_lines(run)]  # earlier parts: not shown
    last_step = int(shown[-1]["step"]) if shown else -1
    groups = {m["started_at"] for m in shown if "started_at" in m}  # worker groups seen
    anchor = None  # the first record of this session: the ETA's speed is measured from it

    def show_new_lines() -> None:
        nonlocal last_step, anchor
        for line in _metrics_lines(run):
            m = json.loads(line)
            if m.get("started_at") is not None and m["started_at"] not in groups:
                groups.add(m["started_at"])
                if m["resumed_from"] < last_step:
                    # Ray Train restarted the worker group: its lines go on from the checkpoint.
                    print(
                        f"distgan: a training worker died after step {last_step}; the workers "
                        f"go on from the checkpoint at step {m['resumed_from']} in {run}",
                        file=out,
                        flush=True,
                    )
                    last_step, anchor = m["resumed_from"], None
            if m["step"] > last_step:
                anchor = anchor or m
                print(_progress_line(m, t.steps, t.max_minutes, anchor), file=out, flush=True)
                last_step = m["step"]
                if on_record is not None:
                    on_record(m)

    polls, asked = 0, False
    while thread.is_alive():
        try:
            thread.join(timeout=1.0)
        except KeyboardInterrupt:  # distgan stop (SIGTERM) or Ctrl-C: ask for a last checkpoint
            if asked:
                raise
            asked = True
            request_stop(run)
            # Marked now: Ray kills the job a few seconds after its SIGTERM, maybe before the
            # final checkpoint; the run is whole up to its last checkpoint either way.
            write_status(run, "stopped", _last_step(run, 0), error="KeyboardInterrupt")
            print(
                "distgan: stopping: the workers write a final checkpoint at their next log "
                "step (press Ctrl-C again to stop at once)",
                file=out,
                flush=True,
            )
        polls += 1
        if thread.is_alive() and (run.is_local or polls % 2 == 0):  # object storage: every 2 s
            show_new_lines()
    show_new_lines()  # the lines written since the last poll
    if asked and "error" not in outcome:
        raise KeyboardInterrupt  # stopped, with the final checkpoint written
    if "error" in outcome:
        raise outcome["error"]
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
