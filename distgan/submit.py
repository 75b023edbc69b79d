"""The client side of running a job on a Ray cluster through Ray's Jobs API.

    job = prepare("jobs/quickstart.yaml", ["train.steps=100"])   # validated here
    jobs = connect("http://head:8265")   # address: flag, then RAY_ADDRESS, then local
    sid = jobs.submit(job)
    jobs.status(sid); jobs.logs(sid); jobs.stop(sid)

The token comes from ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``, and goes in the ``Authorization`` header: Ray 2.60's client sends it on its
own only when ``RAY_AUTH_MODE=token`` is set in the client. The token is never printed, logged or
put in the job's runtime environment, and goes over plain http only to a loopback address (an
SSH tunnel) unless the user says ``--insecure-http``.

No secret travels with the job: Ray 2.60 writes a job's runtime env (its ``env_vars`` too) into
``runtime_env_agent.log`` on the nodes and returns it, with the entrypoint, from its Jobs API to
every token holder, and has no channel for secrets. Credentials (S3, W&B) live on the cluster's
nodes: an instance role, a Kubernetes secret as environment of the Ray pods, or ``ray start`` run
with the variable set (cluster/README.md).

What travels to the cluster: the project folder as the job's ``working_dir`` (without ``.git``,
virtual environments, ``runs/``, ``data/`` or caches), with the module of a model of the user's
that the job names (``upload.py`` checks both before anything is sent). Ray runs the driver in
that folder and puts it first on every worker's ``sys.path``, so the submitted ``distgan/`` (not
whatever version a node has installed) runs in the driver and in every worker. The entrypoint is
``python -m distgan.cli train JOB --set ...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import secrets
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

from distgan.config import load_job
from distgan.errors import ClusterError, JobError, UserError
from distgan.specs import JobSpec
from distgan.upload import check_upload

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
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = self._call(lambda: JobSubmissionClient(address, headers=self._headers))

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

    def follow(self, job_id: str, out, poll: float = 2.0) -> None:
        """Writes the job's log to ``out`` as it comes, until the job ends. Ray's log stream can
        close while the job still runs (a dashboard restart, a proxy's idle timeout): then the
        log is polled until the job ends. Ctrl-C stops only the following: the job goes on, and
        the message says so."""
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
                ended = self.status(job_id) in TERMINAL
                text = self.logs(job_id)
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

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> str:
        """Polls until the job ends (or ``timeout`` seconds); returns the last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
                return status
            time.sleep(poll)


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
    temporary working dir, where local data is not uploaded. URIs are opened here (no request
    is sent), so a scheme pyarrow does not know fails before the job is sent."""
    from distgan.storage import is_uri, open_location

    for field, value in (("data.source", spec.data.source), ("run.storage", spec.run.storage)):
        if is_uri(value) and "@" in urlparse(value).netloc:
            raise JobError(
                f"{job_file}: {field}: the URI holds credentials (USER:SECRET@), which would "
                "travel in the job's entrypoint and files, where Ray's logs and Jobs API show "
                "them; drop them and give the cluster's nodes their credentials (an instance "
                "role, or a Kubernetes secret as environment of the Ray pods)"
            )
        if is_uri(value):
            try:
                open_location(value, field)
            except UserError as e:
                raise JobError(f"{job_file}: {e}") from None
    source = spec.data.source
    if source != "embedded" and not is_uri(source) and not Path(source).is_absolute():
        raise JobError(
            f"{job_file}: data.source: {source!r} is a relative local path, which the cluster "
            "cannot see (local data is not uploaded); put the shards in object storage "
            "(distgan data import SRC --out s3://BUCKET/data) or use an absolute path on a "
            "shared file system"
        )
    storage = spec.run.storage
    if storage and not is_uri(storage) and not Path(storage).is_absolute():
        raise JobError(
            f"{job_file}: run.storage: {storage!r} is relative; on a cluster it must be a URI "
            "such as s3://bucket/runs or an absolute path on a shared file system"
        )


def entrypoint(verb: str, job_rel: str | None, overrides: list[str], resume: str = "") -> str:
    """The shell command the cluster runs: ``distgan train`` (or ``tune`` for a job with a
    ``tune:`` section) on the shipped job file, or ``train --resume RUN`` (``tune --resume`` for
    a search)."""
    args = ["python", "-m", "distgan.cli", verb]
    args += [job_rel] if job_rel else []
    args += ["--resume", resume] if resume else []
    for item in overrides:
        args += ["--set", item]
    return " ".join(shlex.quote(a) for a in args)


STOP_GRACE_S = 60  # seconds Ray's job stop waits after its SIGTERM before it kills the job


def runtime_env(root: Path | None, job_dir: Path) -> dict:
    """The project, distgan's source with it (or, for an installed distgan, the job's folder),
    and one setting of Ray's job supervisor: how long ``distgan stop`` (Ray's job stop) lets the
    job write its final checkpoint after the SIGTERM (Ray's default, 3 s, kills it first). No
    other ``env_vars``: Ray logs them and its Jobs API returns them, so no secret may go there,
    and `distgan train` sets distgan's own through ray.init (Ray refuses a job whose runtime env
    and its driver's ray.init name the same variable)."""
    return {
        "working_dir": str(root or job_dir),
        "excludes": list(EXCLUDES),
        "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)},
    }


@dataclasses.dataclass(frozen=True)
class Submission:
    """A validated job, ready for the Jobs API."""

    spec: JobSpec
    submission_id: str
    entrypoint: str
    runtime_env: dict
    metadata: dict


def prepare(job_file: str | None, overrides: list[str], resume: str = "") -> Submission:
    """Validates the job here (no cluster needed) and builds what the Jobs API is sent, all of
    which Ray shows to every token holder: no value of this shell's environment goes in it.

    ``resume``: a run or a search in shared storage to continue (its own job, with
    ``overrides``)."""
    root = project_root()
    if resume:
        spec, job_rel, base, verb = _resume_job(resume, job_file, overrides, root)
    else:
        if not job_file:
            raise JobError("distgan submit: a job file is required (or --resume RUN)")
        spec = load_job(job_file, overrides)  # a bad job never reaches the cluster
        base = root or Path(job_file).resolve().parent
        job_rel = _relative_job(job_file, base)
        verb = "tune" if spec.tune.space else "train"
    check_cluster_paths(spec, job_file or resume)
    _check_model(spec, job_file or resume)
    check_upload(base, EXCLUDES, spec, job_file or resume)  # its size; own models' modules in it
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Submission(
        spec=spec,
        submission_id=f"distgan-{_slug(spec.run.name)}-{stamp}-{secrets.token_hex(2)}",
        entrypoint=entrypoint(verb, job_rel, overrides, resume),
        runtime_env=runtime_env(root, base),
        metadata={"distgan_job": job_rel or resume, "distgan_run": spec.run.name},
    )


def _relative_job(job_file: str, base: Path) -> str:
    try:
        return Path(job_file).resolve().relative_to(base).as_posix()
    except ValueError:
        raise JobError(
            f"{job_file}: outside the project ({base}), so it would not travel to the cluster; "
            f"copy it under {base / 'jobs'}"
        ) from None


def _resume_job(resume: str, job_file: str | None, overrides: list[str], root: Path | None):
    """A run or a search to continue on the cluster: it must be in storage the cluster reaches
    (a URI or a shared absolute path), and is read here to validate the job and the overrides.
    Returns (the job, the job file to ship or None, the project's folder, the verb)."""
    from distgan.config import RESOLVED_JOB, parse_job
    from distgan.storage import is_uri
    from distgan.train.lease import check_not_held
    from distgan.train.outputs import existing_run_dir
    from distgan.tune.search import EXPERIMENT

    if not is_uri(resume) and not Path(resume).is_absolute():
        raise JobError(
            f"--resume {resume}: a relative local path; the cluster reaches a run by its URI in "
            "run.storage (or an absolute path on a shared file system)"
        )
    run = existing_run_dir(resume)
    check_not_held(run, f"--resume {resume}")  # the cluster's train would refuse it later
    resolved = run.child(RESOLVED_JOB)
    base = root or Path.cwd()
    verb = "tune" if run.is_dir(EXPERIMENT) else "train"  # a search keeps Tune's state there
    if job_file:
        return load_job(job_file, overrides), _relative_job(job_file, base), base, verb
    return parse_job(resolved.read_bytes(), str(resolved), overrides), None, base, verb


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
