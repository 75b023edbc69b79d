"""Datasets as Parquet shards plus ``manifest.json``, and the importers that make them.

    manifest, skipped = import_source("train-images-idx3-ubyte.gz", "data/fm",
                                      labels="train-labels-idx1-ubyte.gz")
    images, labels = load_arrays(read_manifest("data/fm"))  # (N, C, H, W) uint8, (N,) int64

``EMBEDDED_DIR`` holds the default dataset shipped with the package: the first 10,000
Fashion-MNIST training images (1×28×28) with their labels and class names
(``class_name(manifest, 0) == "T-shirt/top"``).
"""

from pathlib import Path

from distgan.data.importers import import_source, read_idx, read_image_folder, read_npz
from distgan.data.manifest import ShardInfo, ShardManifest, class_name, read_manifest
from distgan.data.reading import load_arrays, read_labels, read_rows, verify_shards
from distgan.data.shards import write_shards

EMBEDDED_DIR = Path(__file__).parent / "embedded"


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
