"""The driver's account of a run's worker groups, without Ray: ``fit_with_progress`` reads the
metrics lines rank 0 leaves in the run's storage and says, once each, when Ray Train restarted
the group (a worker died, or an elastic run was resized) and from which checkpoint it goes on.
(Real workers killed on a real Ray head: test_faults.py.)"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from distgan.specs import TrainSpec
from distgan.storage import open_location
from distgan.train import follow
from distgan.train.follow import fit_with_progress
from distgan.train.outputs import METRICS

PAUSE_S = 0.5  # between two parts of a run: the driver polls several times in it (see below)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(follow, "POLL_S", 0.02)  # a local run's lines are read every 4 polls


class Parts:
    """Stands in for Ray Train's TorchTrainer: its fit() leaves ``metrics.jsonl`` as rank 0 leaves
    it at the end of each part of a run, a pause apart. A restarted group's rank 0 keeps the lines
    up to its checkpoint's step, and its first record says which checkpoint and when the group
    started (train/outputs.py, train/loop.py)."""

    def __init__(self, run: Path, *parts: list[dict]):
        self.run, self.parts = run, parts

    def fit(self):
        for records in self.parts:
            time.sleep(PAUSE_S)  # Ray starts its workers well after the driver read the lines
            (self.run / METRICS).write_text("".join(json.dumps(m) + "\n" for m in records))
        return SimpleNamespace(return_value=self.parts[-1][-1])


def lines(step: int, end: int, workers: int = 2, **first) -> list[dict]:
    """A group's records every 10 steps from ``step`` to ``end``; ``first``: its first's extra."""
    records = [{"step": s, "workers": workers} for s in range(step, end + 1, 10)]
    records[0].update(first)
    return records


def told(tmp_path: Path, run: Parts, workers: int | None = 2) -> list[str]:
    out = io.StringIO()
    t = TrainSpec(steps=run.parts[-1][-1]["step"])
    fit_with_progress(run, open_location(str(tmp_path), "run.storage"), t, out, workers=workers)
    return [line for line in out.getvalue().splitlines() if not line.startswith("step")]


def test_the_driver_says_the_count_ray_picked_and_when_it_changes(tmp_path):
    first = lines(10, 30)
    resized = Parts(tmp_path, first, first[:2] + lines(30, 40, 3, resumed_from=20, started_at=1.0))
    assert told(tmp_path, resized, workers=None) == [
        "distgan: training on 2 workers",
        "distgan: the worker group restarted with 3 workers (was 2) after step 30; the workers "
        f"go on from the checkpoint at step 20 in {tmp_path}",
    ]
    # A fixed count is in the run's first line already: nothing more is said unless it changes.
    (tmp_path / METRICS).unlink()
    assert not [line for line in told(tmp_path, resized) if "training on" in line]


def test_each_restart_is_told_once_even_from_the_step_the_driver_showed_last(tmp_path):
    """A worker killed just after its group logged the step of a checkpoint (50): the next group
    goes on from that very step, which the driver has already shown. Then the new group is
    killed before its next checkpoint, and the third goes on from the same checkpoint."""
    first = lines(10, 50)
    run = Parts(
        tmp_path,
        first,
        first + lines(60, 70, resumed_from=50, started_at=1.0),
        first + lines(60, 80, resumed_from=50, started_at=2.0),
    )
    assert told(tmp_path, run) == [
        f"distgan: a training worker died after step {shown}; the workers go on from the "
        f"checkpoint at step 50 in {tmp_path}"
        for shown in (50, 70)
    ]
