"""What a finished search leaves: a table on screen, ``results.csv``, ``best.yaml``, samples.

    rows = trial_rows(grid, spec, search)         # one TrialRow per trial, best first
    write_results(rows, spec, search)             # results.csv, best.yaml, best_samples/
    print(format_table(rows, spec))

Each row carries its trial's ``complexity.json`` (parameters, GFLOPs, peak memory, sec/kimg:
``train/complexity.py``); a trial skipped for breaking ``tune.constraints`` is marked so, with
the reason. A search over two objectives writes ``pareto.csv`` and ``front/`` instead of
``best.yaml`` (``tune/front.py``).

``search`` is the search directory, a ``storage.Location`` (a local folder or a URI): the trials'
files are read from it and the results written into it, whole.

``best.yaml`` is the searched job with the best trial's values (those of its best step) filled in
and no ``tune`` section, ready for ``distgan train best.yaml`` or for submission; after a PBT
search its header comment gives the schedule of values the best state was trained with.
``best_samples/`` holds the best trial's grid of its best step.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import posixpath
from dataclasses import dataclass
from typing import Any

from distgan.config import dump_yaml, load_resolved
from distgan.images import grid_png
from distgan.objectives import COST_FIGURES
from distgan.specs import JobSpec, TuneSpec
from distgan.storage import Location
from distgan.train.complexity import read_complexity
from distgan.train.outputs import BEST, METRICS, read_best, read_metrics
from distgan.tune.exploits import format_schedule, read_exploits, resolved_values, schedule
from distgan.tune.search import search_mode
from distgan.tune.space import sampled_values, trial_spec
from distgan.tune.trials import trial_run_dir

RESULTS = "results.csv"
TABLE_COSTS = ("g_params", "g_gflops", "sec_per_kimg")  # the printed table's cost columns
BEST_JOB = "best.yaml"
BEST_SAMPLES = "best_samples"


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    status: str  # done (ran all train.steps), stopped (by the scheduler or time), error, skipped
    values: dict[str, Any]  # the space's keys -> this trial's (last) values
    best: float  # the best tune.metric it reached (NaN: never measured)
    best_step: int
    steps: int  # the last step it trained
    cost: dict[str, Any] = dataclasses.field(default_factory=dict)  # its complexity.json


def trial_rows(grid, spec: JobSpec, search: Location | None = None) -> list[TrialRow]:
    """One row per trial of a ResultGrid, best first (trials never measured last).

    A trial's figures come from its own ``metrics.jsonl`` under ``search`` where it has one:
    Tune's metrics table of a trial that PBT restored can lack the results after the restore.
    """
    metric, higher = spec.tune.metric, search_mode(spec) == "max"
    rows = []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or posixpath.basename(result.path)
        own = trial_run_dir(search, trial_id) if search is not None else None
        if own is not None and own.is_file(METRICS):
            logged = read_metrics(own)
            points = [(float(m[metric]), int(m["step"])) for m in logged if metric in m]
            steps = max((int(m["step"]) for m in logged), default=0)
        else:
            df = result.metrics_dataframe
            points, steps = [], 0
            if df is not None and metric in df and df[metric].notna().any():
                rows_df = df[df[metric].notna()]
                points = list(zip(rows_df[metric].astype(float), rows_df["step"].astype(int)))
                steps = int(df["step"].max())
        points = [(v, s) for v, s in points if not math.isnan(v)]
        best, best_step = math.nan, 0
        if points:
            best, best_step = (max if higher else min)(points, key=lambda p: p[0])
        cost = read_complexity(own) if own is not None else {}
        if result.error is not None:
            status = "error"
        elif "skipped" in cost:  # broke a tune.constraints budget: never trained
            status = "skipped"
        else:
            status = "done" if steps >= spec.train.steps else "stopped"
        values = sampled_values(result.config, spec)
        rows.append(TrialRow(trial_id, status, values, best, best_step, steps, cost))

    def key(row: TrialRow) -> float:
        if math.isnan(row.best):
            return math.inf
        return -row.best if higher else row.best

    return sorted(rows, key=key)


def best_job(spec: JobSpec, row: TrialRow) -> JobSpec:
    """The searched job with ``row``'s values, no tune section, and a run name of its own."""
    best = trial_spec(spec, row.values, f"best trial {row.trial_id}")
    run = dataclasses.replace(best.run, name=f"{spec.run.name}-best")
    return dataclasses.replace(best, tune=TuneSpec(), run=run)


def train_target(search: Location, name: str) -> str:
    """What a job file ``name`` of the search is trained as: its path, or, for a search in
    object storage, the local copy to make (`distgan train` reads a job file on this disk)."""
    job_file = search.child(name)
    if search.is_local:
        return str(job_file)
    return f"{posixpath.basename(name)} (copied from {job_file})"


def write_table(rows: list[TrialRow], spec: JobSpec, search: Location) -> None:
    """results.csv: a row per trial, its values, its best figure and what its models cost
    (``reason``: why a trial was skipped)."""
    keys = list(spec.tune.space)
    table = io.StringIO(newline="")
    w = csv.writer(table)
    costs = (*COST_FIGURES, "peak_mem_kind")
    w.writerow(["trial_id", "status", *keys, f"best_{spec.tune.metric}", "best_step", "steps",
                *costs, "reason"])  # fmt: skip
    for r in rows:
        w.writerow([r.trial_id, r.status, *(r.values.get(k) for k in keys),
                    r.best, r.best_step, r.steps,
                    *(r.cost.get(k, "") for k in costs), r.cost.get("skipped", "")])  # fmt: skip
    search.write_text(RESULTS, table.getvalue())


def write_results(rows: list[TrialRow], spec: JobSpec, search: Location) -> str | None:
    """Writes results.csv and, when a trial measured the metric, best.yaml and best_samples/
    into the search directory ``search``.

    Returns the URI (or local path) of best.yaml, or None when no trial measured anything."""
    metric = spec.tune.metric
    write_table(rows, spec, search)
    if not rows or math.isnan(rows[0].best):
        return None
    trial_dir = trial_run_dir(search, rows[0].trial_id)
    # A PBT trial's values change at its exploits: best.yaml takes those of its best step.
    winner = dataclasses.replace(rows[0], values=_values_at_best(trial_dir, spec, rows[0]))
    best_job_file = search.child(BEST_JOB)
    train_it = train_target(search, BEST_JOB)
    header = (
        f"# The best trial ({winner.trial_id}) of the search {search}:\n"
        f"# {metric} {winner.best:.6g} at step {winner.best_step}, with "
        + ", ".join(f"{k}={v}" for k, v in winner.values.items())
        + f"\n#   distgan train {train_it}\n"
    )
    if spec.tune.scheduler == "pbt":
        segments = schedule(read_exploits(search), winner.trial_id, winner.values, winner.best_step)
        header += (
            f"# PBT schedule: the values that trained the state of step {winner.best_step}, "
            "and the trials that held it (each exploit took a donor's state):\n"
            + "".join(f"#   {line}\n" for line in format_schedule(segments))
        )
    search.write_text(BEST_JOB, header + dump_yaml(best_job(spec, winner)))
    write_best_samples(trial_dir, winner.best_step, search.child(BEST_SAMPLES))
    return best_job_file.uri


def _values_at_best(trial_dir: Location, spec: JobSpec, row: TrialRow) -> dict[str, Any]:
    """The searched values the trial's best checkpoint (``best/``) was trained with, or the row's
    (its last values) when it kept none of that step."""
    from distgan.train import checkpoint as ckpts

    best = read_best(trial_dir)
    if best is None or best["step"] != row.best_step:
        return row.values
    folder = trial_dir.child(BEST)
    job = load_resolved(ckpts.load(folder.uri)["job"], source=str(folder))
    resolved = resolved_values(job)
    return {k: resolved[k] for k in row.values}


def write_best_samples(trial_dir: Location, step: int, out: Location) -> str | None:
    """``out/step_<step>.png``: the trial's grid of ``step``, the one it wrote then, or drawn from
    its ``best/`` checkpoint of that step on the run's fixed grid latents (train.seed). Returns
    its URI (or local path); None when it has neither (its earlier best_samples/ is removed
    either way)."""
    out.delete_dir("")
    name = f"step_{step:06d}.png"
    written = f"samples/{name}"
    best = read_best(trial_dir)
    if trial_dir.is_file(written):
        out.write_bytes(name, trial_dir.read_bytes(written))
        return out.child(name).uri
    if best is None or best["step"] != step:
        return None
    from distgan.generators import load_generator
    from distgan.images import to_uint8
    from distgan.models import generate
    from distgan.train.loop import GRID_SIZE

    G, job, _, _ = load_generator(trial_dir.child(BEST).uri)
    # The loop's grid latents: torch.randn(GRID_SIZE, z_dim) from a generator seeded train.seed.
    images = to_uint8(generate(G, job.model.z_dim, GRID_SIZE, job.train.seed))
    out.write_bytes(name, grid_png(images))
    return out.child(name).uri


def format_table(rows: list[TrialRow], spec: JobSpec) -> str:
    """The trials as an aligned text table, best first."""
    keys = list(spec.tune.space)
    head = ["trial", "status", *keys, spec.tune.metric, "at step", "steps", *TABLE_COSTS]
    body = [
        [r.trial_id, r.status, *(_fmt(r.values.get(k)) for k in keys),
         _fmt(r.best), str(r.best_step), str(r.steps),
         *(_fmt(r.cost.get(k, math.nan)) for k in TABLE_COSTS)]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [head, *body]]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)
