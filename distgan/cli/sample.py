"""``distgan sample RUN_DIR|CHECKPOINT --n 64 --out grid.png|x.npy [--seed S] [--class K|NAME]``.

Draws from the EMA generator of a run's latest checkpoint (or the given checkpoint folder).
A ``.png`` output is a grid; a ``.npy`` output is the raw uint8 array, N×C×H×W, for other tools.
A class-conditional run draws every class in turn, or class K alone with ``--class K``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distgan.errors import CheckpointError, JobError, UserError


def add_parser(verbs) -> None:
    p = verbs.add_parser("sample", help="draw images from a trained generator")
    p.add_argument("source", help="a run directory or a checkpoint folder")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", required=True, help="grid.png, or x.npy for the raw uint8 array")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    p.add_argument(
        "--class",
        dest="label",
        default=None,
        help="a class-conditional run: draw this class only, by number or by the name the data "
        "gives it (default: every class in turn)",
    )
    p.set_defaults(run=run)


def _class_number(asked: str, num_classes: int, spec, folder) -> int | str:
    """``--class``'s number: as given, or the class the run's data names so (any case)."""
    if asked.strip().lstrip("-").isdigit() or not num_classes:
        return int(asked) if asked.strip().lstrip("-").isdigit() else asked
    from distgan.data import data_location, read_manifest

    try:
        names = read_manifest(data_location(spec.data.source)).class_names or {}
    except UserError:
        names = {}
    known = {k: v for k, v in sorted(names.items()) if int(k) < num_classes}
    if not known:
        raise CheckpointError(
            f"--class {asked}: the run's data ({spec.data.source}) gives its classes no names "
            f"here; pass a number from 0 to {num_classes - 1}"
        )
    found = [int(k) for k, v in known.items() if v.casefold() == asked.strip().casefold()]
    if not found:
        listing = ", ".join(f"{k} {v}" for k, v in known.items())
        raise CheckpointError(f"--class {asked}: no class of that name in {folder}; its classes: "
                              f"{listing}")  # fmt: skip
    return found[0]


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise JobError(f"--n: expected a positive number of images, got {args.n}")
    out = Path(args.out)
    if out.suffix not in (".png", ".npy"):
        raise JobError(f"--out {out}: expected a .png (grid) or .npy (raw uint8 array) file name")
    import numpy as np
    import torch

    from distgan.generators import load_generator
    from distgan.images import save_grid, to_uint8
    from distgan.models import generate
    from distgan.storage import display

    G, spec, folder, _ = load_generator(args.source)
    labels = None
    if args.label is not None:
        args.label = _class_number(args.label, G.num_classes, spec, folder)
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
