"""``distgan tune JOB [--set a.b=c ...]`` and ``distgan tune [JOB] --resume SEARCH_DIR``.

Searches the values of the job's ``tune.space`` with Ray Tune: each trial trains the job with its
sampled values and reports ``tune.metric`` (FID by default) at every evaluation; ASHA stops poor
trials early, PBT clones the best ones. The search directory ``runs/<id>-<name>-tune/`` ends with
``results.csv``, ``best.yaml`` (ready for ``distgan train``) and the best trial's samples.
``--resume`` continues an interrupted search from Tune's saved state.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from distgan.cli.flags import add_overrides_flag
from distgan.config import RESOLVED_JOB, load_job
from distgan.errors import JobError


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "tune",
        help="search learning rates, losses, architectures",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "job", nargs="?", help="job file with a tune section, e.g. jobs/tune_quickstart.yaml"
    )
    add_overrides_flag(p, "tune.num_samples=8")
    p.add_argument("--resume", metavar="SEARCH_DIR", help="continue an interrupted search")
    p.set_defaults(run=run)


def _resume_spec(args: argparse.Namespace):
    search_dir = Path(args.resume)
    if not (search_dir / RESOLVED_JOB).is_file():
        raise JobError(
            f"{search_dir}: not a distgan search directory (no {RESOLVED_JOB}); pass a folder "
            "runs/<id>-<name>-tune/"
        )
    spec = load_job(search_dir / RESOLVED_JOB)
    if args.job or args.overrides:
        given = load_job(args.job or search_dir / RESOLVED_JOB, args.overrides)
        if given != spec:
            raise JobError(
                f"{args.job or '--set'}: differs from the search being resumed ({search_dir}); "
                f"resume with its own job: distgan tune --resume {search_dir}"
            )
    return spec, search_dir, str(search_dir / RESOLVED_JOB)


def run(args: argparse.Namespace) -> int:
    from distgan.train.launch import ray_session, wait_seconds
    from distgan.train.outputs import new_run_dir, write_resolved
    from distgan.tune.results import format_table, trial_rows, write_results
    from distgan.tune.search import check_search, run_search

    if args.resume:
        spec, search_dir, source = _resume_spec(args)
    else:
        if not args.job:
            raise JobError("distgan tune: a job file is required (or --resume SEARCH_DIR)")
        spec = load_job(args.job, args.overrides)
        search_dir, source = None, args.job
    check_search(spec, source)
    t0 = time.monotonic()
    with ray_session():
        if search_dir is None:
            search_dir = Path(new_run_dir(spec.run.root, f"{spec.run.name}-tune").path)
            write_resolved(spec, search_dir)
        t = spec.tune
        print(
            f"distgan tune: {search_dir} · {t.scheduler} · {t.num_samples} sample(s) of "
            f"{', '.join(t.space)} · {t.metric} every {spec.eval.every} steps"
            + (" · resuming" if args.resume else ""),
            flush=True,
        )
        try:
            grid, interrupted = run_search(spec, Path(search_dir), source, bool(args.resume))
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:
            sys.stderr.write(f"interrupted; continue with: distgan tune --resume {search_dir}\n")
            return 130
    rows = trial_rows(grid, spec, search_dir)
    best = write_results(rows, spec, Path(search_dir))
    print(format_table(rows, spec))
    print(
        f"done: {len(rows)} trials, {sum(r.steps for r in rows):,} training steps in "
        f"{wait_seconds(t0)} · {Path(search_dir) / 'results.csv'}"
    )
    if best is None:
        print(
            "no trial measured the metric; see the trials' logs under", Path(search_dir) / "trials"
        )
        return 1
    print(f"best: {best}  (train it: distgan train {best})")
    return 0
