"""Nothing lost: non-finite steps, divergence, killed writers, killed workers, killed drivers.

The guard tests run the real training loop (``train/loop.py``) in this process on random data;
NaN enters through the job's testing aid ``guard.inject_nan`` (NaN latents on rank 0 at the given
steps). The ``ray`` tests run ``distgan train`` on the session's 2-CPU Ray head and kill real
processes from outside: Ray Train workers (found through Ray's State API) and the driver.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import live_actor_pids

from distgan.cli import main
from distgan.config import from_dict
from distgan.data import EMBEDDED_DIR, load_arrays, read_manifest, write_shards
from distgan.losses import get_loss
from distgan.models import build_models
from distgan.step import Game, Nets, train_step
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
from distgan.train.loop import run
from distgan.train.outputs import RunOutputs, read_metrics

SHAPE = (1, 8, 8)


# --- the step skips a non-finite update ----------------------------------------------------


def tiny_nets(kind: str = "nonsaturating") -> tuple[Nets, Game]:
    torch.manual_seed(0)
    G, D = build_models("dcgan", 8, 8, (1, 28, 28))  # dcgan: G has BatchNorm buffers
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
    return Nets(G, D, opt_g, opt_d), Game(get_loss(kind))


def flat_state(nets: Nets) -> torch.Tensor:
    tensors = [*nets.G.state_dict().values(), *nets.D.state_dict().values()]
    return torch.cat([t.detach().double().flatten() for t in tensors])


def test_a_nan_step_changes_no_weight_no_buffer_and_no_optimizer_state():
    nets, game = tiny_nets()
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    train_step(nets, game, [real], lambda n: torch.randn(n, 8))  # Adam state exists from here on
    before = flat_state(nets)
    adam_steps = int(nets.opt_d.state[next(iter(nets.D.parameters()))]["step"])

    metrics = train_step(
        nets, game, [real], lambda n: torch.randn(n, 8) * float("nan"), measure=True
    )
    assert metrics["skipped"] == 2  # the D update and the G update
    assert torch.equal(flat_state(nets), before)  # weights and BatchNorm statistics
    assert int(nets.opt_d.state[next(iter(nets.D.parameters()))]["step"]) == adam_steps

    metrics = train_step(nets, game, [real], lambda n: torch.randn(n, 8))
    assert metrics["skipped"] == 0 and not torch.equal(flat_state(nets), before)
    assert torch.isfinite(flat_state(nets)).all()


# --- the divergence guard, in the real loop (one process, no Ray) ----------------------------


def guard_job(inject: str, **guard) -> dict:
    return {
        "model": {"arch": "mlp", "width": 16, "z_dim": 8},
        "train": {
            "steps": 40,
            "batch_size": 16,
            "log_every": 5,
            "checkpoint_every": 10,
            "ema_decay": 0.9,
        },
        "scale": {"workers": 1},
        "guard": {"max_bad_steps": 3, "lr_factor": 0.5, "inject_nan": inject, **guard},
    }


def run_loop(job: dict, run_dir: Path) -> tuple[dict, list[dict], ckpts.TrainState]:
    """Trains ``job`` on 256 random 1×8×8 images; returns (result, reported checkpoints, state)."""
    spec = from_dict(job)
    state = build_state(spec, SHAPE, torch.device("cpu"))
    images = torch.randint(0, 256, (256, *SHAPE), dtype=torch.uint8)
    source = memory_batches(spec, images, None, None, torch.device("cpu"))
    reported: list[dict] = []
    result = run(
        state,
        source,
        spec,
        device=torch.device("cpu"),
        report=lambda m, ckpt: reported.append(ckpt),
        outputs=RunOutputs(run_dir),
        job_yaml="",
    )
    return result, reported, state


def lrs(state: ckpts.TrainState) -> tuple[float, float]:
    return state.nets.opt_g.param_groups[0]["lr"], state.nets.opt_d.param_groups[0]["lr"]


def test_nan_steps_are_skipped_then_rolled_back_with_lower_learning_rates(tmp_path):
    result, reported, state = run_loop(guard_job("13-15", max_rollbacks=2), tmp_path)
    assert "stopped" not in result and result["step"] == 40
    assert state.rollbacks == 1 and state.lr_scale == 0.5
    assert lrs(state) == (1e-4, 1e-4)  # the job's 2e-4, halved once
    assert [c["step"] for c in reported] == [10, 20, 30, 40]
    assert reported[-1]["guard"] == {"lr_scale": 0.5, "rollbacks": 1}
    assert all(torch.isfinite(t).all() for t in state.nets.G.state_dict().values())
    # Steps 13-15 were skipped, then training went back to step 10 and did 11-15 again.
    by_step = {m["step"]: m for m in read_metrics(tmp_path)}
    assert sorted(by_step) == list(range(5, 41, 5))
    assert by_step[10]["rollbacks"] == 0 and by_step[15]["rollbacks"] == 1
    assert by_step[15]["skipped"] > 0 and by_step[15]["lr_scale"] == 0.5
    assert by_step[20]["skipped"] == 0
    assert all(math.isfinite(m["d_loss"]) for m in by_step.values())


def test_divergence_after_the_last_rollback_stops_and_names_the_last_good_checkpoint(tmp_path):
    # NaN from step 13 on (each step once): 13-15 roll back to step 10; 16-18 find no
    # rollback left.
    result, reported, state = run_loop(guard_job("13-1000", max_rollbacks=1), tmp_path)
    message = result["stopped"]
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / 'step_0000010'}" in message
    assert "training diverged: 3 non-finite steps in a row up to step 18" in message
    assert "after 1 rollback(s)" in message and "--set optim.lr_g=0.0001" in message
    assert [c["step"] for c in reported] == [10]  # nothing written after the divergence
    assert state.rollbacks == 1


def test_a_discriminator_that_wins_outright_is_flagged(tmp_path):
    # A D learning 100× faster than G on random noise: its loss reaches ~0 within 40 steps.
    job = guard_job("", d_win_loss=0.05)
    job["optim"] = {"lr_d": 0.01, "lr_g": 1e-6}
    run_loop(job, tmp_path)
    flags = [(m["d_loss"] < 0.05, m["d_wins"]) for m in read_metrics(tmp_path)]
    assert (True, 1.0) in flags and (False, 0.0) in flags
    assert all(bool(low) == bool(wins) for low, wins in flags)
    # The driver's progress line says so.
    from distgan.train.follow import progress_line

    lines = [progress_line(m, 40) for m in read_metrics(tmp_path)]
    assert [("D wins" in line) for line in lines] == [bool(wins) for _, wins in flags]


# --- Ray: a divergence in a real 2-worker run ------------------------------------------------

BATCH = 32


def write_job(
    tmp_path: Path, name: str, *, train=None, scale=None, guard=None, data=None, optim=None
) -> Path:
    job = {
        "data": {"source": "embedded", **(data or {})},
        "optim": optim or {},
        "model": {"arch": "mlp", "width": 16, "z_dim": 16},
        "train": {
            "steps": 40,
            "batch_size": BATCH,
            "log_every": 5,
            "checkpoint_every": 10,
            "sample_every": 1000,
            **(train or {}),
        },
        "scale": {"workers": 2, **(scale or {})},
        "guard": guard or {},
        "run": {"name": name, "root": str(tmp_path / name)},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def only_run(root: Path) -> Path:
    (run_dir,) = root.iterdir()
    return run_dir


# --- a process killed while writing a checkpoint -------------------------------------------

# The child writes a large checkpoint, in one of the two ways a checkpoint reaches a run:
# save: checkpoint.save() into a folder that already holds one (rank 0's temporary folder,
#       best/); copy: Ray Train persisting rank 0's folder into RUN/checkpoints/step_N, which it
#       does with pyarrow.fs.copy_files (64 MiB chunks, straight to the final name).
WRITER = """
import sys, pyarrow.fs, torch
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
mode, folder, src = sys.argv[1:4]
big = {"format": ckpts.FORMAT, "step": 20, "G": {"w": torch.ones(24 * 2**20)}}  # 96 MiB
if mode == "save":
    print("writing", flush=True)
    ckpts.save(big, folder)
else:
    print("writing", flush=True)
    pyarrow.fs.copy_files(src, folder, destination_filesystem=pyarrow.fs.LocalFileSystem(),
                          chunk_size=64 * 2**20)
"""


def kill_while_writing(mode: str, folder: Path, watch, src: Path | None = None) -> None:
    """Starts the writer and SIGKILLs it as soon as ``watch()`` says a write is under way."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode, str(folder), str(src or "")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while not watch() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    child.kill()
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the writer finished before it could be killed"


def small_checkpoint(step: int) -> dict:
    return {"format": ckpts.FORMAT, "step": step, "G": {"w": torch.full((4,), float(step))}}


def test_a_writer_killed_inside_save_leaves_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "best"
    folder.mkdir()
    ckpts.save(small_checkpoint(10), folder)

    def temp_file_growing() -> bool:
        return any(p.stat().st_size > 2**20 for p in folder.glob(".state.pt.*.tmp"))

    kill_while_writing("save", folder, temp_file_growing)
    assert list(folder.glob(".state.pt.*.tmp")), "the kill landed while writing"
    loaded = ckpts.load(folder)
    assert loaded["step"] == 10 and torch.equal(loaded["G"]["w"], torch.full((4,), 10.0))


def test_a_checkpoint_half_copied_into_the_run_is_never_picked_for_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    ckpts.save(small_checkpoint(10), mkdir(run_dir / "checkpoints" / "step_0000010"))
    src = mkdir(tmp_path / "rank0")
    full = {"format": ckpts.FORMAT, "step": 20, "G": {"w": torch.ones(24 * 2**20)}}
    size = ckpts.save(full, src).stat().st_size
    target = mkdir(run_dir / "checkpoints" / "step_0000020")  # Ray creates it, then copies
    half_copied = target / ckpts.STATE_FILE

    def copy_under_way() -> bool:
        return half_copied.exists() and 0 < half_copied.stat().st_size < size

    kill_while_writing("copy", target, copy_under_way, src=src)
    assert 0 < half_copied.stat().st_size < size  # a half-written state.pt under its final name
    assert [p.name for p in ckpts.checkpoints(run_dir)] == ["step_0000010", "step_0000020"]
    assert ckpts.latest(run_dir) == run_dir / "checkpoints" / "step_0000010"
    assert ckpts.load(ckpts.latest(run_dir))["step"] == 10


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# --- Ray: workers and drivers killed from outside ------------------------------------------

TOKEN = "distgan-test-token-3f9a1c7e"  # must never reach a run directory or a log


def start_training(args: list[str], tmp_path: Path, log: str) -> subprocess.Popen:
    """``distgan ARGS`` in a subprocess on the test cluster (RAY_ADDRESS), with a token set."""
    env = {**os.environ, "RAY_AUTH_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    out = open(tmp_path / log, "w")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(
        [sys.executable, "-m", "distgan.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )


def logged_steps(run_root: Path) -> list[int]:
    runs = list(run_root.glob("*/metrics.jsonl")) if run_root.exists() else []
    if not runs:
        return []
    lines = runs[0].read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if line.endswith("}")]


def resumed_steps(run_root: Path) -> list[int]:
    """The checkpoint steps the run's worker groups (re)started from, in order."""
    runs = list(run_root.glob("*/metrics.jsonl")) if run_root.exists() else []
    lines = runs[0].read_text().splitlines() if runs else []
    return [m["resumed_from"] for m in map(json.loads, lines) if "resumed_from" in m]


def restarts_told(log: Path) -> list[int]:
    """The checkpoint steps the driver said the restarted worker groups go on from."""
    said = re.finditer(r"the workers go on from the checkpoint at step (\d+)", log.read_text())
    return [int(m.group(1)) for m in said]


def assert_no_token(*places: Path) -> None:
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for f in files:
            assert TOKEN.encode() not in f.read_bytes(), f"the token leaked into {f}"


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
def test_two_workers_killed_mid_run_lose_at_most_one_interval_each(ray_cluster, tmp_path):
    steps, every, log_every = 400, 50, 10
    job = write_job(
        tmp_path,
        "kill",
        train={"steps": steps, "checkpoint_every": every, "log_every": log_every},
        scale={"max_failures": 2},
    )
    rng = random.Random()
    proc = start_training(["train", str(job)], tmp_path, "kill.log")
    killed: list[set[int]] = []  # the worker group each kill hit
    last_before_kill: list[int] = []  # the last step logged when each kill landed
    pids: set[int] = set()
    try:
        deadline, next_look = time.monotonic() + 400, 0.0
        while proc.poll() is None and len(killed) < 2 and time.monotonic() < deadline:
            # The live workers, looked up while the files below are not yet ready (a State API
            # call costs the head far more CPU than reading them, and takes longer than a
            # restarted group needs for its 350 steps on an idle machine).
            if time.monotonic() >= next_look:
                pids = live_actor_pids(ray_cluster, "RayTrainWorker")
                next_look = time.monotonic() + 1.0
            # First kill: after the first checkpoint. Second: once the restarted group (new
            # PIDs) has logged a step of its own and the driver has told of the first restart
            # (a group killed before it logged a line leaves the driver nothing to tell). A step
            # logged after the first checkpoint means Ray registered that checkpoint.
            logged = logged_steps(tmp_path / "kill")
            ready = logged and logged[-1] > every
            ready = ready and len(resumed_steps(tmp_path / "kill")) == len(killed)
            ready = ready and len(restarts_told(tmp_path / "kill.log")) == len(killed)
            ready = ready and len(pids) == 2 and all(not (pids & group) for group in killed)
            if ready:
                time.sleep(rng.uniform(0, 0.5))  # a random moment in the run
                os.kill(rng.choice(sorted(pids)), signal.SIGKILL)
                killed.append(pids)
                last_before_kill.append(logged_steps(tmp_path / "kill")[-1])
            else:
                time.sleep(0.2)
        assert proc.wait(timeout=400) == 0, (tmp_path / "kill.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(killed) == 2, "the run ended before both kills"
    assert last_before_kill[-1] < steps, "the second kill came after the last step"
    run_dir = only_run(tmp_path / "kill")
    final = ckpts.load(ckpts.latest(run_dir))
    assert final["step"] == steps
    logged = logged_steps(tmp_path / "kill")
    assert logged == sorted(set(logged)) and logged[-1] == steps  # one line a step, in order
    # Each restart goes back to the latest checkpoint: at most one interval is trained again.
    # The driver says so, once a restart (metrics.jsonl keeps only the newest line of a step:
    # a second restart from the same checkpoint replaces the first one's lines).
    driver_log = (tmp_path / "kill.log").read_text()
    restarts = restarts_told(tmp_path / "kill.log")
    assert len(restarts) == 2, driver_log[-3000:]
    for before, resumed_from in zip(last_before_kill, restarts):
        assert resumed_from % every == 0 and 0 <= before - resumed_from <= every, restarts
    assert resumed_steps(tmp_path / "kill")[-1] == restarts[-1]
    assert "A worker died or was killed" not in driver_log  # Ray's paragraph: one line instead
    assert_no_token(run_dir, tmp_path / "kill.log")


def wait_for_no_train_workers(address: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while live_actor_pids(address, "RayTrainWorker") and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
def test_nan_on_one_rank_then_a_killed_driver_a_streamed_resume_ends_where_the_run_never_stopped(
    ray_cluster, tmp_path
):
    """Two runs of one streamed job (data.cache: stream; train.deterministic off, as by default)
    at once: NaN on rank 0 at steps 13-15 makes both ranks skip those steps, then roll back with
    halved learning rates, which also fall linearly to a tenth by the last step
    (optim.lr_decay); one run is never stopped, the other loses its driver (SIGKILL) after a
    checkpoint at step 40 or later and is resumed. 600 images in shards of 250, 250 and 100:
    each of the 2 workers reads its own 300 rows an epoch (read ahead by its thread), 18 batches
    of 16 (the rest left out), so the runs cross epochs, whose rows are cut among the workers
    anew, and the resume starts mid-epoch. The resumed run must end bit for bit where the other
    did: G, D, G_ema, Adam moments, the data position and the guard's state."""
    images, labels = load_arrays(read_manifest(EMBEDDED_DIR))
    write_shards(images[:600], labels[:600], tmp_path / "data", shard_size=250, source="test")
    data = {"source": str(tmp_path / "data"), "cache": "stream"}
    train = {"steps": 120, "checkpoint_every": 20, "log_every": 10}
    guard = {"inject_nan": "13-15", "max_bad_steps": 3, "max_rollbacks": 1}
    optim = {"lr_decay": "linear", "lr_final": 0.1}
    scale = {"cpus_per_worker": 0.25}  # both runs at once on the 2-CPU head
    jobs = {"train": train, "scale": scale, "guard": guard, "data": data, "optim": optim}
    straight = write_job(tmp_path, "straight", **jobs)
    stopped = write_job(tmp_path, "stopped", **jobs)
    run_dir = kill_one_driver_and_resume(ray_cluster, tmp_path, straight, stopped, after=40)
    # The divergence: skipped on both ranks, rolled back once, learning rates halved.
    a = ckpts.load(ckpts.latest(only_run(tmp_path / "straight")))
    assert a["guard"] == {"lr_scale": 0.5, "rollbacks": 1}
    metrics = read_metrics(only_run(tmp_path / "straight"))
    assert any(m["skipped"] > 0 and m["rollbacks"] == 1 for m in metrics), metrics[:3]
    assert "rollbacks 1 lr ×0.5" in (tmp_path / "straight.log").read_text()
    for m in metrics:  # 2e-4 × the guard's factor × the decay set before the step
        halved = 0.5 if m["rollbacks"] else 1.0
        assert math.isclose(m["lr_g"], 2e-4 * halved * (1 - 0.9 * (m["step"] - 1) / 120)), m
    assert [m["step"] for m in metrics] == list(range(10, 121, 10))
    assert all(m["images_seen"] == m["step"] * BATCH for m in metrics), metrics[-1]

    b = ckpts.load(ckpts.latest(run_dir))
    assert b["guard"] == a["guard"]
    assert a["step"] == b["step"] == 120 and a["epoch"] >= 3  # 18 steps an epoch
    resumed = [m["resumed_from"] for m in read_metrics(run_dir) if "resumed_from" in m]
    assert resumed and resumed[-1] % 18, f"the resume started at an epoch's start: {resumed}"
    assert_same_state(a, b)
    assert_no_token(run_dir, tmp_path / "stopped.log")


def kill_one_driver_and_resume(
    address: str, tmp_path: Path, straight: Path, stopped: Path, after: int
) -> Path:
    """Trains both jobs at once; SIGKILLs ``stopped``'s driver once it has a checkpoint at step
    ``after`` or later (as a lost laptop session would), lets ``straight`` finish, and resumes
    the stopped run to its end in this process. Returns the stopped run's folder."""
    reference = start_training(["train", str(straight)], tmp_path, "straight.log")
    proc = start_training(["train", str(stopped)], tmp_path, "stopped.log")
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            runs = list((tmp_path / "stopped").glob("*"))
            # Listed, not loaded: a poll must not take CPU from the runs it watches.
            reached = ckpts.checkpoint_step(runs[0]) if runs else None
            if reached is not None and reached >= after:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
        assert reference.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        for p in (proc, reference):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the driver was killed"
    wait_for_no_train_workers(address)  # Ray ends the dead driver's workers
    run_dir = only_run(tmp_path / "stopped")
    steps = yaml.safe_load(stopped.read_text())["train"]["steps"]
    newest = ckpts.load(ckpts.latest(run_dir))["step"]
    assert newest < steps
    assert main(["train", "--resume", str(run_dir)]) == 0
    # The resume goes on from the newest checkpoint on disk, even when Ray had not registered it
    # before the driver died (Ray's own record then lags a checkpoint behind).
    resumed = [m["resumed_from"] for m in read_metrics(run_dir) if "resumed_from" in m]
    assert resumed[-1] == newest, resumed
    return run_dir


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same data position, weights and Adam moments, bit for bit."""
    assert (a["epoch"], a["images_seen"]) == (b["epoch"], b["images_seen"])
    for key in ("G", "D", "G_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for key in ("opt_g", "opt_d"):
        for p, state in a[key]["state"].items():
            assert torch.equal(state["exp_avg"], b[key]["state"][p]["exp_avg"]), key


def test_the_guard_runs_without_ray():
    code = "import sys, distgan.train.guard; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
