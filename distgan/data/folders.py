"""Image folders read as they are (JPEG, PNG, WebP), locally or under a bucket's prefix: no import.

    manifest = list_folder("s3://bucket/photos", resolution=64, channels=3)  # on the driver
    manifest.files      # ("cats/a.jpg", "dogs/b.webp", ...): sorted, relative to the folder
    rows = decode_images(batch, root=..., classes={"cats": 0, "dogs": 1}, resolution=64,
                         channels=3)   # in Ray Data's CPU tasks (train/folder_data.py)

A folder has no ``manifest.json``; ``list_folder`` builds the equivalent from the listing alone
(shape from ``data.resolution`` and ``data.channels``, labels from the class subfolders, the count
of files), so that the driver's checks (the model serves the shape, a conditional model has
labels) run before Ray starts, and no image is opened there. Decoding, centre crop and resize
happen in ``decode_images`` (Pillow, as ``distgan data import`` does), which turns each file into
the row a Parquet shard holds (``image``: C*H*W uint8 bytes, ``label``), and a file Pillow cannot
read into a row carrying its ``error`` instead, so that one bad file costs a warning, not the run.
"""

from __future__ import annotations

import io
import posixpath
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image, ImageOps

from distgan.data.image_files import IMAGE_ERRORS, square_pixels
from distgan.data.manifest import ShardManifest
from distgan.errors import DataError
from distgan.storage import display, open_location

FOLDER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
NO_LABEL = -1  # the label column of a folder without class subfolders


@dataclass(frozen=True)
class FolderManifest(ShardManifest):
    """An image folder described like a shard manifest (``shards`` is empty): ``count`` images,
    of ``shape`` once decoded; ``files`` relative to ``root``, in training order."""

    files: tuple[str, ...] = ()


def list_folder(source: str, resolution: int, channels: int) -> FolderManifest:
    """The images under ``source`` (a folder, or a URI's prefix), found by suffix and sorted by
    their path in it. When no image lies directly in it, its immediate subfolders are the classes:
    labels 0..K-1 in sorted name order (as ``distgan data import`` and torchvision's ImageFolder
    label them), their names kept. DataError when the folder is missing or holds no image."""
    loc = open_location(source, field="data.source")
    root = display(loc.uri)
    if loc.is_local and not Path(loc.path).is_dir():
        raise DataError(f"{root}: no such folder")
    selector = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    files = sorted(
        posixpath.relpath(info.path, loc.path)
        for info in loc.fs.get_file_info(selector)
        # macOS leaves "._name.jpg" resource forks beside copied files: they are not images.
        if info.type == pafs.FileType.File
        and info.base_name.lower().endswith(FOLDER_SUFFIXES)
        and not info.base_name.startswith(".")
    )
    if not files:
        raise DataError(
            f"{root}: no JPEG, PNG or WebP images (subfolders searched too); with "
            "data.resolution set, data.source is a folder of images"
        )
    shape = (channels, resolution, resolution)
    source_text = f"image folder {root} decoded at {resolution}×{resolution}"
    if any("/" not in f for f in files):  # images at the top: no classes
        return FolderManifest(
            len(files), shape, None, None, source_text, (), loc.uri, files=tuple(files)
        )
    counts = Counter(f.split("/", 1)[0] for f in files)
    names = sorted(counts)
    return FolderManifest(
        count=len(files),
        shape=shape,
        labels=tuple(range(len(names))),
        label_counts={i: counts[name] for i, name in enumerate(names)},
        source=source_text,
        shards=(),
        root=loc.uri,
        class_names=dict(enumerate(names)),
        files=tuple(files),
    )


def folder_classes(manifest: FolderManifest) -> dict[str, int] | None:
    """Class subfolder name -> label, or None for a folder without classes."""
    if manifest.class_names is None:
        return None
    return {name: label for label, name in manifest.class_names.items()}


def decode_images(
    batch: dict[str, np.ndarray],
    root: str,
    classes: dict[str, int] | None,
    resolution: int,
    channels: int,
) -> pa.Table:
    """Files -> rows: ``batch`` holds ``bytes`` (a file's content) and ``path`` (where it lies in
    its file system, under ``root``). Each image is turned upright (EXIF), converted to gray or
    RGB, its shorter side resized to ``resolution`` and its centre cropped square. Returns
    ``image`` (C*R*R uint8 bytes, empty for a file that failed), ``label`` (its class subfolder's,
    or NO_LABEL) and ``error`` ('' or why the file could not be read, naming it)."""
    images, labels, errors = [], [], []
    for raw, path in zip(batch["bytes"], batch["path"], strict=True):
        rel = posixpath.relpath(str(path), root)
        labels.append(NO_LABEL if classes is None else classes[rel.split("/", 1)[0]])
        try:
            with Image.open(io.BytesIO(raw)) as image:
                pixels = square_pixels(ImageOps.exif_transpose(image), resolution, channels)
            images.append(pixels.tobytes())  # (C, R, R) in C order, as a shard's row
            errors.append("")
        except IMAGE_ERRORS as e:
            images.append(b"")
            errors.append(f"{rel}: unreadable image ({e})")
    return pa.table(
        {
            "image": pa.array(images, pa.binary()),
            "label": pa.array(labels, pa.int64()),
            "error": pa.array(errors, pa.string()),
        }
    )
