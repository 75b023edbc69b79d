"""A search over two objectives in its report: every trial's metric against its cost, the front
drawn through the trials no other beats on both, and each point of it a click from its samples.

    sections = front_sections(search, spec, trials)   # report/search.py, with tune.objectives

The chart is a PNG like the report's others; an HTML image map over it makes each point of the
front a link to that trial's sample grid further down the same page (the page fetches nothing).
``spec`` is the searched job (``tune.search.searched_job``: its ``tune.metric`` is the
objectives' metric); ``trials`` maps each trial's id to its metrics records.
"""

from __future__ import annotations

import csv
import io
import math

from matplotlib.figure import Figure

from distgan.objectives import split_objectives
from distgan.report.charts import DPI, data_uri
from distgan.report.page import Section, esc, grid_figure, note, table
from distgan.report.run import sample_grids, series
from distgan.specs import JobSpec
from distgan.storage import Location
from distgan.train.complexity import read_complexity
from distgan.tune.front import PARETO, front_rows, objective_values
from distgan.tune.results import TrialRow
from distgan.tune.search import search_mode
from distgan.tune.trials import TRIALS

SIZE = (7.2, 4.0)  # inches: the chart is shown at its own size, so the map's pixels hold
POINT_RADIUS = 10  # pixels: the clickable disc around each point of the front


def front_sections(search: Location, spec: JobSpec, trials: dict[str, list[dict]]) -> list[Section]:
    metric, cost = split_objectives(spec.tune.objectives)
    higher = search_mode(spec) == "max"
    rows = [_row(search, tid, records, metric, higher) for tid, records in trials.items()]
    skipped = [r for r in rows if "skipped" in r.cost]
    front = front_rows(rows, spec)
    head = ""
    if skipped:
        reasons = "; ".join(f"{r.trial_id}: {r.cost['skipped']}" for r in skipped)
        head = note(
            f"{len(skipped)} trial(s) skipped by tune.constraints, never trained: {reasons}."
        )
    if not front:
        text = f"No trial has measured both {metric} and {cost} yet."
        return [Section("front", f"{metric} and {cost}", head + note(text))]
    body = head + _front_chart(rows, front, spec) + _pareto_table(search)
    grids = [_grid(search, row) for row in front]
    return [
        Section("front", f"{metric} against {cost}", body),
        Section(
            "front-samples", "Samples of the front", f'<div class="grids">{"".join(grids)}</div>'
        ),
    ]


def _row(search: Location, tid: str, records: list[dict], metric: str, higher: bool) -> TrialRow:
    """A trial's best ``metric`` (from its own metrics) and its complexity.json."""
    points = [(v, s) for s, v in zip(*series(records, metric)) if not math.isnan(v)]
    best, step = (max if higher else min)(points) if points else (math.nan, 0)
    steps = max((r["step"] for r in records), default=0)
    cost = read_complexity(search.child(TRIALS, tid))
    return TrialRow(tid, "", {}, best, step, steps, cost)


def _front_chart(rows: list[TrialRow], front: list[TrialRow], spec: JobSpec) -> str:
    """The chart and its image map: one clickable disc per point of the front."""
    metric, cost = split_objectives(spec.tune.objectives)
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    every = [objective_values(r, spec) for r in rows]
    shown = [(c, m) for m, c in every if math.isfinite(m) and math.isfinite(c)]
    ax.scatter(*zip(*shown), color="tab:gray", s=28, label="trial", zorder=3)
    line = [(objective_values(r, spec)[1], objective_values(r, spec)[0]) for r in front]
    ax.plot(*zip(*line), color="tab:red", linewidth=1.2, drawstyle="steps-post", zorder=2)
    ax.scatter(*zip(*line), color="tab:red", s=46, edgecolor="black", label="front", zorder=4)
    for row, (x, y) in zip(front, line):
        ax.annotate(row.trial_id, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8)
    costs = [c for c, _ in shown]
    if min(costs) > 0 and max(costs) >= 10 * min(costs):
        ax.set_xscale("log")
    ax.set_title(f"{metric} against {cost} (the front: no trial better on both)", fontsize=11)
    ax.set_xlabel(cost)
    ax.set_ylabel(f"best {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # lays the figure out: the transform below is final now
    width, height = round(fig.bbox.width), round(fig.bbox.height)
    areas = []
    for row, xy in zip(front, line):
        x, y = ax.transData.transform(xy)  # pixels from the bottom left
        value, price = objective_values(row, spec)
        title = esc(f"trial {row.trial_id}: {metric} {value:.4g}, {cost} {price:.4g}")
        areas.append(
            f'<area shape="circle" coords="{round(x)},{round(height - y)},{POINT_RADIUS}" '
            f'href="#front-{esc(row.trial_id)}" alt="{title}" title="{title}">'
        )
    uri = data_uri(buffer.getvalue(), "image/png")
    return (
        note("Click a point of the front for its trial's samples.")
        + f'<img src="{uri}" usemap="#front-map" width="{width}" height="{height}" '
        f'alt="{esc(metric)} against {esc(cost)}"><map name="front-map">{"".join(areas)}</map>'
    )


def _pareto_table(search: Location) -> str:
    if not search.is_file(PARETO):  # written when the search ends
        return note(f"No {PARETO} yet: the front above is drawn from the trials' own files.")
    head, *rows = csv.reader(io.StringIO(search.read_text(PARETO)))
    # The figures as numbers (the table shows 4 digits); the trial id and job stay text.
    rows = [[row[0], *(_figure(c) for c in row[1:-1]), row[-1]] for row in rows]
    return note(f"{PARETO}, cheapest first; front/<trial>.yaml trains each.") + table(head, rows)


def _figure(cell: str) -> object:
    try:
        return float(cell)
    except ValueError:
        return cell


def _grid(search: Location, row: TrialRow) -> str:
    """The trial's grid of its best step (else its newest), under the anchor the map links."""
    trial = search.child(TRIALS, row.trial_id)
    grids = sample_grids(trial)
    anchor = f'id="front-{esc(row.trial_id)}"'
    if not grids:
        return f"<div {anchor}>{note(f'trial {row.trial_id}: no sample grid')}</div>"
    step, name = next(((s, n) for s, n in grids if s == row.best_step), grids[-1])
    png = trial.read_bytes(f"samples/{name}")
    return f"<div {anchor}>{grid_figure(png, f'trial {row.trial_id}, step {step:,}')}</div>"
