"""One writer per run: a lease in the run's storage, held by the process that trains it.

    with RunLease(run, "distgan train"):      # CheckpointError if a live process holds it
        ...train...                            # renewed every RENEW_S seconds meanwhile

``lease.json`` names its holder (host, process, what it runs), when it was taken and when it was
last renewed. Another process may take the run only when the lease is gone or stale: not renewed
for ``TTL_S`` seconds (a holder killed on another machine), or held by a process of this machine
that no longer exists (a killed driver: at once). The storage may be a bucket: nothing here needs
more than reading and writing a small file, and a write is read back to see who won a race.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from distgan.errors import CheckpointError, UserError
from distgan.progress import duration
from distgan.storage import Location

LEASE = "lease.json"
TTL_S = 60.0  # a lease not renewed for this long is stale
RENEW_S = 15.0


def read_lease(run: Location) -> dict | None:
    try:
        return json.loads(run.read_text(LEASE)) if run.is_file(LEASE) else None
    except (ValueError, UnicodeDecodeError, UserError):
        return None  # a torn or unreadable lease holds nothing


def is_live(lease: dict | None, now: float | None = None) -> bool:
    """Whether ``lease`` still holds its run."""
    if not lease:
        return False
    now = time.time() if now is None else now
    if now - float(lease.get("renewed", 0)) > TTL_S:
        return False
    if lease.get("host") == socket.gethostname():  # a holder on this machine: is it alive?
        try:
            os.kill(int(lease["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError):
            pass
    return True


def holder_text(lease: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    held = duration(max(0.0, now - float(lease.get("taken", now))))
    renewed = duration(max(0.0, now - float(lease.get("renewed", now))))
    return (
        f"{lease.get('command', 'a process')} (pid {lease.get('pid')} on {lease.get('host')}), "
        f"holding it for {held}, last renewed {renewed} ago"
    )


def check_not_held(run: Location, shown: str | None = None) -> None:
    """CheckpointError (one line, naming the holder and its age) if a live process holds
    ``run``; ``shown``: how the message names the run."""
    held = read_lease(run)
    if is_live(held):
        raise CheckpointError(
            f"{shown or run}: in use by {holder_text(held)}; one process writes a run at a "
            f"time: wait for it to end or stop it (Ctrl-C there, or distgan stop); a lease "
            f"left by a killed process expires {TTL_S:.0f} s after its last renewal"
        )


class RunLease:
    """Takes ``run``'s lease for this process (CheckpointError, one line, if a live process
    holds it), renews it in a thread, and gives it back on exit."""

    def __init__(self, run: Location, command: str):
        self.run, self.command = run, command
        self.id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken = time.time()

    def _record(self) -> dict:
        return {"id": self.id, "command": self.command, "host": socket.gethostname(),
                "pid": os.getpid(), "taken": self.taken, "renewed": time.time()}  # fmt: skip

    def acquire(self) -> RunLease:
        check_not_held(self.run)
        self.run.write_text(LEASE, json.dumps(self._record()) + "\n")
        time.sleep(0.2)  # two takers at once: the last write wins, and the other sees it
        won = read_lease(self.run)
        if not won or won.get("id") != self.id:
            raise CheckpointError(
                f"{self.run}: taken by {holder_text(won or {})} as this process started; "
                "one process writes a run at a time"
            )
        self._thread = threading.Thread(target=self._renew, name="distgan-lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self.run.write_text(LEASE, json.dumps(self._record()) + "\n")
            except UserError:  # a storage hiccup: the next renewal tries again
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = read_lease(self.run)
        if held and held.get("id") == self.id:
            with contextlib.suppress(UserError):  # it expires by itself
                self.run.delete(LEASE)

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
