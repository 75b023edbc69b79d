"""What a job takes to a Ray cluster: its entrypoint, its files and its checks, before Ray's Jobs
API (``jobs_api.py``) sends it.

    job = prepare("jobs/quickstart.yaml", ["train.steps=100"])   # validated here
    jobs = connect("http://head:8265")   # jobs_api.connect
    sid = jobs.submit(job)

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

import dataclasses
import secrets
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

from distgan.config import load_job
from distgan.errors import JobError, UserError
from distgan.specs import JobSpec
from distgan.upload import check_upload

# gitignore patterns for the working_dir upload, anchored at the project's root ("/data" is the
# project's local data, not the package's own distgan/data).
EXCLUDES = [
    ".git", ".venv", "venv", "/env", "/runs", "/data", "/build", "/dist", "/.gpu", "/.whl",
    "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
]  # fmt: skip


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
