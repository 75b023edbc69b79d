"""``distgan sample RUN_DIR|CHECKPOINT --n 64 --out grid.png|x.npy [--seed S]``.

Draws from the EMA generator of a run's latest checkpoint (or the given checkpoint folder).
A ``.png`` output is a grid; a ``.npy`` output is the raw uint8 array, N×C×H×W, for other tools.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distgan.config import load_resolved
from distgan.errors import CheckpointError, JobError
from distgan.images import save_grid, to_uint8
from distgan.models import build_models
from distgan.train import checkpoint as ckpts


def add_parser(verbs) -> None:
    p = verbs.add_parser("sample", help="draw images from a trained generator")
    p.add_argument("source", help="a run directory or a checkpoint folder")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", required=True, help="grid.png, or x.npy for the raw uint8 array")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    p.set_defaults(run=run)


def load_generator(source: str | Path) -> tuple[torch.nn.Module, int, str]:
    """The EMA generator (G if the run kept no EMA) of a checkpoint, its z size, its path."""
    source = Path(source)
    folder = source if (source / ckpts.STATE_FILE).is_file() else ckpts.latest(source)
    if folder is None:
        raise CheckpointError(f"{source}: no loadable checkpoint in this run directory yet")
    ckpt = ckpts.load(folder)
    spec = load_resolved(ckpt["job"], source=f"{folder}/{ckpts.STATE_FILE}")
    shape = tuple(ckpt["image_shape"])
    G, _ = build_models(spec.model.arch, spec.model.z_dim, spec.model.width, shape)
    G.load_state_dict(ckpt["G_ema"] or ckpt["G"])
    return G.eval(), spec.model.z_dim, str(folder)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise JobError(f"--n: expected a positive number of images, got {args.n}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npy"):
        raise JobError(f"--out {out}: expected a .png (grid) or .npy (raw uint8 array) file name")
    G, z_dim, folder = load_generator(args.source)
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        images = np.concatenate(
            [
                to_uint8(G(torch.randn(len(chunk), z_dim, generator=g)))
                for chunk in np.array_split(np.arange(args.n), max(1, args.n // 256))
            ]
        )  # (N, C, H, W) uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, images)
    else:
        save_grid(images, out)
    print(f"{out}: {args.n} samples from {folder}")
    return 0
