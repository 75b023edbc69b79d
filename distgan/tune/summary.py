"""How a folder is told to be a search, and a search as ``distgan runs`` shows it.

    if is_search(folder, spec):               # spec: the folder's job.resolved.yaml
        row = search_summary(folder, spec)     # {"status": "done", "trials": 4, "best": {...}}

A search's status is its own ``status.json`` (``distgan tune`` writes running, stopped, failed
and done); its best figure is the best ``tune.metric`` any trial has logged in its
``metrics.jsonl``, the figures ``results.csv`` ranks the trials by. ``trials.py`` imports Ray,
so nothing here imports it before a folder's job turns out to have a tune space.
"""

from __future__ import annotations

import math

from distgan.specs import JobSpec
from distgan.storage import Location
from distgan.train.outputs import read_metrics, read_status


def is_search(folder: Location, spec: JobSpec) -> bool:
    """Whether ``folder``, whose job is ``spec``, is a search directory: a tune space and the
    trials' run folders. (A trial's own folder has the space too, but no trials.)"""
    if not spec.tune.space:
        return False
    from distgan.tune.trials import TRIALS

    return folder.is_dir(TRIALS)


def search_summary(search: Location, spec: JobSpec) -> dict:
    """The search's ``status``, its number of ``trials`` and its ``best`` figure so far (a dict
    of metric, value, step and trial, or None before any trial measured ``tune.metric``)."""
    from distgan.tune.results import RESULTS
    from distgan.tune.search import search_mode, searched_job
    from distgan.tune.trials import TRIALS

    spec = searched_job(spec)  # the job its trials ran: they measure its tune.metric
    metric = spec.tune.metric
    trials = search.list(TRIALS)
    figures = [
        (float(m[metric]), int(m["step"]), trial)
        for trial in trials
        for m in read_metrics(search.child(TRIALS, trial))
        if metric in m and not math.isnan(float(m[metric]))
    ]
    best = None
    if figures:
        pick = max if search_mode(spec) == "max" else min
        value, step, trial = pick(figures, key=lambda f: f[0])
        best = {"metric": metric, "value": value, "step": step, "trial": trial}
    # A search from before distgan tune wrote its status: its results mean it ended.
    ended = "done" if search.is_file(RESULTS) else "running"
    return {"status": read_status(search).get("status", ended), "trials": len(trials), "best": best}
