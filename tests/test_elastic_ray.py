"""Elastic workers on a real Ray head (2 CPUs): ``scale.workers: [1, 4]`` trains on as many as fit
beside Ray Data's CPU, and a resume on one worker goes on with the same run; a range whose MIN
finds no room says it waits, then ends in one line after ``scale.wait_minutes``."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import live_actor_pids

from distgan.cli import main
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import STATUS, read_metrics
from distgan.train.session import ray_session

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray-a")]  # conftest.py

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


def test_a_range_whose_minimum_finds_no_room_ends_in_one_line(ray_cluster, tmp_path, capsys):
    import ray
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        ResourceRequestPriority,
        get_or_create_autoscaling_coordinator,
    )

    # Ray Train's elastic policy counts only the room its autoscaling coordinator reserves for
    # it: with another run holding both of the head's CPUs there (as a second elastic job on the
    # cluster would), it has room for 0 workers, as after a node lost, and waits for MIN in
    # silence with no timeout of its own.
    with ray_session():
        coordinator = get_or_create_autoscaling_coordinator()
        ray.get(
            coordinator.request_resources.remote(
                "another-run",
                [{"CPU": 2.0}],
                expire_after_s=120,
                priority=ResourceRequestPriority.HIGH,
            )
        )
    job = tmp_path / "no-room.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "embedded"},
                "model": {"arch": "dcgan", "width": 8, "z_dim": 16},
                "train": {"steps": 20, "batch_size": BATCH},
                "scale": {"workers": [2, 3], "cpus_per_worker": 0.25, "wait_minutes": 0.1},
                "run": {"name": "no-room", "root": str(tmp_path / "runs")},
            }
        )
    )
    share: list[float] = []  # the controller's CPU share while it waits (pace.py)
    watch = threading.Thread(target=controller_cpu_share, args=(ray_cluster, share), daemon=True)
    t0 = time.monotonic()
    watch.start()
    try:
        code = main(["train", str(job)])
    finally:
        with ray_session():
            ray.get(get_or_create_autoscaling_coordinator().cancel_request.remote("another-run"))
        watch.join(timeout=30)
    took = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    # Ray Train's controller waits for room without spinning: it kept a core busy (Ray Train
    # 2.60 asks its elastic policy again at once) until distgan paced its loop.
    assert share, "the controller was not seen waiting for 3 s or more"
    assert share[0] < 0.2, share  # 0.01 beside a busy loop; about 1 without the callback
    assert (
        "distgan: no worker group is running: Ray Train waits for room for at least 2 workers "
        "(0.5 CPUs); the run ends if the cluster has none within 20 s (scale.wait_minutes: 0.1)"
    ) in out, out
    assert "Traceback" not in out + err
    (run,) = (tmp_path / "runs").iterdir()
    assert err == (
        "error: the cluster has no room for the run's workers, and no capacity for its 2 workers "
        "came back within scale.wait_minutes (0.1 min); it reached step 0, before its first "
        f"checkpoint (run {run})\n"
    ), err
    status = json.loads((run / STATUS).read_text())
    assert (status["status"], status["error"], status["step"]) == (
        "failed",
        "workers not placed",
        0,
    )
    assert took < 60, took  # the 20 s floor of scale.wait_minutes and start-up, not forever
    # The driver gave up on a fit() that was still waiting: it ended Ray Train's controller, so
    # no thread of this process is left inside ray.get (one crashed the process with a segfault
    # once it connected to Ray again).
    assert [t for t in threading.enumerate() if t.name == "distgan-fit"] == []


def controller_cpu_share(address: str, share: list[float]) -> None:
    """Appends to ``share`` the CPU time the live Ray Train controller on ``address`` took per
    second of its wait, over the seconds from 2 s after it is first listed up to 8 (or to its
    end, if that comes first and leaves 3 s or more)."""
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        pids = live_actor_pids(address, "TrainController")
        if not pids:
            time.sleep(0.5)
            continue
        time.sleep(2)  # past the actor's own start
        readings = []
        with contextlib.suppress(psutil.NoSuchProcess):
            controller = psutil.Process(min(pids))
            for _ in range(9):
                cpu = controller.cpu_times()
                readings.append((time.monotonic(), cpu.user + cpu.system))
                time.sleep(1)
        if len(readings) >= 2 and readings[-1][0] - readings[0][0] >= 3:
            (t0, c0), (t1, c1) = readings[0], readings[-1]
            share.append((c1 - c0) / (t1 - t0))
        return
