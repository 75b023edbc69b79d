"""A shard file's bytes checked against the manifest's sha256 before any row of it is used.

    ray.data.read_binary_files(paths, include_paths=True).map_batches(
        verified_shard_rows, batch_size=1, fn_kwargs={"sha256": ..., "columns": ["image"]})

Ray Data runs ``verified_shard_rows`` in a task of its own for every run that keeps its data in
memory, before the first step: this module imports pyarrow and nothing of PyTorch's (a task
worker that imported ``distgan.data.reader`` spent about 1.5 s of CPU on PyTorch alone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distgan.data.manifest import FIX
from distgan.errors import DataError


def verified_parquet(raw: bytes, path: str, sha256: str) -> pq.ParquetFile:
    """A shard file's bytes as Parquet, once they hash to the manifest's ``sha256`` (hex);
    DataError naming ``path`` when they do not (flipped on disk or in transit: the Parquet checks
    pass such bytes silently)."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DataError(
            f"{path}: sha256 is {digest}, manifest says {sha256}; the file was modified or "
            f"damaged since it was imported; {FIX}"
        )
    return pq.ParquetFile(pa.BufferReader(raw))


def verified_shard_rows(
    batch: dict[str, np.ndarray], sha256: dict[str, str], columns: list[str]
) -> Iterator[pa.Table]:
    """Whole shard files -> their rows, each file's bytes checked against its sha256 first.

    ``batch``: rows of ``ray.data.read_binary_files(paths, include_paths=True)`` (``bytes``: a
    file's content, ``path``: where it was read); ``sha256``: shard file name -> the manifest's
    hex digest. Yields a table of ``columns`` per Parquet row group (at most ~64 MiB each, as
    written); DataError naming the shard whose bytes are not the ones the manifest hashed::

        ray.data.read_binary_files(paths, include_paths=True).map_batches(
            verified_shard_rows, batch_size=1, fn_kwargs={"sha256": ..., "columns": ["image"]})
    """
    for raw, path in zip(batch["bytes"], batch["path"], strict=True):
        parquet = verified_parquet(raw, str(path), sha256[str(path).rsplit("/", 1)[-1]])
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group, columns=columns)
