"""Importers: IDX files, image folders and ``.npz`` arrays into (N, C, H, W) uint8 arrays.

    images, labels = read_idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    manifest, skipped = import_source("photos/", "data/photos", resolution=64, channels=3)

Every reader returns images (N, C, H, W) uint8 with C in {1, 3} and labels (N,) int64 or None;
``import_source`` picks the reader from the source and writes shards with ``write_shards``.
Image folders are read by ``image_files.read_image_folder``.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from distgan.data.image_files import folder_class_names, read_image_folder
from distgan.data.imbalance import long_tail_rows
from distgan.data.manifest import ShardManifest
from distgan.data.shards import write_shards
from distgan.errors import DataError

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
_GZIP_MAGIC = b"\x1f\x8b"
# The documented class names of IDX datasets (label k is the k-th name), found by the folder
# their files lie in: Debian's /usr/share/datasets/fashion-mnist/, torchvision's FashionMNIST/raw/.
IDX_CLASS_NAMES = {
    "fashionmnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple("0123456789"),
}  # fmt: skip
_IDX_IMAGES_NAME = re.compile(r"(train|t10k)-images[-.]idx3-ubyte(\.gz)?")
# What Pillow raises for a file it cannot decode (SyntaxError and ValueError come from some
# corrupt PNG chunks and JPEG markers).


def read_idx(
    images_path: str | Path, labels_path: str | Path | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads an IDX images file (and optionally its labels file), gzipped or not.

    Returns images (N, 1, H, W) uint8 and labels (N,) int64 or None; ``limit`` keeps the first
    ``limit`` of them (only those bytes are read). DataError for a wrong magic number, a
    truncated file, or label and image counts that differ.
    """
    images_path = Path(images_path)
    n, dims, data = _read_idx_file(images_path, IDX_IMAGES_MAGIC, limit)
    # A copy, because arrays over ``bytes`` are read-only and torch warns about those.
    images = np.frombuffer(data, dtype=np.uint8).reshape(-1, 1, *dims).copy()
    if labels_path is None:
        return images, None
    labels_path = Path(labels_path)
    n_labels, _, label_data = _read_idx_file(labels_path, IDX_LABELS_MAGIC, limit)
    if n_labels != n:
        raise DataError(
            f"{labels_path}: has {n_labels} labels but {images_path} has {n} images; "
            f"pass the labels file that belongs to these images"
        )
    return images, np.frombuffer(label_data, dtype=np.uint8).astype(np.int64)


def _read_idx_file(path: Path, magic: int, limit: int | None) -> tuple[int, tuple[int, ...], bytes]:
    """Returns (count in the header, the other dimensions, the bytes of the first items)."""
    ndim = magic & 0xFF
    kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
            if len(header) >= 4 and struct.unpack(">I", header[:4])[0] != magic:
                raise DataError(_wrong_magic(path, struct.unpack(">I", header[:4])[0], magic))
            if len(header) < 4 + 4 * ndim:
                raise DataError(
                    f"{path}: truncated IDX file: {len(header)} bytes, shorter than the "
                    f"{4 + 4 * ndim}-byte header of an IDX {kind} file"
                )
            n, *dims = struct.unpack(f">{ndim}I", header[4:])
            item = math.prod(dims)
            wanted = (n if limit is None else min(n, limit)) * item
            data = f.read(wanted)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except (EOFError, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path}: truncated or corrupt gzip file ({e}); download it again"
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) < wanted:
        size = f"{n} images of {dims[0]}×{dims[1]}" if kind == "images" else f"{n} labels"
        raise DataError(
            f"{path}: truncated IDX file: header says {size} ({n * item} bytes), found "
            f"{len(data)} bytes; download it again"
        )
    return n, tuple(dims), data


def _wrong_magic(path: Path, found: int, expected: int) -> str:
    if found == IDX_LABELS_MAGIC:
        return f"{path}: is an IDX labels file (magic 2049), not images; pass it with --labels"
    if found == IDX_IMAGES_MAGIC:
        return f"{path}: is an IDX images file (magic 2051), not labels; pass it as the source"
    return (
        f"{path}: not an IDX file (magic number {found}, expected {expected}); expected "
        f"MNIST-layout IDX files such as train-images-idx3-ubyte.gz"
    )


def idx_class_names(images_path: str | Path) -> tuple[str, ...] | None:
    """The documented class names of a known IDX dataset, or None: its images file is named
    ``train-images-idx3-ubyte[.gz]`` (or ``t10k-``) in a folder named after the dataset
    (``fashion-mnist``, ``FashionMNIST/raw``, ``mnist``), as its publishers and Debian lay
    it out."""
    path = Path(images_path).absolute()
    if not _IDX_IMAGES_NAME.fullmatch(path.name):
        return None
    for folder in path.parents[:2]:
        key = re.sub(r"[-_ ]", "", folder.name.lower())
        if key in IDX_CLASS_NAMES:
            return IDX_CLASS_NAMES[key]
    return None


def read_npz(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads ``images`` (and optional ``labels``) from an ``.npz`` file.

    ``images`` must be uint8, shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3};
    float images are refused rather than guessed at. Returns images (N, C, H, W) uint8 and
    labels (N,) int64 or None, the first ``limit`` of each when given.
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: is a single .npy array, not an .npz archive; save it with "
            f"np.savez(path, images=..., labels=...)"
        )
    with loaded:
        if "images" not in loaded:
            raise DataError(
                f"{path}: no 'images' array (found {', '.join(loaded) or 'none'}); save it "
                f"with np.savez(path, images=..., labels=...)"
            )
        images = loaded["images"]
        labels = loaded.get("labels")

    if images.dtype != np.uint8:
        found, example = str(images.dtype), ""
        if images.dtype.kind == "f" and images.size:
            found += f" in [{float(images.min()):g}, {float(images.max()):g}]"
            example = (
                ", e.g. (x * 255).round().astype(np.uint8) for [0, 1] or "
                "((x + 1) * 127.5).round().astype(np.uint8) for [-1, 1]"
            )
        raise DataError(f"{path}: 'images' is {found}; convert it to uint8 (0..255) first{example}")
    images = _to_nchw(images, path)
    if labels is None:
        return images[:limit], None
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: 'labels' must be {len(images)} integers (one per image), got "
            f"{labels.dtype} of shape {labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: 'labels' has negative values; use class indices 0..K-1")
    images, labels = images[:limit], labels[:limit]
    return images, labels.astype(np.int64)


def _to_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} -> (N, C, H, W), C-order."""
    shape = images.shape
    if images.ndim == 3:
        return np.ascontiguousarray(images[:, None])
    if images.ndim == 4:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if first and not last:
            return np.ascontiguousarray(images)
        if last and not first:
            return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise DataError(
        f"{path}: 'images' has shape {shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
        f"with C 1 or 3"
    )


def import_source(
    src: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    resolution: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    shard_size: int = 10000,
    on_error: str = "fail",
    class_names: list[str] | None = None,
    long_tail: float | None = None,
    long_tail_seed: int = 0,
    changes: Counter | None = None,
) -> tuple[ShardManifest, int]:
    """Imports ``src`` into shards under ``out``; returns (manifest, number of skipped images).

    ``src`` is a folder of images (``resolution`` required), an ``.npz`` file, or an IDX
    images file (``labels``: its IDX labels file). ``limit`` keeps the first N images (in
    sorted file order for a folder). ``resolution`` and ``channels`` resize image folders; for
    IDX and npz sources they may only restate the data's own size. The manifest names the
    classes: ``class_names`` (label k is the k-th), else a folder's subfolder names, else the
    documented names of a known IDX dataset (``idx_class_names``). ``long_tail``: an imbalance
    ratio R ≥ 1; the source (after ``limit``) is cut to a long-tailed subset (``data/imbalance.py``;
    which images a class keeps is chosen by ``long_tail_seed``), its protocol in the manifest.
    ``changes``: what resizing a folder's images did (``read_image_folder``).
    """
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder; check the path")
    is_npz = src.suffix.lower() == ".npz"
    if labels is not None and (src.is_dir() or is_npz):
        raise DataError(
            f"{labels}: --labels applies only to IDX sources; a folder's labels come from its "
            f"class subfolders and an .npz's from its 'labels' array"
        )
    skipped: list[str] = []
    if src.is_dir():
        if resolution is None:
            raise DataError(f"{src}: an image folder needs --resolution N (the square side)")
        images, image_labels, skipped = read_image_folder(
            src, resolution, channels, on_error, limit=limit, changes=changes
        )
        source = f"image folder {src.resolve().name}/ resized to {resolution}×{resolution}"
        known = folder_class_names(src)
    else:
        if is_npz:
            images, image_labels = read_npz(src, limit)
            source = f"npz {src.name}"
            known = None
        else:
            images, image_labels = read_idx(src, labels, limit)
            source = f"idx {src.name}" + (f" + {Path(labels).name}" if labels else "")
            known = idx_class_names(src)
        _check_size(src, images, resolution, channels)
    if len(images) == 0:
        raise DataError(f"{src}: holds no images")
    if limit is not None and len(images) == limit:
        source += f" (first {limit})"
    names = _class_names(src, image_labels, class_names, known)
    protocol = None
    if long_tail is not None:
        images, image_labels, protocol = _long_tail(
            src, images, image_labels, long_tail, long_tail_seed
        )
        source += f", long-tailed ×{long_tail:g} (seed {long_tail_seed})"
    manifest = write_shards(
        images, image_labels, out, shard_size=shard_size, source=source, class_names=names,
        long_tail=protocol,
    )  # fmt: skip
    return manifest, len(skipped)


def _long_tail(
    src: Path, images: np.ndarray, labels: np.ndarray | None, ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The long-tailed subset of ``images`` and ``labels``, and its protocol for the manifest."""
    if labels is None:
        raise DataError(
            f"--long-tail: {src} has no labels, so it has no classes to make a long tail of; "
            "import labelled data (IDX with --labels, class subfolders, or an .npz 'labels' array)"
        )
    if not (math.isfinite(ratio) and ratio >= 1):
        raise DataError(
            f"--long-tail: the imbalance ratio (largest class / smallest) must be a number of at "
            f"least 1, got {ratio:g}; e.g. --long-tail 100"
        )
    values, counts = np.unique(labels, return_counts=True)
    rows = long_tail_rows(labels, ratio, seed)
    protocol = {
        "ratio": ratio,
        "seed": seed,
        "source_counts": {str(v): int(n) for v, n in zip(values, counts, strict=True)},
    }
    return images[rows], labels[rows], protocol


def _class_names(
    src: Path, labels: np.ndarray | None, given: list[str] | None, known
) -> dict[int, str] | None:
    """label -> name: the names given (--class-names), else the source's own, else None."""
    if labels is None:
        if given is not None:
            raise DataError(f"{src}: has no labels, so --class-names has nothing to name; drop it")
        return None
    top = int(labels.max()) if labels.size else -1
    if given is not None and len(given) <= top:
        raise DataError(
            f"--class-names: {len(given)} names, but {src}'s labels run to {top}; give one "
            f"name per label 0..{top}, in label order"
        )
    names = given if given is not None else known
    if names is None or len(names) <= top or labels.min() < 0:
        return None  # the source's own names do not cover these labels: numbers, as before
    return dict(enumerate(names))


def _check_size(src: Path, images: np.ndarray, resolution: int | None, channels: int | None):
    """IDX and npz data are taken as they are: --resolution/--channels may only restate them."""
    c, h, w = images.shape[1:]
    if resolution is not None and (h, w) != (resolution, resolution):
        raise DataError(
            f"{src}: images are {h}×{w}; --resolution resizes only image folders, drop it"
        )
    if channels is not None and c != channels:
        raise DataError(
            f"{src}: images have {c} channel(s); --channels converts only image folders, drop it"
        )
