"""The on-disk dataset format, written: Parquet shards plus ``manifest.json``.

A shard folder holds ``shard-00000.parquet``, ``shard-00001.parquet``, … and ``manifest.json``.
Each shard has an ``image`` column (``binary``: the C*H*W uint8 bytes of one image, channels
first, C-order) and, when the dataset has labels, a ``label`` column (``int64``). The manifest
records the count, the image shape, the label set and counts, the classes' names when known
(optional: manifests written before it stay valid), for a long-tailed subset its protocol
(``long_tail``, optional too: see ``data/imbalance.py``), a short description of the source, and
each shard's row count and sha256 (``data/manifest.py`` reads and checks it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distgan.data.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SHARD_NAME,
    ShardInfo,
    ShardManifest,
    to_json,
)
from distgan.errors import DataError
from distgan.storage import display, is_uri, open_location

# Temporary names used while writing; a crash can leave them behind, and a rerun removes them.
_TEMP_NAME = re.compile(r"\.(shard-\d{5,}\.parquet|manifest\.json)\.tmp")
# distgan's files fitted on a dataset's images (``eval fit-features``): kept beside the shards,
# removed when an import replaces those images (they describe the old ones).
FITTED = ("features.pt", "features.json")
# Rows per Parquet row group are capped by bytes: an arrow binary array holds at most 2 GiB,
# and smaller groups keep a reader's peak memory low for large images.
_ROW_GROUP_BYTES = 64 * 2**20


def write_shards(
    images: np.ndarray,
    labels: np.ndarray | None,
    out_dir: str | Path,
    *,
    shard_size: int = 10000,
    source: str,
    class_names: dict[int, str] | None = None,
    long_tail: dict | None = None,
) -> ShardManifest:
    """Writes ``images`` (N, C, H, W) uint8 and ``labels`` (N,) ints or None into ``out_dir``,
    with ``class_names`` (label -> name) and ``long_tail`` (a long-tailed subset's protocol: ratio,
    seed, source_counts) in the manifest when given.

    ``out_dir`` must be absent, empty, or an earlier shard folder (which is replaced). Every
    file is written under a temporary name and renamed; the manifest goes last, so a crash never
    leaves a manifest pointing at half-written shards. Returns the manifest as written.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must be non-empty (N, C, H, W) uint8, got {images.dtype} {images.shape}"
        )
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
        raise ValueError(
            f"labels must be ({len(images)},) integers, got {labels.dtype} {labels.shape}"
        )
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if is_uri(str(out_dir)):
        uri = str(out_dir)
        return _write_remote(images, labels, uri, shard_size, source, class_names, long_tail)
    out = Path(out_dir)
    _prepare_folder(out)

    images = np.ascontiguousarray(images)
    labels = None if labels is None else labels.astype(np.int64)
    schema = shard_schema(labels is not None)
    shards = []
    for index, start in enumerate(range(0, len(images), shard_size)):
        stop = min(start + shard_size, len(images))
        name = f"shard-{index:05d}.parquet"
        shard_labels = None if labels is None else labels[start:stop]
        with _atomic_file(out / name) as f:
            _write_parquet(f, schema, images[start:stop], shard_labels)
        shards.append(ShardInfo(name, stop - start, file_sha256(out / name)))

    written = {s.file for s in shards}
    for stale in out.iterdir():
        if SHARD_NAME.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()

    if labels is None:
        label_set, label_counts = None, None
    else:
        values, counts = np.unique(labels, return_counts=True)
        label_set = tuple(int(v) for v in values)
        label_counts = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    manifest = ShardManifest(
        count=len(images),
        shape=tuple(int(d) for d in images.shape[1:]),
        labels=label_set,
        label_counts=label_counts,
        source=source,
        shards=tuple(shards),
        root=str(out.resolve()),
        class_names=None if class_names is None else {int(k): v for k, v in class_names.items()},
        long_tail=long_tail,
    )
    text = json.dumps(to_json(manifest), indent=2) + "\n"
    with _atomic_file(out / MANIFEST_NAME) as f:
        f.write(text.encode())
    return manifest


def shard_schema(has_labels: bool) -> pa.Schema:
    fields = [pa.field("image", pa.binary(), nullable=False)]
    if has_labels:
        fields.append(pa.field("label", pa.int64(), nullable=False))
    return pa.schema(fields)


def _write_parquet(f, schema: pa.Schema, images: np.ndarray, labels: np.ndarray | None) -> None:
    """Writes one shard to the open binary file ``f`` in row groups of at most ~64 MiB."""
    item = images[0].size
    rows_per_group = max(1, _ROW_GROUP_BYTES // item)
    # Dictionaries and min/max statistics are useless for unique image blobs; keep them for labels.
    with pq.ParquetWriter(
        f,
        schema,
        compression="zstd",
        compression_level=9,
        use_dictionary=["label"],
        write_statistics=["label"],
    ) as writer:
        for start in range(0, len(images), rows_per_group):
            block = images[start : start + rows_per_group]
            offsets = np.arange(len(block) + 1, dtype=np.int32) * item
            column = pa.Array.from_buffers(
                pa.binary(),
                len(block),
                [None, pa.py_buffer(offsets), pa.py_buffer(block.reshape(-1))],
            )
            arrays = [column]
            if labels is not None:
                arrays.append(pa.array(labels[start : start + rows_per_group], pa.int64()))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


def _prepare_folder(out: Path) -> None:
    """Makes ``out`` ready to receive shards; DataError if it holds anything not ours."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    foreign = [e.name for e in entries if not _is_ours(e)]
    manifest = out / MANIFEST_NAME
    if not foreign and manifest.exists():
        try:
            ours = json.loads(manifest.read_text()).get("format") == FORMAT
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            ours = False
        if not ours:
            foreign = [MANIFEST_NAME]
    if foreign:
        raise DataError(
            f"{out}: folder is not empty and is not a distgan shard folder "
            f"(it holds {', '.join(sorted(foreign)[:3])}); choose an empty or new "
            f"--out"
        )
    # The old manifest goes first: from here until the new one is renamed in, the folder has no
    # manifest, so no reader can pair it with a mix of old and new shards.
    manifest.unlink(missing_ok=True)
    for name in FITTED:
        (out / name).unlink(missing_ok=True)
    for e in entries:
        if _TEMP_NAME.fullmatch(e.name):
            e.unlink()


def _is_ours(entry: Path) -> bool:
    """Whether ``entry`` is a file our writer makes: the manifest, a shard, or a temporary."""
    name = entry.name
    made = name == MANIFEST_NAME or SHARD_NAME.fullmatch(name) or _TEMP_NAME.fullmatch(name)
    return entry.is_file() and bool(made or name in FITTED)


def fitted_files(folder: str | Path) -> list[str]:
    """The files of FITTED that the dataset folder (or prefix) ``folder`` holds."""
    loc = open_location(folder, field="--out")
    return [name for name in FITTED if loc.is_file(name)]


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yields a temporary file beside ``path``; on success syncs it and renames it to ``path``."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, path)


def _write_remote(
    images: np.ndarray,
    labels: np.ndarray | None,
    uri: str,
    shard_size: int,
    source: str,
    class_names: dict[int, str] | None,
    long_tail: dict | None,
) -> ShardManifest:
    """``write_shards`` into object storage: written in a local temporary folder, then uploaded
    shard by shard, the manifest last (so no reader pairs a new manifest with missing shards)."""
    out = open_location(uri, field="--out")
    ours = (MANIFEST_NAME, *FITTED)
    foreign = [n for n in out.list() if not (n in ours or SHARD_NAME.fullmatch(n))]
    if foreign:
        raise DataError(
            f"{display(uri)}: holds {', '.join(sorted(foreign)[:3])}, so it is not a distgan "
            "shard prefix; choose an empty or new --out"
        )
    with tempfile.TemporaryDirectory(prefix="distgan-shards-") as tmp:
        local = write_shards(
            images, labels, tmp, shard_size=shard_size, source=source,
            class_names=class_names, long_tail=long_tail,
        )  # fmt: skip
        for name in (MANIFEST_NAME, *FITTED):  # the old manifest goes first, as locally
            if out.is_file(name):
                out.fs.delete_file(out.child(name).path)
        for info in local.shards:
            out.upload(Path(tmp, info.file), info.file)
        written = {info.file for info in local.shards}
        for stale in out.list():
            if SHARD_NAME.fullmatch(stale) and stale not in written:
                out.fs.delete_file(out.child(stale).path)
        out.upload(Path(tmp, MANIFEST_NAME), MANIFEST_NAME)
    return dataclasses.replace(local, root=out.uri)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()
