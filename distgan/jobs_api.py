"""Ray's Jobs API, with distgan's errors: the cluster's address and token, and a client whose
every failure is one line.

    jobs = connect("http://head:8265")   # address: flag, then RAY_ADDRESS, then local
    sid = jobs.submit(prepare("jobs/quickstart.yaml", []))   # submit.prepare
    jobs.status(sid); jobs.logs(sid); jobs.follow(sid, sys.stdout); jobs.stop(sid)

The token comes from ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``, and goes in the ``Authorization`` header: Ray 2.60's client sends it on its
own only when ``RAY_AUTH_MODE=token`` is set in the client. The token is never printed, logged or
put in the job's runtime environment, and goes over plain http only to a loopback address (an
SSH tunnel) unless the user says ``--insecure-http``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from distgan.errors import ClusterError

if TYPE_CHECKING:
    from distgan.submit import Submission

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # Ray's dashboard (and Jobs API) port on this machine
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Ray's Jobs SDK sends to these, in this order, whatever address it is given: distgan resolves
# the address itself (so that the token check sees where the token goes) and hides them from it.
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
NO_AGENT = "No available agent to submit job"  # Ray's Jobs API, before a node's agent is up
AGENT_WAIT_S = 120.0  # how long a submission waits for one
# How long following or waiting on a job goes on asking a Jobs API that stopped answering (a
# dropped SSH tunnel or port-forward, a head that restarts) before it gives up.
LOST_S = 120.0


class LostContact(ClusterError):
    """The Jobs API stopped answering about a job: the job itself may be running still."""


def resolve_address(flag: str | None) -> str:
    """``--address``, then ``RAY_API_SERVER_ADDRESS`` and ``RAY_ADDRESS`` (in Ray's order),
    then the local default; always with a scheme."""
    source = (
        "--address" if flag else next((v for v in ADDRESS_VARIABLES if os.environ.get(v)), None)
    )
    address = flag or (os.environ[source] if source else DEFAULT_ADDRESS)
    if address.startswith("ray://"):
        raise ClusterError(
            f"{source or 'address'}={address}: a Ray Client address; distgan submits through the "
            "Jobs API, which is the dashboard's URL, e.g. http://HEAD:8265"
        )
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def resolve_token() -> tuple[str | None, str | None]:
    """The token and where it came from (a name, never the value); (None, None) if none."""
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return value, "RAY_AUTH_TOKEN"
    for name, path in (
        ("RAY_AUTH_TOKEN_PATH", os.environ.get("RAY_AUTH_TOKEN_PATH")),
        ("~/.ray/auth_token", str(Path.home() / ".ray" / "auth_token")),
    ):
        if path and Path(path).expanduser().is_file():
            value = Path(path).expanduser().read_text().strip()
            if value:
                return value, name if name.startswith("~") else f"{name} ({path})"
    return None, None


def is_loopback(address: str) -> bool:
    host = urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Jobs:
    """A Jobs API client with distgan's errors: every failure is one ``ClusterError`` line."""

    def __init__(self, address: str, token: str | None, token_source: str | None):
        from ray.job_submission import JobSubmissionClient

        # Ray's SDK logs every package upload at INFO; distgan prints what matters itself.
        for name in (
            "ray.dashboard.modules.dashboard_sdk",
            "ray.dashboard.modules.job.sdk",
            "ray._private.runtime_env.packaging",
        ):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Warns that .git and .venv are not uploaded, which is what distgan wants anyway.
        logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)
        self.address = address
        self._token_source = token_source
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        with _hidden(ADDRESS_VARIABLES):
            self._client = self._call(lambda: JobSubmissionClient(address, headers=self._headers))

    def _call(self, fn, job_id: str | None = None):
        """Runs one SDK call, turning Ray's exceptions into one-line ``ClusterError``s."""
        import aiohttp
        import requests
        from ray.exceptions import AuthenticationError

        try:
            return fn()
        except AuthenticationError as e:
            if "Authentication required" in str(e):
                raise ClusterError(
                    f"{self.address}: the cluster requires a token and none was found; set "
                    "RAY_AUTH_TOKEN or write the cluster's token to ~/.ray/auth_token "
                    "(`ray get-auth-token` on the head prints it)"
                ) from None
            raise ClusterError(
                f"{self.address}: the cluster refused the token from {self._token_source}; use "
                "the token of that cluster (`ray get-auth-token` on the head prints it)"
            ) from None
        except (ConnectionError, requests.ConnectionError, aiohttp.ClientError):
            # Ray's SDK turns a refused connection into ConnectionError when the client is made;
            # its later calls let requests' own through (a head or dashboard that went away), and
            # its log stream aiohttp's (also a proxy that refuses the websocket).
            if job_id:
                raise LostContact(
                    f"{self.address}: the Ray Jobs API stopped answering (job {job_id}); the "
                    "head node or its dashboard may be down. The job's state is unknown: "
                    f"`distgan status {job_id}` asks again once the cluster is back"
                ) from None
            raise ClusterError(
                f"{self.address}: cannot reach the Ray Jobs API there; start a cluster "
                "(cluster/local.sh up) or pass --address http://HEAD:8265 (the dashboard port, "
                "not the GCS port 6379) or set RAY_ADDRESS"
            ) from None
        except RuntimeError as e:
            text = str(e)
            if job_id and ("does not exist" in text or "404" in text):
                raise ClusterError(
                    f"{self.address}: no job {job_id!r} there; `distgan jobs` lists the jobs"
                ) from None
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            raise ClusterError(f"{self.address}: the Jobs API failed: {first}") from None

    def submit(self, job: Submission, out=None, wait_s: float = AGENT_WAIT_S) -> str:
        """Uploads the project and starts the job; returns its submission id. A cluster that
        has just started may have no job agent ready yet (Ray's Jobs API then answers "No
        available agent" after 10 s): the submission is tried again for ``wait_s`` seconds, and
        ``out`` is told once that it waits."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._call(
                    lambda: self._client.submit_job(
                        entrypoint=job.entrypoint,
                        runtime_env=job.runtime_env,
                        submission_id=job.submission_id,
                        metadata=job.metadata,
                    )
                )
            except ClusterError as e:
                if NO_AGENT not in str(e) or time.monotonic() > deadline:
                    raise
                if out is not None:
                    print(f"distgan: {self.address} has no job agent ready yet (a cluster "
                          "that is starting); waiting for one", file=out, flush=True)  # fmt: skip
                    out = None
                time.sleep(2)

    def info(self, job_id: str):
        return self._call(lambda: self._client.get_job_info(job_id), job_id)

    def status(self, job_id: str) -> str:
        return str(self.info(job_id).status)

    def logs(self, job_id: str) -> str:
        return self._call(lambda: self._client.get_job_logs(job_id), job_id)

    def _asking_again(self, fn, lost_s: float, poll: float):
        """``fn()``; while the Jobs API does not answer (``LostContact``), again every ``poll``
        seconds for up to ``lost_s``, saying so on stderr once, and once more when it answers."""
        lost_at = None
        while True:
            try:
                value = fn()
            except LostContact:
                if lost_at is None:
                    lost_at = time.monotonic()
                    said = f"{self.address} stopped answering; asking again for {lost_s:.0f} s"
                    print(f"distgan: {said} (the job is not touched)", file=sys.stderr, flush=True)
                elif time.monotonic() - lost_at > lost_s:
                    raise
                time.sleep(poll)
                continue
            if lost_at is not None:
                print(f"distgan: {self.address} answers again", file=sys.stderr, flush=True)
            return value

    def follow(self, job_id: str, out, poll: float = 2.0, lost_s: float = LOST_S) -> None:
        """Writes the job's log to ``out`` as it comes, until the job ends. Ray's log stream can
        close while the job still runs (a dashboard restart, a proxy's idle timeout): then the
        log is polled until the job ends. A Jobs API that stops answering is asked again for
        ``lost_s`` seconds. Ctrl-C stops only the following: the job goes on, and the message
        says so."""
        import asyncio

        self.info(job_id)  # an unknown id fails here with a clear line, not in the websocket
        written = 0

        async def tail() -> None:
            nonlocal written
            async for chunk in self._client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()
                written += len(chunk)

        try:
            with contextlib.suppress(ClusterError):  # a broken stream: the polling carries on
                self._call(lambda: asyncio.run(tail()), job_id)
            while True:
                ended = self._asking_again(lambda: self.status(job_id), lost_s, poll) in TERMINAL
                text = self._asking_again(lambda: self.logs(job_id), lost_s, poll)
                if len(text) > written:
                    out.write(text[written:])
                    out.flush()
                    written = len(text)
                if ended:
                    return
                time.sleep(poll)
        except KeyboardInterrupt:
            raise ClusterError(
                f"stopped following job {job_id}; it keeps running on {self.address} "
                f"(distgan stop {job_id} stops it)"
            ) from None

    def alive_nodes(self) -> int | None:
        """How many nodes the cluster has (the State API), or None if it does not say."""
        import requests

        try:
            reply = requests.get(
                f"{self.address}/api/v0/nodes", params={"limit": 10000, "detail": "false"},
                headers=self._headers, timeout=10,
            )  # fmt: skip
            nodes = reply.json()["data"]["result"]["result"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None
        return sum(1 for n in nodes if n.get("state") == "ALIVE")

    def stop(self, job_id: str) -> bool:
        return bool(self._call(lambda: self._client.stop_job(job_id), job_id))

    def list(self) -> list:
        return self._call(self._client.list_jobs)

    def wait(
        self, job_id: str, timeout: float | None = None, poll: float = 1.0, lost_s: float = LOST_S
    ) -> str:
        """Polls until the job ends (or ``timeout`` seconds); returns the last status. A Jobs
        API that stops answering is asked again for ``lost_s`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self._asking_again(lambda: self.status(job_id), lost_s, poll)
            if status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
                return status
            time.sleep(poll)


@contextlib.contextmanager
def _hidden(names: tuple[str, ...]):
    """These environment variables unset for the block, then as they were."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address_flag: str | None = None, insecure_http: bool = False) -> Jobs:
    """Resolves the address and the token and returns a connected ``Jobs`` (the connection and
    the token are checked here). Over plain http to a host that is not loopback it refuses to
    send a job without a token, and to send the token unless ``insecure_http``."""
    address = resolve_address(address_flag)
    token, source = resolve_token()
    in_the_clear = urlparse(address).scheme == "http" and not is_loopback(address)
    if in_the_clear and token is not None and not insecure_http:
        raise ClusterError(
            f"{address}: refusing to send the cluster's token (from {source}) over plain http to "
            "a host that is not loopback: anyone on the way could read it and run code on the "
            "cluster; use https://, or an SSH tunnel (ssh -L 8265:127.0.0.1:8265 HEAD, then "
            "--address http://127.0.0.1:8265), or pass --insecure-http on a network you trust"
        )
    if in_the_clear and token is None:
        raise ClusterError(
            f"{address}: refusing to send a job over plain http to a non-loopback address "
            "without a token (anyone could run code there); set RAY_AUTH_TOKEN, or reach the "
            "dashboard through an SSH tunnel (ssh -L 8265:127.0.0.1:8265 HEAD)"
        )
    return Jobs(address, token, source)


def last_lines(text: str, n: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def describe_failure(jobs: Jobs, job_id: str) -> str:
    """One line for a job that did not succeed: its status and Ray's exit reason."""
    info = jobs.info(job_id)
    reason = (info.message or "no reason given").strip().splitlines()
    code = f", exit code {info.driver_exit_code}" if info.driver_exit_code is not None else ""
    return f"job {job_id} {info.status}{code}: {reason[-1] if reason else ''}"
