"""Fixtures shared by the tests.

``ray_cluster``: a real Ray head (`ray start --head --block`) on 127.0.0.1 with explicit ports,
2 CPUs and its own temp dir, started once per session. At the end it stops exactly the processes
it started (the `ray start` process and its descendants), never `ray stop`, which would end
every Ray process on the machine. The ports start at DISTGAN_TEST_RAY_PORT (default 26379),
1,000 higher for each pytest-xdist worker (``ray_port_base``).

``s3_server`` (session): an S3-compatible server, moto in server mode (``python -m moto.server``),
on 127.0.0.1 at ray_port_base() + 990, kept in memory. It yields a ``tests/s3.S3Server``:
``endpoint`` (host:port), ``env`` (dummy credentials, an explicit region,
AWS_EC2_METADATA_DISABLED), ``uri(bucket, prefix)`` (``s3://bucket/prefix?endpoint_override=
127.0.0.1:PORT&scheme=http``, the form pyarrow's ``FileSystem.from_uri`` reads), and
``create_bucket``, ``keys``, ``read``, ``write`` through boto3. Buckets must be created before
pyarrow writes into them. ``s3_env`` (per test) puts ``env`` in the test's environment and yields
the same server.

``split_cluster`` (module): a Ray head and one worker node on 127.0.0.1 that share no disk
(``tests/split.py``): the head has no CPUs (tasks and Ray Train workers land on the worker node)
and the dashboard and Jobs API; the worker node (2 CPUs) runs in its own mount namespace, with
private tmpfs over /tmp (the head's Ray temp dir, pytest's temp dirs) and the project's ``runs/``
and ``data/``. Token auth with a token of its own; both nodes have ``s3_server.env``. Ports from
ray_port_base() + 800. It yields a ``tests/split.SplitCluster``: ``dashboard`` (the Jobs API URL),
``gcs_address``, ``token``, ``head_node_id``, ``worker_node_id``, ``head_temp_dir``,
``worker_temp_dir`` (a path only the worker node sees), ``client_env()`` (the environment of a
Ray driver on the head's side). Up in about 6-11 s, down in about 3 s on 2 cores; at the end
it fails if any process of it is left.

``browser`` (module): a headless Chromium driven by Selenium through Debian's chromedriver
(``CHROMEDRIVER``; the tests that use it are skipped without it), its console log kept.

``make test`` runs two pytest-xdist workers (``-n 2 --dist loadgroup``): the Ray tests carry an
``xdist_group`` mark, "ray-a" or "ray-b", two groups of about equal length, one a worker, and the
other tests fill in around them. "ray-a" holds every test on the session's head
(``ray_cluster``), so that one worker alone starts one (a head costs about 3 CPU-seconds a minute
while it waits, over the whole session); "ray-b" the tests with a cluster or a local Ray of
their own. Collection stops on a test that uses ``ray_cluster`` outside "ray-a".
"""

from __future__ import annotations

import contextlib
import faulthandler
import ipaddress
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
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # distgan.loopback.LOCAL_ONLY
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver (.ci/run installs it)
# A prefix for a command that a test stops with Ctrl-C (SIGINT): it runs with SIGINT and SIGQUIT
# at their defaults, as a command typed in a terminal does. A child inherits ignored signals, and
# C's system() ignores both in its process while it waits: a child started meanwhile by another
# thread would never see the Ctrl-C (seen once: `distgan rate` ran on, SIGINT and SIGQUIT ignored).
IN_A_TERMINAL = ["env", "--default-signal=INT,QUIT"]


# ``ray`` for a node that listens on 127.0.0.1 only (Ray 2.60 binds a node started by plain
# ``ray start --node-ip-address=127.0.0.1`` to every interface: distgan/loopback.py).
RAY_ON_LOOPBACK = [sys.executable, "-m", "distgan.loopback"]
# This process (the ray_cluster fixture's check) and the drivers it starts reach those nodes at
# 127.0.0.1, where Ray would look for them at the machine's own address.
os.environ[LOOPBACK_SWITCH] = "0"

# One PyTorch thread in each pytest-xdist worker (and what it starts), as Ray gives each worker
# of its own: ``make test`` runs as many workers as the machine has cores, and PyTorch's default
# of a thread per core had 2 workers on 2 cores wait on each other's threads, most of it spent
# spinning in OpenMP (the tests without Ray: 276 CPU-s and 146 s, against 159 and 88 with this).
# distgan honours the variable (train/threads.py), so the Ray Train workers that these tests'
# runs start compute with one thread too (a 1-worker run had taken both cores, whose second
# thread spun while other work held the core: 110 CPU-s against 20 for test_eval_ray.py's
# worker beside a busy loop).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # too late for the variable: PyTorch read it when imported
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# --- What a crashed pytest-xdist worker leaves ----------------------------------------------
# xdist says only "worker 'gwN' crashed". Each worker writes Python's fatal-error trace (a
# segfault, an abort) into a file of its own; the controller prints those, and the kernel's
# out-of-memory kills, at the end of the run.
CRASH_DIR = Path(tempfile.gettempdir()) / "distgan-pytest-crashes"


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin, which writes to stderr
def pytest_configure(config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        CRASH_DIR.mkdir(exist_ok=True)
        trace = open(CRASH_DIR / f"{worker}-{os.getpid()}.txt", "w")  # noqa: SIM115 - for life
        faulthandler.enable(trace, all_threads=True)
    elif hasattr(config.option, "numprocesses"):
        shutil.rmtree(CRASH_DIR, ignore_errors=True)  # a new run: no old traces


def pytest_collection_modifyitems(config, items) -> None:
    """Every test on the session's Ray head is in xdist group "ray-a" (the docstring above)."""
    astray = [
        item.nodeid
        for item in items
        if "ray_cluster" in getattr(item, "fixturenames", ())
        and getattr(item.get_closest_marker("xdist_group"), "args", ()) != ("ray-a",)
    ]
    if astray:
        raise pytest.UsageError(
            "tests on the session's Ray head (ray_cluster) belong in "
            f'@pytest.mark.xdist_group("ray-a"), so that one worker alone starts it: {astray}'
        )


def pytest_terminal_summary(terminalreporter) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or not terminalreporter.stats.get("failed"):
        return
    traces = [p for p in sorted(CRASH_DIR.glob("*.txt")) if p.stat().st_size]
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    oom = [line for line in kernel.splitlines() if "Out of memory" in line or "oom-kill" in line]
    if traces or oom:
        terminalreporter.section("what crashed workers left")
        for p in traces:
            terminalreporter.write_line(f"{p.name}:\n{p.read_text(errors='replace')[-4000:]}")
        for line in oom[-10:]:
            terminalreporter.write_line(line)


def ray_port_base() -> int:
    """The first port of this pytest process's Ray instances: DISTGAN_TEST_RAY_PORT (default
    26379), 1,000 higher for each xdist worker, so two workers never share a port. Below Linux's
    ephemeral range (32768-60999), from which every outgoing connection of the suite takes its
    own port: a port planned there could be a client's just when a node binds it (a head that
    "timed out during startup" with nothing else running). Above Ray's default worker ports
    (10002-19999), which the local runs of the tests take. From there:
    +0..+400 ``ray_cluster``, +401..+498 and +950..+989 test_autoscaler_ray.py's cluster,
    +500..+789 test_cluster.py's cluster (its worker node's workers from +700), +790..+794
    test_rate.py's servers, +800..+949 ``split_cluster``, +990 ``s3_server``; +999
    stays closed (a test expects nothing there)."""
    base = int(os.environ.get("DISTGAN_TEST_RAY_PORT", "26379"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    return base + 1000 * int(worker.removeprefix("gw") or 0)


def ray_node_ports(port: int, worker_ports: range) -> list[str]:
    """The ``ray start`` flags for the ports every node listens on, explicit so that nothing
    picks a random one: six from ``port`` up, and the range its worker processes take."""
    return [
        f"--node-manager-port={port}",
        f"--object-manager-port={port + 1}",
        f"--metrics-export-port={port + 2}",
        f"--dashboard-agent-listen-port={port + 3}",
        f"--dashboard-agent-grpc-port={port + 4}",
        f"--runtime-env-agent-port={port + 5}",
        f"--min-worker-port={worker_ports.start}",
        f"--max-worker-port={worker_ports.stop - 1}",
    ]


def ray_head_command(
    base_port: int, temp_dir: str, num_cpus: int = 2, worker_ports: range | None = None
) -> list[str]:
    """``ray start --head --block`` on 127.0.0.1: the GCS at ``base_port``, the dashboard (and
    Jobs API) at +1, the Ray Client server at +2, the node's own ports from +3; its workers take
    ``worker_ports`` (default +100 to +400) but the last two, where the dashboard and the
    autoscaler serve their metrics (else on Ray's fixed 44227 and 44217, which every head of the
    suite would want; cluster/local.sh sets them too)."""
    workers = worker_ports or range(base_port + 100, base_port + 401)
    dashboard_metrics, autoscaler_metrics, workers = workers[-2], workers[-1], workers[:-2]
    return [
        "env", f"DASHBOARD_METRIC_PORT={dashboard_metrics}",
        f"AUTOSCALER_METRIC_PORT={autoscaler_metrics}",
        *RAY_ON_LOOPBACK, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        f"--port={base_port}",
        f"--dashboard-port={base_port + 1}",
        f"--ray-client-server-port={base_port + 2}",
        *ray_node_ports(base_port + 3, workers),
        f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip


def live_actor_pids(address: str, class_name: str) -> set[int]:
    """PIDs of the ALIVE actors of ``class_name`` on the cluster at ``address`` (State API)."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=address,
        filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
        detail=True,
        raise_on_missing_output=False,
    )
    return {a.pid for a in actors if a.pid}


def listening(procs: list[psutil.Process]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of ``procs``."""
    pids = {p.pid: p.name() for p in procs if p.is_running()}
    return [
        (c.laddr.ip, c.laddr.port, pids[c.pid])
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def processes_naming(mark: str) -> list[psutil.Process]:
    """Every process with ``mark`` (a temp dir) in its command line: Ray moves some of its
    helpers (the GCS, the raylet, the dashboard) out of the ``ray start`` process tree."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(mark in arg for arg in p.info["cmdline"] or ()):
                found.append(p)
    return found


def stop_tree(*pids: int, timeout: float = 15.0) -> None:
    """Terminates processes and all their descendants, all at once (then kills what is left
    after ``timeout`` seconds)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            procs.update((p.pid, p) for p in [*root.children(recursive=True), root])
    for p in procs.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def _start_session_head(base: int) -> tuple[subprocess.Popen, str]:
    """``ray start`` of the session's head (below), once more if it timed out starting (seen on
    a loaded machine: "The current node timed out during startup"); (process, temp dir)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    for attempt in (1, 2):
        temp_dir = tempfile.mkdtemp(prefix="dgray-", dir="/tmp")  # short: socket paths are limited
        with open(Path(temp_dir) / "head.log", "w") as log:
            # No log monitor on this head, which runs every in-process test's jobs: it forwards
            # worker output to drivers that ask for it (distgan's ask for none:
            # log_to_driver=False), and it rescans the log files of every worker the session
            # started, twice a second, at a growing cost (1.6 CPU-s a minute after ten
            # minutes). The other clusters keep theirs, as a user's.
            head = subprocess.Popen(
                [*ray_head_command(base, temp_dir), "--include-log-monitor=false"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while head.poll() is None and not _head_answers(base):
            if time.monotonic() > deadline:
                stop_tree(head.pid, timeout=5)
                raise TimeoutError(f"ray start did not answer in 120 s: {temp_dir}/head.log")
            time.sleep(1)
        if head.poll() is None:
            return head, temp_dir
        said = (Path(temp_dir) / "head.log").read_text()
        # What the failed start left (its GCS, raylet: no longer the head's children).
        stop_tree(*(p.pid for p in processes_naming(temp_dir)), timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if attempt == 2 or "timed out during startup" not in said:
            raise RuntimeError(f"ray start failed: {said}")
    raise AssertionError("unreachable")


def _head_answers(base: int) -> bool:
    import ray

    try:
        ray.init(address=f"127.0.0.1:{base}", log_to_driver=False, logging_level="warning")
    except Exception:  # noqa: BLE001 - not up yet
        return False
    ray.shutdown()  # distgan connects by itself through RAY_ADDRESS
    return True


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a 2-CPU Ray head on 127.0.0.1; RAY_ADDRESS points at it during the tests."""
    base = ray_port_base()
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    os.environ.update(RAY_ADDRESS=f"127.0.0.1:{base}", RAY_AUTH_MODE="disabled")
    head, temp_dir = None, ""
    try:
        head, temp_dir = _start_session_head(base)
        yield f"127.0.0.1:{base}"
    finally:
        if head is not None:
            # The test head holds nothing worth a wait: its GCS, raylet and agents take over 5 s
            # to end on SIGTERM, at the very end of the suite, where nothing else runs.
            stop_tree(head.pid, timeout=1)
            shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium (1280×900) whose console ``driver.get_log("browser")`` reads; its
    temporary files in a folder of the test session (``driver.quit()`` ends it before it removes
    its singleton folder, which was left in /tmp each time)."""
    if not CHROMEDRIVER.is_file():
        pytest.skip("no chromedriver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("chromium"))}
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), env=env), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3-compatible server (moto) on 127.0.0.1 at ray_port_base() + 990, for the session;
    see tests/s3.py for what it offers."""
    from s3 import start_s3_server

    server = start_s3_server(ray_port_base() + 990, tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The S3 server's client variables (dummy credentials, region) in this test's environment."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture(scope="module")
def split_cluster(s3_server, tmp_path_factory):
    """A head and a worker node that share no disk (tests/split.py), ports from
    ray_port_base() + 800; stopped at the end of the module, which fails if any process of it is
    left."""
    from split import start_split_cluster, stop_split_cluster

    try:
        cluster = start_split_cluster(
            ray_port_base() + 800, s3_server.env, tmp_path_factory.getbasetemp()
        )
    except (RuntimeError, TimeoutError):  # a head that timed out on a loaded machine: once more
        cluster = start_split_cluster(
            ray_port_base() + 800, s3_server.env, tmp_path_factory.getbasetemp()
        )
    try:
        yield cluster
    finally:
        left = stop_split_cluster(cluster)
        assert not left, f"processes of the split cluster left behind: {left}"
