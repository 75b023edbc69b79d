"""The report of a search: the objective of every trial over the steps, PBT's exploits, results.

Read through the search folder's ``Location``: ``trials/<id>/metrics.jsonl`` and
``job.resolved.yaml`` of each trial, ``exploits/`` (PBT), ``results.csv`` and ``best.yaml``
(written when the search ends), ``best_samples/``. The layout is tune/'s (trials.py, results.py).
With ``tune.objectives``: each trial's ``complexity.json``, and ``pareto.csv`` (report/front.py).
"""

from __future__ import annotations

import csv
import io
import math

from distgan.config import RESOLVED_JOB, load_resolved
from distgan.report.charts import Line, Point, chart
from distgan.report.front import front_sections
from distgan.report.page import Section, chart_img, facts, grid_figure, note, pre, table
from distgan.report.run import read_records, sample_grids, series
from distgan.specs import JobSpec
from distgan.storage import Location
from distgan.tune.exploits import read_exploits
from distgan.tune.results import BEST_JOB, BEST_SAMPLES, RESULTS
from distgan.tune.search import search_mode, searched_job
from distgan.tune.trials import TRIALS


def search_sections(search: Location, spec: JobSpec) -> list[Section]:
    spec = searched_job(spec)  # tune.metric: the objectives' metric, when the job has them
    t = spec.tune
    metric, higher = t.metric, search_mode(spec) == "max"
    trials = {tid: read_records(search.child(TRIALS, tid)) for tid in search.list(TRIALS)}
    exploits = _exploits(search)
    pbt = t.scheduler == "pbt"
    summary = facts(
        [
            ("objective", f"{metric} ({'max' if higher else 'min'})"),
            *([("objectives", ", ".join(t.objectives))] if t.objectives else []),
            *([("constraints", "; ".join(t.constraints))] if t.constraints else []),
            ("scheduler", t.scheduler + (" (synchronous)" if pbt and t.synch else "")),
            ("space", ", ".join(f"{k}: {v}" for k, v in t.space.items())),
            ("trials", len(trials)),
            ("evaluations", f"every {spec.eval.every:,} steps"),
            *([("exploits", len(exploits))] if pbt else []),
        ]
    )
    sections = [
        Section("summary", "Summary", summary),
        Section("curves", f"{metric} per trial", _curves(trials, exploits, metric)),
        Section("results", "Results", _results(search, spec, trials, metric, higher)),
    ]
    if t.objectives:  # the trade between the metric and the cost, and the front's samples
        sections[2:2] = front_sections(search, spec, trials)
    if exploits:
        sections.append(Section("exploits", "PBT exploits", _exploit_table(exploits)))
    best_grid = _newest_grid(search, BEST_SAMPLES)
    if best_grid:
        sections.append(Section("samples", "Best trial's samples", best_grid))
    if search.is_file(BEST_JOB):
        sections.append(Section("best", BEST_JOB, pre(search.read_text(BEST_JOB))))
    sections.append(Section("job", "Searched job", pre(search.read_text(RESOLVED_JOB))))
    return sections


def _exploits(search: Location) -> list[dict]:
    return read_exploits(search)


def _value_at(records: list[dict], metric: str, step: float) -> float | None:
    """The last ``metric`` figure at or before ``step``."""
    before = [(s, v) for s, v in zip(*series(records, metric)) if s <= step]
    return before[-1][1] if before else None


def _curves(trials: dict[str, list[dict]], exploits: list[dict], metric: str) -> str:
    lines = []
    for tid, records in trials.items():
        x, y = series(records, metric)
        if x:
            lines.append(Line(tid, x, y, {"marker": "o", "markersize": 3}))
    if not lines:
        return note(f"No trial has measured {metric} yet.")
    points = []
    for e in exploits:  # the clone starts from the donor's state: its figure at that step
        value = _value_at(trials.get(e["donor"], []), metric, e["step"])
        if value is not None:
            label = "PBT exploit (a trial takes a donor's state)"
            text = f"{e['trial']} ← {e['donor']}"
            points.append(Point(e["step"], value, label, "X", "tab:red", 90, text))
    wide = (10.2, 3.8)  # the page's width: one chart, its legend beside it
    uri = chart(lines, title=metric, ylabel=metric, points=points, legend_outside=True, size=wide)
    return chart_img(uri, f"{metric} per trial")


def _results(
    search: Location, spec: JobSpec, trials: dict[str, list[dict]], metric: str, higher: bool
) -> str:
    if search.is_file(RESULTS):  # written when the search ended: best first
        head, *rows = csv.reader(io.StringIO(search.read_text(RESULTS)))
        rows = [[_number(c) for c in row] for row in rows]
        best = 0 if rows and isinstance(rows[0][head.index(f"best_{metric}")], float) else -1
        return note(f"{RESULTS}, best first.") + table(head, rows, best_row=best)
    keys = list(spec.tune.space)
    rows = []
    for tid, records in trials.items():
        values = _trial_values(search, tid, keys)
        points = [(v, s) for s, v in zip(*series(records, metric)) if not math.isnan(v)]
        best = (max if higher else min)(points) if points else (math.nan, 0)
        steps = max((r["step"] for r in records), default=0)
        rows.append([tid, *values, best[0], best[1], steps])
    rows.sort(key=lambda r: math.inf if math.isnan(r[-3]) else (-r[-3] if higher else r[-3]))
    head = ["trial", *keys, f"best_{metric}", "best_step", "steps"]
    return note(
        f"No {RESULTS} yet (the search is running, or was interrupted); figures from the trials' "
        "own metrics, best first."
    ) + table(head, rows)


def _trial_values(search: Location, tid: str, keys: list[str]) -> list[object]:
    """The trial's values of the space's keys (``optim.lr_g``...), from its resolved job."""
    rel = f"{TRIALS}/{tid}/{RESOLVED_JOB}"
    if not search.is_file(rel):
        return ["-"] * len(keys)
    trial = load_resolved(search.read_text(rel), source=f"{search}/{rel}")
    return [getattr(getattr(trial, k.split(".")[0]), k.split(".")[1]) for k in keys]


def _exploit_table(exploits: list[dict]) -> str:
    """One row a clone: when, who took whose state, and every value that changed."""
    rows = [
        [e["step"], e["trial"], e["donor"],
         "; ".join(f"{k}: {_short(a)} → {_short(b)}" for k, (a, b) in e.get("changed", {}).items())]
        for e in exploits
    ]  # fmt: skip
    return table(["step", "trial", "takes the state of", "values changed"], rows)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _newest_grid(search: Location, folder: str) -> str:
    grids = sample_grids(search, folder)
    if not grids:
        return ""
    step, name = grids[-1]
    png = search.read_bytes(f"{folder}/{name}")
    return grid_figure(png, f"step {step:,} of the best trial ({folder}/)")


def _number(cell: str) -> object:
    try:
        value = float(cell)
    except ValueError:
        return cell
    return int(value) if value.is_integer() and "." not in cell and "e" not in cell else value
