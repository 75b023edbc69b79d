"""``distgan data``: import datasets into Parquet shards, and verify shard folders.

    distgan data import train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --out data/fm
    distgan data import photos/ --resolution 64 --channels 3 --on-error skip --out data/photos
    distgan data import train-images-idx3-ubyte.gz --labels ... --long-tail 100 --out data/fm-lt
    distgan data verify data/fm

Each prints one summary line; a user error prints one line and exits 2 (``distgan.cli.main``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from distgan.errors import DataError


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Adds the ``data`` verb with its ``import`` and ``verify`` sub-verbs to ``verbs``."""
    data = verbs.add_parser("data", help="import datasets into shards; verify shard folders")
    sub = data.add_subparsers(
        dest="data_verb", metavar="{import,verify}", required=True, parser_class=type(data)
    )

    imp = sub.add_parser(
        "import",
        help="IDX files, an image folder or an .npz -> Parquet shards + manifest.json",
        description="Import IDX files (MNIST layout, gzipped or not), a folder of PNG/JPEG "
        "images (class subfolders give labels) or an .npz with 'images' and optional 'labels'.",
    )
    imp.add_argument("src", help="IDX images file, image folder, or .npz file")
    imp.add_argument("--out", required=True, help="folder to write (new, empty or earlier shards)")
    imp.add_argument("--labels", help="IDX labels file that goes with an IDX images file")
    imp.add_argument("--resolution", type=_positive_int, help="square side for image folders")
    imp.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="1 gray, 3 RGB (image folders; default: gray only if every image is)",
    )
    imp.add_argument(
        "--class-names",
        metavar="FILE|a,b,c",
        help="names of the labels 0..K-1 in order: a file of one name a line, or a comma list "
        "(default: a folder's subfolder names; Fashion-MNIST's and MNIST's documented names)",
    )
    imp.add_argument("--limit", type=_positive_int, help="keep only the first N images")
    imp.add_argument(
        "--long-tail",
        type=_ratio,
        metavar="RATIO",
        help="keep a long-tailed subset (CIFAR-10-LT protocol): class k of K (sorted labels) keeps "
        "RATIO^(-k/(K-1)) of its images, so the largest class has RATIO times the smallest",
    )
    imp.add_argument(
        "--seed",
        type=int,
        default=0,
        help="with --long-tail: seed of which images each class keeps (default: 0)",
    )
    imp.add_argument(
        "--shard-size", type=_positive_int, default=10000, help="images per shard (default: 10000)"
    )
    imp.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="what to do with an unreadable image in a folder (default: fail)",
    )
    imp.set_defaults(run=run_import)

    ver = sub.add_parser(
        "verify", help="check a shard folder against its manifest: hashes, schemas, shapes, labels"
    )
    ver.add_argument(
        "folder", help="shard folder holding manifest.json, or embedded (the packaged data)"
    )
    ver.set_defaults(run=run_verify)


def run_import(args: argparse.Namespace) -> int:
    """Imports ``args.src`` into ``args.out`` and prints one summary line (and one for the
    fitted files the import removed: they describe the images it replaced)."""
    from distgan.data import class_name, import_source
    from distgan.data.shards import fitted_files

    fitted = fitted_files(args.out)
    changes: Counter = Counter()
    manifest, skipped = import_source(
        args.src,
        args.out,
        labels=args.labels,
        resolution=args.resolution,
        channels=args.channels,
        limit=args.limit,
        shard_size=args.shard_size,
        on_error=args.on_error,
        class_names=None if args.class_names is None else parse_class_names(args.class_names),
        long_tail=args.long_tail,
        long_tail_seed=args.seed,
        changes=changes,
    )
    c, h, w = manifest.shape
    classes = "no labels" if manifest.labels is None else f"{len(manifest.labels)} classes"
    if manifest.class_names:
        first = [class_name(manifest, k) for k in manifest.labels[:3]]
        classes += f" ({', '.join(first)}{', ...' if len(manifest.labels) > 3 else ''})"
    shards = f"{len(manifest.shards)} shard" + ("s" if len(manifest.shards) > 1 else "")
    line = f"imported {manifest.count} images of {c}×{h}×{w}, {classes}, {shards} -> {args.out}"
    if manifest.long_tail:
        counts = [manifest.label_counts[k] for k in manifest.labels]
        line += f"; long tail ×{args.long_tail:g}: {', '.join(map(str, counts))} images a class"
    if skipped:
        line += f"; skipped {skipped} unreadable image" + ("s" if skipped > 1 else "")
    print(line)
    if changes:
        print(changes_line(changes, manifest.shape))
    if fitted:
        print(
            f"removed {', '.join(fitted)} from {args.out}: fitted on the images this import "
            f"replaced; fit it again: distgan eval fit-features {args.out}"
        )
    if args.resolution is not None and (warning := resolution_warning(manifest.shape)):
        sys.stderr.write(f"warning: --resolution {args.resolution}: {warning}\n")
    return 0


def changes_line(changes: Counter, shape: tuple[int, int, int]) -> str:
    """What fitting an image folder into ``shape`` (C, R, R) did to its images, with counts
    (``image_files.read_image_folder``'s ``changes``)."""
    c, side, _ = shape
    target = "gray" if c == 1 else "RGB"
    done = []
    if changes["resized"]:
        done.append(f"resized {changes['resized']} image{'s' * (changes['resized'] > 1)}")
    if changes["cropped"]:
        done.append(f"cropped {changes['cropped']} to their centre square")
    modes = {k.removeprefix("from "): n for k, n in changes.items() if k.startswith("from ")}
    if modes:
        kinds = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
        done.append(f"converted {sum(modes.values())} to {target} ({kinds})")
    return f"to make them {side}×{side} {target}: " + ", ".join(done)


def resolution_warning(shape: tuple[int, int, int]) -> str | None:
    """Why images of ``shape`` (C, N, N) fit none of the registered architectures that serve
    fixed sizes, naming the sizes that do; None when one of them fits (or none has fixed sizes).
    An architecture that serves any size (mlp) trains on them, and the warning says so."""
    from distgan.models import MODELS, square_sides

    c, side, _ = shape
    fixed, any_size = {}, []
    for arch in sorted(MODELS):
        sides = square_sides(arch, c)
        if sides is None:
            any_size.append(arch)
        elif side in sides:
            return None
        else:
            fixed[arch] = sides
    if not fixed:
        return None
    served = "; ".join(f"{a} serves {', '.join(map(str, s)) or 'none'}" for a, s in fixed.items())
    usable = [str(s) for s in sorted({s for sides in fixed.values() for s in sides})]
    only = f"only {', '.join(any_size)} (any size) trains on them" if any_size else "no model fits"
    fix = ""
    if usable:
        either = ", ".join(usable[:-1]) + " or " + usable[-1] if len(usable) > 1 else usable[0]
        fix = f"; re-import with --resolution {either} to train {', '.join(fixed)}"
    return f"{c}×{side}×{side} images fit no fixed-size architecture ({served}), {only}{fix}"


def parse_class_names(text: str) -> list[str]:
    """``--class-names``: a file of one name a line (blank lines skipped), or ``a,b,c``."""
    path = Path(text)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"--class-names {text}: cannot read the file ({e})") from None
    else:
        names = [name.strip() for name in text.split(",")]
    if not names or not all(names):
        raise DataError(
            f"--class-names {text!r}: an empty name; give a file of one name a line or a,b,c"
        )
    return names


def run_verify(args: argparse.Namespace) -> int:
    """Checks every shard in ``args.folder`` (``embedded``, as in a job's data.source, is the
    package's copy) against its manifest and prints one OK line."""
    from distgan.data import data_location, read_manifest, verify_shards

    manifest = read_manifest(data_location(args.folder))
    verify_shards(manifest)
    c, h, w = manifest.shape
    print(
        f"OK {args.folder}: {manifest.count} images of {c}×{h}×{w} in {len(manifest.shards)} "
        f"shard(s); hashes, schemas, row counts, image size and labels match"
    )
    return 0


def _ratio(text: str) -> float:
    """``--long-tail``: an imbalance ratio, a finite number ≥ 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected an imbalance ratio of at least 1 (largest class / smallest), got {text!r}; "
            "e.g. --long-tail 100"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
