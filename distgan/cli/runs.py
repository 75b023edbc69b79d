"""``distgan runs [STORAGE]``: the runs kept in a storage location, one line each.

    distgan runs                                     # ./runs
    distgan runs 's3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http'

For each run: its name, status (running, done, failed, stopped; from ``status.json``), last
step, best metric (``best/best.json``, else the last evaluated figure) and where its report and
samples are.
"""

from __future__ import annotations

import argparse

from distgan.config import METRIC_NAMES, RESOLVED_JOB


def add_parser(verbs) -> None:
    p = verbs.add_parser("runs", help="list the runs in a storage location")
    p.add_argument("storage", nargs="?", default="runs", help="a folder or URI (default: runs/)")
    p.set_defaults(run=run)


def run_rows(storage: str) -> list[dict]:
    """One dict per run directory under ``storage`` (folders holding job.resolved.yaml)."""
    from distgan.storage import check_reachable, open_location
    from distgan.train.outputs import read_best, read_metrics, read_status

    home = open_location(storage, field="distgan runs")
    check_reachable(home, "distgan runs", must_exist=True)
    rows = []
    for name in home.list():
        run = home.child(name)
        if not run.is_file(RESOLVED_JOB):
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
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    from distgan.storage import display

    rows = run_rows(args.storage)
    if not rows:
        print(f"no runs in {display(args.storage)} yet (distgan train JOB makes one)")
        return 0
    table = [("RUN", "STATUS", "STEP", "BEST", "REPORT")]
    for r in rows:
        best = r["best"]
        shown = f"{best['metric']} {best['value']:.4g} @ {best['step']}" if best else "-"
        table.append((r["name"], r["status"], str(r["step"]), shown, display(r["report"]) or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0
