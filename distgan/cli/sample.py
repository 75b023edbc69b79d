"""``distgan sample RUN_DIR|CHECKPOINT --n 64 --out grid.png|x.npy [--seed S]``.

Draws from the EMA generator of a run's latest checkpoint (or the given checkpoint folder).
A ``.png`` output is a grid; a ``.npy`` output is the raw uint8 array, N×C×H×W, for other tools.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from distgan.errors import JobError
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise JobError(f"--n: expected a positive number of images, got {args.n}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npy"):
        raise JobError(f"--out {out}: expected a .png (grid) or .npy (raw uint8 array) file name")
    G, spec, folder, _ = load_generator(args.source)
    images = to_uint8(generate(G, spec.model.z_dim, args.n, args.seed))  # (N, C, H, W) uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, images)
    else:
        save_grid(images, out)
    print(f"{out}: {args.n} samples from {display(str(folder))}")
    return 0
