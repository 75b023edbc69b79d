"""The report of one training run: curves, evaluations, the guard's actions, samples, the job.

Everything is read through the run's ``Location`` (a local folder or object storage):
``metrics.jsonl``, ``best/best.json``, ``samples/step_NNNNNN.png``, ``eval.json`` (written by
``distgan eval``), ``job.resolved.yaml``, ``complexity.json`` and the names under ``checkpoints/``.
"""

from __future__ import annotations

import io
import json
import re

from PIL import Image

from distgan.config import RESOLVED_JOB
from distgan.data import class_name, data_location, read_manifest
from distgan.errors import UserError
from distgan.images import GRID_PAD
from distgan.metrics.evaluate import evaluations, latest_results
from distgan.metrics.fitting import near_chance
from distgan.progress import duration
from distgan.report.charts import Line, Mark, Point, chart
from distgan.report.page import Section, chart_img, charts, facts, grid_figure, note, pre, table
from distgan.specs import METRIC_NAMES, JobSpec
from distgan.storage import Location
from distgan.train.checkpoint import CHECKPOINTS
from distgan.train.complexity import read_complexity
from distgan.train.loop import GRID_COLUMNS
from distgan.train.outputs import METRICS, read_best
from distgan.train.records import GROUPS

EVAL_JSON = "eval.json"  # written by distgan eval beside the run's files
SAMPLES = "samples"
MAX_GRIDS = 12  # sample grids shown: the newest, then spread over the run back to the first
_GRID = re.compile(r"^step_(\d+)\.png$")


def read_records(run: Location) -> list[dict]:
    """The run's metrics records in file order ([] when none yet). A last line still being
    written (not valid JSON yet) is left out."""
    if not run.is_file(METRICS):
        return []
    records = []
    for line in run.read_text(METRICS).splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict) and "step" in r]


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records that hold ``key``."""
    pairs = [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def sample_grids(run: Location, folder: str = SAMPLES) -> list[tuple[int, str]]:
    """(step, file name) of the sample grids in ``folder``, oldest first."""
    return sorted((int(m.group(1)), n) for n in run.list(folder) if (m := _GRID.match(n)))


def run_sections(run: Location, spec: JobSpec) -> list[Section]:
    records = read_records(run)
    best = read_best(run)
    sections = [Section("summary", "Summary", _summary(run, spec, records, best))]
    if records:
        sections += [
            Section("training", "Training", _training_charts(records)),
            Section("evaluation", "Evaluation during training", _eval_charts(spec, records, best)),
            Section("guard", "Divergence guard", _guard(records)),
        ]
    sections.append(Section("samples", "Samples", _samples(run, spec)))
    if run.is_file(EVAL_JSON):
        sections.append(Section("eval", "distgan eval", _eval_table(run)))
    sections.append(Section("job", "Job", pre(run.read_text(RESOLVED_JOB))))
    return sections


def _summary(run: Location, spec: JobSpec, records: list[dict], best: dict | None) -> str:
    last = records[-1] if records else {}
    m, o, t = spec.model, spec.optim, spec.train
    checkpoints = [n for n in run.list(CHECKPOINTS) if n.startswith("step_")]
    pairs: list[tuple[str, object]] = [
        ("steps", f"{last.get('step', 0):,} of {t.steps:,}"),
        ("images seen", last.get("images_seen", 0)),
        ("speed (last interval)", f"{last.get('images_per_s', 0):,.0f} images/s"),
        ("time (this session)", duration(last.get("elapsed_s", 0))),
    ]
    if "gpu_mem_gb" in last:
        pairs.append(("GPU memory (rank 0 peak)", f"{last['gpu_mem_gb']:.2f} GiB"))
    pairs += _costs(read_complexity(run))
    if best:
        value = f"{best['metric']} {best['value']:.4g} at step {best['step']:,} (best/)"
        pairs.append(("best checkpoint", value))
    pairs += [
        ("data", spec.data.source),
        ("model", f"{m.arch}, width {m.width}, z_dim {m.z_dim}"),
        ("loss", spec.loss.kind),
        ("optim", f"lr_g {o.lr_g:g}, lr_d {o.lr_d:g}, n_critic {o.n_critic}"),
        ("batch", f"{t.batch_size} × {spec.scale.workers} worker(s)"),
        (
            "checkpoints",
            f"{len(checkpoints)}" + (f", latest {checkpoints[-1]}" if checkpoints else ""),
        ),
    ]
    return facts(pairs) + ("" if records else note("No metrics logged yet."))


def _costs(cost: dict) -> list[tuple[str, str]]:
    """complexity.json's figures (train/complexity.py), those the run has."""
    pairs = []
    if "g_params" in cost:
        pairs.append((
            "model cost (per image)",
            f"G {cost['g_params']:,} parameters, {cost['g_gflops']:.4g} GFLOPs; "
            f"D {cost['d_params']:,} parameters, {cost['d_gflops']:.4g} GFLOPs",
        ))  # fmt: skip
    if "sec_per_kimg" in cost:
        speed = f"{cost['images_per_s']:,.0f} images/s, median of the log intervals"
        pairs.append(("training speed", f"{cost['sec_per_kimg']:.3g} s/kimg ({speed})"))
    if "peak_mem_mb" in cost:
        kind = cost.get("peak_mem_kind", "")
        pairs.append(("peak memory (rank 0)", f"{cost['peak_mem_mb']:,.0f} MiB ({kind})"))
    return pairs


def _training_charts(records: list[dict]) -> str:
    rollbacks = _rollback_steps(records)
    marks = [Mark(s, "rollback") for s in rollbacks]
    wins = [r for r in records if r.get("d_wins")]
    win_points = [Point(r["step"], r["d_loss"], "D wins", "v", "tab:orange", 40) for r in wins]
    out = []
    specs = [
        ("Losses", GROUPS["loss"], "loss", False, win_points),
        ("D(x) and D(G(z))", ("d_real", "d_fake"), "D output", False, []),
        ("Gradient norms", GROUPS["grad_norm"], "L2 norm", True, []),
        ("Speed", ("images_per_s",), "images/s", False, []),
        ("GPU memory", ("gpu_mem_gb",), "GiB (rank 0 peak)", False, []),
        ("ADA", ("ada_p", "ada_rt"), "p, and E[sign D(x)]", False, []),
    ]
    names = {
        "d_real": "D(x)",
        "d_fake": "D(G(z))",
        "gp": "gradient penalty",
        "d_ac": "D's class loss (AC-GAN)",
        "g_ac": "G's class loss (AC-GAN)",
        "ada_p": "augmentation probability p",
        "ada_rt": "E[sign D(x)] (ADA's r_t)",
    }
    for title, keys, ylabel, log_y, points in specs:
        lines = [Line(names.get(k, k), *series(records, k)) for k in keys]
        lines = [line for line in lines if line.x]
        if lines:
            uri = chart(lines, title=title, ylabel=ylabel, marks=marks, points=points, log_y=log_y)
            out.append(chart_img(uri, title))
    legend = "Dotted red lines: the divergence guard rolled back to the last good checkpoint."
    return charts(out) + (note(legend) if rollbacks else "")


def _eval_charts(spec: JobSpec, records: list[dict], best: dict | None) -> str:
    out = []
    for key in METRIC_NAMES:
        x, y = series(records, key)
        if not x:
            continue
        points = []
        if best and best["metric"] == key:
            points = [
                Point(best["step"], best["value"], f"best checkpoint (step {best['step']:,})")
            ]
        line = Line(key, x, y, {"marker": "o", "markersize": 3})
        out.append(chart_img(chart([line], title=key, ylabel=key, points=points), key))
    if not out:
        return note("No evaluation in this run (eval.every is 0).")
    e = spec.eval
    return note(
        f"{e.n_samples:,} generated against {e.n_real:,} real images (feature network: "
        f"{e.features}), every {e.every:,} steps and at checkpoints; best/ keeps the best "
        f"{e.metric}."
    ) + charts(out)


def _rollback_steps(records: list[dict]) -> list[float]:
    """Steps of the first record after each rollback (where the rollback count grew)."""
    steps, before = [], 0
    for r in records:
        count = r.get("rollbacks", before)
        if count > before:
            steps.append(r["step"])
        before = count
    return steps


def _guard(records: list[dict]) -> str:
    skipped = [r for r in records if r.get("skipped")]
    rollbacks = _rollback_steps(records)
    wins = [r["step"] for r in records if r.get("d_wins")]
    last = records[-1]
    text = (
        f"{len(skipped)} log interval(s) with skipped (non-finite) updates; "
        f"{len(rollbacks)} rollback(s); learning rates now ×{last.get('lr_scale', 1.0):g}; "
        f"D won outright at {len(wins)} log step(s)."
    )
    if not (skipped or rollbacks or wins):
        return note("No skipped update, no rollback, D never won outright.")
    lines = [Line("skipped updates per step", *series(records, "skipped"))]
    lines.append(Line("lr scale", *series(records, "lr_scale"), {"linestyle": "--"}))
    marks = [Mark(s, "rollback") for s in rollbacks] + [
        Mark(s, "D wins", "tab:orange") for s in wins
    ]
    uri = chart(lines, title="Guard", marks=marks)
    return note(text) + charts([chart_img(uri, "divergence guard")])


def _samples(run: Location, spec: JobSpec) -> str:
    steps = sample_grids(run)
    if not steps:
        return note("No sample grid yet.")
    shown = steps
    if len(steps) > MAX_GRIDS:  # evenly spread, the first and the newest included
        shown = [steps[round(i * (len(steps) - 1) / (MAX_GRIDS - 1))] for i in range(MAX_GRIDS)]
    grids = [(step, run.read_bytes(f"{SAMPLES}/{name}")) for step, name in reversed(shown)]
    names = _class_rows(spec, grids[0][1]) if spec.model.conditional else []
    figures = [grid_figure(png, f"step {step:,}", names) for step, png in grids]
    head = note(
        "G_ema on the same latents at every grid, newest first"
        + ("; a row per class, each column one latent" if names else "")
        + (
            f"; {len(shown)} of {len(steps)} grids shown (all in samples/)"
            if shown != steps
            else ""
        )
        + "."
    )
    return head + f'<div class="grids">{"".join(figures)}</div>'


def _class_rows(spec: JobSpec, png: bytes) -> list[str]:
    """The classes of a conditional run's grid rows, top to bottom: rows of GRID_COLUMNS
    images, class 0 first (``loop.grid_inputs``), named as the run's data names them (their
    numbers when it gives none, or cannot be read from here)."""
    width, height = Image.open(io.BytesIO(png)).size
    pitch = (width - GRID_PAD) // GRID_COLUMNS  # an image and the gap after it
    rows = range((height - GRID_PAD) // pitch)
    try:
        manifest = read_manifest(data_location(spec.data.source))
    except UserError:
        return [str(k) for k in rows]
    return [class_name(manifest, k) for k in rows]


def _eval_table(run: Location) -> str:
    """The latest figure of each metric over every ``distgan eval`` of the run, with the
    checkpoint, the time and the protocol it was measured with."""
    record = json.loads(run.read_text(EVAL_JSON))
    rows = []
    for e, r in latest_results(record):
        p = r.get("protocol", {})
        rows.append([
            r["metric"], r["value"], e.get("step", 0), e.get("time", "-"),
            f"{p.get('features')} ({str(p.get('features_sha256'))[:12]}"
            f"{_accuracy(p.get('features_accuracy'))})",
            f"{p.get('real')}: {p.get('real_count', 0):,} (seed {p.get('real_seed')})",
            p.get("fake_count", 0), p.get("seed"),
        ])  # fmt: skip
    head = ["metric", "value", "step", "evaluated", "features", "real images", "generated", "seed"]
    count = len(evaluations(record))
    second = sorted({r[0].split("@")[1] for r in rows if "@" in r[0]})
    judge = (
        f" A metric named metric@{', @'.join(second)} is the same figure by a second feature "
        "network, trained apart from the first (another architecture, seed and share of the "
        "data): where the two disagree, the figure says more about a network than the images."
        if second
        else ""
    )
    return note(
        f"The latest figure of each metric over {count} evaluation(s) (eval.json keeps them "
        f"all; the latest: checkpoint {record.get('checkpoint')}, step "
        f"{record.get('step', 0):,}); figures compare only when their protocol (the columns "
        f"after evaluated) is the same.{judge}"
    ) + table(head, rows)


def _accuracy(recorded: dict | None) -> str:
    """The feature network's test accuracy, as the report shows it beside its figures."""
    if not recorded:
        return ""
    near = " (near chance)" if near_chance(recorded["accuracy"], recorded["num_classes"]) else ""
    return f", test accuracy {recorded['accuracy']:.4f}{near}"
