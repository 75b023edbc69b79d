"""``distgan status ID``, ``distgan logs ID [--follow]``, ``distgan stop ID``, ``distgan jobs``.

The jobs of a Ray cluster, through its Jobs API; the address and the token are found as for
``distgan submit`` (``--address``, then ``RAY_API_SERVER_ADDRESS``, then ``RAY_ADDRESS``, then
http://127.0.0.1:8265; the token from ``RAY_AUTH_TOKEN``, then ``~/.ray/auth_token``), and the
token goes over plain http only to a loopback address unless ``--insecure-http`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time

from distgan.cli.submit import add_address_flag


def add_parser(verbs) -> None:
    p = verbs.add_parser("status", help="the status of a submitted job")
    p.add_argument("id", help="the job id that distgan submit printed")
    add_address_flag(p)
    p.set_defaults(run=run_status)

    p = verbs.add_parser("logs", help="the log of a submitted job")
    p.add_argument("id", help="the job id that distgan submit printed")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    add_address_flag(p)
    p.set_defaults(run=run_logs)

    p = verbs.add_parser("stop", help="stop a submitted job")
    p.add_argument("id", help="the job id that distgan submit printed")
    add_address_flag(p)
    p.set_defaults(run=run_stop)

    p = verbs.add_parser("jobs", help="a table of the cluster's jobs")
    add_address_flag(p)
    p.set_defaults(run=run_jobs)


def run_status(args: argparse.Namespace) -> int:
    """Prints the status; for a failed job also its exit reason and last log lines."""
    from distgan.jobs_api import connect, describe_failure, last_lines

    jobs = connect(args.address, args.insecure_http)
    status = jobs.status(args.id)
    if status == "FAILED":
        print(describe_failure(jobs, args.id))
        print(last_lines(jobs.logs(args.id)))
    else:
        print(f"{args.id}: {status}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from distgan.jobs_api import connect

    jobs = connect(args.address, args.insecure_http)
    if args.follow:
        jobs.follow(args.id, sys.stdout)
    else:
        sys.stdout.write(jobs.logs(args.id))
    return 0


def run_stop(args: argparse.Namespace) -> int:
    """Asks Ray to stop the job and waits (up to a minute) until it reports an end state."""
    from distgan.jobs_api import connect

    jobs = connect(args.address, args.insecure_http)
    if not jobs.stop(args.id):
        print(f"{args.id}: already ended ({jobs.status(args.id)})")
        return 0
    print(f"{args.id}: {jobs.wait(args.id, timeout=60)}")
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    """One row a submitted job, newest last: id, status, start, duration, job file."""
    from distgan.jobs_api import connect

    jobs = connect(args.address, args.insecure_http)
    rows = [("ID", "STATUS", "STARTED", "DURATION", "JOB")]
    listed = [j for j in jobs.list() if j.submission_id]
    for j in sorted(listed, key=lambda j: j.start_time or 0):
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((j.start_time or 0) / 1000))
        end = j.end_time or time.time() * 1000
        seconds = int((end - (j.start_time or end)) / 1000)
        job_file = (j.metadata or {}).get("distgan_job") or j.entrypoint
        rows.append(
            (
                j.submission_id,
                str(j.status),
                start,
                f"{seconds // 60}m{seconds % 60:02d}s",
                job_file,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    if len(rows) == 1:
        print("(no jobs yet: distgan submit JOB)")
    return 0
