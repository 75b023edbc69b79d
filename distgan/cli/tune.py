"""``distgan tune JOB [--set a.b=c ...]`` and ``distgan tune [JOB] --resume SEARCH_DIR``.

Searches the values of the job's ``tune.space`` with Ray Tune: each trial trains the job with its
sampled values and reports ``tune.metric`` (FID by default) at every evaluation; ASHA stops poor
trials early, PBT clones the best ones. The search directory ``<run.storage or run.root>/<id>-
<name>-tune/`` (a folder or a URI) ends with ``results.csv``, ``best.yaml`` (ready for ``distgan
train``) and the best trial's samples; with ``tune.objectives`` (a metric and a cost), with
``pareto.csv`` and ``front/<trial>.yaml``, a job per trial of the front, in place of best.yaml.
``--resume SEARCH`` (the folder or its URI) continues an
interrupted search from Tune's saved state.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time

from distgan.cli.flags import add_overrides_flag
from distgan.config import RESOLVED_JOB, load_job, parse_job
from distgan.errors import JobError
from distgan.storage import display


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
    p.add_argument(
        "--resume", metavar="SEARCH_DIR", help="continue an interrupted search (folder or URI)"
    )
    p.set_defaults(run=run)


def _resume_spec(args: argparse.Namespace):
    """The search to continue (a folder or a URI in run.storage), its own job, and the source
    named in messages."""
    from distgan.storage import open_location

    search = open_location(args.resume, field="--resume")
    resolved = search.child(RESOLVED_JOB)
    if not search.is_file(RESOLVED_JOB):
        raise JobError(
            f"{search}: not a distgan search directory (no {RESOLVED_JOB}); pass a folder "
            "runs/<id>-<name>-tune/ or the search's URI in run.storage"
        )
    spec = parse_job(resolved.read_bytes(), str(resolved))
    if args.job or args.overrides:
        if args.job:
            given = load_job(args.job, args.overrides)
        else:
            given = parse_job(resolved.read_bytes(), str(resolved), args.overrides)
        if given != spec:
            raise JobError(
                f"{args.job or '--set'}: differs from the search being resumed ({search}); "
                f"resume with its own job: distgan tune --resume {shlex.quote(search.uri)}"
            )
    return spec, search, str(resolved)


def run(args: argparse.Namespace) -> int:
    from distgan.train.threads import threads_asked

    threads_asked()  # before PyTorch loads OpenMP, which reads the variable (and complains)
    from distgan.cli.train import try_write_report
    from distgan.report import REPORT
    from distgan.train.follow import wait_seconds
    from distgan.train.launch import check_storage
    from distgan.train.outputs import new_run_dir, storage_home, write_resolved, write_status
    from distgan.train.session import ray_session
    from distgan.tune.front import FRONT, write_front
    from distgan.tune.results import RESULTS, format_table, trial_rows, write_results
    from distgan.tune.search import check_search, run_search, searched_job
    from distgan.tune.trials import TRIALS

    if args.resume:
        spec, search, source = _resume_spec(args)
    else:
        if not args.job:
            raise JobError("distgan tune: a job file is required (or --resume SEARCH_DIR)")
        spec = load_job(args.job, args.overrides)
        search, source = None, args.job
    check_search(spec, source)
    check_storage(spec, source)
    t0 = time.monotonic()
    with ray_session():
        if search is None:
            # The search's home is its storage (run.storage), like a run's: on a cluster the
            # trials run on nodes that share no disk with this driver.
            search = new_run_dir(storage_home(spec.run), f"{spec.run.name}-tune")
            write_resolved(spec, search)
        t = searched_job(spec).tune  # its metric: the objectives' one, when the job has them
        print(
            f"distgan tune: {search} · {t.scheduler} · {t.num_samples} sample(s) of "
            f"{', '.join(t.space)} · {t.metric} every {spec.eval.every} steps"
            + (" · resuming" if args.resume else ""),
            flush=True,
        )
        # In place of Tune's own pointers (its experiment folder, a TensorBoard of Ray's temp
        # dir: RAY_ENV in train/session.py keeps those off the screen), the search's own.
        print(
            f"TensorBoard: tensorboard --logdir {search.child(TRIALS)}  (each trial's tb/)",
            flush=True,
        )
        write_status(search, "running")
        terminated: list[int] = []

        def on_sigterm(signum, frame) -> None:
            # Tune stops a search gracefully (its state saved, its trials ended) on its first
            # SIGINT or on SIGUSR1: SIGTERM (distgan stop, a scheduler) takes that path too.
            terminated.append(signum)
            os.kill(os.getpid(), signal.SIGUSR1)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            grid, interrupted = run_search(spec, search, source, bool(args.resume))
        except KeyboardInterrupt:
            interrupted = True
        except Exception as e:  # distgan runs shows it failed; the error goes on as it was
            write_status(search, "failed", error=type(e).__name__)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        if interrupted:
            write_status(search, "stopped")
            try_write_report(search)
            sys.stderr.write(
                "distgan: the search stopped; continue with: "
                f"distgan tune --resume {shlex.quote(search.uri)}\n"
            )
            return 143 if terminated else 130
    spec = searched_job(spec)
    rows = trial_rows(grid, spec, search)
    if spec.tune.objectives:
        front = write_front(rows, spec, search)
        best = front[0] if front else None
    else:
        best = write_results(rows, spec, search)
    write_status(search, "done")
    try_write_report(search)
    print(format_table(rows, spec))
    print(
        f"done: {len(rows)} trials, {sum(r.steps for r in rows):,} training steps in "
        f"{wait_seconds(t0)} · {search.child(RESULTS)}"
    )
    print(f"report: {search.child(REPORT)}")
    if best is None:
        print("no trial measured the metric; see the trials' logs under", search.child(TRIALS))
        return 1
    if spec.tune.objectives:
        where = display(search.child(FRONT).uri)
        print(f"front: {len(front)} trial(s), a job each in {where}; the cheapest: {display(best)}")
        return 0
    if search.is_local:
        print(f"best: {best}  (train it: distgan train {best})")
    else:  # distgan train and submit read job files from this machine's disk
        print(f"best: {display(best)}  (copy it here, then: distgan train best.yaml)")
    return 0
