"""``distgan report RUN|SEARCH_DIR``: (re)builds ``report.html`` in a run or a search folder.

    distgan report runs/00003-quickstart            # -> runs/00003-quickstart/report.html
    distgan report runs/00004-quickstart-tune       # the trials compared
    distgan report "s3://bucket/runs/00003-quickstart?endpoint_override=127.0.0.1:9000&scheme=http"

The page is one self-contained file (charts and sample grids embedded): open it in any browser,
offline. Training writes it too, at checkpoints and at the end.
"""

from __future__ import annotations

import argparse


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "report",
        help="write report.html for a run or a search",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", metavar="RUN", help="a run folder or a search folder (path or URI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from distgan.report import REPORT, write_report
    from distgan.storage import display, join, open_location

    location = open_location(args.source, field="RUN")
    write_report(location)
    print(f"written: {display(join(location.uri, REPORT))}")
    return 0
