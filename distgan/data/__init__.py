"""Datasets as Parquet shards plus ``manifest.json``, and the importers that make them.

    manifest, skipped = import_source("train-images-idx3-ubyte.gz", "data/fm",
                                      labels="train-labels-idx1-ubyte.gz")
    images, labels = load_arrays(read_manifest("data/fm"))  # (N, C, H, W) uint8, (N,) int64

``EMBEDDED_DIR`` holds the default dataset shipped with the package: the first 10,000
Fashion-MNIST training images (1×28×28) with their labels and class names
(``class_name(manifest, 0) == "T-shirt/top"``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

EMBEDDED_DIR = Path(__file__).parent / "embedded"

# Each name below is imported from its module when first asked for: a Ray Data task that only
# checks shard files (data/verify.py) then imports no PyTorch (importers.py does).
_HOME = {
    "import_source": "importers", "read_idx": "importers", "read_image_folder": "image_files",
    "read_npz": "importers",
    "ShardInfo": "manifest", "ShardManifest": "manifest", "class_name": "manifest",
    "read_manifest": "manifest",
    "load_arrays": "reading", "read_labels": "reading", "read_rows": "reading",
    "verify_shards": "reading",
    "write_shards": "shards",
}  # fmt: skip


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def data_location(source: str) -> str:
    """A job's ``data.source`` as a folder or URI: ``embedded`` is the copy inside the package."""
    return str(EMBEDDED_DIR) if source == "embedded" else source


__all__ = [
    "EMBEDDED_DIR",
    "data_location",
    "ShardInfo",
    "ShardManifest",
    "class_name",
    "import_source",
    "load_arrays",
    "read_idx",
    "read_image_folder",
    "read_manifest",
    "read_npz",
    "read_labels",
    "read_rows",
    "verify_shards",
    "write_shards",
]
