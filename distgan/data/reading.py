"""Reading a dataset's shards: checking them against the manifest, all rows, picked rows.

    verify_shards(manifest)                      # footers, schemas, row counts, sha256
    images, labels = load_arrays(manifest)       # (N, C, H, W) uint8, (N,) int64 or None
    some = read_rows(manifest, np.array([3, 70, 9000]))   # only the row groups that hold them

Every read goes through the dataset's file system (``ShardManifest.location``): a local folder or
a prefix in object storage. The format itself is ``shards.py``'s.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distgan.data.shards import FIX, ShardManifest, shard_schema
from distgan.errors import DataError
from distgan.storage import Location, display, join


def verify_shards(manifest: ShardManifest, hashes: bool = True) -> None:
    """Checks each shard's Parquet footer, schema, row count and (``hashes``) sha256 against
    ``manifest``.

    Returns None; raises DataError naming the first shard file that does not match.
    """
    expected = shard_schema(manifest.labels is not None)
    loc = manifest.location()
    for info, path in zip(manifest.shards, manifest.shard_paths, strict=True):
        path = display(path)
        try:
            with loc.fs.open_input_file(loc.child(info.file).path) as f:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: truncated or corrupt Parquet file ({e}); {FIX}") from None
        # Names and types only: a writer other than ours may mark the columns nullable.
        if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in expected]:
            found = ", ".join(f"{f.name}: {f.type}" for f in schema)
            want = ", ".join(f"{f.name}: {f.type}" for f in expected)
            raise DataError(f"{path}: columns are ({found}), expected ({want}); {FIX}")
        if meta.num_rows != info.count:
            raise DataError(f"{path}: has {meta.num_rows} rows, manifest says {info.count}; {FIX}")
        if not hashes:
            continue
        digest = _stream_sha256(loc, info.file)
        if digest != info.sha256:
            raise DataError(
                f"{path}: sha256 is {digest}, manifest says {info.sha256}; the "
                f"file was modified or damaged; {FIX}"
            )


def load_arrays(manifest: ShardManifest) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads every shard into images (N, C, H, W) uint8 and labels (N,) int64 or None."""
    item = int(np.prod(manifest.shape))
    images = np.empty((manifest.count, *manifest.shape), dtype=np.uint8)
    flat = images.reshape(manifest.count, item)  # a view: filling it fills ``images``
    labels = None if manifest.labels is None else np.empty(manifest.count, dtype=np.int64)
    columns = ["image"] if labels is None else ["image", "label"]
    row = 0
    loc = manifest.location()
    for info, path in zip(manifest.shards, manifest.shard_paths, strict=True):
        path = display(path)
        try:
            table = pq.read_table(loc.child(info.file).path, columns=columns, filesystem=loc.fs)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: truncated or corrupt Parquet file ({e}); {FIX}") from None
        if table.num_rows != info.count:
            raise DataError(f"{path}: has {table.num_rows} rows, manifest says {info.count}; {FIX}")
        for chunk in table.column("image").chunks:
            flat[row : row + len(chunk)] = _binary_to_rows(chunk, item, path)
            row += len(chunk)
        if labels is not None:
            labels[row - info.count : row] = table.column("label").to_numpy()
    return images, labels


def read_rows(manifest: ShardManifest, rows: np.ndarray) -> np.ndarray:
    """The images at the sorted dataset indices ``rows`` (K,), as (K, C, H, W) uint8.

    Only the Parquet row groups that hold one of them are read, shard by shard: the driver never
    holds the whole dataset (a reference of 10,000 images out of millions, from a bucket)."""
    item = int(np.prod(manifest.shape))
    out = np.empty((len(rows), item), dtype=np.uint8)
    loc = manifest.location()
    start, filled = 0, 0
    for info in manifest.shards:
        stop = start + info.count
        wanted = rows[(rows >= start) & (rows < stop)] - start  # shard-local, sorted
        if len(wanted):
            path = display(join(manifest.root, info.file))
            try:
                with loc.fs.open_input_file(loc.child(info.file).path) as f:
                    parquet = pq.ParquetFile(f)
                    meta = parquet.metadata
                    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                    bounds = np.cumsum([0, *sizes])  # (G + 1,) first row of each group
                    groups = sorted(set(np.searchsorted(bounds, wanted, side="right") - 1))
                    table = parquet.read_row_groups(groups, columns=["image"])
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{path}: corrupt Parquet file ({e}); {FIX}") from None
            covered = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in groups])
            local = np.searchsorted(covered, wanted)  # each wanted row's place in the table
            column = table.column("image").combine_chunks()
            picked = column.take(pa.array(local))
            out[filled : filled + len(wanted)] = _binary_to_rows(picked, item, path)
            filled += len(wanted)
        start = stop
    return out.reshape(len(rows), *manifest.shape)


def read_labels(manifest: ShardManifest) -> np.ndarray:
    """Every image's label (N,) int64, in file order, reading only the ``label`` column;
    DataError when the dataset has no labels."""
    if manifest.labels is None:
        raise DataError(
            f"{display(manifest.root)}: the dataset has no labels; import it with them "
            "(`distgan data import SRC --labels FILE`, or class subfolders)"
        )
    loc = manifest.location()
    parts = []
    for info, path in zip(manifest.shards, manifest.shard_paths, strict=True):
        try:
            table = pq.read_table(loc.child(info.file).path, columns=["label"], filesystem=loc.fs)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{display(path)}: corrupt Parquet file ({e}); {FIX}") from None
        parts.append(table.column("label").to_numpy())
    return np.concatenate(parts).astype(np.int64)


def _binary_to_rows(chunk: pa.BinaryArray, item: int, path: str) -> np.ndarray:
    """Views an arrow binary array of equal-length values as (len, item) uint8, without a copy."""
    if chunk.null_count or not pa.types.is_binary(chunk.type):
        raise DataError(f"{path}: the 'image' column has nulls or a wrong type; {FIX}")
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(
        offsets_buf, dtype=np.int32, count=len(chunk) + 1, offset=chunk.offset * 4
    )
    if not (np.diff(offsets) == item).all():
        raise DataError(f"{path}: some images are not {item} bytes long; {FIX}")
    data = np.frombuffer(data_buf, dtype=np.uint8, count=len(chunk) * item, offset=offsets[0])
    return data.reshape(len(chunk), item)


def _stream_sha256(loc: Location, name: str) -> str:
    digest = hashlib.sha256()
    with loc.fs.open_input_stream(loc.child(name).path) as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()
