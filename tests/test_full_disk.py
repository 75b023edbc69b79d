"""A run whose storage fills up: a real tmpfs of a few MiB as ``run.storage``, a real
``distgan train`` on the session's Ray head.

Nothing already saved is lost: every checkpoint under its final name is whole (or absent), no
temporary file is left, status.json says "disk full", the last line names the last complete
checkpoint and the resume command, and the resume says why the run's last part ended.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distgan.errors import StorageError
from distgan.storage import open_location
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import read_status, write_status

DISTGAN = Path(sys.executable).with_name("distgan")


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (root only: CI runs as root), unmounted at the end."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
def test_a_full_disk_loses_nothing_saved_and_says_how_to_go_on(ray_cluster, small_disk, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "data": {"source": "embedded"},
        "model": {"arch": "mlp", "width": 16, "z_dim": 16},  # about 1.5 MB a checkpoint
        "train": {"steps": 100_000, "batch_size": 32, "log_every": 10, "checkpoint_every": 20,
                  "sample_every": 100_000, "keep_checkpoints": 10},
        "scale": {"workers": 2, "max_failures": 0},
        "run": {"storage": str(small_disk)},
    }))  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    full = subprocess.run([str(DISTGAN), "train", str(job)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert full.returncode == 2, full.stderr[-3000:]
    (run_dir,) = small_disk.iterdir()
    last = full.stderr.strip().splitlines()[-1]
    saved = ckpts.checkpoint_step(run_dir)
    assert saved and re.fullmatch(
        rf"error: {run_dir}: the run's storage is full \(no space left on device\) at step \d+; "
        rf"its last complete checkpoint is at step {saved}\. Make room there, then continue "
        rf"with: distgan train --resume {run_dir}",
        last,
    ), full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    # Complete or absent: every state.pt under its final name loads; no temporary file is left.
    states = sorted((run_dir / "checkpoints").glob("step_*/state.pt"))
    assert states and all(ckpts.load(s)["step"] == int(s.parent.name[5:]) for s in states)
    ray_marker = ".validate_storage_marker"  # Ray Train's, in every run
    leftovers = [p for p in run_dir.rglob(".*") if p.is_file() and p.name != ray_marker]
    assert not leftovers, leftovers
    status = read_status(open_location(str(run_dir), "run"))
    assert status["status"] == "failed" and status["error"] == "disk full", status

    # The resume says why the last part ended (the run itself goes on as any resume does:
    # test_signals.py, test_faults.py).
    again = subprocess.run([str(DISTGAN), "train", "--resume", str(run_dir), "--dry-run"],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        again.stderr
        == f"distgan: the run's last part failed (disk full) at step {status['step']}\n"
    )


def test_a_disk_with_no_byte_left_still_takes_the_runs_last_status(small_disk):
    """The run's last word (status.json "disk full") fits over the old status.json when no new
    file does: without it the status stayed "running" whenever the failed write left no room."""
    run = open_location(str(small_disk), "run")
    write_status(run, "running", 0)
    with open(small_disk / "filler", "wb", buffering=0) as f, pytest.raises(OSError) as full:
        while True:
            f.write(b"\0" * 4096)
    assert "No space left" in str(full.value)
    with pytest.raises(StorageError, match="No space left"):
        write_status(run, "failed", 120, error="disk full", checkpoint_step=100)
    write_status(run, "failed", 120, error="disk full", checkpoint_step=100, in_place=True)
    status = read_status(run)
    assert status["status"] == "failed" and status["error"] == "disk full", status
    assert status["step"] == 120 and status["checkpoint_step"] == 100
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "status.json"]
