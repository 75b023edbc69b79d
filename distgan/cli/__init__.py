"""The ``distgan`` command: one module per verb, each with ``add_parser`` and ``run``.

    distgan train jobs/quickstart.yaml
    distgan data import train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --out data/fm
    distgan sample runs/00000-quickstart --n 64 --out grid.png
    distgan report runs/00000-quickstart
    distgan explore runs/00000-quickstart
    distgan export runs/00000-quickstart --format onnx
    distgan rate runs/00000-quickstart

User errors (``distgan.errors.UserError``) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from distgan.errors import UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage block by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    from distgan.cli import (
        data,
        explore,
        export,
        jobs,
        rate,
        report,
        runs,
        sample,
        submit,
        train,
        tune,
    )  # fmt: skip
    from distgan.cli import eval as eval_verb

    parser = _Parser(prog="distgan", description="Distributed GAN training jobs on Ray.")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    verbs_in_order = (
        train, data, sample, eval_verb, explore, export, report, rate, runs, submit, jobs, tune,
    )  # fmt: skip
    for module in verbs_in_order:
        module.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
