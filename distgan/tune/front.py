"""The trade that a search over two objectives found: ``pareto.csv`` and a job per point of it.

    front = front_rows(rows, spec)            # the trials no other trial beats on both
    jobs = write_front(rows, spec, search)    # results.csv, pareto.csv, front/<trial>.yaml

With ``tune.objectives: [fid, g_gflops]`` no single trial is best: one scores better and costs
more, another costs less and scores worse. A trial is on the front when no other trial is as
good on both objectives and better on one (``objectives.pareto_front``): its metric is its best
figure (results.csv's ``best_fid``), its cost the figure of its complexity.json. In place of
best.yaml, ``front/<trial>.yaml`` is the searched job with that trial's values, ready for
``distgan train``. ``spec`` is the searched job (``search.searched_job``: its ``tune.metric``
is the objectives' metric).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math

from distgan.config import dump_yaml
from distgan.objectives import cost_mode, pareto_front, split_objectives
from distgan.specs import JobSpec
from distgan.storage import Location
from distgan.tune.results import TrialRow, best_job, train_target, write_table
from distgan.tune.search import search_mode

PARETO = "pareto.csv"
FRONT = "front"  # inside the search directory: <trial>.yaml, one job per point of the front


def objective_values(row: TrialRow, spec: JobSpec) -> tuple[float, float]:
    """(its best metric, its cost figure) of a trial; NaN for what it never measured."""
    _, cost = split_objectives(spec.tune.objectives)
    return row.best, float(row.cost.get(cost, math.nan))


def front_rows(rows: list[TrialRow], spec: JobSpec) -> list[TrialRow]:
    """The trials on the front, cheapest first."""
    _, cost = split_objectives(spec.tune.objectives)
    modes = [search_mode(spec), cost_mode(cost)]
    front = [rows[i] for i in pareto_front([objective_values(r, spec) for r in rows], modes)]
    sign = 1 if modes[1] == "min" else -1
    return sorted(front, key=lambda r: sign * objective_values(r, spec)[1])


def write_front(rows: list[TrialRow], spec: JobSpec, search: Location) -> list[str]:
    """Writes results.csv, pareto.csv and ``front/<trial>.yaml`` into the search directory
    ``search`` (an earlier front/ replaced). Returns the jobs' URIs (or local paths), cheapest
    first; [] when no trial measured both objectives."""
    write_table(rows, spec, search)
    metric, cost = split_objectives(spec.tune.objectives)
    keys = list(spec.tune.space)
    front = front_rows(rows, spec)
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["trial_id", f"best_{metric}", cost, *keys, "best_step", "job"])
    search.delete_dir(FRONT)
    jobs = []
    for row in front:
        name = f"{FRONT}/{row.trial_id}.yaml"
        value, price = objective_values(row, spec)
        w.writerow([row.trial_id, value, price, *(row.values.get(k) for k in keys),
                    row.best_step, name])  # fmt: skip
        job = best_job(spec, row)
        job = dataclasses.replace(
            job, run=dataclasses.replace(job.run, name=f"{spec.run.name}-{row.trial_id}")
        )
        here = search.child(name)
        train_it = train_target(search, name)
        header = (
            f"# Trial {row.trial_id}, on the front of the search {search} ({len(front)} trials):\n"
            f"# {metric} {value:.6g} at step {row.best_step}, {cost} {price:.6g}, with "
            + ", ".join(f"{k}={v}" for k, v in row.values.items())
            + f"\n#   distgan train {train_it}\n"
        )
        search.write_text(name, header + dump_yaml(job))
        jobs.append(here.uri)
    search.write_text(PARETO, table.getvalue())
    return jobs
