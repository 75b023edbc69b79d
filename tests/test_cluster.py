"""distgan on a real Ray cluster: a head and a worker node started by ``cluster/local.sh`` on
127.0.0.1 in token mode, jobs sent through the Jobs API with the real CLI.

The cluster's ports start at conftest.ray_port_base() + 500 (the ``ray_cluster`` fixture of
conftest.py uses the ports just above ray_port_base()); everything it starts is stopped
by ``cluster/local.sh down`` at the end, and the teardown checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests
from conftest import is_loopback, listening, processes_naming, ray_port_base
from readme_commands import commands

from distgan import jobs_api
from distgan.cli import main
from distgan.config import load_job

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("ray-b")]  # conftest.py

REPO = Path(__file__).resolve().parents[1]
LOCAL_SH = REPO / "cluster" / "local.sh"
# Its walk-through's commands, as written (tests/readme_commands.py): $PWD is a test's folder,
# which every node of this cluster shares.
README = commands(REPO / "cluster" / "README.md", REPO)
TINY = [
    "model.arch=dcgan", "model.width=8", "model.z_dim=16", "train.steps=30",
    "train.batch_size=32", "train.log_every=10", "train.checkpoint_every=15",
    "train.sample_every=30", "train.max_minutes=0", "scale.workers=2", "scale.placement=SPREAD",
]  # fmt: skip


class Cluster:
    def __init__(self, state_dir: Path, dashboard: str, token: str, env: dict):
        self.state_dir, self.dashboard, self.token, self.env = state_dir, dashboard, token, env

    def local_sh(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(LOCAL_SH), *args], env=self.env, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip

    def processes(self) -> list[psutil.Process]:
        """Every process of the nodes' ``ray start`` sessions (local.sh's pid files)."""
        found = []
        for pid_file in self.state_dir.glob("*.pid"):
            with contextlib.suppress(psutil.NoSuchProcess, ValueError):
                root = psutil.Process(int(pid_file.read_text()))
                found += [root, *root.children(recursive=True)]
        return found

    def exited_nodes(self) -> str:
        """Which nodes' ``ray start`` have exited, and why (empty while all run). ``ray start
        --block`` ends its node when one of its Ray processes dies, after logging which one and
        the end of its log: that goes first, for the one-line summary of a failed test."""
        said = []
        for pid_file in sorted(self.state_dir.glob("*.pid")):
            with contextlib.suppress(ValueError, psutil.NoSuchProcess):
                if psutil.Process(int(pid_file.read_text())).status() != psutil.STATUS_ZOMBIE:
                    continue
            log = pid_file.with_suffix(".log")
            text = log.read_text(errors="replace") if log.exists() else ""
            plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # ray start colours its log
            died = re.findall(r"\S+ \[exit code=[^]]*\]", plain)
            said.append(f"{pid_file.stem} node exited ({'; '.join(died) or 'no reason logged'})")
            at = plain.rfind("exited unexpectedly")  # then the dead processes' own log ends
            said.append(f"{log}:\n{plain[max(at - 200, 0) :][:8000] if at >= 0 else plain[-4000:]}")
        return "\n".join(said)

    def our_processes(self) -> list[str]:
        """``PID COMMAND`` of each process that names the nodes' state dir."""
        return [
            f"{p.pid} {' '.join(p.info['cmdline'])}" for p in processes_naming(f"{self.state_dir}/")
        ]


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node (2 logical CPUs each), token auth on with a token of its
    own (never ~/.ray/auth_token)."""
    base = ray_port_base() + 500
    root = Path(tempfile.mkdtemp(prefix="dgcl-", dir="/tmp"))  # short: socket paths are limited
    token = secrets.token_hex(32)
    (root / "token").write_text(token)
    env = {
        **os.environ,
        "DISTGAN_CLUSTER_DIR": str(root / "c"),
        "DISTGAN_PORT_BASE": str(base),
        "DISTGAN_DASHBOARD_PORT": str(base + 1),
        "DISTGAN_NODE_CPUS": "2",
        "RAY_AUTH_TOKEN_PATH": str(root / "token"),
    }
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(k, None)
    c = Cluster(root / "c", f"http://127.0.0.1:{base + 1}", token, env)
    try:
        up = c.local_sh("up", "1")
        if up.returncode != 0:  # a node that timed out on a loaded machine: once more
            c.local_sh("down")
            up = c.local_sh("up", "1")
        # The nodes' own logs in the message: the fixture's cleanup removes them.
        said = "".join(
            f"\n{p}:\n{p.read_text()[-3000:]}" for p in sorted(c.state_dir.glob("*.log"))
        )
        assert up.returncode == 0, up.stderr + up.stdout + said
        yield c
    finally:
        down = c.local_sh("down")
        deadline = time.monotonic() + 20
        while c.our_processes() and time.monotonic() < deadline:
            time.sleep(1)
        left = c.our_processes()
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stderr
        assert not left, f"processes left behind: {left}"


@pytest.fixture
def with_token(cluster, monkeypatch):
    """The client environment of a user who has the cluster's token in RAY_AUTH_TOKEN. After
    the test, the cluster's nodes must still run: a node that died fails the test with its
    log, where the tests after it would only say that the cluster cannot be reached."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", cluster.dashboard)
    yield cluster
    exited = cluster.exited_nodes()
    if exited:
        pytest.fail(f"the cluster's {exited}", pytrace=False)


def _job_id(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("submitted:"))


def test_two_node_job_succeeds_and_leaves_checkpoints(with_token, tmp_path, capsys):
    cluster = with_token
    # cluster/README.md's first job, made short by TINY's overrides.
    submit = next(c for c in README if c.prompted and "scale.placement=SPREAD" in c.text)
    storage = tmp_path / "runs"
    code = main(
        [*submit.argv({"PWD": str(tmp_path)}), "--wait"] + [a for s in TINY for a in ("--set", s)]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    job_id = _job_id(printed.out)
    assert f"job {job_id} SUCCEEDED" in printed.out
    assert "step 30/30" in printed.out  # --wait followed the job's own progress lines

    # The run directory is in run.storage, with both checkpoints and the resolved job.
    (run_dir,) = storage.iterdir()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == [
        "step_0000015",
        "step_0000030",
    ]
    assert (run_dir / "checkpoints" / "step_0000030" / "state.pt").stat().st_size > 0
    assert load_job(run_dir / "job.resolved.yaml").scale.placement == "SPREAD"

    # The two Ray Train workers ran on two different nodes.
    info = requests.get(
        f"{cluster.dashboard}/api/jobs/{job_id}",
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30,
    ).json()
    actors = requests.get(
        f"{cluster.dashboard}/api/v0/actors",
        params={"detail": "true", "limit": "1000"},
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30,
    ).json()["data"]["result"]["result"]
    workers = [
        a for a in actors if a["class_name"] == "RayTrainWorker" and a["job_id"] == info["job_id"]
    ]
    assert len(workers) == 2
    assert len({a["node_id"] for a in workers}) == 2
    # Both nodes, and the workers on them, are reached and listen at loopback only.
    nodes = requests.get(
        f"{cluster.dashboard}/api/v0/nodes",
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30,
    ).json()["data"]["result"]["result"]
    assert {n["node_ip"] for n in nodes if n["node_id"] in {a["node_id"] for a in workers}} == {
        "127.0.0.1"
    }
    sockets = listening(cluster.processes())
    assert sockets and all(is_loopback(ip) for ip, _, _ in sockets), sockets
    # ... on the ports local.sh gives them, from DISTGAN_PORT_BASE up (Ray's own metrics ports
    # included), so that other Rays on the machine can have theirs.
    base = int(cluster.dashboard.rsplit(":", 1)[1]) - 1
    assert all(base <= port < base + 290 for _, port, _ in sockets), sockets

    # distgan logs shows the progress, and the token appears nowhere the job left text.
    assert main(["logs", job_id]) == 0
    logs = capsys.readouterr().out
    assert "step 10/30" in logs and "done: step 30" in logs
    assert main(["logs", job_id, "--follow"]) == 0  # the job has ended: the whole log, then exit
    assert capsys.readouterr().out.strip() == logs.strip()
    assert cluster.token not in printed.out + printed.err + logs
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert cluster.token.encode() not in path.read_bytes(), path


def test_long_job_is_stopped_as_the_readme_shows(with_token, tmp_path, capsys):
    # cluster/README.md: "Stop a second job, list the jobs": its three commands and their output.
    first = next(i for i, c in enumerate(README) if "train.steps=100000" in c.text)
    submit, stop, jobs = README[first : first + 3]
    assert main(submit.argv({"PWD": str(tmp_path)})) == 0
    job_id = _job_id(capsys.readouterr().out)
    *stop_argv, shown_id = stop.argv()  # the README's job id, this test's in its place
    assert main([*stop_argv, job_id]) == 0
    assert capsys.readouterr().out.splitlines() == [
        line.replace(shown_id, job_id) for line in stop.output
    ]
    assert main(["status", job_id]) == 0
    assert capsys.readouterr().out.strip() == f"{job_id}: STOPPED"
    assert main(jobs.argv()) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == jobs.output[0].split()
    row = next(line for line in rows if job_id in line)
    assert "STOPPED" in row.split() and row.split()[-1] == "jobs/quickstart.yaml"


def test_failed_job_reports_status_reason_and_log(with_token, tmp_path, capsys):
    # Valid here (an absolute path is for the cluster to resolve), missing on the cluster.
    missing = tmp_path / "no-such-shards"
    storage = f"run.storage={tmp_path / 'store'}"  # this cluster's nodes share this disk
    code = main(
        ["submit", "jobs/quickstart.yaml", "--set", f"data.source={missing}", "--set", storage,
         "--wait"]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 2
    error = printed.err.strip().splitlines()[-1]
    assert error.startswith("error: job distgan-quickstart-") and " FAILED, exit code 2: " in error
    assert str(missing) in error  # the exit reason is the job's own one-line error
    assert "Traceback" not in printed.out + printed.err


def test_submission_without_or_with_a_wrong_token_is_refused(
    cluster, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(k, raising=False)
    argv = ["submit", "jobs/quickstart.yaml", "--address", cluster.dashboard]
    result = subprocess.run(
        ["distgan", *argv], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {cluster.dashboard}: the cluster requires a token")

    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {cluster.dashboard}: the cluster refused the token from ")
    assert "not-the-token" not in line


def test_invalid_job_is_caught_before_submission(with_token, capsys):
    before = _job_ids(capsys)
    assert main(["submit", "jobs/quickstart.yaml", "--set", "optim.lr_gg=1e-4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --set optim.lr_gg=1e-4: optim.lr_gg: unknown key; did you mean 'lr_g'?")
    assert _job_ids(capsys) == before


def test_plain_http_to_a_remote_address_needs_a_token(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    # Refused before any connection is tried; should that check break, the test fails here
    # instead of sending anything to a non-loopback address.
    with monkeypatch.context() as m:
        m.setattr(jobs_api, "Jobs", lambda *a, **k: pytest.fail("tried to connect"))
        argv = ["submit", "jobs/quickstart.yaml", "--address", "http://10.255.255.1:8265"]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "refusing to send a job over plain http" in err

    # A cluster that is not there: one line naming the address and what to do.
    closed = f"http://127.0.0.1:{ray_port_base() + 999}"
    assert main(["status", "some-job", "--address", closed]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {closed}: cannot reach the Ray Jobs API there; start a cluster")


def _job_ids(capsys) -> set[str]:
    assert main(["jobs"]) == 0
    return {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}


def test_cluster_configs_agree_with_the_readme():
    """The launcher YAML and the KubeRay manifests parse, and name the image, the entrypoint
    and the auth settings that cluster/README.md tells the user about."""
    import yaml

    from distgan.submit import entrypoint

    readme = (REPO / "cluster" / "README.md").read_text()
    aws = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    raycluster = yaml.safe_load((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text())
    rayjob = yaml.safe_load((REPO / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()

    image = aws["docker"]["image"]
    specs = [raycluster["spec"], rayjob["spec"]["rayClusterSpec"]]
    groups = [s["headGroupSpec"] for s in specs] + [g for s in specs for g in s["workerGroupSpecs"]]
    assert {c["image"] for g in groups for c in g["template"]["spec"]["containers"]} == {image}
    assert f"docker build -f cluster/Dockerfile -t {image} ." in readme
    assert f"-t {image} ." in dockerfile

    # Token auth everywhere; the launcher's dashboard stays on the head's loopback.
    assert all(s["authOptions"] == {"mode": "token"} for s in specs)
    starts = aws["head_start_ray_commands"][1:] + aws["worker_start_ray_commands"][1:]
    assert all(cmd.startswith("RAY_AUTH_MODE=token ray start") for cmd in starts)
    assert "--dashboard-host=127.0.0.1" in aws["head_start_ray_commands"][1]
    assert aws["file_mounts"] == {"/home/ray/.ray/auth_token": "~/.ray/auth_token"}
    assert "authOptions: {mode: token}" in readme and "RAY_AUTH_MODE=token" in readme

    # The RayJob runs what `distgan submit` runs, on the job file the image carries.
    job_in_image = "/home/ray/distgan/jobs/quickstart.yaml"
    overrides = ["scale.use_gpu=true", "run.storage=s3://YOUR-BUCKET/distgan-runs"]
    assert rayjob["spec"]["entrypoint"] == entrypoint("train", job_in_image, overrides)
    assert entrypoint("train", job_in_image, overrides) in readme
    assert (
        "COPY --chown=ray:users jobs ./jobs" in dockerfile
        and "WORKDIR /home/ray/distgan" in dockerfile
    )
    load_job(REPO / "jobs" / "quickstart.yaml", overrides)
