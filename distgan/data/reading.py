"""Reading a dataset's shards: checking them against the manifest, all rows, picked rows.

    verify_shards(manifest)                      # footers, schemas, shapes, labels, sha256
    images, labels = load_arrays(manifest)       # (N, C, H, W) uint8, (N,) int64 or None
    some = read_rows(manifest, np.array([3, 70, 9000]))   # only the row groups that hold them

Every read goes through the dataset's file system (``ShardManifest.location``): a local folder or
a prefix in object storage. The format itself is ``shards.py``'s.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distgan.data.manifest import FIX, MANIFEST_NAME, ShardManifest, label_text
from distgan.data.shards import shard_schema
from distgan.errors import DataError
from distgan.storage import Location, display, join


def verify_shards(manifest: ShardManifest, hashes: bool = True) -> None:
    """Checks each shard against ``manifest``: its Parquet footer, schema and row count; that its
    images are as many bytes as ``shape`` says (the first row's length); that its labels lie
    within ``labels`` (from the footer's min/max statistics, else the small label column) and
    that together they reach both ends of it. With ``hashes``, also each shard's sha256, and the
    label column itself against ``labels`` and ``label_counts``: this reads every byte.

    ``distgan train`` runs it without ``hashes`` before Ray (the workers' reader checks the
    hashes as it reads: ``reader.verified_shard_rows``). Returns None; raises DataError naming
    the manifest's field, or the shard file, that does not match, and the fix.
    """
    expected = shard_schema(manifest.labels is not None)
    item = int(np.prod(manifest.shape))
    loc = manifest.location()
    labels = _LabelTally(manifest)
    for info, path in zip(manifest.shards, manifest.shard_paths, strict=True):
        path = display(path)
        try:
            with loc.fs.open_input_file(loc.child(info.file).path) as f:
                # A buffered stream: the first image costs its page, not its row group's 64 MiB.
                parquet = pq.ParquetFile(f, buffer_size=2**20)
                meta = parquet.metadata
                schema = meta.schema.to_arrow_schema()
                # Names and types only: a writer other than ours may mark the columns nullable.
                if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in expected]:
                    found = ", ".join(f"{f.name}: {f.type}" for f in schema)
                    want = ", ".join(f"{f.name}: {f.type}" for f in expected)
                    raise DataError(f"{path}: columns are ({found}), expected ({want}); {FIX}")
                if meta.num_rows != info.count:
                    raise DataError(
                        f"{path}: has {meta.num_rows} rows, manifest says {info.count}; {FIX}"
                    )
                _check_image_size(parquet, item, manifest, info.file)
                if manifest.labels is not None and hashes:
                    labels.add(info.file, parquet.read(columns=["label"]).column("label"))
                elif manifest.labels is not None:
                    labels.add_range(info.file, *_label_range(parquet))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: truncated or corrupt Parquet file ({e}); {FIX}") from None
        if not hashes:
            continue
        digest = _stream_sha256(loc, info.file)
        if digest != info.sha256:
            raise DataError(
                f"{path}: sha256 is {digest}, manifest says {info.sha256}; the "
                f"file was modified or damaged; {FIX}"
            )
    labels.check_all()


class _LabelTally:
    """The labels found in a dataset's shards, checked against its manifest's ``labels`` and
    ``label_counts`` shard by shard (a label outside the set) and at the end (the set's ends
    reached; with every label column read, each label's count)."""

    def __init__(self, manifest: ShardManifest):
        self.manifest = manifest
        self.where = display(join(manifest.root, MANIFEST_NAME))
        self.allowed = set(manifest.labels or ())
        self.counts: dict[int, int] | None = {}  # None once a shard was seen only by its range
        self.low, self.high = None, None

    def add(self, shard: str, column: pa.ChunkedArray) -> None:
        """A shard's whole label column."""
        tally = pc.value_counts(column)
        found = dict(zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist()))
        outside = sorted(set(found) - self.allowed)
        if outside:
            self._outside(shard, outside[0])
        if self.counts is not None:
            for v, n in found.items():
                self.counts[v] = self.counts.get(v, 0) + n
        if found:
            self._extend(min(found), max(found))

    def add_range(self, shard: str, low: int | None, high: int | None) -> None:
        """A shard's smallest and largest label (None, None for a shard with no rows)."""
        self.counts = None
        if low is None:
            return
        labels = self.manifest.labels
        if low < labels[0] or high > labels[-1]:
            self._outside(shard, low if low < labels[0] else high)
        self._extend(low, high)

    def check_all(self) -> None:
        labels = self.manifest.labels
        if not labels:
            return
        if (self.low, self.high) != (labels[0], labels[-1]):
            raise DataError(
                f"{self.where}: field 'labels' is {label_text(labels)}, but the shards' labels "
                f"run from {self.low} to {self.high}; {FIX}"
            )
        if self.counts is None:
            return
        for label, n in self.manifest.label_counts.items():
            if self.counts.get(label, 0) != n:
                raise DataError(
                    f"{self.where}: field 'label_counts' gives label {label} {n} images, the "
                    f"shards hold {self.counts.get(label, 0)}; {FIX}"
                )

    def _outside(self, shard: str, label: int) -> None:
        raise DataError(
            f"{self.where}: field 'labels' is {label_text(self.manifest.labels)}, but {shard} "
            f"holds label {label}, outside it; {FIX}"
        )

    def _extend(self, low: int, high: int) -> None:
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)


def _check_image_size(parquet: pq.ParquetFile, item: int, manifest: ShardManifest, shard: str):
    """The shard's first image is ``item`` (C*H*W) bytes long, as the manifest's shape says.
    Reads one row (its page, not the shard)."""
    first = next(parquet.iter_batches(batch_size=1, columns=["image"])).column(0)
    size = len(first[0].as_buffer()) if first[0].is_valid else 0
    if size != item:
        shape = list(manifest.shape)
        where = display(join(manifest.root, MANIFEST_NAME))
        raise DataError(
            f"{where}: field 'shape' is {shape} ({item} bytes an image), but the images in "
            f"{shard} are {size} bytes; {FIX}"
        )


def _label_range(parquet: pq.ParquetFile) -> tuple[int | None, int | None]:
    """A shard's smallest and largest label: from each row group's min/max statistics in the
    footer where every row group has them, else from the label column (8 bytes a row)."""
    meta = parquet.metadata
    column = meta.schema.to_arrow_schema().get_field_index("label")
    stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
    if all(s is not None and s.has_min_max for s in stats):
        if not stats:
            return None, None
        return min(s.min for s in stats), max(s.max for s in stats)
    values = parquet.read(columns=["label"]).column("label")
    if len(values) == 0:
        return None, None
    return pc.min(values).as_py(), pc.max(values).as_py()


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
