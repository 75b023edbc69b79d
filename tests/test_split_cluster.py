"""The split cluster of conftest.py (a head and a worker node that share no disk, an S3 server on
127.0.0.1): proof that the nodes' disks are apart and that the storage is shared, then distgan's
runs on it, end to end.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("ray-b")]  # conftest.py

# A Ray driver on the head's side: one task pinned to the worker node writes each path it is
# given and a key in the bucket, and says what it saw.
PROBE = """
import json, os, sys
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

args = json.loads(sys.argv[1])

@ray.remote(num_cpus=1)
def probe(paths, host_file, uri):
    import pyarrow.fs as pafs

    ctx = ray.get_runtime_context()
    wrote = {}
    for p in map(Path, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("from the worker node")
        wrote[str(p)] = p.read_text()
    fs, base = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(base + "/from-test.txt") as f:
        from_test = f.read().decode()
    with fs.open_output_stream(base + "/from-worker.txt") as f:
        f.write(b"written on the worker node")
    return {
        "node": ctx.get_node_id(),
        "temp_dir": ray._private.worker.global_worker.node.get_temp_dir_path(),
        "wrote": wrote,
        "sees_host_file": os.path.exists(host_file),
        "from_test": from_test,
    }

ray.init(log_to_driver=False, logging_level="warning")
pinned = NodeAffinitySchedulingStrategy(args["node"], soft=False)
task = probe.options(scheduling_strategy=pinned)
print(json.dumps(ray.get(task.remote(args["paths"], args["host_file"], args["uri"]))))
"""


def test_worker_node_disk_is_its_own_and_the_bucket_is_shared(split_cluster, s3_server, tmp_path):
    cluster = split_cluster
    tag = f"split-probe-{secrets.token_hex(4)}"
    runs_dir = REPO / "runs" / tag
    paths = [
        runs_dir / "probe.txt",  # the project's runs/, where a local run lands
        REPO / "data" / f"{tag}.txt",  # the project's local data
        cluster.head_temp_dir / f"{tag}.txt",  # the head's Ray temp dir (its jobs' working_dir)
        tmp_path / "probe.txt",  # this test's own temp dir
    ]
    runs_dir.mkdir(parents=True)
    host_file = runs_dir / "host.txt"  # written here, on the head's side
    host_file.write_text("from the head's side")
    s3_server.create_bucket("probe")
    s3_server.write("probe", f"{tag}/from-test.txt", b"written by the test")
    try:
        args = {
            "node": cluster.worker_node_id,
            "paths": [str(p) for p in paths],
            "host_file": str(host_file),
            "uri": s3_server.uri("probe", tag),
        }
        done = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(args)],
            env=cluster.client_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])

        # The task ran on the worker node, with its own Ray temp dir.
        assert seen["node"] == cluster.worker_node_id != cluster.head_node_id
        assert seen["temp_dir"] == str(cluster.worker_temp_dir)
        assert not cluster.worker_temp_dir.exists()  # that path is the worker node's alone
        # It wrote and read back every file, and none of them is on the head's side; the file
        # the head's side wrote is not on the worker node's.
        assert seen["wrote"] == {str(p): "from the worker node" for p in paths}
        assert [p for p in paths if p.exists()] == []
        assert sorted(p.name for p in runs_dir.iterdir()) == ["host.txt"]
        assert seen["sees_host_file"] is False

        # The bucket is the one thing both sides share.
        assert seen["from_test"] == "written by the test"
        assert s3_server.read("probe", f"{tag}/from-worker.txt") == b"written on the worker node"
    finally:  # nothing of the worker node's is here unless the test failed
        shutil.rmtree(runs_dir, ignore_errors=True)
        (REPO / "data" / f"{tag}.txt").unlink(missing_ok=True)


def test_submitted_run_lives_in_the_storage(split_cluster, s3_env, monkeypatch, capsys):
    """A job submitted to the split cluster reads its data from the bucket and writes every
    file of its run there; nothing of the run is on the head's disk."""
    import pyarrow.fs as pafs

    from distgan.cli import main

    cluster, s3 = split_cluster, s3_env
    s3.create_bucket("data")
    s3.create_bucket("runs")
    pafs.copy_files(str(REPO / "distgan" / "data" / "embedded"), s3.uri("data", "embedded"))
    assert "embedded/manifest.json" in s3.keys("data", "embedded/")
    local_runs = sorted((REPO / "runs").iterdir())
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)

    overrides = [
        "train.steps=60", "train.log_every=20", "train.checkpoint_every=30",
        "train.sample_every=30", f"run.storage={s3.uri('runs', 'r')}",
        f"data.source={s3.uri('data', 'embedded')}",
    ]  # fmt: skip
    argv = ["submit", "jobs/quickstart.yaml", "--address", cluster.dashboard, "--wait"]
    code = main(argv + [a for s in overrides for a in ("--set", s)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    job_id = next(line.split()[1] for line in printed.out.splitlines() if "submitted:" in line)
    assert f"job {job_id} SUCCEEDED" in printed.out

    # The run is in the bucket: its job, its metrics up to the last step, samples, checkpoints.
    keys = s3.keys("runs", "r/")
    (resolved,) = [k for k in keys if k.endswith("/job.resolved.yaml")]
    run = resolved.removesuffix("/job.resolved.yaml")
    assert s3.uri("runs", "r") in s3.read("runs", resolved).decode()
    rows = [json.loads(line) for line in s3.read("runs", f"{run}/metrics.jsonl").splitlines()]
    assert max(row.get("step", 0) for row in rows) == 60
    assert [k for k in keys if k.startswith(f"{run}/samples/") and k.endswith(".png")]
    checkpoints = [k.split("/")[-2] for k in keys if k.endswith("/state.pt")]
    assert sorted(checkpoints) == ["step_0000030", "step_0000060"]
    assert all(k.startswith(f"{run}/checkpoints/step_") for k in keys if k.endswith("/state.pt"))

    # Nothing of the run on the head's disk: not in the project's runs/, not in the head's
    # Ray temp dir (where the job's driver ran).
    assert sorted((REPO / "runs").iterdir()) == local_runs
    head_files = {p.name for p in cluster.head_temp_dir.rglob("*")}
    assert not head_files & {"job.resolved.yaml", "metrics.jsonl", "state.pt"}

    # distgan logs shows the job's progress.
    assert main(["logs", job_id]) == 0
    logs = capsys.readouterr().out
    assert "step 20/60" in logs and "step 60/60" in logs


def test_submitted_search_lives_in_the_storage(split_cluster, s3_env, monkeypatch, capsys):
    """A search submitted to the split cluster keeps all of it in the bucket: Tune's state, each
    trial's run directory (written on the worker node), results.csv, best.yaml, best_samples/;
    nothing of it is on the head's disk, where the search's driver runs."""
    import pyarrow.fs as pafs

    from distgan.cli import main
    from distgan.config import parse_job

    cluster, s3 = split_cluster, s3_env
    s3.create_bucket("data")
    s3.create_bucket("searches")
    if not s3.keys("data", "embedded/"):
        pafs.copy_files(str(REPO / "distgan" / "data" / "embedded"), s3.uri("data", "embedded"))
    local_runs = sorted((REPO / "runs").iterdir())
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)

    # Two trials one after the other, one worker each, two evaluations of a few images each.
    overrides = [
        "train.steps=40", "train.log_every=20", "train.sample_every=20",
        "eval.every=20", "eval.n_samples=64", "eval.n_real=256", "scale.workers=1",
        "tune.space={optim.lr_g: 'grid([2e-4, 1e-3])'}", "tune.num_samples=1",
        "tune.scheduler=fifo", "tune.max_concurrent_trials=1",
        f"run.storage={s3.uri('searches', 's')}", f"data.source={s3.uri('data', 'embedded')}",
    ]  # fmt: skip
    argv = ["submit", "jobs/tune_quickstart.yaml", "--address", cluster.dashboard, "--wait"]
    code = main(argv + [a for s in overrides for a in ("--set", s)])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err
    assert "best: s3://searches/s/" in printed.out

    keys = s3.keys("searches", "s/")
    (resolved,) = [k for k in keys if k.count("/") == 2 and k.endswith("/job.resolved.yaml")]
    search = resolved.removesuffix("/job.resolved.yaml")
    assert search.endswith("-tune_quickstart-tune")
    rows = s3.read("searches", f"{search}/results.csv").decode().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial_id,status,optim.lr_g,best_fid")
    best = parse_job(s3.read("searches", f"{search}/best.yaml"), "best.yaml")
    assert best.optim.lr_g in (2e-4, 1e-3) and best.tune.space == {}
    assert [k for k in keys if k.startswith(f"{search}/best_samples/step_")]
    # Tune's experiment state (what --resume reads) is there too.
    assert f"{search}/tune/tuner.pkl" in keys
    # Each trial's run directory was written on the worker node, into the bucket.
    trials = {k.split("/")[3] for k in keys if k.startswith(f"{search}/trials/")} - {""}
    assert len(trials) == 2
    for trial in trials:
        run = f"{search}/trials/{trial}"
        metrics = [
            json.loads(line) for line in s3.read("searches", f"{run}/metrics.jsonl").splitlines()
        ]
        assert [m["step"] for m in metrics if "fid" in m] == [20, 40]
        assert "step 40/40" in s3.read("searches", f"{run}/progress.log").decode()
        assert f"{run}/job.resolved.yaml" in keys and f"{run}/best/state.pt" in keys

    # Nothing of the search on the head's disk: not in the project's runs/, not in the head's
    # Ray temp dir (where the search's driver ran).
    assert sorted((REPO / "runs").iterdir()) == local_runs
    head_files = {p.name for p in cluster.head_temp_dir.rglob("*")}
    names = {"job.resolved.yaml", "metrics.jsonl", "results.csv", "best.yaml", "progress.log"}
    assert not head_files & names
