"""Ray's own autoscaler adding the nodes a job asks for, and replacing a lost one
(tests/autoscaling.py: the head's monitor with a node provider of the project's own).

The cluster starts with a head that has no CPUs and no worker node; a job submitted with
``distgan submit`` finds it short of CPUs, asks the autoscaler for them
(``request_resources``) and waits ``scale.wait_minutes``; the autoscaler starts a worker node in
a mount namespace of its own and the job trains there, its run in the S3 server's bucket. Every
process of that node is then SIGKILLed after the first checkpoint (a preemption): the provider
reports the node gone, the autoscaler asks for another, which boots 15 s later (new ports, empty
disk), and with the default scale.max_failures Ray Train resumes the run there by itself from the
last checkpoint in the bucket to the end, one metrics line per log step, no traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from pathlib import Path

import pytest
from conftest import REPO, ray_port_base

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("ray-b")]  # conftest.py

BUCKET = "autoscaled"


@pytest.fixture
def autoscaling_cluster(s3_server, tmp_path_factory):
    """A head with its autoscaler and no worker node (ports from ray_port_base() + 401, its
    worker processes' from + 950), the embedded dataset in the bucket; at the end it fails if
    any process of the cluster is left."""
    import pyarrow.fs as pafs
    from autoscaling import start_autoscaling_cluster
    from split import stop_split_cluster

    s3_server.create_bucket(BUCKET)
    # With the credentials in the environment: without them pyarrow uploads unsigned, in
    # aws-chunked encoding, which moto stores frame and all.
    with pytest.MonkeyPatch.context() as env:
        for k, v in s3_server.env.items():
            env.setenv(k, v)
        pafs.copy_files(
            str(REPO / "distgan" / "data" / "embedded"), s3_server.uri(BUCKET, "embedded")
        )
    base = ray_port_base()
    cluster = start_autoscaling_cluster(
        base + 401, range(base + 950, base + 990), s3_server.env, tmp_path_factory.getbasetemp()
    )
    try:
        yield cluster
    finally:
        left = stop_split_cluster(cluster)
        assert not left, f"processes of the autoscaling cluster left behind: {left}"


def _logs_of_nodes_that_ended_by_themselves(events: list[dict]) -> str:
    """The end of the ``ray start`` log of each node that was gone with an exit code of its own
    (a node the test SIGKILLs ends with -9): why it ended."""
    told = []
    for e in events:
        if e["event"] == "gone" and e["returncode"] > 0:
            (node,) = [
                c for c in events if c["event"] == "created" and c["node_id"] == e["node_id"]
            ]
            log = Path(node["temp_dir"] + ".log")
            text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            told.append(f"{log} (exit code {e['returncode']}):\n{text}")
    return "\n".join(told)


def _metrics(s3, prefix: str) -> tuple[str, list[dict]]:
    """The run under ``prefix`` and its metric lines (none yet: empty)."""
    keys = s3.keys(BUCKET, prefix)
    run = next((k.rsplit("/", 1)[0] for k in keys if k.endswith("/job.resolved.yaml")), "")
    if f"{run}/metrics.jsonl" not in keys:
        return run, []
    text = s3.read(BUCKET, f"{run}/metrics.jsonl").decode()
    return run, [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_autoscaler_adds_the_jobs_node_and_replaces_a_lost_one(
    autoscaling_cluster, s3_server, monkeypatch
):
    from autoscaling import REPLACEMENT_BOOT_S, created_nodes, monitor_log, node_events
    from split import kill_node

    from distgan.cli import main
    from distgan.jobs_api import connect

    cluster, s3 = autoscaling_cluster, s3_server
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    (head,) = cluster.alive_nodes()
    assert head["is_head_node"] and created_nodes(cluster) == []  # scaled to 0 workers

    overrides = [
        "train.steps=120", "train.checkpoint_every=40", "train.log_every=20",
        "train.sample_every=120", "eval.every=0", "scale.workers=1", "scale.wait_minutes=2",
        f"run.storage={s3.uri(BUCKET, 'runs')}", f"data.source={s3.uri(BUCKET, 'embedded')}",
    ]  # fmt: skip
    argv = ["submit", "jobs/quickstart.yaml", *(a for s in overrides for a in ("--set", s))]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()
    (job_id,) = [ln.split()[1] for ln in out.getvalue().splitlines() if ln.startswith("submitted:")]

    # The job trains on the node the autoscaler added; once past its first checkpoint, every
    # process of that node is killed at once.
    deadline, rows = time.monotonic() + 150, []
    while time.monotonic() < deadline and not (rows and rows[-1]["step"] > 40):
        time.sleep(0.5)
        run, rows = _metrics(s3, "runs/")
    assert rows and rows[-1]["step"] > 40, connect().logs(job_id)[-3000:]
    (first,) = created_nodes(cluster)
    killed_after = rows[-1]["step"]
    # Mid-run, every process of the cluster listens on and talks to loopback only.
    assert cluster.off_loopback() == []
    assert kill_node(cluster, first["pid"], Path(first["temp_dir"])) > 3

    jobs = connect()
    assert jobs.wait(job_id, timeout=180) == "SUCCEEDED", jobs.logs(job_id)[-3000:]
    logs = jobs.logs(job_id)
    assert "waiting up to 2 min for the autoscaler to add 2 CPUs" in logs, logs[-3000:]

    # The autoscaler started a second node (other ports, its own temp dir) after the provider
    # saw the first one gone, and nothing else. A replacement whose `ray start` ended by itself
    # before it ever joined the cluster (seen under the full suite, with exit code 1) is
    # replaced in turn, as a cloud instance that fails to boot is: allowed, at most twice, and
    # told as a warning with the end of its log. A node that joined and then ended is not.
    events = node_events(cluster)
    told = f"{events}\n{_logs_of_nodes_that_ended_by_themselves(events)}"
    assert [e["event"] for e in events[:2]] == ["created", "gone"], told
    assert events[1]["node_id"] == first["node_id"], told
    joined = {n["node_id"] for n in cluster.nodes()}
    failed_boots, rest = [], events[2:]
    while [e["event"] for e in rest[:2]] == ["created", "gone"] and rest[1]["returncode"] > 0:
        assert rest[0]["node_id"] not in joined, told  # it joined, then ended: not a boot
        failed_boots, rest = [*failed_boots, rest[0]], rest[2:]
    assert [e["event"] for e in rest] == ["created"] and len(failed_boots) <= 2, told
    if failed_boots:
        warnings.warn(f"replacement nodes that failed to start: {told}", stacklevel=1)
    second = rest[0]
    assert second["node_id"] not in {e["node_id"] for e in events[:-1]}
    assert second["temp_dir"] not in {e.get("temp_dir") for e in events[:-1]}
    assert failed_boots or second["port"] != first["port"]  # the slots take turns
    launches = monitor_log(cluster).count("StandardAutoscaler: Queue 1 new nodes for launch")
    assert launches == 2 + len(failed_boots), told
    alive = {n["node_id"] for n in cluster.alive_nodes()}
    assert alive == {head["node_id"], second["node_id"]}
    assert cluster.off_loopback() == []  # the monitor and the nodes it started keep to 127.0.0.1

    # The run went on from a checkpoint of the first node's to the end, each log step once.
    run, rows = _metrics(s3, "runs/")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 120
    resumed = [r["resumed_from"] for r in rows if r.get("resumed_from")]
    assert {s for s in steps if s % 20 == 0} == set(range(20, 121, 20))  # every log step
    assert resumed and resumed[-1] % 40 == 0 and 40 <= resumed[-1] <= killed_after, resumed
    assert json.loads(s3.read(BUCKET, f"{run}/status.json"))["status"] == "done"
    assert "a training worker died after step" in logs and "Traceback" not in logs, logs[-3000:]
    # The replacement booted REPLACEMENT_BOOT_S after the loss: the job waited for it.
    assert second["time"] - events[1]["time"] >= REPLACEMENT_BOOT_S
