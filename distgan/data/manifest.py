"""A dataset's ``manifest.json``: what it holds, how it is read and checked, and its JSON.

The format (the shards themselves: ``data/shards.py``)::

    {"format": "distgan-shards/1", "count": 10000, "shape": [1, 28, 28], "dtype": "uint8",
     "labels": [0, 1, ...], "label_counts": {"0": 1000, ...},
     "class_names": {"0": "T-shirt/top", ...}, "source": "...",
     "long_tail": {"ratio": 100, "seed": 0, "source_counts": {"0": 6000, ...}},
     "shards": [{"file": "shard-00000.parquet", "count": 10000, "sha256": "..."}]}

``class_names`` and ``long_tail`` are optional: manifests written before them stay valid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from distgan.errors import DataError
from distgan.storage import Location, display, join, open_location

FORMAT = "distgan-shards/1"
MANIFEST_NAME = "manifest.json"
SHARD_NAME = re.compile(r"shard-\d{5,}\.parquet")
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


def to_json(m: ShardManifest) -> dict:
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
        and SHARD_NAME.fullmatch(v["file"]) is not None
        and _is_count(v.get("count"))
        and isinstance(v.get("sha256"), str)
    )
