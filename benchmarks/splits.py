"""Fashion-MNIST's dataset folders for the benchmarks, and the held-out split that keeps the test
images for the final figures.

    .venv/bin/python benchmarks/splits.py        # writes the four folders below (those absent)

- ``data/fashion-mnist`` (the 60,000 training images) and ``data/fashion-mnist-test`` (the
  10,000 test images): ``distgan data import`` of the IDX files, as ``make fashion-mnist`` does;
- ``data/fashion-mnist-train50k`` and ``data/fashion-mnist-val10k``: the 60,000 training images
  split in two, 1,000 of each class held out (seed 0);
- ``data/fashion-mnist-train50k-lt<RATIO>-seed<S>``: train50k's long tail, by ``distgan data
  import --long-tail RATIO --seed S`` (``long_tail``; ``longtail.py`` writes it).

Recipes and options are chosen on the held-out split: selection runs (``ablation.py``,
``longtail.py``) train on train50k and are scored against val10k. Final figures
(``time_to_quality.py``, ``quickstart.py``) train on the 60,000 and are scored against the test
split, once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from cli_runs import ROOT, cli

IDX_FOLDERS = (  # Debian's dataset-fashion-mnist, or the copy beside this checkout
    Path("/usr/share/datasets/fashion-mnist"),
    ROOT.parent / "shared" / "datasets" / "fashion-mnist",
)
TRAIN60K = ROOT / "data" / "fashion-mnist"
TEST10K = ROOT / "data" / "fashion-mnist-test"
TRAIN50K = ROOT / "data" / "fashion-mnist-train50k"
VAL10K = ROOT / "data" / "fashion-mnist-val10k"
HELD_OUT_PER_CLASS = 1000
SPLIT_SEED = 0


def fashion_folder() -> Path:
    """The folder of Fashion-MNIST's four IDX files."""
    for folder in IDX_FOLDERS:
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    raise SystemExit(f"no Fashion-MNIST IDX files in {' or '.join(map(str, IDX_FOLDERS))}")


def _written(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def imported() -> tuple[Path, Path]:
    """data/fashion-mnist and data/fashion-mnist-test, imported by ``distgan data import`` if
    absent (``make fashion-mnist``'s two commands)."""
    idx = fashion_folder()
    for out, prefix in ((TRAIN60K, "train"), (TEST10K, "t10k")):
        if not _written(out):
            cli("data", "import", idx / f"{prefix}-images-idx3-ubyte.gz",
                "--labels", idx / f"{prefix}-labels-idx1-ubyte.gz", "--out", out)  # fmt: skip
            print(f"imported {out.relative_to(ROOT)}", flush=True)
    return TRAIN60K, TEST10K


def held_out() -> tuple[Path, Path]:
    """data/fashion-mnist-train50k and data/fashion-mnist-val10k, written from data/fashion-mnist
    if absent: each class's rows in a seeded order, the first HELD_OUT_PER_CLASS of each to val10k
    and the rest to train50k, both in the training file's order."""
    if _written(TRAIN50K) and _written(VAL10K):
        return TRAIN50K, VAL10K
    from distgan.data import load_arrays, read_manifest, write_shards

    manifest = read_manifest(imported()[0])
    images, labels = load_arrays(manifest)  # (60000, 1, 28, 28) uint8, (60000,) int64
    rng = np.random.default_rng(SPLIT_SEED)
    val = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == k))
        val[rows[:HELD_OUT_PER_CLASS]] = True
    for out, rows, what in ((TRAIN50K, ~val, "kept"), (VAL10K, val, "held out")):
        source = (
            f"{manifest.source}: {rows.sum():,} of its {len(labels):,} images, {what} by a split "
            f"holding out {HELD_OUT_PER_CLASS:,} a class (seed {SPLIT_SEED})"
        )
        write_shards(images[rows], labels[rows], out, source=source,
                     class_names=manifest.class_names)  # fmt: skip
        print(f"wrote {out.relative_to(ROOT)}: {rows.sum():,} images", flush=True)
    return TRAIN50K, VAL10K


def long_tail(ratio: float, seed: int) -> Path:
    """train50k cut to its long tail (class k of K keeps ratio^(-k/(K-1)) of its images; which
    ones by ``seed``) by ``distgan data import --long-tail``, if absent. Returns the folder."""
    out = ROOT / "data" / f"{TRAIN50K.name}-lt{ratio:g}-seed{seed}"
    if _written(out):
        return out
    from distgan.data import load_arrays, read_manifest

    manifest = read_manifest(held_out()[0])
    images, labels = load_arrays(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        npz, names = Path(tmp) / f"{TRAIN50K.name}.npz", Path(tmp) / "class-names.txt"
        np.savez(npz, images=images, labels=labels)
        names.write_text("".join(f"{manifest.class_names[k]}\n" for k in sorted(manifest.labels)))
        print(cli("data", "import", npz, "--class-names", names, "--long-tail", f"{ratio:g}",
                  "--seed", seed, "--out", out).strip(), flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    imported()
    held_out()
