"""The client side of running a job on a Ray cluster through Ray's Jobs API.

    job = prepare("jobs/quickstart.yaml", ["train.steps=100"])   # validated here
    jobs = connect("http://head:8265")   # address: flag, then RAY_ADDRESS, then local
    sid = jobs.submit(job)
    jobs.status(sid); jobs.logs(sid); jobs.stop(sid)

The token comes from ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``, and goes in the ``Authorization`` header: Ray 2.60's client sends it on its
own only when ``RAY_AUTH_MODE=token`` is set in the client. The token is never printed, logged or
put in the job's runtime environment.

What travels to the cluster: the project folder as the job's ``working_dir`` (without ``.git``,
virtual environments, ``runs/``, ``data/`` or caches). Ray runs the driver in that folder and puts
it first on every worker's ``sys.path``, so the submitted ``distgan/`` (not whatever version a node
has installed) runs in the driver and in every worker. The entrypoint is
``python -m distgan.cli train JOB --set ...``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import secrets
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

from distgan.config import JobSpec, load_job
from distgan.errors import ClusterError, JobError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # Ray's dashboard (and Jobs API) port on this machine
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# gitignore patterns for the working_dir upload, anchored at the project's root ("/data" is the
# project's local data, not the package's own distgan/data).
EXCLUDES = [
    ".git", ".venv", "venv", "/env", "/runs", "/data", "/build", "/dist", "/.gpu", "/.whl",
    "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
]  # fmt: skip


def resolve_address(flag: str | None) -> str:
    """``--address``, then ``RAY_ADDRESS``, then the local default; always with a scheme."""
    address = flag or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    source = "--address" if flag else ("RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else None)
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
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = self._call(lambda: JobSubmissionClient(address, headers=headers))

    def _call(self, fn, job_id: str | None = None):
        """Runs one SDK call, turning Ray's exceptions into one-line ``ClusterError``s."""
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
        except ConnectionError:
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

    def submit(self, job: Submission) -> str:
        """Uploads the project and starts the job; returns its submission id."""
        return self._call(
            lambda: self._client.submit_job(
                entrypoint=job.entrypoint,
                runtime_env=job.runtime_env,
                submission_id=job.submission_id,
                metadata=job.metadata,
            )
        )

    def info(self, job_id: str):
        return self._call(lambda: self._client.get_job_info(job_id), job_id)

    def status(self, job_id: str) -> str:
        return str(self.info(job_id).status)

    def logs(self, job_id: str) -> str:
        return self._call(lambda: self._client.get_job_logs(job_id), job_id)

    def follow(self, job_id: str, out) -> None:
        """Writes the job's log to ``out`` as it comes, until the job ends. Ctrl-C stops only
        the following: the job goes on, and the message says so."""
        import asyncio

        self.info(job_id)  # an unknown id fails here with a clear line, not in the websocket

        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()

        try:
            self._call(lambda: asyncio.run(tail()), job_id)
        except KeyboardInterrupt:
            raise ClusterError(
                f"stopped following job {job_id}; it keeps running on {self.address} "
                f"(distgan stop {job_id} stops it)"
            ) from None

    def stop(self, job_id: str) -> bool:
        return bool(self._call(lambda: self._client.stop_job(job_id), job_id))

    def list(self) -> list:
        return self._call(self._client.list_jobs)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> str:
        """Polls until the job ends (or ``timeout`` seconds); returns the last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
                return status
            time.sleep(poll)


def connect(address_flag: str | None = None) -> Jobs:
    """Resolves the address and the token, refuses to send a job in the clear without a token,
    and returns a connected ``Jobs`` (the connection and the token are checked here)."""
    address = resolve_address(address_flag)
    token, source = resolve_token()
    if token is None and urlparse(address).scheme == "http" and not is_loopback(address):
        raise ClusterError(
            f"{address}: refusing to send a job over plain http to a non-loopback address "
            "without a token (anyone could run code there); set RAY_AUTH_TOKEN, or reach the "
            "dashboard through an SSH tunnel (ssh -L 8265:127.0.0.1:8265 HEAD)"
        )
    return Jobs(address, token, source)


def project_root() -> Path | None:
    """The checkout distgan runs from (it has pyproject.toml beside distgan/), or None when
    distgan is installed as a package (then the cluster's image must provide it)."""
    import distgan

    root = Path(distgan.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "distgan").is_dir():
        return root
    return None


def check_cluster_paths(spec: JobSpec, job_file: str) -> None:
    """Paths the cluster must resolve on its own: relative ones would point into the job's
    temporary working dir, where local data is not uploaded."""
    source = spec.data.source
    if "://" in source:
        raise JobError(
            f"{job_file}: data.source: {source!r}: shard folders are read as local paths, not "
            "URIs, for now; copy the shards to a file system every node mounts and use its path"
        )
    if source != "embedded" and not Path(source).is_absolute():
        raise JobError(
            f"{job_file}: data.source: {source!r} is a relative local path, which the cluster "
            "cannot see (local data is not uploaded); use an absolute path on a shared file "
            "system"
        )
    storage = spec.run.storage
    if storage and "://" not in storage and not Path(storage).is_absolute():
        raise JobError(
            f"{job_file}: run.storage: {storage!r} is relative; on a cluster it must be an "
            "absolute path on a shared file system or a URI such as s3://bucket/runs"
        )


def entrypoint(job_rel: str, overrides: list[str]) -> str:
    """The shell command the cluster runs: ``distgan train`` on the shipped job file."""
    args = ["python", "-m", "distgan.cli", "train", job_rel]
    for item in overrides:
        args += ["--set", item]
    return " ".join(shlex.quote(a) for a in args)


def runtime_env(root: Path | None, job_dir: Path) -> dict:
    """The project, distgan's source with it (or, for an installed distgan, the job's folder)."""
    # No env_vars: `distgan train` sets its own through ray.init, and Ray refuses a job whose
    # runtime env and its driver's ray.init name the same variable.
    return {"working_dir": str(root or job_dir), "excludes": list(EXCLUDES)}


@dataclasses.dataclass(frozen=True)
class Submission:
    """A validated job, ready for the Jobs API."""

    spec: JobSpec
    submission_id: str
    entrypoint: str
    runtime_env: dict
    metadata: dict


def prepare(job_file: str, overrides: list[str]) -> Submission:
    """Validates the job here (no cluster needed) and builds what the Jobs API is sent."""
    spec = load_job(job_file, overrides)  # a bad job never reaches the cluster
    check_cluster_paths(spec, job_file)
    _check_model(spec, job_file)
    path = Path(job_file).resolve()
    root = project_root()
    base = root or path.parent
    try:
        job_rel = path.relative_to(base).as_posix()
    except ValueError:
        raise JobError(
            f"{job_file}: outside the project ({base}), so it would not travel to the cluster; "
            f"copy it under {base / 'jobs'}"
        ) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Submission(
        spec=spec,
        submission_id=f"distgan-{_slug(spec.run.name)}-{stamp}-{secrets.token_hex(2)}",
        entrypoint=entrypoint(job_rel, overrides),
        runtime_env=runtime_env(root, path.parent),
        metadata={"distgan_job": job_rel, "distgan_run": spec.run.name},
    )


def _check_model(spec: JobSpec, job_file: str) -> None:
    """With the embedded data the image shape is known here, so G and D are built once."""
    if spec.data.source != "embedded":
        return
    from distgan.data import EMBEDDED_DIR, read_manifest
    from distgan.train.launch import check_model

    check_model(spec, read_manifest(EMBEDDED_DIR), job_file)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "job"


def last_lines(text: str, n: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def describe_failure(jobs: Jobs, job_id: str) -> str:
    """One line for a job that did not succeed: its status and Ray's exit reason."""
    info = jobs.info(job_id)
    reason = (info.message or "no reason given").strip().splitlines()
    code = f", exit code {info.driver_exit_code}" if info.driver_exit_code is not None else ""
    return f"job {job_id} {info.status}{code}: {reason[-1] if reason else ''}"
