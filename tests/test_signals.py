"""Ctrl-C and SIGTERM to a real ``distgan train`` (on a local Ray instance of its own, or on the
session's Ray head), as a user's terminal, ``distgan stop`` or a scheduler sends them; and what a
local run listens on.

A first signal stops the run at the step the workers reach, with a final checkpoint there, a
"stopped" status.json, the resume command and the shell's exit code (130, 143); a second one stops
at once and says what is lost. No traceback, no Ray stack dump, and no process of the run is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import IN_A_TERMINAL, LOOPBACK_SWITCH, is_loopback, listening

from distgan.cli import main
from distgan.storage import open_location
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import read_status

# The local runs (a Ray instance of their own) are in group ray-b, the run on the session's head
# in ray-a (conftest.py).
pytestmark = pytest.mark.ray

DISTGAN = Path(sys.executable).with_name("distgan")


def start_local_run(
    tmp_path: Path, env: dict | None = None, workers: int = 2, **train
) -> tuple[subprocess.Popen, Path, Path]:
    """``distgan train`` of a small job (2 workers unless told) on a Ray instance of its own:
    (process, runs folder, log folder). Ray's temp dir is short and the test's own (socket paths
    are limited)."""
    job = {
        "data": {"source": "embedded"},
        "model": {"arch": "dcgan", "width": 8, "z_dim": 16},
        "train": {"steps": 100_000, "batch_size": 32, "log_every": 20, "sample_every": 100_000,
                  "checkpoint_every": 100_000, "max_minutes": 5.0, **train},
        "scale": {"workers": workers},
        "run": {"storage": str(tmp_path / "runs")},
    }  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    proc = subprocess.Popen(
        [*IN_A_TERMINAL, str(DISTGAN), "train", str(path)], stdout=out.open("w"),
        stderr=err.open("w"),
        env=env or env_of(tmp_path),
    )  # fmt: skip
    return proc, tmp_path / "runs", tmp_path


def env_of(tmp_path: Path) -> dict:
    """No RAY_ADDRESS (each run starts its own local Ray), nor the tests' loopback switch (which
    a local run must set by itself), and a short Ray temp dir of the test's own (socket paths are
    limited)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", LOOPBACK_SWITCH)}
    temp = tmp_path / "ray-temp"
    if not temp.exists():
        short = tempfile.mkdtemp(prefix="dgsig-", dir="/tmp")
        RAY_TEMP_DIRS.append(short)
        temp.symlink_to(short)
    env["RAY_TMPDIR"] = str(temp.resolve())
    return env


RAY_TEMP_DIRS: list[str] = []  # env_of's, removed when the module's tests are done


@pytest.fixture(scope="module", autouse=True)
def _remove_ray_temp_dirs():
    yield
    while RAY_TEMP_DIRS:
        shutil.rmtree(RAY_TEMP_DIRS.pop(), ignore_errors=True)


def wait_for_progress(proc: subprocess.Popen, logs: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"^step ", (logs / "out.txt").read_text(), re.M):
            return
        assert proc.poll() is None, (logs / "err.txt").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("no progress line in time: " + (logs / "err.txt").read_text()[-3000:])


def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def finish(proc: subprocess.Popen, procs: list[psutil.Process], timeout: float) -> int:
    """The exit code; then every process of the run must be gone (the test kills what is left)."""
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, f"processes of the run left behind: {[p.pid for p in alive]}"
    return code


def check_stopped(proc, procs, runs: Path, logs: Path, sig: signal.Signals) -> tuple[Path, int]:
    """The signal was sent: the run ends as stopped at the step reached, with its final
    checkpoint there and the resume command; returns (the run, that step)."""
    code = finish(proc, procs, timeout=90)
    out, err = (logs / "out.txt").read_text(), (logs / "err.txt").read_text()
    assert code == 128 + sig, err[-3000:]
    assert "distgan: stopping: the workers write a final checkpoint" in out
    (run_dir,) = runs.iterdir()
    status = read_status(open_location(str(run_dir), "run"))
    step = status["checkpoint_step"]
    assert status["status"] == "stopped" and status["signal"] == sig.name, status
    assert step == status["step"] and step > 0, status  # the step reached, not an interval's
    assert ckpts.load(ckpts.latest(run_dir))["step"] == step
    assert err.splitlines() == [
        f"distgan: stopped at step {step} with a final checkpoint",
        f"continue with: distgan train --resume {run_dir}",
    ], err
    return run_dir, step


@pytest.mark.xdist_group("ray-b")
def test_ctrl_c_stops_a_local_run_that_listens_on_loopback_only(tmp_path):
    """A local run (its own Ray): every listening socket of every process of it is on loopback;
    a second writer is refused; Ctrl-C stops it with a final checkpoint."""
    proc, runs, logs = start_local_run(tmp_path)
    wait_for_progress(proc, logs)
    procs = tree(proc)
    sockets = listening(procs)
    assert sockets and all(is_loopback(ip) for ip, _, _ in sockets), sockets
    (run_dir,) = runs.iterdir()
    # A second writer on the same run is refused, before it starts anything.
    again = [str(DISTGAN), "train", "--resume", str(run_dir)]
    second = subprocess.run(again, capture_output=True, text=True, env=env_of(logs), timeout=60)
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("\n") == 1 and f"in use by distgan train (pid {proc.pid}" in (
        second.stderr
    ), second.stderr
    proc.send_signal(signal.SIGINT)
    check_stopped(proc, procs, runs, logs, signal.SIGINT)


@pytest.mark.xdist_group("ray-a")
def test_sigterm_stops_a_run_on_a_cluster_and_its_resume_says_why_it_ended(
    ray_cluster, tmp_path, capfd
):
    """SIGTERM (a scheduler, Ray's job stop) to a run on a Ray cluster (RAY_ADDRESS: ray.init
    puts its own SIGTERM handler in place there too), then the printed resume command, checked
    in this process (its file descriptors captured: what Ray writes there too)."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc, runs, logs = start_local_run(tmp_path, env=env)
    wait_for_progress(proc, logs)
    procs = tree(proc)
    proc.send_signal(signal.SIGTERM)
    run_dir, step = check_stopped(proc, procs, runs, logs, signal.SIGTERM)
    # The resume says why the last part ended (a stopped run resumed and trained on: the split
    # cluster's stop and resume in test_split_cluster.py).
    capfd.readouterr()
    code = main(["train", "--resume", str(run_dir), "--dry-run"])
    more = capfd.readouterr()
    assert code == 0, more.err[-3000:]
    assert more.err == f"distgan: the run's last part was stopped (SIGTERM) at step {step}\n"


@pytest.mark.xdist_group("ray-b")
def test_a_second_ctrl_c_stops_at_once_and_says_what_is_lost(tmp_path):
    # One worker: the hard stop ends the local instance's processes whatever their number
    # (the graceful stop of two workers at one step: the tests above).
    proc, runs, logs = start_local_run(tmp_path, workers=1, checkpoint_every=20)
    wait_for_progress(proc, logs)
    procs = tree(proc)
    proc.send_signal(signal.SIGINT)
    # The second as soon as the driver says it is stopping: the final checkpoint is then still
    # to come (the workers stop at their next probe, up to a second away), so it is cut short.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        said = (logs / "out.txt").read_text() + (logs / "err.txt").read_text()
        if "distgan: stopping" in said:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    code = finish(proc, procs, timeout=30)
    err = (logs / "err.txt").read_text()
    assert code == 130, err[-3000:]
    (run_dir,) = runs.iterdir()
    status = read_status(open_location(str(run_dir), "run"))
    assert status["status"] == "stopped" and status["at_once"] is True, status
    saved = status["checkpoint_step"]
    assert saved == ckpts.load(ckpts.latest(run_dir))["step"]
    assert err.splitlines()[0] == (
        f"distgan: stopped at once at step {status['step']}: the steps after the checkpoint at "
        f"step {saved} are lost"
    ), err
    assert "Traceback" not in err and "***" not in err
