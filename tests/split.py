"""A two-node Ray cluster on 127.0.0.1 whose nodes do not share a disk.

The head (``--num-cpus=0``, so every task that needs a CPU lands on the other node; the dashboard
and Jobs API on 127.0.0.1) runs like any process of the tests. The worker node (2 CPUs) runs in a
mount namespace of its own (``unshare --mount --propagation private``) with private tmpfs mounts
over /tmp (which holds the head's Ray temp dir and pytest's temp dirs) and over the project's
``runs/`` and ``data/``: what one node writes there, the other never sees, as on two machines.
The worker node's Ray temp dir is another path (``ROOT/w``, inside its private /tmp) than the
head's (``ROOT/h``), so the two nodes' sockets and session dirs never share a name either.

Token auth is on, with a token of the cluster's own (never ~/.ray/auth_token). Both nodes get the
S3 server's variables (dummy credentials, region) in their environment, so that the job's driver
(on the head) and its workers reach the storage: as on a real cluster, credentials live on the
nodes (an instance role, a Kubernetes secret as the pods' environment, ``ray start`` run with
them set), never with the job (cluster/README.md).

Ports: ``base`` is the GCS, +1 the dashboard, +2 the Ray Client server, +3..+8 the head's own,
+10..+15 the worker node's; worker processes take +20..+69 on the head, +70..+149 on the worker
node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from conftest import (
    RAY_ON_LOOPBACK,
    REPO,
    is_loopback,
    processes_naming,
    ray_head_command,
    ray_node_ports,
    stop_tree,
)

WORKER_CPUS = 2


@dataclass
class SplitCluster:
    """A running split cluster: where it is, and how a client on the head's side talks to it."""

    root: Path  # the cluster's temp dir on the head's disk (head.log, worker.log, the token)
    base: int
    token: str
    hidden: list[Path]  # paths the worker node sees as its own empty tmpfs
    s3_env: dict[str, str] = field(default_factory=dict)  # in both nodes' environment
    head_node_id: str = ""
    worker_node_id: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def head_temp_dir(self) -> Path:
        return self.root / "h"

    @property
    def worker_temp_dir(self) -> Path:
        """The worker node's Ray temp dir: a path in the worker node's namespace only."""
        return self.root / "w"

    @property
    def token_path(self) -> Path:
        return self.root / "token"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.base}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.base + 1}"

    def client_env(self) -> dict[str, str]:
        """The environment of a Ray driver on the head's side (``ray.init()`` connects here)."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        env.update(
            RAY_ADDRESS=self.gcs_address,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_path),
        )
        return env

    def alive_nodes(self) -> list[dict]:
        """The State API's ALIVE nodes (the dashboard must be up)."""
        return [n for n in self.nodes() if n["state"] == "ALIVE"]

    def nodes(self) -> list[dict]:
        """Every node the cluster has known, ALIVE or DEAD (the State API's list)."""
        reply = requests.get(
            f"{self.dashboard}/api/v0/nodes",
            params={"limit": "100"},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        reply.raise_for_status()
        return reply.json()["data"]["result"]["result"]

    def off_loopback(self) -> list[str]:
        """``ADDRESS (process)`` for each listening socket, and the far end of each connection,
        of this cluster's processes that is not on loopback: none, on a cluster that keeps to
        127.0.0.1 (the Train workers' gloo rings and the S3 client included)."""
        procs = {p.pid: p for p in self.our_processes()}
        for popen in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(popen.pid)
                procs.update((p.pid, p) for p in [root, *root.children(recursive=True)])
        names = {}
        for pid, p in procs.items():
            with contextlib.suppress(psutil.Error):
                names[pid] = p.name()
        found = []
        for c in psutil.net_connections("tcp"):
            if c.pid in names:
                ip = c.laddr.ip if c.status == psutil.CONN_LISTEN else (c.raddr or c.laddr).ip
                if not is_loopback(ip):
                    found.append(f"{ip} ({names[c.pid]}, {c.status})")
        return found

    def our_processes(self) -> list[psutil.Process]:
        """Every process whose command line names this cluster's temp dirs."""
        return processes_naming(f"{self.root}/")


def _node_env(cluster: SplitCluster, s3_env: dict[str, str]) -> dict[str, str]:
    drop = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "AWS_PROFILE", "AWS_SESSION_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(s3_env)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(cluster.token_path),
        RAY_USAGE_STATS_ENABLED="0",
        # Job entrypoints run `python` from the node's PATH: this interpreter's.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def _hidden_paths(root: Path, pytest_temp: Path) -> list[Path]:
    """The paths the worker node gets a private tmpfs over. /tmp as a whole, unless the project
    or the interpreter lives there (a clone in /tmp): then the cluster's and pytest's temp dirs."""
    tmp = Path("/tmp")
    lives_in_tmp = any(
        p.resolve().is_relative_to(tmp) for p in (REPO, Path(sys.prefix), Path(sys.base_prefix))
    )
    local = [REPO / "runs", REPO / "data"]  # gitignored: a run's or a user's local files
    return [root, pytest_temp, *local] if lives_in_tmp else [tmp, *local]


def _worker_node_command(
    cluster: SplitCluster, temp_dir: Path | None = None, ports: tuple[int, range] | None = None
) -> list[str]:
    """``ray start`` for the worker node, inside its own mount namespace with private tmpfs over
    ``cluster.hidden``. The token file is copied into the worker node's own /tmp, under the same
    path, so ``RAY_AUTH_TOKEN_PATH`` is right on both sides and the token is on no command line.
    ``temp_dir`` and ``ports`` (the node's first port, its workers' range) default to the worker
    node's; tests/autoscaling.py starts further nodes with their own."""
    temp_dir = temp_dir or cluster.worker_temp_dir
    port, worker_ports = ports or (cluster.base + 10, range(cluster.base + 70, cluster.base + 150))
    start = [
        *RAY_ON_LOOPBACK, "start", "--block", "--disable-usage-stats",
        f"--address={cluster.gcs_address}", "--node-ip-address=127.0.0.1",
        *ray_node_ports(port, worker_ports),
        f"--num-cpus={WORKER_CPUS}", "--num-gpus=0",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    token = shlex.quote(str(cluster.token_path))
    mounts = "\n".join(
        f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(str(p))}" for p in cluster.hidden
    )
    script = f"""set -e
token=$(cat {token})
{mounts}
mkdir -p {shlex.quote(str(temp_dir))}
(umask 077 && printf %s "$token" > {token})
exec {shlex.join(start)}
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def new_cluster(prefix: str, base: int, s3_env: dict[str, str], pytest_temp: Path) -> SplitCluster:
    """A cluster's temp dir (``/tmp/PREFIX...``), its token file and the mount points of the
    worker nodes' private tmpfs; no process yet."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: socket paths are limited
    cluster = SplitCluster(
        root, base, secrets.token_hex(32), _hidden_paths(root, pytest_temp), dict(s3_env)
    )
    cluster.token_path.write_text(cluster.token)
    cluster.token_path.chmod(0o600)
    for p in cluster.hidden:
        p.mkdir(exist_ok=True)  # mount points; runs/ and data/ are gitignored
    return cluster


def start_node(cmd: list[str], env: dict[str, str], log_path: Path, mode: str = "w"):
    """A node's ``ray start`` (``cmd``), its output into ``log_path``; the Popen."""
    with open(log_path, mode) as log:
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def start_split_cluster(base: int, s3_env: dict[str, str], pytest_temp: Path) -> SplitCluster:
    """Starts the head and the worker node (at once: the worker node retries until the GCS
    answers) and returns when both are ALIVE. On failure, stops what it started."""
    cluster = new_cluster("dgsp-", base, s3_env, pytest_temp)
    env = _node_env(cluster, s3_env)
    head_cmd = ray_head_command(
        base, str(cluster.head_temp_dir), num_cpus=0, worker_ports=range(base + 20, base + 70)
    )
    try:
        for name, cmd in (("head", head_cmd), ("worker", _worker_node_command(cluster))):
            cluster.processes.append(start_node(cmd, env, cluster.root / f"{name}.log"))
        _wait_for_nodes(cluster, timeout=120)
        return cluster
    except BaseException:
        stop_split_cluster(cluster)
        raise


def kill_worker_node(cluster: SplitCluster) -> int:
    """SIGKILLs every process of the worker node at once, as a preemption or a lost machine
    does (no drain, no goodbye to the GCS); returns how many. The cluster then has the head
    alone until ``replace_worker_node``."""
    popen = cluster.processes[-1]
    killed = kill_node(cluster, popen.pid, cluster.worker_temp_dir)
    popen.wait(timeout=10)
    return killed


def kill_node(cluster: SplitCluster, pid: int, temp_dir: Path) -> int:
    """SIGKILLs, all at once, the process tree of a node's ``ray start`` (``pid``) and every
    process that names the node's Ray temp dir; returns how many."""
    mark = f"{temp_dir}/"
    doomed: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        doomed.update((p.pid, p) for p in [root, *root.children(recursive=True)])
    doomed.update((p.pid, p) for p in processes_naming(mark))
    for p in doomed.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(list(doomed.values()), timeout=10)
    return len(doomed)


def replace_worker_node(cluster: SplitCluster, timeout: float = 120) -> None:
    """Starts a fresh worker node (a new machine: empty disk, same ports) in place of one that
    ``kill_worker_node`` ended, and returns when the cluster has two ALIVE nodes again."""
    old = cluster.worker_node_id
    cluster.processes[-1] = start_node(
        _worker_node_command(cluster),
        _node_env(cluster, cluster.s3_env),
        cluster.root / "worker.log",
        mode="a",
    )
    _wait_for_nodes(cluster, timeout, not_worker=old)


def _wait_for_nodes(cluster: SplitCluster, timeout: float, not_worker: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, p in zip(("head", "worker"), cluster.processes):
            if p.poll() is not None:
                raise RuntimeError(
                    f"the {name} node exited ({p.returncode}):\n{_log(cluster, name)}"
                )
        with contextlib.suppress(requests.RequestException, KeyError, ValueError):
            nodes = [n for n in cluster.alive_nodes() if n["node_id"] != not_worker]
            if len(nodes) == 2:
                cluster.head_node_id = next(n["node_id"] for n in nodes if n["is_head_node"])
                cluster.worker_node_id = next(n["node_id"] for n in nodes if not n["is_head_node"])
                return
        if time.monotonic() > deadline:
            logs = "\n".join(f"{name}.log:\n{_log(cluster, name)}" for name in ("head", "worker"))
            raise TimeoutError(f"the cluster was not up after {timeout:.0f} s\n{logs}")
        time.sleep(0.5)


def _log(cluster: SplitCluster, name: str) -> str:
    """The end of a node's ``ray start`` output (the temp dir goes when the cluster stops)."""
    return (cluster.root / f"{name}.log").read_text(errors="replace")[-3000:]


def stop_split_cluster(cluster: SplitCluster, timeout: float = 1.0) -> list[str]:
    """Stops both nodes' process trees and whatever else names the cluster's temp dirs (all at
    once: nothing on them is worth a longer wait), removes the temp dir, and returns the command
    lines of processes still there after SIGKILL (empty when all went). ``ray start``, the GCS
    and the raylets outlast a SIGTERM by seconds (measured), hence the short ``timeout`` before
    SIGKILL. The worker node's tmpfs mounts go with its namespace, when its last process ends."""
    strays = [p.pid for p in cluster.our_processes()]
    stop_tree(*(p.pid for p in cluster.processes), *strays, timeout=timeout)
    for popen in cluster.processes:
        popen.wait(timeout=5)  # reaped: no zombie of ours is left either
    left = []
    for p in cluster.our_processes():
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.cmdline()))
    shutil.rmtree(cluster.root, ignore_errors=True)
    return left
