"""``distgan sample RUN_DIR|CHECKPOINT --n 64 --out grid.png|x.npy [--seed S] [--class K]``.

Draws from the EMA generator of a run's latest checkpoint (or the given checkpoint folder).
A ``.png`` output is a grid; a ``.npy`` output is the raw uint8 array, N×C×H×W, for other tools.
A class-conditional run draws every class in turn, or class K alone with ``--class K``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distgan.errors import CheckpointError, JobError
from distgan.generate import load_generator
from distgan.images import save_grid, to_uint8
from distgan.models import generate
from distgan.storage import display


def add_parser(verbs) -> None:
    p = verbs.add_parser("sample", help="draw images from a trained generator")
    p.add_argument("source", help="a run directory or a checkpoint folder")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", required=True, help="grid.png, or x.npy for the raw uint8 array")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    p.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        help="a class-conditional run: draw this class only (default: every class in turn)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise JobError(f"--n: expected a positive number of images, got {args.n}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npy"):
        raise JobError(f"--out {out}: expected a .png (grid) or .npy (raw uint8 array) file name")
    G, spec, folder, _ = load_generator(args.source)
    labels = None
    if args.label is not None:
        if not G.num_classes:
            raise CheckpointError(
                f"--class {args.label}: {folder} is not class-conditional (model.conditional "
                "false); leave --class out"
            )
        if not 0 <= args.label < G.num_classes:
            raise CheckpointError(
                f"--class {args.label}: {folder} knows classes 0 to {G.num_classes - 1}; pass one "
                "of them"
            )
        labels = torch.full((args.n,), args.label)
    images = to_uint8(generate(G, spec.model.z_dim, args.n, args.seed, labels=labels))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, images)
    else:
        save_grid(images, out)
    drawn = "" if labels is None else f" of class {args.label}"
    print(f"{out}: {args.n} samples{drawn} from {display(str(folder))}")
    return 0
