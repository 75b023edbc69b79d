"""``distgan submit JOB [--address URL] [--set a.b=c ...] [--resume RUN] [--wait]``.

Validates the job here, ships it with the project to a Ray cluster through the Jobs API (the
entrypoint runs ``distgan train`` there, or ``distgan tune`` for a job with a ``tune:`` section)
and prints the job id and the dashboard address. ``--resume RUN`` continues a run (or a search)
kept in shared storage. ``--wait`` follows the job's log until it ends; a job that fails is one
error line with its status and exit reason (its last log lines are printed just above it).

``--env NAME`` is refused: Ray 2.60 logs a job's environment variables and its Jobs API returns
them, so credentials belong on the cluster's nodes (cluster/README.md). ``--insecure-http`` lets
the token go over plain http to a host that is not loopback.
"""

from __future__ import annotations

import argparse
import sys

from distgan.cli.flags import add_overrides_flag
from distgan.errors import ClusterError, JobError

ENV_REFUSED = (
    "--env {name}: refused: Ray writes a job's environment variables into its nodes' "
    "runtime_env_agent.log and returns them from the Jobs API to every token holder; give the "
    "cluster's nodes the variable instead: an instance role (IAM) for S3, a Kubernetes secret as "
    "environment of the Ray pods, or `ray start` run with it set (cluster/README.md)"
)


def add_address_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        metavar="URL",
        help="the cluster's Jobs API (dashboard) URL; default RAY_API_SERVER_ADDRESS, then "
        "RAY_ADDRESS, then http://127.0.0.1:8265",
    )
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="send the token over plain http to a host that is not loopback (anyone on the way "
        "can read it); prefer https:// or an SSH tunnel to 127.0.0.1",
    )


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "submit", help="run a job on a Ray cluster", description=__doc__.split("\n")[0]
    )
    p.add_argument("job", nargs="?", help="job file, e.g. jobs/quickstart.yaml")
    add_address_flag(p)
    add_overrides_flag(p, "run.storage=s3://bucket/runs")
    # Kept so that its users read why it is refused (ENV_REFUSED), not "unrecognized arguments".
    p.add_argument("--env", metavar="NAME", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument(
        "--resume",
        metavar="RUN",
        default="",
        help="continue a run or a search in run.storage (its URI)",
    )
    p.add_argument("--wait", action="store_true", help="follow the job's log until it ends")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from distgan.jobs_api import connect, describe_failure
    from distgan.submit import prepare
    from distgan.train.cluster import check_shared_storage

    if args.env:
        raise JobError(ENV_REFUSED.format(name=args.env[0]))
    # Before any connection: a bad job is never sent.
    job = prepare(args.job, args.overrides, args.resume)
    jobs = connect(args.address, args.insecure_http)
    nodes = jobs.alive_nodes()  # None when the State API does not answer: train checks again
    if nodes is not None:
        check_shared_storage(job.spec, args.job or args.resume, nodes)
    job_id = jobs.submit(job, out=sys.stderr)  # says so if it waits for a starting cluster
    print(f"submitted: {job_id}")
    print(f"dashboard: {jobs.address}/#/jobs/{job_id}")
    if not args.wait:
        print(f"follow it: distgan logs {job_id} --follow")
        return 0
    sys.stdout.flush()
    jobs.follow(job_id, sys.stdout)
    status = jobs.wait(job_id, timeout=60)  # the log ends a moment before the status does
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED")
        return 0
    if status == "FAILED":  # its last log lines are just above, from follow()
        raise ClusterError(describe_failure(jobs, job_id) + f"; full log: distgan logs {job_id}")
    print(f"job {job_id} {status}")
    return 1
