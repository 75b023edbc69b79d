"""Fixtures shared by the tests.

``ray_cluster``: a real Ray head (`ray start --head --block`) on 127.0.0.1 with explicit ports,
2 CPUs and its own temp dir, started once per session. At the end it stops exactly the processes
it started (the `ray start` process and its descendants), never `ray stop`, which would end
every Ray process on the machine. The ports start at DISTGAN_TEST_RAY_PORT (default 46379),
1,000 higher for each pytest-xdist worker (``ray_port_base``).

``make test`` runs two pytest-xdist workers (``-n 2 --dist loadgroup``): the Ray tests carry an
``xdist_group`` mark, "ray-a" or "ray-b" (two groups of about equal length, one a worker, each
worker with its own Ray head), and the other tests fill in around them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


def ray_port_base() -> int:
    """The first port of this pytest process's Ray instances: DISTGAN_TEST_RAY_PORT (default
    46379), 1,000 higher for each xdist worker, so two workers never share a port."""
    base = int(os.environ.get("DISTGAN_TEST_RAY_PORT", "46379"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    return base + 1000 * int(worker.removeprefix("gw") or 0)


def ray_head_command(base_port: int, temp_dir: str, num_cpus: int = 2) -> list[str]:
    ray = str(Path(sys.executable).with_name("ray"))
    return [
        ray, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        f"--port={base_port}",
        f"--dashboard-port={base_port + 1}",
        f"--ray-client-server-port={base_port + 2}",
        f"--node-manager-port={base_port + 3}",
        f"--object-manager-port={base_port + 4}",
        f"--metrics-export-port={base_port + 5}",
        f"--dashboard-agent-listen-port={base_port + 6}",
        f"--dashboard-agent-grpc-port={base_port + 7}",
        f"--runtime-env-agent-port={base_port + 8}",
        f"--min-worker-port={base_port + 100}",
        f"--max-worker-port={base_port + 400}",
        f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip


def stop_tree(pid: int, timeout: float = 15.0) -> None:
    """Terminates a process and all its descendants (then kills what is left)."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = root.children(recursive=True) + [root]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a 2-CPU Ray head on 127.0.0.1; RAY_ADDRESS points at it during the tests."""
    import ray

    base = ray_port_base()
    temp_dir = tempfile.mkdtemp(prefix="dgray-", dir="/tmp")  # short: socket paths are limited
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115 - open for the whole session
    head = subprocess.Popen(
        ray_head_command(base, temp_dir), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    address = f"127.0.0.1:{base}"
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    os.environ.update(RAY_ADDRESS=address, RAY_AUTH_MODE="disabled")
    try:
        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"ray start failed: {(Path(temp_dir) / 'head.log').read_text()}")
            try:
                ray.init(address=address, log_to_driver=False, logging_level="warning")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        ray.shutdown()  # distgan connects by itself through RAY_ADDRESS
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_tree(head.pid, timeout=5)  # the test head holds nothing worth a longer wait
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(temp_dir, ignore_errors=True)
