"""One writer per run: the lease in a run's storage (train/lease.py), on a folder and in a bucket.

The real-process case (a second ``distgan train --resume`` beside a running run) is in
tests/test_signals.py, which has a run going anyway.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from distgan.errors import CheckpointError
from distgan.storage import open_location
from distgan.train import lease as leases
from distgan.train.lease import LEASE, RunLease, is_live, read_lease


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def check_one_writer(run) -> None:
    first = RunLease(run, "distgan train").acquire()
    try:
        with pytest.raises(CheckpointError) as refused:
            RunLease(run, "distgan train --resume").acquire()
        text = str(refused.value)
        assert "\n" not in text and "in use by distgan train (pid" in text, text
        assert f"on {socket.gethostname()}" in text and "expires 60 s after" in text, text
    finally:
        first.release()
    assert read_lease(run) is None  # given back
    with RunLease(run, "distgan train --resume"):  # and taken by the next one
        assert read_lease(run)["command"] == "distgan train --resume"


def test_a_run_has_one_writer_at_a_time(tmp_path):
    check_one_writer(open_location(str(tmp_path), "run"))


def test_a_run_in_a_bucket_has_one_writer_at_a_time(s3_env):
    s3_env.create_bucket("leases")
    check_one_writer(open_location(s3_env.uri("leases", "runs/00000-x"), "run"))


def test_a_lease_is_renewed_while_held(tmp_path, monkeypatch):
    monkeypatch.setattr(leases, "RENEW_S", 0.2)
    run = open_location(str(tmp_path), "run")
    with RunLease(run, "distgan train"):
        first = read_lease(run)["renewed"]
        time.sleep(0.7)
        assert read_lease(run)["renewed"] > first


def test_a_lease_left_by_a_killed_process_expires(tmp_path):
    """On this machine at once (its process is gone); from another machine after TTL_S."""
    now = time.time()
    here = {"host": socket.gethostname(), "pid": dead_pid(), "taken": now, "renewed": now}
    assert not is_live(here)
    elsewhere = {"host": "node-7", "pid": 1234, "taken": now - 600}
    assert is_live({**elsewhere, "renewed": now - 5})
    assert not is_live({**elsewhere, "renewed": now - leases.TTL_S - 1})
    run = open_location(str(tmp_path), "run")
    (tmp_path / LEASE).write_text(json.dumps({**here, "id": "x", "command": "distgan train"}))
    with RunLease(run, "distgan train --resume"):  # the dead holder's lease is taken over
        assert read_lease(run)["command"] == "distgan train --resume"
