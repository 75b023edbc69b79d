"""``distgan runs [STORAGE]``: the runs kept in a storage location, one line each.

    distgan runs                                     # ./runs
    distgan runs 's3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http'

For each run: its name, status (running, done, failed, stopped; from ``status.json``), last
step, best metric (``best/best.json``, else the last evaluated figure), what its G costs
(``complexity.json``: parameters, GFLOPs per image, seconds per 1000 images) and where its
report and samples are.
For a search (``<id>-<name>-tune/``): its status, number of trials and the best
figure any trial measured, with that trial's id.
"""

from __future__ import annotations

import argparse

from distgan.config import RESOLVED_JOB, load_resolved
from distgan.specs import METRIC_NAMES


def add_parser(verbs) -> None:
    p = verbs.add_parser("runs", help="list the runs in a storage location")
    p.add_argument("storage", nargs="?", default="runs", help="a folder or URI (default: runs/)")
    p.set_defaults(run=run)


def run_rows(storage: str) -> list[dict]:
    """One dict per run directory under ``storage`` (folders holding job.resolved.yaml)."""
    from distgan.storage import check_reachable, open_location
    from distgan.train.complexity import read_complexity
    from distgan.train.outputs import read_best, read_metrics, read_status

    home = open_location(storage, field="distgan runs")
    check_reachable(home, "distgan runs", must_exist=True)
    rows = []
    for name in home.list():
        run = home.child(name)
        if not run.is_file(RESOLVED_JOB):
            continue
        search = _search(run, name)
        if search is not None:
            rows.append(search)
            continue
        status = read_status(run)
        metrics = read_metrics(run)
        last = metrics[-1] if metrics else {}
        best = read_best(run)
        if best is None:
            evaluated = [m for m in metrics if any(k in m for k in METRIC_NAMES)]
            if evaluated:
                key = next(k for k in METRIC_NAMES if k in evaluated[-1])
                best = {"metric": key, "value": evaluated[-1][key], "step": evaluated[-1]["step"]}
        rows.append(
            {
                "name": name,
                "status": status.get("status", "running" if metrics else "new"),
                "step": int(last.get("step", status.get("step", 0))),
                "best": best,
                "report": run.child("report.html").uri if run.is_file("report.html") else "",
                "uri": run.uri,
                "cost": read_complexity(run),
            }
        )
    return rows


def _search(folder, name: str) -> dict | None:
    """The row of a search folder (``distgan tune``'s): its status, number of ``trials`` and
    best figure (with the trial that measured it); None for a run."""
    from distgan.errors import JobError
    from distgan.tune.summary import is_search, search_summary

    try:  # only a search's job is read here: a run's is shown whatever it holds
        spec = load_resolved(folder.read_text(RESOLVED_JOB), f"{folder}/{RESOLVED_JOB}")
    except JobError:
        return None
    if not is_search(folder, spec):
        return None
    summary = search_summary(folder, spec)
    report = folder.child("report.html").uri if folder.is_file("report.html") else ""
    return {"name": name, "status": summary["status"], "step": 0, "trials": summary["trials"],
            "best": summary["best"], "report": report, "uri": folder.uri}  # fmt: skip


def _costs(row: dict) -> tuple[str, str, str]:
    """G's parameters and GFLOPs per image, and seconds per 1000 images (complexity.json)."""
    cost = row.get("cost", {})
    return (
        f"{cost['g_params']:,}" if "g_params" in cost else "-",
        f"{cost['g_gflops']:.3g}" if "g_gflops" in cost else "-",
        f"{cost['sec_per_kimg']:.3g}" if "sec_per_kimg" in cost else "-",
    )


def run(args: argparse.Namespace) -> int:
    from distgan.storage import display

    rows = run_rows(args.storage)
    if not rows:
        print(f"no runs in {display(args.storage)} yet (distgan train JOB makes one)")
        return 0
    table = [("RUN", "STATUS", "STEP", "BEST", "G PARAMS", "G GFLOPS", "SEC/KIMG", "REPORT")]
    for r in rows:
        best = r["best"]
        shown = f"{best['metric']} {best['value']:.4g} @ {best['step']}" if best else "-"
        if best and "trial" in best:
            shown += f" (trial {best['trial']})"
        step = f"{r['trials']} trials" if "trials" in r else str(r["step"])
        table.append((r["name"], r["status"], step, shown, *_costs(r), display(r["report"]) or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0
