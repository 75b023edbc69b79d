"""``distgan train JOB [--set a.b=c ...] [--dry-run] [--resume RUN_DIR]``.

Loads and validates the job, creates ``runs/<id>-<name>/`` with ``job.resolved.yaml`` as its first
file, and trains on Ray. ``--resume RUN_DIR`` continues a run from its latest checkpoint, with
the run's own resolved job (JOB may be omitted) plus any ``--set`` overrides. ``--dry-run`` runs
every check that needs no Ray (``launch.check_job``), prints the resolved job and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
import time

from distgan.cli.flags import add_overrides_flag
from distgan.config import RESOLVED_JOB, dump_yaml, load_job, parse_job
from distgan.errors import CheckpointError, JobError
from distgan.progress import duration
from distgan.storage import join
from distgan.train.lease import RunLease, check_not_held
from distgan.user_models import keep_record

SPENT_S = 1.0  # a resume with less of train.max_minutes left than this would train nothing


def add_parser(verbs) -> None:
    p = verbs.add_parser("train", help="train a job on Ray", description=__doc__.split("\n")[0])
    p.add_argument("job", nargs="?", help="job file, e.g. jobs/quickstart.yaml")
    add_overrides_flag(p, "optim.lr_g=1e-4")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check that needs no Ray (data, model, feature network), print the "
        "resolved job and exit",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(run=run)


def _resume_spec(args: argparse.Namespace):
    """The job to continue (the run's own, with ``--set`` overrides), the run (a folder or a
    URI) and the checkpoint to start from."""
    from distgan.train import checkpoint as ckpts
    from distgan.train.outputs import existing_run_dir
    from distgan.tune.summary import is_search

    run = existing_run_dir(args.resume)
    check_not_held(run)  # one writer per run: before anything else is said about it
    resolved = run.child(RESOLVED_JOB)
    before = parse_job(resolved.read_bytes(), str(resolved))
    if is_search(run, before):
        raise JobError(
            f"{run}: a search (distgan tune's), not a run; continue it with: distgan tune "
            f"--resume {shlex.quote(run.typed)}"
        )
    if args.job:
        job_file = args.job
        # A model of the user's is checked against the module file the run was trained with.
        spec = keep_record(load_job(job_file, args.overrides), before)
    else:
        job_file = str(resolved)
        spec = parse_job(resolved.read_bytes(), job_file, args.overrides)
    for section in ("model", "data"):
        if getattr(spec, section) != getattr(before, section):
            raise JobError(
                f"{job_file}: {section}: differs from the run being resumed ({run}); "
                f"resume with the run's own {section} section"
            )
    spec = dataclasses.replace(spec, run=before.run)
    latest = ckpts.latest(run.uri)
    if latest is None:
        written = ckpts.checkpoints(run.uri)
        if written:  # say why the newest one cannot be used
            try:
                ckpts.load(written[-1])
            except CheckpointError as e:
                raise CheckpointError(f"{e}; {run} has no earlier checkpoint that loads") from None
        raise CheckpointError(
            f"{run}: no checkpoint to resume from; start a new run with distgan train JOB"
        )
    return spec, run, join(str(latest), ckpts.STATE_FILE)


def _check_left_to_train(spec, ckpt: dict, run_dir) -> None:
    """JobError when resuming ``run_dir`` from ``ckpt`` would train nothing: the run is at
    ``train.steps`` already, or its ``train.max_minutes`` (counted over every part of the run,
    like the checkpoint's ``elapsed_s``) is spent."""
    t, step = spec.train, int(ckpt["step"])
    trained = float(ckpt.get("metrics", {}).get("elapsed_s", 0.0))
    if step >= t.steps:
        raise JobError(
            f"{run_dir}: train.steps is {t.steps:,} and the run is at step {step:,} already; "
            f"resume with more, e.g. --set train.steps={2 * step}"
        )
    # The ranks stop once any one's clock passes the limit: rank 0's figure may fall short of
    # it by a little, so a run that ended by its time limit has under SPENT_S left.
    if t.max_minutes and 60 * t.max_minutes - trained < SPENT_S:
        more = f"{t.max_minutes:g} more minute" + ("s" if t.max_minutes != 1 else "")
        raise JobError(
            f"{run_dir}: train.max_minutes={t.max_minutes:g} is spent: the run has trained "
            f"for {duration(trained)} (the limit counts every part of the run); resume with "
            f"--set train.max_minutes={round(trained / 60 + t.max_minutes, 2):g} ({more}), "
            "or 0 for no limit"
        )


def try_write_report(run) -> None:
    """report.html into the run's (or search's) storage; a failure to draw it never stops the
    training (one line on stderr says why)."""
    from distgan.report import write_report

    try:
        write_report(run)
    except Exception as e:  # noqa: BLE001 - the run matters more than its page
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        sys.stderr.write(f"distgan: report.html not written ({type(e).__name__}: {first})\n")


class CheckpointReports:
    """The progress callback that rewrites report.html at a checkpoint: at the first one, then
    at most every ``REPORT_EVERY_S`` (a report takes about a second of the driver's CPU, which
    the workers share on a small machine); the run's end always writes one."""

    REPORT_EVERY_S = 60.0

    def __init__(self, run_dir, every: int, write=try_write_report, clock=time.monotonic):
        self.run_dir, self.every, self.write, self.clock = run_dir, every, write, clock
        self.last = -float("inf")

    def __call__(self, m: dict) -> None:
        if m["step"] % self.every == 0 and self.clock() - self.last >= self.REPORT_EVERY_S:
            self.write(self.run_dir)
            self.last = self.clock()


def _interrupt(signum, frame) -> None:
    from distgan.train.follow import Stopped  # imported by run() before this is installed

    raise Stopped(signum)


def _stopped(e: KeyboardInterrupt, run_dir) -> int:
    """The lines a stopped run ends with, and its exit code (130 for SIGINT, 143 for SIGTERM)."""
    from distgan.train.outputs import read_status

    code = getattr(e, "exit_code", 130)
    if run_dir is None:
        sys.stderr.write("distgan: stopped before the run started; nothing was written\n")
        return code
    status = read_status(run_dir)
    saved = status.get("checkpoint_step")
    step = status.get("step", 0)
    if getattr(e, "at_once", False) and saved is not None:
        sys.stderr.write(f"distgan: stopped at once at step {step}: the steps after the "
                         f"checkpoint at step {saved} are lost\n")  # fmt: skip
    elif saved is not None:
        sys.stderr.write(f"distgan: stopped at step {saved} with a final checkpoint\n")
    else:
        sys.stderr.write(f"distgan: stopped at step {step}, before the first checkpoint: "
                         "nothing to resume\n")  # fmt: skip
        return code
    sys.stderr.write(f"continue with: distgan train --resume {shlex.quote(run_dir.typed)}\n")
    return code


def _last_part(run_dir) -> str:
    """One line on how the run's last part ended, from its status.json ("" if it never said)."""
    from distgan.train.outputs import read_status

    status = read_status(run_dir)
    how = {"stopped": f"was stopped ({status.get('signal', 'distgan stop')})",
           "failed": f"failed ({status.get('error', 'an error')})",
           "done": "ended", "running": "ended without a word (its process was killed)"}  # fmt: skip
    if status.get("status") not in how:
        return ""
    return f"distgan: the run's last part {how[status['status']]} at step {status['step']}\n"


def run(args: argparse.Namespace) -> int:
    from distgan.train.threads import threads_asked

    threads_asked()  # before PyTorch loads OpenMP, which reads the variable (and complains)
    from distgan.train import checkpoint as ckpts
    from distgan.train.follow import Stopped, wait_seconds
    from distgan.train.launch import check_job, launch, preflight
    from distgan.train.outputs import new_run_dir, sample_grids, storage_home, write_resolved
    from distgan.train.session import end_local_ray_now, ray_session

    if args.resume:
        spec, run_dir, resume_from = _resume_spec(args)
        job_source = str(args.job or run_dir.child(RESOLVED_JOB))
        sys.stderr.write(_last_part(run_dir))
    else:
        if not args.job:
            raise JobError("distgan train: a job file is required (or --resume RUN_DIR)")
        spec = load_job(args.job, args.overrides)
        run_dir, resume_from, job_source = None, None, args.job
    t0 = time.monotonic()
    # Every check comes before the run directory, so a job that cannot run writes nothing; those
    # that need no Ray come first (the data, the model, the storage), and they are all a dry run
    # does besides printing the job.
    manifest = check_job(spec, job_source)
    if resume_from:
        ckpt = ckpts.load(resume_from)
        ckpts.check_compatible(ckpt, spec, manifest.shape, resume_from, manifest.num_classes)
        _check_left_to_train(spec, ckpt, run_dir)
    if args.dry_run:
        sys.stdout.write(dump_yaml(spec))
        return 0
    lease = None
    if run_dir is not None:  # one writer per run: refused here if a live process holds it
        lease = RunLease(run_dir, "distgan train --resume").acquire()
    # SIGTERM (distgan stop, Ray's job stop, a scheduler) before the run is followed stops as
    # Ctrl-C does; once it is, follow.Interrupts takes both.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ray_session():
            manifest, plan = preflight(spec, job_source, manifest)
            if run_dir is None:
                run_dir = new_run_dir(storage_home(spec.run), spec.run.name)
                lease = RunLease(run_dir, "distgan train").acquire()
            write_resolved(spec, run_dir)
            try:
                metrics = launch(
                    spec, run_dir, manifest, plan, job_source, resume_from=resume_from,
                    on_record=CheckpointReports(run_dir, spec.train.checkpoint_every),
                )  # fmt: skip
            except Stopped as e:
                if e.at_once:
                    # The fit thread is still inside Ray, which cannot shut down under it:
                    # end the local Ray's processes and this one here.
                    code = _stopped(e, run_dir)
                    end_local_ray_now()
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
                raise
            try_write_report(run_dir)  # the last records (a run stopped by train.max_minutes)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, distgan stop (follow.Stopped)
        return _stopped(e, run_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if lease is not None:
            lease.release()
    if metrics.get("stopped"):  # the divergence guard gave up (train/guard.py)
        sys.stderr.write(f"error: {metrics['stopped']}\n")
        return 1
    step = int(metrics.get("step", 0))
    grids = sample_grids(run_dir)
    took = wait_seconds(t0)
    if resume_from:  # the whole run's training time, then this part's
        total = int(metrics.get("elapsed_s", 0))
        took = f"{total // 60}m{total % 60:02d}s of training (this part {took})"
    print(f"done: step {step} in {took} · run {run_dir}")
    print(f"report: {run_dir.child('report.html')}")
    if grids:
        print(f"samples: {run_dir.child('samples', grids[-1])}")
    print(f"more samples: distgan sample {shlex.quote(run_dir.typed)} --n 64 --out grid.png")
    return 0
