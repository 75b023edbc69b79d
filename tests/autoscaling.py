"""Ray's autoscaler on 127.0.0.1, with a node provider of the project's own.

    cluster = start_autoscaling_cluster(base, head_worker_ports, s3_env, pytest_temp)
    ...                                    # a job asks for CPUs: the autoscaler adds a node
    (node,) = created_nodes(cluster)       # what the provider started, oldest first
    kill_node(cluster, node["pid"], Path(node["temp_dir"]))   # a lost machine
    left = stop_split_cluster(cluster)     # the head, its monitor and every node they started

The head is tests/split.py's (no CPUs, the dashboard and Jobs API, token auth, the S3 server's
variables) started with ``--autoscaling-config``: its monitor runs Ray's autoscaler v1 (2.60 runs
v2 only when ``RAY_enable_autoscaler_v2=1`` or under KubeRay) on a cluster of one node type,
``worker`` (split.py's worker node: 2 CPUs, its own mount namespace), 0 to 1 nodes. The
config's ``provider: type: external`` names ``LoopbackNodeProvider`` by module path, which the
monitor imports: the tests directory is on the head's PYTHONPATH.

The provider starts each node as split.py does (``ray start --address 127.0.0.1:BASE
--node-ip-address=127.0.0.1`` through distgan/loopback.py), with ports and a temp dir of its
own. Ray's autoscaler tells nodes apart by IP, and here all share one: with
``use_node_id_as_ip`` it keys them by Ray node id instead, so the provider chooses each node's
id (``RAY_OVERRIDE_NODE_ID_FOR_TESTING``, the head's too) and gives it as the node's IP. It runs
Ray itself, so the autoscaler's SSH updaters are off (``disable_node_updaters``). A node whose
processes have all gone (killed, crashed) leaves its list at once, as a preempted cloud instance
does, and the autoscaler launches a replacement while the cluster's demand (a pending placement
group, ``request_resources``) still needs one. Each node it starts or loses is a line of
``ROOT/nodes.jsonl``.

Ports: ``base`` is the GCS, +1 the dashboard, +2 the Ray Client server, +3..+8 the head's own;
the head's worker processes take ``head_worker_ports`` but the last two, the dashboard's and
the monitor's Prometheus metrics (conftest.ray_head_command). Worker nodes take two slots in
turn, +10..+53 and +54..+97 (six ports of the node's own, then its worker processes'): with at
most one node at a time, a replacement never takes the ports of the node it replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import requests
from conftest import REPO, ray_head_command
from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)
from split import (
    WORKER_CPUS,
    SplitCluster,
    _node_env,
    _worker_node_command,
    kill_node,
    new_cluster,
    start_node,
    stop_split_cluster,
)

HEAD_TYPE, WORKER_TYPE = "ray.head.default", "worker"
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # read by `ray start` (ray/_private/node.py)
SLOT_PORTS = 44
REPLACEMENT_BOOT_S = 15  # a lost node's replacement starts this long after it is asked for


class LoopbackNodeProvider(NodeProvider):
    """Worker nodes as ``ray start`` processes on this machine, each in a mount namespace of its
    own. It lives in the head's monitor, which calls it from its update loop and its launcher
    thread; node ids are Ray node ids."""

    def __init__(self, provider_config: dict, cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        root = Path(provider_config["root"])
        token = (root / "token").read_text()
        hidden = [Path(p) for p in provider_config["hidden"]]
        self._cluster = SplitCluster(root, provider_config["gcs_port"], token, hidden)
        self._slots = [(p, range(w0, w1)) for p, w0, w1 in provider_config["node_ports"]]
        self._lock = threading.RLock()
        self._tags = {
            provider_config["head_node_id"]: {
                TAG_RAY_NODE_KIND: NODE_KIND_HEAD,
                TAG_RAY_USER_NODE_TYPE: HEAD_TYPE,
                TAG_RAY_NODE_NAME: "head",
                TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
            }
        }
        self._nodes: dict[str, tuple[subprocess.Popen, Path]] = {}  # the workers' ray start
        self._started = 0
        # A cloud machine takes a while to boot: a replacement joins this long after it is asked.
        self._boot_s = provider_config.get("replacement_boot_s", 0)

    def non_terminated_nodes(self, tag_filters: dict) -> list[str]:
        with self._lock:
            for node_id, (popen, _) in list(self._nodes.items()):
                if popen.poll() is not None:  # every process of it gone: the machine is lost
                    del self._nodes[node_id], self._tags[node_id]
                    self._record("gone", node_id=node_id, returncode=popen.returncode)
            return [
                n
                for n, tags in self._tags.items()
                if all(tags.get(k) == v for k, v in tag_filters.items())
            ]

    def is_running(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._tags

    def is_terminated(self, node_id: str) -> bool:
        return not self.is_running(node_id)

    def node_tags(self, node_id: str) -> dict:
        with self._lock:
            return dict(self._tags[node_id])

    def set_node_tags(self, node_id: str, tags: dict) -> None:
        with self._lock:
            self._tags[node_id].update(tags)

    def internal_ip(self, node_id: str) -> str:
        return node_id  # what the monitor keys a node by under use_node_id_as_ip

    def external_ip(self, node_id: str) -> str:
        return node_id

    def create_node_with_resources_and_labels(
        self, node_config: dict, tags: dict, count: int, resources: dict, labels: dict
    ) -> None:
        for _ in range(count):
            if self._started:
                time.sleep(self._boot_s)  # in the autoscaler's launcher thread, not its loop
            with self._lock:
                n, node_id = self._started, secrets.token_hex(28)  # a Ray node id: 28 bytes
                self._started += 1
                temp_dir = self._cluster.root / f"n{n}"
                port, worker_ports = self._slots[n % len(self._slots)]
                cmd = _worker_node_command(self._cluster, temp_dir, (port, worker_ports))
                env = {**os.environ, NODE_ID_ENV: node_id}
                popen = start_node(cmd, env, self._cluster.root / f"n{n}.log")
                self._nodes[node_id] = (popen, temp_dir)
                self._tags[node_id] = {
                    **tags,
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                    TAG_RAY_NODE_NAME: f"n{n}",
                    TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,  # no updater: Ray runs once started
                }
                self._record(
                    "created", node_id=node_id, pid=popen.pid, temp_dir=str(temp_dir), port=port
                )

    def terminate_node(self, node_id: str) -> None:
        with self._lock:
            popen, temp_dir = self._nodes.pop(node_id)
            del self._tags[node_id]
            kill_node(self._cluster, popen.pid, temp_dir)
            popen.wait(timeout=10)
            self._record("terminated", node_id=node_id)

    def _record(self, event: str, **fields) -> None:
        with open(self._cluster.root / "nodes.jsonl", "a") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")


def node_events(cluster: SplitCluster) -> list[dict]:
    """What the provider did, in order: ``created`` (node_id, pid, temp_dir, port), ``gone``
    (its processes ended by themselves) and ``terminated`` (by the autoscaler)."""
    path = cluster.root / "nodes.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def created_nodes(cluster: SplitCluster) -> list[dict]:
    return [e for e in node_events(cluster) if e["event"] == "created"]


def monitor_log(cluster: SplitCluster) -> str:
    """The autoscaler's log (its monitor's, on the head)."""
    return (cluster.head_temp_dir / "session_latest" / "logs" / "monitor.log").read_text()


def _autoscaling_config(cluster: SplitCluster, head_node_id: str) -> dict:
    """The cluster config a ``ray up`` would have written for the monitor: every field the
    autoscaler reads, the SSH and file-sync ones empty."""
    slots = [cluster.base + 10 + SLOT_PORTS * i for i in range(2)]
    return {
        "cluster_name": "distgan-test",
        "max_workers": 1,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "external",
            "module": "autoscaling.LoopbackNodeProvider",
            "use_node_id_as_ip": True,  # the nodes share 127.0.0.1
            "disable_node_updaters": True,  # no SSH: the provider runs `ray start` itself
            "disable_launch_config_check": True,  # nor are nodes redone when the config changes
            "root": str(cluster.root),
            "gcs_port": cluster.base,
            "hidden": [str(p) for p in cluster.hidden],
            "head_node_id": head_node_id,
            "node_ports": [[p, p + 6, p + SLOT_PORTS] for p in slots],
            "replacement_boot_s": REPLACEMENT_BOOT_S,
        },
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": WORKER_CPUS},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            },
        },
        "head_node_type": HEAD_TYPE,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def start_autoscaling_cluster(
    base: int, head_worker_ports: range, s3_env: dict[str, str], pytest_temp: Path
) -> SplitCluster:
    """Starts the head with its autoscaler and returns once the autoscaler reports the head
    (what distgan's ``has_autoscaler`` reads), with no worker node yet. On failure, stops what it
    started."""
    cluster = new_cluster("dgas-", base, s3_env, pytest_temp)
    root = cluster.root
    head_node_id = secrets.token_hex(28)
    config = root / "autoscaling.json"
    config.write_text(json.dumps(_autoscaling_config(cluster, head_node_id), indent=1))
    env = {
        **_node_env(cluster, s3_env),
        "PYTHONPATH": str(REPO / "tests"),  # where the monitor finds the provider
        NODE_ID_ENV: head_node_id,
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # Ray's default polls every 5 s
        # The autoscaler ends a node whose raylet has not reported for this long ("lost contact
        # with raylet", a node this provider starts counting from its launch: it is up to date
        # at once, with no updater) and launches another. Ray's 30 s was too short once under
        # the full suite on 2 cores: the test saw the autoscaler terminate a node and start a
        # third, where it expects created, gone, created.
        "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "90",
    }
    cmd = ray_head_command(
        base, str(cluster.head_temp_dir), num_cpus=0, worker_ports=head_worker_ports
    )
    try:
        cmd = [*cmd, f"--autoscaling-config={config}"]
        cluster.processes.append(start_node(cmd, env, root / "head.log"))
        _wait_for_autoscaler(cluster, timeout=90)
        return cluster
    except BaseException:
        stop_split_cluster(cluster)
        raise


def _wait_for_autoscaler(cluster: SplitCluster, timeout: float) -> None:
    deadline, data = time.monotonic() + timeout, None
    while True:
        head = cluster.processes[0]
        if head.poll() is not None:
            log = (cluster.root / "head.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the head exited ({head.returncode}):\n{log}")
        with contextlib.suppress(requests.RequestException, KeyError, ValueError, TypeError):
            reply = requests.get(
                f"{cluster.dashboard}/api/cluster_status",
                headers={"Authorization": f"Bearer {cluster.token}"},
                timeout=10,
            )
            data = reply.json()["data"]  # the dashboard turns keys into camelCase
            if data.get("autoscalingError"):
                raise RuntimeError(f"the autoscaler failed: {data['autoscalingError']}")
            if HEAD_TYPE in data["clusterStatus"]["autoscalerReport"]["activeNodes"]:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no autoscaler reported within {timeout:.0f} s: {data}")
        time.sleep(0.5)
