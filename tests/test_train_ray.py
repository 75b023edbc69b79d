"""Training on a real Ray instance: 2 Ray Train workers on the embedded Fashion-MNIST shard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from distgan.cli import main
from distgan.config import load_job
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import read_metrics

pytestmark = pytest.mark.ray

BATCH = 32


def write_job(tmp_path: Path, **train) -> Path:
    job = {
        "data": {"source": "embedded"},
        "model": {"arch": "dcgan", "width": 16, "z_dim": 32},
        "train": {
            "steps": 40,
            "batch_size": BATCH,
            "log_every": 10,
            "checkpoint_every": 20,
            "sample_every": 20,
            **train,
        },
        "scale": {"workers": 2},
        "run": {"name": "tiny", "root": str(tmp_path / "runs")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def only_run(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_two_workers_write_checkpoints_samples_and_resume(ray_cluster, tmp_path, capsys):
    job = write_job(tmp_path)
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    run_dir = only_run(tmp_path)
    assert run_dir.name == "00000-tiny"
    assert load_job(run_dir / "job.resolved.yaml") == load_job(job)

    # One progress line per log interval, in order.
    assert [f"step {s}/40" in out for s in (10, 20, 30, 40)] == [True] * 4

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [10, 20, 30, 40]
    for m in metrics:
        assert m["images_seen"] == m["step"] * BATCH  # the global batch, split over 2 workers
        assert all(math.isfinite(m[k]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
        assert m["images_per_s"] > 0
    assert "d_grad_norm" in metrics[-1] and "g_grad_norm" in metrics[-1]

    folders = ckpts.checkpoints(run_dir)
    assert [f.name for f in folders] == ["step_0000020", "step_0000040"]
    ckpt = ckpts.load(folders[-1])
    assert ckpt["step"] == 40 and ckpt["images_seen"] == 40 * BATCH
    assert len(ckpt["rng"]) == 2  # both ranks' RNG states
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "scaler_g", "scaler_d", "job"):
        assert ckpt[key] is not None, key
    assert ckpt["opt_g"]["state"], "the optimizer state (Adam moments) is saved"

    for step in (20, 40):
        grid = Image.open(run_dir / "samples" / f"step_{step:06d}.png")
        assert grid.mode == "L" and grid.size == (8 * 30 + 2, 8 * 30 + 2)
        assert np.asarray(grid).std() > 5  # not a blank image

    # --resume continues at the recorded step, with the run's own job and a longer schedule.
    assert main(["train", "--resume", str(run_dir), "--set", "train.steps=60"]) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "step 50/60" in out
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [10, 20, 30, 40, 50, 60]
    assert metrics[-1]["images_seen"] == 60 * BATCH
    assert ckpts.load(ckpts.latest(run_dir))["step"] == 60
    assert load_job(run_dir / "job.resolved.yaml").train.steps == 60

    # Samples from the EMA generator of the latest checkpoint.
    npy = tmp_path / "x.npy"
    assert main(["sample", str(run_dir), "--n", "16", "--out", str(npy)]) == 0
    x = np.load(npy)
    assert x.shape == (16, 1, 28, 28) and x.dtype == np.uint8 and x.std() > 5
    png = tmp_path / "g.png"
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(png)]) == 0
    assert Image.open(png).size == (3 * 30 + 2, 3 * 30 + 2)


def test_stops_at_max_minutes_with_a_final_checkpoint(ray_cluster, tmp_path):
    job = write_job(tmp_path, steps=100000, max_minutes=0.05, checkpoint_every=100000)
    assert main(["train", str(job)]) == 0
    run_dir = only_run(tmp_path)
    last = read_metrics(run_dir)[-1]
    assert 10 <= last["step"] < 100000 and last["step"] % 10 == 0
    (folder,) = ckpts.checkpoints(run_dir)
    assert ckpts.load(folder)["step"] == last["step"]


@pytest.mark.parametrize(
    "override, words",
    [
        (["scale.workers=4", "scale.cpus_per_worker=1", "train.batch_size=32"], "scale"),
        (["scale.use_gpu=true"], "GPU"),
    ],
)
def test_a_job_that_cannot_be_placed_fails_at_once(ray_cluster, tmp_path, capsys, override, words):
    job = write_job(tmp_path)
    args = ["train", str(job)] + [a for o in override for a in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(job) in err and words in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
