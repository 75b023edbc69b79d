"""The Ray this process trains on: the cluster at ``RAY_ADDRESS``, or a local instance that
listens on 127.0.0.1 only, with Ray's own console noise turned off.

    with ray_session():        # ray.init, and ray.shutdown at the end (of a local instance)
        launch(...)
    end_local_ray_now()        # a second Ctrl-C: kills this process's children at once
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from contextlib import contextmanager

from distgan.errors import ClusterError
from distgan.loopback import loopback_only
from distgan.train.follow import quiet_worker_deaths

# Quiet Ray's internals so the user sees distgan's progress (see DESIGN.md, "Log noise").
RAY_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "0",
    # Tune's newer console output prints, whatever RunConfig(verbose=0) says, a boxed table of
    # the search, its experiment folder and a TensorBoard hint into Ray's temp dir; the older
    # one prints nothing at verbose=0. distgan tune points to the search's own files instead.
    "RAY_AIR_NEW_OUTPUT": "0",
    # The controller takes each worker's report (and registers its checkpoint) at this period;
    # Ray's default of 2 s would stall every checkpoint step that long (worker.py).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


@contextmanager
def ray_session():
    """Connects to ``RAY_ADDRESS`` or starts a local Ray on 127.0.0.1 (and stops only that)."""
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # A new local instance turns token authentication on (Ray's default, which distgan
        # keeps) and warns about it on every run; the warning is noise here.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        loopback_only()
    kwargs = dict(
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": dict(RAY_ENV)},
    )
    quiet_worker_deaths()
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
    except ConnectionError as e:
        raise ClusterError(
            f"RAY_ADDRESS={address}: cannot reach a Ray cluster there ({e}); start one with "
            "`ray start --head` or unset RAY_ADDRESS to run locally"
        ) from None
    if threading.current_thread() is threading.main_thread():
        # ray.init replaced the caller's SIGTERM handler with one that exits with a C++ dump.
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        ray.shutdown()


def end_local_ray_now() -> None:
    """Kills every process this one started, which on a local run are its Ray's (GCS, raylet,
    agents, workers): a second Ctrl-C leaves no time for ``ray.shutdown``, which cannot run
    while a thread is blocked in Ray anyway. A cluster's processes are not this one's children."""
    import psutil

    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            p.kill()
