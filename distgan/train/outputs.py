"""A run's home in its storage, and what rank 0 writes there as the run goes.

runs/00003-quickstart/          (or s3://bucket/runs/00003-quickstart, see storage.py)
    job.resolved.yaml        the job as it ran (written first)
    status.json              running / done / failed / stopped, with the last step
    metrics.jsonl            one JSON object per log interval
    complexity.json          what the models cost: parameters, FLOPs, peak memory, sec/kimg
    samples/step_000500.png  grids of G_ema on a fixed latent batch
    checkpoints/step_0000500/state.pt   (written by Ray Train into the same storage)
    best/state.pt, best.json the best checkpoint by eval.metric

Every file is written whole through ``storage.Location``, from whichever node rank 0 runs on, at
the moment it is made: a run that fails or is stopped still leaves its files up to its last log
interval. The driver reads progress from the same storage, never from its own disk.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from distgan.config import RESOLVED_JOB, dump_yaml
from distgan.errors import CheckpointError, StorageError
from distgan.images import grid_png
from distgan.storage import Location, display, open_location
from distgan.train import checkpoint as ckpts
from distgan.train.complexity import MeasuredCost

_RUN = re.compile(r"^(\d{5})-")
BEST = "best"  # the best checkpoint by the job's eval.metric
METRICS = "metrics.jsonl"
STATUS = "status.json"
STOP = "stop.json"  # written by the driver on distgan stop: the workers checkpoint and end


def storage_home(run) -> str:
    """Where a job's run directories go: ``run.storage`` (a path or a URI), else ``run.root``."""
    return run.storage or run.root


def new_run_dir(home: str, name: str) -> Location:
    """Creates ``home/<next id>-<name>``; the id is one more than the highest already there.

    Locally the folder is made exclusively (two runs started at once get different ids); in
    object storage the run exists once its first file is written (``write_resolved``).
    """
    root = open_location(home, field="run.storage")
    if root.is_local:
        Path(root.path).mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for n in root.list() if (m := _RUN.match(n))]
    run_id = max(taken, default=-1) + 1
    while True:
        run = root.child(f"{run_id:05d}-{name}")
        if not root.is_local:
            return run
        try:
            Path(run.path).mkdir()  # exclusive
            return run
        except FileExistsError:
            run_id += 1


def write_resolved(spec, run: Location | str | Path) -> None:
    """``job.resolved.yaml``, the first file of every run (and of every search)."""
    _as_location(run).write_text(RESOLVED_JOB, dump_yaml(spec))


def existing_run_dir(source: str | Path) -> Location:
    """A run directory (a folder or a URI) that holds ``job.resolved.yaml``."""
    run = open_location(str(source), field="RUN")
    if not run.is_file(RESOLVED_JOB):
        raise CheckpointError(
            f"{display(str(source))}: not a distgan run directory (no {RESOLVED_JOB}); pass a "
            "folder under runs/ or a run's URI in run.storage"
        )
    return run


def write_status(run: Location, status: str, step: int = 0, in_place: bool = False, **extra):
    """``status.json``: what ``distgan runs`` shows for the run (running, done, failed, stopped).
    ``in_place``: when the disk has no room for a new file, over the old file's bytes."""
    record = {"status": status, "step": int(step), "updated": time.time(), **extra}
    data = (json.dumps(record) + "\n").encode()
    try:
        run.write_bytes(STATUS, data)
    except StorageError:
        if not in_place:
            raise
        run.overwrite_in_place(STATUS, data)


def request_stop(run: Location, clear: bool = False) -> None:
    """Asks the run's workers to write a final checkpoint and end (``clear``: takes it back,
    as a new part of the run starts)."""
    if clear:
        run.delete(STOP)
    else:
        run.write_text(STOP, json.dumps({"requested": time.time()}) + "\n")


def read_status(run: Location) -> dict:
    try:
        return json.loads(run.read_text(STATUS)) if run.is_file(STATUS) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


class RunOutputs:
    """Rank 0's writer of metrics, sample grids and the best checkpoint, into the run's storage.

    ``metrics.jsonl`` is rewritten whole at each log interval (object stores cannot append):
    with one line per interval it stays small. A resumed run starts from the lines up to its
    checkpoint's step, so the file never holds a step twice.
    """

    def __init__(self, run: Location | str, resume_step: int | None = None):
        self.run = run if isinstance(run, Location) else open_location(run, field="run.storage")
        lines = read_metrics(self.run)
        if resume_step is not None:
            lines = [m for m in lines if m.get("step", 0) <= resume_step]
        self._lines = [json.dumps(m) for m in lines]
        self._last_step = lines[-1]["step"] if lines else -1
        # Imported here, by rank 0 alone: tensorboardX imports boto3 where it is installed
        # (0.46 s of its 0.48 s in `python -X importtime`), which the other ranks and the
        # commands that only read a run do not need.
        from distgan.train.tensorboard import RunEvents

        self.events = RunEvents(self.run)  # TensorBoard: every logged figure, every grid
        self.cost = MeasuredCost(self.run)  # complexity.json's peak memory and throughput

    def close(self) -> None:
        """Uploads the last TensorBoard events and removes their local staging folder (a run
        on object storage); every writer closes its outputs, however its training ends."""
        self.events.close()

    def __enter__(self) -> RunOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stop_requested(self) -> bool:
        """Whether the driver asked the run to stop (``distgan stop``): asked at log steps."""
        return self.run.is_file(STOP)

    @property
    def checkpoints_uri(self) -> str:
        return self.run.child(ckpts.CHECKPOINTS).uri

    def write_metrics(self, record: dict) -> None:
        step = record.get("step", 0)
        if step <= self._last_step:  # a rolled-back stretch is logged again: keep the newest
            kept = [line for line in self._lines if json.loads(line).get("step", 0) < step]
            self._lines = kept
        self._lines.append(json.dumps(record))
        self._last_step = step
        self.run.write_text(METRICS, "\n".join(self._lines) + "\n")
        self.events.scalars(int(step), record)
        self.cost.update(record)

    def write_samples(self, step: int, images: np.ndarray, columns: int | None = None) -> str:
        """A grid of ``images`` (``columns`` wide: a conditional grid has one row per class)."""
        name = f"samples/step_{step:06d}.png"
        self.run.write_bytes(name, grid_png(images, columns))
        self.events.samples(step, images)
        return self.run.child(name).uri

    def update_best(self, ckpt: dict, metric: str, higher_is_better: bool) -> bool:
        """Writes ``ckpt`` to ``best/`` when its ``metric`` beats the best so far (kept in the
        run's storage, so it survives a resume). Returns whether it did."""
        value = ckpt["metrics"].get(metric)
        if value is None or value != value:  # missing or NaN never wins
            return False
        best = read_best(self.run)
        if best is not None and best["metric"] == metric:
            old = best["value"]
            if (value <= old) if higher_is_better else (value >= old):
                return False
        self.run.write_bytes(f"{BEST}/{ckpts.STATE_FILE}", ckpts.to_bytes(ckpt))
        record = {"metric": metric, "value": value, "step": ckpt["step"]}
        self.run.write_text(f"{BEST}/best.json", json.dumps(record) + "\n")
        return True


def _as_location(run: Location | str | Path) -> Location:
    return run if isinstance(run, Location) else open_location(str(run), field="RUN")


def read_best(run: Location | str | Path) -> dict | None:
    """``{"metric", "value", "step"}`` of the run's best checkpoint, or None."""
    run = _as_location(run)
    name = f"{BEST}/best.json"
    return json.loads(run.read_text(name)) if run.is_file(name) else None


def read_metrics(run: Location | str | Path) -> list[dict]:
    run = _as_location(run)
    if not run.is_file(METRICS):
        return []
    return [json.loads(line) for line in run.read_text(METRICS).splitlines() if line.strip()]


def sample_grids(run: Location | str | Path) -> list[str]:
    """The run's sample grids (names under ``samples/``), oldest first."""
    return [n for n in _as_location(run).list("samples") if n.endswith(".png")]
