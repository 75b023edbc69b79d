"""An RGB JPEG folder made from the embedded Fashion-MNIST images, for the image-folder recipe
(jobs/stylegan2_folder.yaml) and the data-stall benchmark: no photos can be downloaded here.

    .venv/bin/python benchmarks/photo_folder.py --out data/photos            # 2,000 images
    .venv/bin/python benchmarks/photo_folder.py --out /tmp/p --n 10000 --classes 10

Each image is upscaled to a random size (96 to 160 pixels a side, rarely square), tinted in a
colour of its class and saved as a JPEG under its class's subfolder (``0-T-shirt-top``, ...), as
a camera's folder of photos would be: mixed sizes, RGB, a decode per file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image

from distgan.data import EMBEDDED_DIR, class_name, load_arrays, read_manifest


def write_photo_folder(out: Path, n: int, classes: int, seed: int = 0) -> int:
    """Writes up to ``n`` JPEGs of the first ``classes`` classes into ``out/<label>-<name>/``;
    returns how many."""
    manifest = read_manifest(EMBEDDED_DIR)
    images, labels = load_arrays(manifest)  # (N, 1, 28, 28) uint8, (N,)
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.3, 1.0, (classes, 3))  # an RGB colour a class
    rows = np.flatnonzero(labels < classes)[:n]
    for i in rows:
        label = int(labels[i])
        name = re.sub(r"[^A-Za-z0-9]+", "-", class_name(manifest, label)).strip("-")
        folder = out / f"{label}-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        gray = images[i, 0].astype(np.float32)[..., None]  # (28, 28, 1)
        rgb = (gray * tints[label] + (255 - gray) * 0.1).clip(0, 255).astype(np.uint8)
        size = tuple(int(s) for s in rng.integers(96, 161, 2))  # (width, height)
        photo = Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC)
        photo.save(folder / f"{i:06d}.jpg", quality=90)
    return len(rows)


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    ap.add_argument("--classes", type=int, default=2, help="the first K classes (default 2)")
    args = ap.parse_args()
    count = write_photo_folder(args.out, args.n, args.classes)
    print(f"{count} JPEGs in {args.out}/ ({args.classes} class subfolders)")


if __name__ == "__main__":
    main_cli()
