"""``distgan train JOB [--set a.b=c ...] [--dry-run] [--resume RUN_DIR]``.

Loads and validates the job, creates ``runs/<id>-<name>/`` with ``job.resolved.yaml`` as its first
file, and trains on Ray. ``--resume RUN_DIR`` continues a run from its latest checkpoint, with
the run's own resolved job (JOB may be omitted) plus any ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from distgan.cli.flags import add_overrides_flag
from distgan.config import RESOLVED_JOB, dump_yaml, load_job, write_resolved
from distgan.errors import CheckpointError, JobError


def add_parser(verbs) -> None:
    p = verbs.add_parser("train", help="train a job on Ray", description=__doc__.split("\n")[0])
    p.add_argument("job", nargs="?", help="job file, e.g. jobs/quickstart.yaml")
    add_overrides_flag(p, "optim.lr_g=1e-4")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the job against its data (no Ray), print the resolved job and exit",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(run=run)


def _resume_spec(args: argparse.Namespace):
    from distgan.train import checkpoint as ckpts
    from distgan.train.outputs import existing_run_dir

    run_dir = existing_run_dir(args.resume)
    job_file = Path(args.job) if args.job else run_dir / RESOLVED_JOB
    spec = load_job(job_file, args.overrides)
    before = load_job(run_dir / RESOLVED_JOB)
    for section in ("model", "data"):
        if getattr(spec, section) != getattr(before, section):
            raise JobError(
                f"{job_file}: {section}: differs from the run being resumed ({run_dir}); "
                f"resume with the run's own {section} section"
            )
    spec = dataclasses.replace(spec, run=before.run)
    latest = ckpts.latest(run_dir)
    if latest is None:
        written = ckpts.checkpoints(run_dir)
        if written:  # say why the newest one cannot be used
            try:
                ckpts.load(written[-1])
            except CheckpointError as e:
                raise CheckpointError(
                    f"{e}; {run_dir} has no earlier checkpoint that loads"
                ) from None
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume from; start a new run with distgan train JOB"
        )
    return spec, run_dir, str(latest / ckpts.STATE_FILE)


def run(args: argparse.Namespace) -> int:
    from distgan.train import checkpoint as ckpts
    from distgan.train.launch import check_job, launch, preflight, ray_session, wait_seconds
    from distgan.train.outputs import new_run_dir, run_root

    if args.resume:
        spec, run_dir, resume_from = _resume_spec(args)
        job_source = str(args.job or Path(run_dir) / RESOLVED_JOB)
    else:
        if not args.job:
            raise JobError("distgan train: a job file is required (or --resume RUN_DIR)")
        spec = load_job(args.job, args.overrides)
        run_dir, resume_from, job_source = None, None, args.job
    t0 = time.monotonic()
    # Every check comes before the run directory, so a job that cannot run writes nothing; those
    # that need no Ray come first.
    manifest = check_job(spec, job_source)
    if args.dry_run:
        sys.stdout.write(dump_yaml(spec))
        return 0
    if resume_from:
        ckpt = ckpts.load(resume_from)
        ckpts.check_compatible(ckpt, spec, manifest.shape, resume_from, manifest.num_classes)
    with ray_session():
        manifest, plan = preflight(spec, job_source, manifest)
        if run_dir is None:
            run_dir = new_run_dir(run_root(spec.run), spec.run.name, spec.run.storage)
        write_resolved(spec, run_dir)
        try:
            metrics = launch(spec, run_dir, manifest, plan, job_source, resume_from=resume_from)
        except KeyboardInterrupt:
            sys.stderr.write(
                f"interrupted; continue from the last checkpoint with: "
                f"distgan train --resume {run_dir}\n"
            )
            return 130
    if metrics.get("stopped"):  # the divergence guard gave up (train/guard.py)
        sys.stderr.write(f"error: {metrics['stopped']}\n")
        return 1
    step = int(metrics.get("step", 0))
    grids = sorted((Path(run_dir) / "samples").glob("step_*.png"))
    print(f"done: step {step} in {wait_seconds(t0)} · run {run_dir}")
    if grids:
        print(f"samples: {grids[-1]}")
    print(f"more samples: distgan sample {run_dir} --n 64 --out grid.png")
    return 0
