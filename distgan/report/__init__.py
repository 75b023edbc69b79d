"""``report.html``: one self-contained page that shows a run, or compares a search's trials.

    run = open_location("runs/00003-quickstart", field="RUN")   # or s3://bucket/runs/...
    write_report(run)                                            # RUN/report.html
    html = build_report(run)                                     # the same page as text

A run's page: losses, D(x) and D(G(z)), gradient norms and speed over the steps; every
evaluation figure with the best checkpoint marked; the divergence guard's skips and rollbacks;
sample grids, newest first; ``distgan eval``'s table with its protocol; the resolved job.
A search's page (``runs/<id>-<name>-tune/``): the objective per trial over the steps with PBT's
exploits marked, the results table, best.yaml. Charts are matplotlib PNGs embedded as data URIs:
the file opens anywhere, offline, and fetches nothing.
"""

from __future__ import annotations

from distgan.config import RESOLVED_JOB, load_resolved
from distgan.errors import CheckpointError
from distgan.report.page import page
from distgan.storage import Location
from distgan.tune.summary import is_search

REPORT = "report.html"


def build_report(run: Location) -> str:
    """The HTML of the report of ``run`` (a run folder or a search folder).

    CheckpointError when the location is neither (no job.resolved.yaml); JobError when that
    file is not a valid job; StorageError when the storage cannot be read.
    """
    if not run.is_file(RESOLVED_JOB):
        what = "no such folder" if not run.exists() else f"no {RESOLVED_JOB} in it"
        raise CheckpointError(
            f"{run}: not a distgan run or search folder ({what}); pass a folder under runs/, "
            "e.g. runs/00003-quickstart"
        )
    spec = load_resolved(run.read_text(RESOLVED_JOB), source=f"{run}/{RESOLVED_JOB}")
    if is_search(run, spec):
        from distgan.report.search import search_sections

        sections = search_sections(run, spec)
        title, kind = f"distgan search {run.name}", "search"
    else:
        from distgan.report.run import run_sections

        sections = run_sections(run, spec)
        title, kind = f"distgan run {run.name}", "run"
    return page(title, f"{kind} · {run}", sections)


def write_report(run: Location) -> None:
    """Writes ``report.html`` into ``run`` (whole: a reader never sees half a page)."""
    run.write_text(REPORT, build_report(run))
