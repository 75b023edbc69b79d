"""Elastic workers on a real Ray head (2 CPUs): ``scale.workers: [1, 4]`` trains on as many as fit
beside Ray Data's CPU, and a resume on one worker goes on with the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distgan.cli import main
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import STATUS, read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray-b")]  # conftest.py

BATCH = 12  # splits evenly across 1, 2, 3 and 4 workers, as a [1, 4] range needs


def test_a_range_trains_on_what_fits_and_resumes_on_another_count(ray_cluster, tmp_path, capsys):
    job = tmp_path / "elastic.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "embedded"},
                "model": {"arch": "dcgan", "width": 8, "z_dim": 16},
                "train": {
                    "steps": 20,
                    "batch_size": BATCH,
                    "log_every": 10,
                    "checkpoint_every": 10,
                    "sample_every": 20,
                },
                # 0.5 CPU a worker on the 2-CPU head: 2 fit beside Ray Data's CPU, not 4.
                "scale": {"workers": [1, 4], "cpus_per_worker": 0.5},
                "run": {"name": "elastic", "root": str(tmp_path / "runs")},
            }
        )
    )
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    assert "1-2 CPU workers" in out, out  # the range Ray Train was given
    assert "distgan: training on 2 workers" in out, out  # the count it picked
    (run,) = (tmp_path / "runs").iterdir()
    first = read_metrics(run)
    assert [(m["step"], m["workers"]) for m in first] == [(10, 2), (20, 2)]

    assert main(["train", "--resume", str(run), "--set", "scale.workers=1",
                 "--set", "train.steps=40"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 CPU worker ·" in out and "resuming from" in out, out
    assert "training on" not in out  # a fixed count is said once, in the first line
    records = read_metrics(run)
    assert [(m["step"], m["workers"]) for m in records] == [(10, 2), (20, 2), (30, 1), (40, 1)]
    assert records[2]["resumed_from"] == 20
    # The same run: the global batch, and so images_seen, goes on from where it was.
    assert [m["images_seen"] for m in records] == [BATCH * m["step"] for m in records]
    status = json.loads((run / STATUS).read_text())
    assert (status["status"], status["step"]) == ("done", 40)
    assert ckpts.step_of(ckpts.latest(str(run))) == 40
    assert Path(run, "checkpoints").is_dir()
