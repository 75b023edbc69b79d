"""The run directory and what rank 0 writes into it.

runs/00003-quickstart/
    job.resolved.yaml        the job as it ran (written first)
    metrics.jsonl            one JSON object per log interval
    samples/step_000500.png  grids of G_ema on a fixed latent batch
    checkpoints/step_0000500/state.pt
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from distgan.config import RESOLVED_JOB
from distgan.errors import CheckpointError
from distgan.images import save_grid
from distgan.train import checkpoint as ckpts

_RUN = re.compile(r"^(\d{5})-")
BEST = "best"  # the best checkpoint by the job's eval.metric


def is_uri(location: str) -> bool:
    """``s3://bucket/runs`` and the like (pyarrow file systems), as opposed to a local path."""
    return "://" in location


def run_root(run) -> Path:
    """The local folder that holds run directories: ``run.storage`` when it is a (shared)
    path, else ``run.root``. With a URI storage the run directory stays under ``run.root`` and
    its files are copied to the URI (see train/launch.py)."""
    storage = run.storage
    return Path(storage if storage and not is_uri(storage) else run.root).expanduser()


def new_run_dir(root: str | Path, name: str, storage: str = "") -> Path:
    """Creates ``root/<next id>-<name>``; the id is one more than the highest already there,
    or at the ``storage`` URI (a cluster's local root starts empty, and Ray Train would resume a
    run it finds under a reused name)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in root.iterdir()] + (_uri_entries(storage) if is_uri(storage) else [])
    taken = [int(m.group(1)) for n in names if (m := _RUN.match(n))]
    run_id = max(taken, default=-1) + 1
    while True:
        path = root / f"{run_id:05d}-{name}"
        try:
            path.mkdir()  # exclusive: two runs started at once get different ids
            return path
        except FileExistsError:
            run_id += 1


def _uri_entries(uri: str) -> list[str]:
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(uri)
    selector = pyarrow.fs.FileSelector(base, allow_not_found=True)
    return [info.base_name for info in fs.get_file_info(selector)]


def existing_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / RESOLVED_JOB).is_file():
        raise CheckpointError(
            f"{path}: not a distgan run directory (no {RESOLVED_JOB}); pass a folder under runs/"
        )
    return path


class RunOutputs:
    """Rank 0's writer of metrics and sample grids."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.samples_dir = self.run_dir / "samples"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"

    def write_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_samples(self, step: int, images: np.ndarray, columns: int | None = None) -> Path:
        return save_grid(images, self.samples_dir / f"step_{step:06d}.png", columns)

    def update_best(self, ckpt: dict, metric: str, higher_is_better: bool) -> bool:
        """Copies ``ckpt`` to ``best/`` when its ``metric`` beats the best so far (kept on disk,
        so it survives a resume). Returns whether it did."""
        value = ckpt["metrics"].get(metric)
        if value is None or value != value:  # missing or NaN never wins
            return False
        best = read_best(self.run_dir)
        if best is not None and best["metric"] == metric:
            old = best["value"]
            if (value <= old) if higher_is_better else (value >= old):
                return False
        folder = self.run_dir / BEST
        folder.mkdir(exist_ok=True)
        ckpts.save(ckpt, folder)
        record = {"metric": metric, "value": value, "step": ckpt["step"]}
        tmp = folder / ".best.json.tmp"
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(folder / "best.json")
        return True


def read_best(run_dir: str | Path) -> dict | None:
    """``{"metric", "value", "step"}`` of the run's best checkpoint, or None."""
    path = Path(run_dir) / BEST / "best.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
