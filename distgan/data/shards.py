"""The on-disk dataset format: Parquet shards plus ``manifest.json``.

A shard folder holds ``shard-00000.parquet``, ``shard-00001.parquet``, … and ``manifest.json``.
Each shard has an ``image`` column (``binary``: the C*H*W uint8 bytes of one image, channels
first, C-order) and, when the dataset has labels, a ``label`` column (``int64``). The manifest
records the count, the image shape, the label set and counts, the classes' names when known
(optional: manifests written before it stay valid), for a long-tailed subset its protocol
(``long_tail``, optional too: see ``data/imbalance.py``), a short description of the source, and
each shard's row count and sha256::

    {"format": "distgan-shards/1", "count": 10000, "shape": [1, 28, 28], "dtype": "uint8",
     "labels": [0, 1, ...], "label_counts": {"0": 1000, ...},
     "class_names": {"0": "T-shirt/top", ...}, "source": "...",
     "long_tail": {"ratio": 100, "seed": 0, "source_counts": {"0": 6000, ...}},
     "shards": [{"file": "shard-00000.parquet", "count": 10000, "sha256": "..."}]}
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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distgan.errors import DataError
from distgan.storage import Location, display, is_uri, join, open_location

FORMAT = "distgan-shards/1"
MANIFEST_NAME = "manifest.json"
_SHARD_NAME = re.compile(r"shard-\d{5,}\.parquet")
# Temporary names used while writing; a crash can leave them behind, and a rerun removes them.
_TEMP_NAME = re.compile(r"\.(shard-\d{5,}\.parquet|manifest\.json)\.tmp")
# distgan's files fitted on a dataset's images (``eval fit-features``): kept beside the shards,
# removed when an import replaces those images (they describe the old ones).
FITTED = ("features.pt", "features.json")
# Rows per Parquet row group are capped by bytes: an arrow binary array holds at most 2 GiB,
# and smaller groups keep a reader's peak memory low for large images.
_ROW_GROUP_BYTES = 64 * 2**20
FIX = "re-create it with `distgan data import SRC --out FOLDER`"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its name inside the folder, its row count and its sha256 (hex)."""

    file: str
    count: int
    sha256: str


@dataclass(frozen=True)
class ShardManifest:
    """The contents of ``manifest.json``, plus ``root``: the folder it was read from."""

    count: int
    shape: tuple[int, int, int]  # (C, H, W)
    labels: tuple[int, ...] | None
    label_counts: dict[int, int] | None
    source: str
    shards: tuple[ShardInfo, ...]
    root: str
    class_names: dict[int, str] | None = None  # label -> name, when the source names its classes
    # A long-tailed subset's protocol: {"ratio": R, "seed": s, "source_counts": {label: n}}
    long_tail: dict | None = None

    @property
    def num_classes(self) -> int:
        """Classes of a conditional model on this data: the largest label + 1 (labels are class
        indices 0..K-1); 0 when the data has no labels."""
        return max(self.labels) + 1 if self.labels else 0

    @property
    def shard_paths(self) -> list[str]:
        """The shard files in order: absolute paths, or URIs for a dataset in object storage."""
        return [join(self.root, s.file) for s in self.shards]

    def location(self) -> Location:
        """The dataset's folder (or prefix) opened through its file system."""
        return open_location(self.root, field="data.source")


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
        if _SHARD_NAME.fullmatch(stale.name) and stale.name not in written:
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
    text = json.dumps(_to_json(manifest), indent=2) + "\n"
    with _atomic_file(out / MANIFEST_NAME) as f:
        f.write(text.encode())
    return manifest


def read_manifest(folder: str | Path) -> ShardManifest:
    """Reads and checks ``folder/manifest.json`` (a local folder, or a prefix in object
    storage such as ``s3://bucket/data``); DataError naming the path and the fix."""
    loc = open_location(folder, field="data.source")
    root = display(loc.uri)
    path = display(join(loc.uri, MANIFEST_NAME))
    if loc.is_local and not Path(loc.path).is_dir():
        raise DataError(
            f"{root}: no such dataset folder; create it with `distgan data import SRC --out {root}`"
        )
    if not loc.is_file(MANIFEST_NAME):
        raise DataError(
            f"{root} has no {MANIFEST_NAME}; create one with `distgan data import SRC --out {root}`"
        )
    try:
        data = json.loads(loc.read_text(MANIFEST_NAME))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid JSON ({e}); {FIX}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object; {FIX}")
    if data.get("format") != FORMAT:
        raise DataError(f"{path}: format is {data.get('format')!r}, expected {FORMAT!r}; {FIX}")

    def field(key: str, valid: bool, what: str):
        if key not in data:
            raise DataError(f"{path}: field '{key}' is missing; {FIX}")
        if not valid:
            raise DataError(f"{path}: field '{key}' must be {what}, got {data[key]!r}; {FIX}")
        return data[key]

    get = data.get
    count = field("count", _is_count(get("count")), "a positive integer")
    shape = field("shape", _is_shape(get("shape")), "[C, H, W] of positive integers")
    field("dtype", get("dtype") == "uint8", "'uint8'")
    labels = field("labels", _is_labels(get("labels")), "null or a list of integers")
    label_counts = field(
        "label_counts", _is_label_counts(get("label_counts")), "null or {label: count}"
    )
    source = field("source", isinstance(get("source"), str), "a string")
    class_names = get("class_names")  # optional: older manifests have none
    if not _is_class_names(class_names):
        raise DataError(
            f"{path}: field 'class_names' must be null or {{label: name}}, got {class_names!r}; "
            f"{FIX}"
        )
    long_tail = get("long_tail")  # optional: only long-tailed subsets have one
    if not _is_long_tail(long_tail):
        raise DataError(
            f"{path}: field 'long_tail' must be null or {{ratio: number >= 1, seed: integer, "
            f"source_counts: {{label: count}}}}, got {long_tail!r}; {FIX}"
        )
    shards = field(
        "shards",
        isinstance(get("shards"), list) and get("shards") and all(map(_is_shard, get("shards"))),
        "a non-empty list of {file: 'shard-NNNNN.parquet', count, sha256}",
    )
    if (labels is None) != (label_counts is None):
        raise DataError(f"{path}: 'labels' and 'label_counts' must both be null or both set; {FIX}")
    if labels is not None:
        _check_label_fields(path, count, labels, label_counts, class_names)
    if sum(s["count"] for s in shards) != count:
        raise DataError(
            f"{path}: shard counts add up to {sum(s['count'] for s in shards)}, "
            f"but 'count' is {count}; {FIX}"
        )
    present = set(loc.list())
    for s in shards:
        if s["file"] not in present:
            raise DataError(f"{join(root, s['file'])}: shard listed in {path} is missing; {FIX}")
    return ShardManifest(
        count=count,
        shape=tuple(shape),
        labels=None if labels is None else tuple(labels),
        label_counts=None if label_counts is None else {int(k): n for k, n in label_counts.items()},
        source=source,
        shards=tuple(ShardInfo(s["file"], s["count"], s["sha256"]) for s in shards),
        root=loc.uri,
        class_names=None if class_names is None else {int(k): n for k, n in class_names.items()},
        long_tail=long_tail,
    )


def _check_label_fields(
    path: str, count: int, labels: list, label_counts: dict, class_names: dict | None
) -> None:
    """The label fields agree with each other: ``labels`` sorted and distinct, ``label_counts``
    counting exactly those labels and adding up to ``count``, a name for each label."""
    if labels != sorted(set(labels)):
        raise DataError(f"{path}: field 'labels' must be sorted and distinct, got {labels}; {FIX}")
    counted = sorted(int(k) for k in label_counts)
    if counted != labels:
        raise DataError(
            f"{path}: field 'label_counts' counts labels {label_text(counted)}, but 'labels' is "
            f"{label_text(labels)}; {FIX}"
        )
    empty = [k for k, n in label_counts.items() if n < 1]
    if empty:
        raise DataError(
            f"{path}: field 'label_counts' gives label {empty[0]} {label_counts[empty[0]]} "
            f"images; a listed label has at least 1; {FIX}"
        )
    if sum(label_counts.values()) != count:
        raise DataError(
            f"{path}: field 'label_counts' adds up to {sum(label_counts.values())}, but 'count' "
            f"is {count}; {FIX}"
        )
    unnamed = sorted(set(labels) - {int(k) for k in class_names or {}})
    if class_names is not None and unnamed:
        raise DataError(
            f"{path}: field 'class_names' names {len(class_names)} classes but not labels "
            f"{label_text(unnamed)} of 'labels'; {FIX}"
        )


def label_text(labels) -> str:
    """Labels for a message: ``0..9`` when consecutive, else the list (shortened past 8)."""
    labels = [int(v) for v in labels]
    if len(labels) > 2 and labels == list(range(labels[0], labels[-1] + 1)):
        return f"{labels[0]}..{labels[-1]}"
    if len(labels) > 8:
        return "[" + ", ".join(map(str, labels[:8])) + f", ... ({len(labels)} labels)]"
    return str(labels)


def class_name(manifest: ShardManifest, label: int) -> str:
    """The name of class ``label`` in ``manifest``, or the label as text when it has none."""
    return (manifest.class_names or {}).get(int(label), str(int(label)))


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
    made = name == MANIFEST_NAME or _SHARD_NAME.fullmatch(name) or _TEMP_NAME.fullmatch(name)
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
    foreign = [n for n in out.list() if not (n in ours or _SHARD_NAME.fullmatch(n))]
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
            if _SHARD_NAME.fullmatch(stale) and stale not in written:
                out.fs.delete_file(out.child(stale).path)
        out.upload(Path(tmp, MANIFEST_NAME), MANIFEST_NAME)
    return dataclasses.replace(local, root=out.uri)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def _to_json(m: ShardManifest) -> dict:
    counts = m.label_counts
    names = {} if m.class_names is None else {"class_names": _json_keys(m.class_names)}
    tail = {} if m.long_tail is None else {"long_tail": m.long_tail}
    return {
        "format": FORMAT,
        "count": m.count,
        "shape": list(m.shape),
        "dtype": "uint8",
        "labels": None if m.labels is None else list(m.labels),
        "label_counts": None if counts is None else _json_keys(counts),
        **names,
        **tail,
        "source": m.source,
        "shards": [{"file": s.file, "count": s.count, "sha256": s.sha256} for s in m.shards],
    }


def _json_keys(d: dict) -> dict:
    return {str(k): v for k, v in sorted(d.items())}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_count(v) -> bool:
    return _is_int(v) and v > 0


def _is_shape(v) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(map(_is_count, v))


def _is_labels(v) -> bool:
    return v is None or (isinstance(v, list) and all(map(_is_int, v)))


def _is_label_counts(v) -> bool:
    return v is None or (
        isinstance(v, dict) and all(k.lstrip("-").isdigit() and _is_int(n) for k, n in v.items())
    )


def _is_class_names(v) -> bool:
    return v is None or (
        isinstance(v, dict)
        and all(k.isdigit() and isinstance(n, str) and n.strip() for k, n in v.items())
    )


def _is_long_tail(v) -> bool:
    if v is None:
        return True
    if not isinstance(v, dict) or set(v) != {"ratio", "seed", "source_counts"}:
        return False
    ratio = v["ratio"]
    number = isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
    return number and ratio >= 1 and _is_int(v["seed"]) and _is_label_counts(v["source_counts"])


def _is_shard(v) -> bool:
    return (
        isinstance(v, dict)
        and isinstance(v.get("file"), str)
        and _SHARD_NAME.fullmatch(v["file"]) is not None
        and _is_count(v.get("count"))
        and isinstance(v.get("sha256"), str)
    )
