"""Image files into arrays: a folder of PNG/JPEG images read whole (``distgan data import``), and
the square crop that image folders read as they are (``folders.py``) share with it.

    images, labels, skipped = read_image_folder("photos/", resolution=64, channels=3)
    folder_class_names("photos/")        # ["cats", "dogs"]: the subfolders, in label order
    square_pixels(Image.open(f), 64, 3)  # (3, 64, 64) uint8: the shorter side resized, centred

Each image's shorter side is resized to the resolution (Lanczos) and the centre cropped; EXIF
orientation is applied first.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from distgan.errors import DataError
from distgan.progress import track

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_image_folder(
    folder: str | Path,
    resolution: int,
    channels: int | None = None,
    on_error: str = "fail",
    *,
    limit: int | None = None,
    changes: Counter | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Reads every PNG/JPEG under ``folder`` (recursively, in sorted order) as square images.

    Each image's shorter side is resized to ``resolution`` and the centre is cropped to
    resolution×resolution. ``channels`` 1 makes gray, 3 RGB, None gray only if every image is.
    When no image lies directly in ``folder``, its immediate subfolders are the classes (labels
    0..K-1 in sorted name order, like torchvision's ImageFolder); otherwise labels are None.
    An unreadable image raises DataError (``on_error="fail"``) or is skipped (``"skip"``).
    ``limit`` stops after that many readable images. ``changes`` counts the images that were
    ``"resized"``, ``"cropped"`` (not square) or converted (``"from <mode>"``, Pillow's mode).
    Returns (images (N, C, R, R) uint8, labels (N,) int64 or None, skipped relative paths).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    root = Path(folder)
    files = _image_files(root)
    if not files:
        raise DataError(f"{root}: no PNG or JPEG images found (subfolders searched too)")
    names = _folder_classes(files, root)
    classes = None if names is None else {name: i for i, name in enumerate(names)}
    if channels is None:
        # Only headers are read here; a file that fails is reported by the decoding pass.
        modes = [mode for mode in map(_peek_mode, files) if mode is not None]
        channels = 1 if modes and all(mode in _GRAY_MODES for mode in modes) else 3

    images, labels, skipped = [], [], []
    first_error = None  # (path, reason) of the first unreadable image
    for path in track(files, f"decoding {root}", unit="images"):
        if limit is not None and len(images) == limit:
            break
        try:
            with Image.open(path) as image:
                upright = ImageOps.exif_transpose(image)
                images.append(square_pixels(upright, resolution, channels))
            if changes is not None:
                changes.update(_changes(upright, resolution, channels))
        except IMAGE_ERRORS as e:
            # Under "fail" the scan goes on, so that the error can say how many there are.
            first_error = first_error or (path, e)
            skipped.append(path.relative_to(root).as_posix())
            continue
        if classes is not None:
            labels.append(classes[_class_of(path, root)])
    if first_error and on_error == "fail":
        path, e = first_error
        raise DataError(
            f"{path}: unreadable image ({e}); {len(skipped)} of {len(files)} images are "
            "unreadable; pass `--on-error skip` to skip such files"
        )
    if not images:
        raise DataError(f"{root}: none of the {len(files)} images could be read")
    return np.stack(images), np.array(labels, np.int64) if classes is not None else None, skipped


def _image_files(root: Path) -> list[Path]:
    """PNG/JPEG files under ``root``, sorted by their path relative to it."""
    files = (
        p
        for p in root.rglob("*")
        # macOS leaves "._name.png" resource forks beside copied files: they are not images.
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def folder_class_names(folder: str | Path) -> list[str] | None:
    """The class names of an image folder (its subfolders, in label order), or None when images
    lie directly in it (no labels); what ``read_image_folder`` labels by."""
    root = Path(folder)
    return _folder_classes(_image_files(root), root)


def _folder_classes(files: list[Path], root: Path) -> list[str] | None:
    if any(p.parent == root for p in files):
        return None
    return sorted({_class_of(p, root) for p in files})


def _class_of(path: Path, root: Path) -> str:
    return path.relative_to(root).parts[0]


def _peek_mode(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            return image.mode
    except IMAGE_ERRORS:
        return None


def square_pixels(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Converts, resizes the shorter side to ``resolution``, centre-crops; (C, R, R) uint8."""
    image = image.convert("L" if channels == 1 else "RGB")
    scale = resolution / min(image.size)
    width = max(resolution, round(image.width * scale))
    height = max(resolution, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    left, top = (width - resolution) // 2, (height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    pixels = np.asarray(image, dtype=np.uint8)  # (R, R) or (R, R, 3)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _changes(image: Image.Image, resolution: int, channels: int) -> list[str]:
    """What ``square_pixels`` does to ``image`` besides copying its pixels."""
    done = []
    if min(image.size) != resolution:
        done.append("resized")
    if image.width != image.height:
        done.append("cropped")
    if image.mode != ("L" if channels == 1 else "RGB"):
        done.append(f"from {image.mode}")
    return done
