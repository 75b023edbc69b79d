"""Where a run's and a dataset's files live: a local path or a URI, read through pyarrow.

    home = open_location("s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http",
                         field="run.storage")
    run = home.child("00003-quickstart")   # s3://bucket/runs/00003-quickstart?endpoint_...
    run.write_text("metrics.jsonl", lines)  # one object, or a local file renamed into place
    run.read_text("job.resolved.yaml")

A location is what the user wrote (``Location.uri``: a local path, or ``s3://``, ``gs://``,
``file://``... with pyarrow's ``?query`` options kept at the end) plus the pyarrow file system
and the path inside it. Names are joined into the path, never after the query. Every file of a
run, from whichever rank or node, is written through here, so a run on a cluster whose nodes
share no disk still ends up whole in one place.

Errors a user can cause (an unknown scheme, an endpoint that does not answer, a missing bucket,
credentials that are refused) raise ``StorageError`` naming the field and the fix.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from distgan.errors import StorageError

_OBJECT_STORES = tuple(
    getattr(pafs, name) for name in ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")
    if hasattr(pafs, name)
)  # fmt: skip


def is_uri(location: str) -> bool:
    """``s3://bucket/runs`` and the like (pyarrow file systems), as opposed to a local path."""
    return "://" in str(location)


def split_query(location: str) -> tuple[str, str]:
    """``("s3://b/runs", "?endpoint_override=...")``; the query is "" when there is none."""
    location = str(location)
    if is_uri(location) and "?" in location:
        base, query = location.split("?", 1)
        return base, f"?{query}"
    return location, ""


def join(location: str, *names: str) -> str:
    """``location`` with ``names`` appended to its path, before any ``?query``."""
    base, query = split_query(location)
    parts = [p.strip("/") for p in names if p and p.strip("/")]
    if not parts:
        return location
    if is_uri(base):
        return f"{base.rstrip('/')}/{'/'.join(parts)}{query}"
    return str(Path(base, *parts))


def display(location: str) -> str:
    """The location without its query (endpoints and options are not for progress lines)."""
    return split_query(location)[0]


@dataclass(frozen=True)
class Location:
    """A folder in a file system: ``uri`` as the user wrote it, ``fs`` and ``path`` in it."""

    uri: str
    fs: pafs.FileSystem
    path: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def __str__(self) -> str:
        if self.is_local:  # runs/00003-x rather than /home/me/project/runs/00003-x
            relative = os.path.relpath(self.path)
            return self.path if relative.startswith("..") else relative
        return display(self.uri)

    @property
    def typed(self) -> str:
        """The location as a user types it back into a command: ``str(self)`` on a disk, the
        URI with its query (endpoint, scheme) in object storage."""
        return str(self) if self.is_local else self.uri

    def child(self, *names: str) -> Location:
        parts = [p.strip("/") for p in names if p and p.strip("/")]
        return Location(join(self.uri, *parts), self.fs, posixpath.join(self.path, *parts))

    def parent(self) -> Location:
        base, query = split_query(self.uri)
        if self.is_local:
            return Location(str(Path(base).parent), self.fs, posixpath.dirname(self.path))
        return Location(base.rsplit("/", 1)[0] + query, self.fs, posixpath.dirname(self.path))

    def _full(self, rel: str) -> str:
        return posixpath.join(self.path, rel) if rel else self.path

    def info(self, rel: str = "") -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self._full(rel))
        except OSError as e:
            raise storage_error(self.uri, "location", e) from None

    def is_file(self, rel: str = "") -> bool:
        return self.info(rel).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        """True for a folder; on object stores, for a prefix that holds at least one object."""
        return self.info(rel).type == pafs.FileType.Directory

    def exists(self, rel: str = "") -> bool:
        return self.info(rel).type != pafs.FileType.NotFound

    def list(self, rel: str = "") -> list[str]:
        """Names directly under ``rel`` (files and folders), sorted; [] when there is none."""
        selector = pafs.FileSelector(self._full(rel), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as e:
            raise storage_error(self.uri, "location", e) from None
        return sorted(info.base_name for info in infos)

    def read_bytes(self, rel: str = "") -> bytes:
        try:
            with self.fs.open_input_stream(self._full(rel)) as f:
                return f.read()
        except FileNotFoundError:
            raise StorageError(f"{display(join(self.uri, rel))}: no such file") from None
        except OSError as e:
            raise storage_error(join(self.uri, rel), "location", e) from None

    def read_text(self, rel: str = "") -> str:
        return self.read_bytes(rel).decode()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Writes the file whole: on object stores one PUT, locally a temporary name renamed into
        place, so a reader never sees half a file."""
        target = self._full(rel)
        parent = posixpath.dirname(target)
        try:
            if self.is_local:
                os.makedirs(parent, exist_ok=True)
                tmp = posixpath.join(parent, f".{posixpath.basename(target)}.{uuid.uuid4().hex}")
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, target)
                except BaseException:  # a full disk: no half-written temporary file is left
                    with contextlib.suppress(OSError):
                        os.remove(tmp)
                    raise
                return
            if not isinstance(self.fs, _OBJECT_STORES):
                # An object store needs no folders (pyarrow would leave an empty marker object
                # for each one); other file systems (HDFS, pyarrow's mock) do.
                self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(target) as f:
                f.write(data)
        except OSError as e:
            raise storage_error(join(self.uri, rel), "location", e) from None

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def overwrite_in_place(self, rel: str, data: bytes) -> None:
        """Writes a small file over the bytes of the one there, on a local disk: a full disk
        has no room for write_bytes's temporary copy, but a file of under a block fits in its
        old one. A reader may see it half-written, so it is kept for a run's last word on a full
        disk. Object stores (one PUT, no disk of their own) and a missing file: write_bytes."""
        target = self._full(rel)
        if not (self.is_local and os.path.isfile(target)):
            self.write_bytes(rel, data)
            return
        try:
            with open(target, "r+b") as f:
                f.write(data)
                f.truncate()
        except OSError as e:
            raise storage_error(join(self.uri, rel), "location", e) from None

    def upload(self, local_file: str | Path, rel: str) -> None:
        """Copies a local file to ``rel`` (temporary name and rename on local storage)."""
        self.write_bytes(rel, Path(local_file).read_bytes())

    def delete(self, rel: str) -> None:
        """Removes the file ``rel``; nothing happens when there is none."""
        self._remove(self.fs.delete_file, rel)

    def delete_dir(self, rel: str) -> None:
        """Removes the folder ``rel`` and all in it; nothing happens when there is none."""
        self._remove(self.fs.delete_dir, rel)

    def _remove(self, how, rel: str) -> None:
        try:
            how(self._full(rel))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise storage_error(join(self.uri, rel), "location", e) from None


class LogFile:
    """A text stream (for ``print(..., file=log)``) kept in ``location/rel``: object stores
    cannot append, so each flush writes the whole text again. It goes on from the file's text,
    when there is one. Meant for logs of a few hundred lines."""

    def __init__(self, location: Location, rel: str):
        self.location, self.rel = location, rel
        self._text = location.read_text(rel) if location.is_file(rel) else ""
        self._written = len(self._text)

    def write(self, text: str) -> int:
        self._text += text
        return len(text)

    def flush(self) -> None:
        if len(self._text) != self._written:
            self.location.write_text(self.rel, self._text)
            self._written = len(self._text)


def open_location(location: str | Path, field: str) -> Location:
    """Opens a local path or a URI; StorageError naming ``field`` when pyarrow cannot."""
    location = str(location)
    if not is_uri(location):
        path = str(Path(location).expanduser().absolute())
        return Location(path, pafs.LocalFileSystem(), path)
    scheme = urlsplit(location).scheme
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        known = "s3://, gs://, hdfs://, file:// or a local path"
        raise StorageError(
            f"{field}: {display(location)}: pyarrow cannot open a '{scheme}' location "
            f"({reason}); use {known}"
        ) from None
    except OSError as e:
        raise storage_error(location, field, e) from None
    if isinstance(fs, pafs.LocalFileSystem):
        return Location(path, fs, path)
    return Location(location, fs, path.rstrip("/"))


def check_reachable(loc: Location, field: str, must_exist: bool = False) -> None:
    """Asks the storage one question (is the location there?), so that an endpoint that does
    not answer, a missing bucket or refused credentials fail here with one line, before
    anything is written. ``must_exist``: the location itself must be there (data, a run)."""
    try:
        info = loc.fs.get_file_info(loc.path)
        if not loc.is_local:
            bucket = loc.path.split("/", 1)[0]
            if loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise StorageError(
                    f"{field}: {loc}: the bucket '{bucket}' does not exist; create it first "
                    f"(e.g. aws s3 mb s3://{bucket}) or fix the name"
                )
    except OSError as e:
        raise storage_error(loc.uri, field, e) from None
    if must_exist and info.type == pafs.FileType.NotFound:
        raise StorageError(f"{field}: {loc}: no such folder or prefix; check the path")


def storage_error(location: str, field: str, error: OSError) -> StorageError:
    """One line for a pyarrow I/O error: the field, the location and the likely fix."""
    text = " ".join(str(error).split())
    lower = text.lower()
    where = f"{field}: {display(location)}"
    unreachable = ("couldn't connect", "connection refused", "timed out", "network_connection",
                   "could not resolve", "curlcode")  # fmt: skip
    refused = ("access denied", "accessdenied", "access_denied", "invalidaccesskeyid",
               "signaturedoesnotmatch", "forbidden", "http status 403")  # fmt: skip
    if any(k in lower for k in unreachable):
        return StorageError(
            f"{where}: the storage endpoint does not answer; check endpoint_override and that "
            "the server is running"
        )
    if any(k in lower for k in refused):
        return StorageError(
            f"{where}: the storage refused the credentials; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY here, and give a cluster's nodes their own: an instance role, "
            "a Kubernetes secret as environment of the Ray pods, or `ray start` run with them "
            "set (cluster/README.md)"
        )
    if "nosuchbucket" in lower or "bucket does not exist" in lower:
        return StorageError(f"{where}: the bucket does not exist; create it first or fix the name")
    return StorageError(f"{where}: {text[:200]}")
