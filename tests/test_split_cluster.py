"""The split cluster of conftest.py (a head and a worker node that share no disk, an S3 server on
127.0.0.1): proof that the nodes' disks are apart and that the storage is shared, then distgan's
runs on it, end to end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from conftest import REPO

from distgan.config import parse_job
from distgan.objectives import COST_FIGURES, MODEL_FIGURES, dominates
from distgan.train.complexity import COMPLEXITY
from distgan.tune.front import FRONT, PARETO

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


@pytest.fixture(scope="module")
def in_bucket(split_cluster, s3_server):
    """The embedded dataset copied into the bucket ``data``; an empty bucket ``runs``."""
    import pyarrow.fs as pafs

    s3_server.create_bucket("data")
    s3_server.create_bucket("runs")
    # With the credentials in the environment: without them pyarrow uploads unsigned, in
    # aws-chunked encoding, which moto stores frame and all.
    with pytest.MonkeyPatch.context() as env:
        for k, v in s3_server.env.items():
            env.setenv(k, v)
        pafs.copy_files(
            str(REPO / "distgan" / "data" / "embedded"), s3_server.uri("data", "embedded")
        )
    manifest = json.loads(s3_server.read("data", "embedded/manifest.json"))
    assert manifest["count"] == 10000
    return s3_server


@pytest.fixture
def client(split_cluster, in_bucket, s3_env, monkeypatch):
    """A user's shell on the head's side: the cluster's token, its dashboard, the bucket's
    credentials (with a secret of this test's own, to look for where it must not be)."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", split_cluster.token)
    monkeypatch.setenv("RAY_ADDRESS", split_cluster.dashboard)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    secret = f"secret-{secrets.token_hex(8)}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto takes any secret
    return secret


TINY = ["train.log_every=20", "train.sample_every=30", "eval.every=0"]
BUDGET = 300_000  # G's parameters: an MLP G of width 64 has 243,920, of width 256 1,464,848


def submit(argv: list[str], overrides: list[str], capsys) -> tuple[int, str, str, str]:
    """``distgan submit`` in this process: (exit code, job id, stdout, stderr)."""
    from distgan.cli import main

    code = main(["submit", *argv] + [a for s in overrides for a in ("--set", s)])
    printed = capsys.readouterr()
    found = [line.split()[1] for line in printed.out.splitlines() if line.startswith("submitted:")]
    return code, (found[0] if found else ""), printed.out, printed.err


def run_prefix(s3, bucket: str, prefix: str) -> str:
    """The one run directory under ``prefix`` (its key prefix, without a slash at the end)."""
    (resolved,) = [k for k in s3.keys(bucket, prefix) if k.endswith("/job.resolved.yaml")]
    return resolved.removesuffix("/job.resolved.yaml")


def test_a_run_lives_in_the_storage_through_a_lost_node_a_stop_and_two_resumes(
    split_cluster, in_bucket, client, capsys, tmp_path
):
    """One submitted run's bad days on the split cluster, every file of it in the bucket.

    1. Its worker node is SIGKILLed and none comes back within scale.wait_minutes: the job ends
       with one line naming the lost node, the step and checkpoint reached and the submit
       --resume line (the run's URI with its endpoint query); status.json says "node lost".
    2. With a node back, that line continues the run, until distgan stop (Ray's job stop:
       SIGTERM to the job's driver, which Ray then gives 60 s): the workers agree on a step,
       write a final checkpoint there into the bucket, and the run is marked stopped there.
    3. distgan submit --resume RUN --wait continues it to the end.
    4. The run read its data from the bucket and wrote every file there, with the bucket's
       credentials from the nodes' own environment (none travel with the job); nothing of it is
       on the head's disk; it is sampled, evaluated and listed through its URI. (A worker node
       lost and replaced while the job waits: tests/test_autoscaler_ray.py.)"""
    from split import kill_worker_node, replace_worker_node

    from distgan.cli import main
    from distgan.jobs_api import connect

    cluster, s3 = split_cluster, in_bucket
    local_runs = sorted((REPO / "runs").iterdir())
    overrides = [
        "train.steps=100000", "train.checkpoint_every=20", "scale.wait_minutes=0.35", *TINY,
        f"run.storage={s3.uri('runs', 'a')}", f"data.source={s3.uri('data', 'embedded')}",
    ]  # fmt: skip
    code, job_id, out, err = submit(["jobs/quickstart.yaml"], overrides, capsys)
    assert code == 0 and job_id, out + err
    run = _wait_for_checkpoint(s3, "a/", 20, time.monotonic() + 180)
    jobs = connect()
    (node,) = [n for n in cluster.alive_nodes() if n["node_id"] == cluster.worker_node_id]
    try:
        assert kill_worker_node(cluster) > 3
        killed = time.monotonic()
        assert jobs.wait(job_id, timeout=150) == "FAILED", jobs.logs(job_id)[-3000:]
        waited = time.monotonic() - killed
    finally:
        replace_worker_node(cluster)
    logs = jobs.logs(job_id)
    assert "Traceback" not in logs, logs[-3000:]
    line = logs.rstrip().splitlines()[-1]
    status = json.loads(s3.read("runs", f"{run}/status.json"))
    saved = status["checkpoint_step"]
    uri = s3.uri("runs", run)
    assert status["status"] == "failed" and status["error"] == "node lost", status
    lost = f"{node['node_ip']} (2 CPUs)"
    assert status["lost"] == [lost], status
    assert line.startswith(f"error: the run lost node {lost}, and no capacity"), line
    assert "scale.wait_minutes (0.35 min)" in line, line
    assert f"it reached step {status['step']}, its last checkpoint is at step {saved}." in line
    assert line.endswith(f"Continue with: distgan submit --resume '{uri}'"), line
    assert saved >= 20 and saved % 20 == 0 and status["step"] >= saved
    assert 21 <= waited < 100, waited  # scale.wait_minutes, not Ray's endless retries

    # 2. The line it printed continues the run on the new node (checkpoints 1,000 steps apart
    # from here, so that the stop's own is told apart), until distgan stop.
    resume = shlex.split(line.split("Continue with: ", 1)[1])
    assert resume[:3] == ["distgan", "submit", "--resume"]
    code, job_id, out, err = submit(resume[2:], ["train.checkpoint_every=1000"], capsys)
    assert code == 0 and job_id, out + err
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and _metrics(s3, run)[-1]["step"] < saved + 40:
        time.sleep(0.5)
    rows = _metrics(s3, run)
    assert rows[-1]["step"] >= saved + 40, rows[-3:]
    assert next(r for r in rows if r["step"] > saved)["resumed_from"] == saved
    capsys.readouterr()
    assert main(["stop", job_id]) == 0
    assert capsys.readouterr().out.strip() == f"{job_id}: STOPPED"
    status = json.loads(s3.read("runs", f"{run}/status.json"))
    assert status["status"] == "stopped" and status["signal"] == "SIGTERM", status
    last = status["checkpoint_step"]
    # The final checkpoint is at the step reached, not at an interval's.
    assert last == status["step"] == _metrics(s3, run)[-1]["step"] and last % 1000, status
    assert s3.keys("runs", f"{run}/checkpoints/step_{last:07d}/state.pt")

    # 3. Resumed from the bucket: it goes on from the last checkpoint to the end.
    end = last + 20
    code, job_id, out, err = submit(["--resume", uri, "--wait"], [f"train.steps={end}"], capsys)
    assert code == 0, out[-3000:] + err
    rows = _metrics(s3, run)
    steps = [r["step"] for r in rows]
    assert steps[-1] == end and next(r for r in rows if r["step"] > last)["resumed_from"] == last
    assert steps == sorted(set(steps))  # one line a step, a checkpoint's never twice
    assert json.loads(s3.read("runs", f"{run}/status.json"))["status"] == "done"

    # 4. The run is in the bucket: its job, its metrics, samples, checkpoints.
    keys = s3.keys("runs", f"{run}/")
    assert s3.uri("runs", "a") in s3.read("runs", f"{run}/job.resolved.yaml").decode()
    assert [k for k in keys if k.startswith(f"{run}/samples/") and k.endswith(".png")]
    checkpoints = sorted(int(k.split("/")[-2][5:]) for k in keys if k.endswith("/state.pt"))
    assert {saved, last, end} <= set(checkpoints), checkpoints
    # Nothing of the run on the head's disk: not in the project's runs/, not in the head's
    # Ray temp dir (where the job's drivers ran).
    assert sorted((REPO / "runs").iterdir()) == local_runs
    head_files = {p.name for p in cluster.head_temp_dir.rglob("*")}
    assert not head_files & {"job.resolved.yaml", "metrics.jsonl", "state.pt", "status.json"}

    # distgan logs shows the job's progress.
    assert main(["logs", job_id]) == 0
    logs = capsys.readouterr().out
    assert f"step {end}/{end}" in logs and f"done: step {end}" in logs

    # The run's URI serves distgan sample, eval and runs.
    assert main(["sample", uri, "--n", "16", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    code = main(["eval", uri, "--n", "200", "--n-real", "200", "--metrics", "fid"])
    shown = capsys.readouterr().out
    assert code == 0 and "fid" in shown
    assert json.loads(s3.read("runs", f"{run}/eval.json"))["step"] == end
    assert main(["runs", s3.uri("runs", "a")]) == 0
    listed = capsys.readouterr().out
    assert run.split("/")[-1] in listed and "done" in listed and f" {end} " in listed

    # The secret in the submitting shell's environment is in no output and in no file of the
    # run: submit sends no variable of the client's with the job.
    assert client not in out + err + logs + shown + listed
    for key in s3.keys("runs", f"{run}/"):
        assert client.encode() not in s3.read("runs", key), key


def test_a_multi_node_cluster_without_run_storage_is_refused(
    split_cluster, in_bucket, client, capsys
):
    """At submit time (the State API counts the nodes) and at train time, before anything."""
    overrides = [f"data.source={in_bucket.uri('data', 'embedded')}"]
    code, job_id, out, err = submit(["jobs/quickstart.yaml"], overrides, capsys)
    assert code == 2 and not job_id and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("error: jobs/quickstart.yaml: run.storage: empty, but this Ray ")
    assert "2 nodes" in line and "--set run.storage=s3://" in line

    before = set(in_bucket.keys("runs"))
    env = {**split_cluster.client_env(), **in_bucket.env, "RAY_ADDRESS": split_cluster.gcs_address}
    done = subprocess.run(
        [sys.executable, "-m", "distgan.cli", "train", "jobs/quickstart.yaml",
         "--set", overrides[0], "--set", "run.root=runs/refused"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert "run.storage: empty, but this Ray cluster has 2 nodes" in line
    assert not (REPO / "runs" / "refused").exists() and set(in_bucket.keys("runs")) == before


def _metrics(s3, run: str) -> list[dict]:
    try:
        text = s3.read("runs", f"{run}/metrics.jsonl")
    except Exception:  # noqa: BLE001 - not written yet
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_submitted_search_over_quality_and_cost_lives_in_the_storage(
    split_cluster, in_bucket, client, capsys
):
    """A search submitted to the split cluster keeps all of it in the bucket: Tune's state, each
    trial's run directory (written on the worker node), results.csv, pareto.csv and front/;
    nothing of it is on the head's disk, where the search's driver runs.

    It searches over quality and cost: Optuna samples the widths of an MLP, the widest breaks
    the job's budget and is never trained, and the two trained trials make the front (the wider
    scores better, the narrower costs less)."""
    cluster, s3 = split_cluster, in_bucket
    s3.create_bucket("searches")
    local_runs = sorted((REPO / "runs").iterdir())

    # Three trials one after the other, one worker each; Optuna's first trials are random
    # draws: with seed 1 they are widths 64, 8 and 256. Training is deterministic on CPU, so the
    # figures come out the same every time.
    overrides = [
        "model.z_dim=16", "optim.lr_g=2e-3", "optim.lr_d=2e-3",
        "train.steps=40", "train.batch_size=32", "train.log_every=10", "train.sample_every=40",
        "train.ema=false", "eval.every=40", "eval.n_samples=128", "eval.n_real=500",
        "scale.workers=1", "tune.space={model.width: 'choice([8, 64, 256])'}",
        "tune.num_samples=3", "tune.seed=1", "tune.scheduler=fifo", "tune.max_concurrent_trials=1",
        "tune.objectives=[fid, g_gflops]", f"tune.constraints=['g_params <= {BUDGET}']",
        f"run.storage={s3.uri('searches', 's')}", f"data.source={s3.uri('data', 'embedded')}",
    ]  # fmt: skip
    code, _, out, err = submit(["jobs/tune_quickstart.yaml", "--wait"], overrides, capsys)
    assert code == 0, out[-3000:] + err

    keys = s3.keys("searches", "s/")
    (resolved,) = [k for k in keys if k.count("/") == 2 and k.endswith("/job.resolved.yaml")]
    search = resolved.removesuffix("/job.resolved.yaml")
    assert search.endswith("-tune_quickstart-tune")
    rows = list(csv.DictReader(io.StringIO(s3.read("searches", f"{search}/results.csv").decode())))
    assert sorted(int(r["model.width"]) for r in rows) == [8, 64, 256]
    # Tune's experiment state (what --resume reads) is there too.
    assert f"{search}/tune/tuner.pkl" in keys

    # The trial over budget was counted, never trained: its folder holds its complexity.json
    # alone, results.csv says why, and so does the search's line for it.
    (skipped,) = [r for r in rows if r["status"] == "skipped"]
    assert int(skipped["model.width"]) == 256 and int(skipped["g_params"]) > BUDGET
    assert skipped["reason"] == f"g_params 1.465e+06 breaks g_params <= {BUDGET}"
    assert s3.keys("searches", f"{search}/trials/{skipped['trial_id']}/") == [
        f"{search}/trials/{skipped['trial_id']}/{COMPLEXITY}"
    ]
    assert f"trial {skipped['trial_id']} skipped: g_params 1.465e+06 breaks" in out
    trained = [r for r in rows if r["status"] == "done"]
    assert len(trained) == 2
    for r in trained:
        # Each trial's run directory was written on the worker node, into the bucket; nothing
        # over budget trained, and every figure of each was measured.
        run = f"{search}/trials/{r['trial_id']}"
        metrics = [
            json.loads(line) for line in s3.read("searches", f"{run}/metrics.jsonl").splitlines()
        ]
        assert [m["step"] for m in metrics if "fid" in m] == [40]
        assert "step 40/40" in s3.read("searches", f"{run}/progress.log").decode()
        assert f"{run}/job.resolved.yaml" in keys and f"{run}/best/state.pt" in keys
        assert int(r["g_params"]) <= BUDGET and r["reason"] == ""
        cost = json.loads(s3.read("searches", f"{run}/{COMPLEXITY}"))
        assert all(cost[k] > 0 for k in COST_FIGURES) and cost["peak_mem_kind"] == "cpu-rss"
        assert all(float(r[k]) == cost[k] for k in MODEL_FIGURES)

    # pareto.csv: at least two trials, none beaten on both objectives by any trial of
    # results.csv, and every measured trial it leaves out is beaten by one of them.
    def point(row: dict) -> tuple[float, float]:
        return float(row["best_fid"]), float(row["g_gflops"])

    front = list(csv.DictReader(io.StringIO(s3.read("searches", f"{search}/{PARETO}").decode())))
    measured = [r for r in rows if not math.isnan(float(r["best_fid"]))]
    assert len(front) >= 2
    for p in front:
        assert not any(dominates(point(r), point(p), ["min", "min"]) for r in measured), p
    on_front = {p["trial_id"] for p in front}
    for r in measured:
        if r["trial_id"] not in on_front:
            assert any(dominates(point(p), point(r), ["min", "min"]) for p in front), r
    # A job per point of the front in place of best.yaml, each with that trial's width.
    assert f"{search}/best.yaml" not in keys
    assert sorted(k for k in keys if k.startswith(f"{search}/{FRONT}/")) == sorted(
        f"{search}/{FRONT}/{t}.yaml" for t in on_front
    )
    widths = {r["trial_id"]: int(r["model.width"]) for r in rows}
    for trial in on_front:
        job = parse_job(s3.read("searches", f"{search}/{FRONT}/{trial}.yaml"), f"{trial}.yaml")
        assert job.model.width == widths[trial] and job.tune.objectives == []
    assert f"front: {len(front)} trial(s)" in out

    # Nothing of the search on the head's disk: not in the project's runs/, not in the head's
    # Ray temp dir (where the search's driver ran).
    assert sorted((REPO / "runs").iterdir()) == local_runs
    head_files = {p.name for p in cluster.head_temp_dir.rglob("*")}
    names = {"job.resolved.yaml", "metrics.jsonl", "results.csv", PARETO, "progress.log"}
    assert not head_files & names


def _wait_for_checkpoint(s3, prefix: str, step: int, deadline: float) -> str:
    """The run under ``prefix`` once its metrics are past ``step`` (whose checkpoint the driver
    has then registered)."""
    run = ""
    while time.monotonic() < deadline:
        time.sleep(0.5)
        run = run or next(
            (
                k.rsplit("/", 1)[0]
                for k in s3.keys("runs", prefix)
                if k.endswith("/job.resolved.yaml")
            ),
            "",
        )
        rows = _metrics(s3, run) if run else []
        if rows and rows[-1]["step"] > step:
            return run
    raise AssertionError(f"the run under {prefix} did not pass step {step} in time")
