"""Flags that several verbs share."""

from __future__ import annotations

import argparse


def add_overrides_flag(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``: JobSpec overrides."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a job field, e.g. --set {example} (repeatable)",
    )
