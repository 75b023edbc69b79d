"""Batches for one training worker, in an order that is a function of (seed, epoch, rank).

    # data.cache memory: Ray Data hands every worker the whole dataset in file order
    shard = ray.train.get_dataset_shard("train")
    images, labels = load_rows(shard, shape, rank_rows(count, world, rank), with_labels=True)
    source = InMemoryBatches(images, 64, seed=0, rank=rank, device=device, labels=labels)

    # data.cache stream: each rank reads its own shard files, again every epoch
    source = StreamingBatches(data, manifest.shards, shape, 64, seed=0, rank=rank, world=2,
                              device=device)
    for x in source.epoch_batches(epoch=0, skip=0): ...   # (B, C, H, W) float in [-1, 1]

A resumed or restarted run is exact on CPU: which rows a rank trains on in an epoch, and in what
order, depend on (seed, epoch, rank) and the manifest alone, never on timing, and a resume skips
the batches its checkpoint had consumed. Every rank gets as many rows as the others (DDP steps
must match): ``count // world`` a rank, in whole batches; the rest of an epoch is left out.

In memory, a rank keeps rows ``rank_rows`` of the dataset in file order and draws a fresh
permutation of them each epoch. Streamed (data larger than memory), the shards are taken in an
order drawn from (seed, epoch), end to end, turned by an offset drawn from the same, and cut into
``world`` equal runs; a rank reads its run (``epoch_pieces``) in windows of up to
``SHUFFLE_BYTES`` of pixels, each shuffled by a generator seeded from (seed, epoch, rank, window).

Why the streamed path reads its files itself rather than through Ray Data: Ray Data's split
(``streaming_split``) hands blocks to whichever worker asks first, with no ordering guarantee
(its ``OutputSplitter`` says so), so a restarted worker group gets other rows; handing every
worker the whole dataset in order (as the memory path does, once a run) would read it ``world``
times every epoch. Reading one's own files with pyarrow is stable, reads the data about once, and
is faster here: on the embedded dataset (2 workers of 0.5 CPU, 64 rows a batch, this 2-core
machine, two runs each) 23-33k rows/s a worker through Ray Data's split, after 3-6 s of
start-up, against 160-340k rows/s a worker reading its own files (40-120k in the first epoch).

Every byte a worker trains on has passed its shard's sha256 (``verified_parquet``), on both
paths. Pixels stay uint8 until they reach the worker's device; scaling to [-1, 1] happens there
on whole batches. This module never imports Ray: ``train/worker.py`` hands it Ray's DataIterator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distgan.data.manifest import FIX, ShardInfo
from distgan.data.verify import verified_parquet
from distgan.errors import DataError
from distgan.storage import Location

SHUFFLE_BYTES = 256 << 20  # pixels a streaming rank shuffles at once (its window)
Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # images, or (images, labels)
Piece = tuple[int, int, int]  # (shard index, first row, end row) in that shard


def table_rows(
    table: pa.Table, shape: tuple[int, int, int], with_labels: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shard rows (``image``: raw bytes, ``label``) -> ((N, C, H, W) uint8, (N,) int64 or None)."""
    parts = []
    for chunk in table.column("image").chunks:  # binary arrays: offsets, then the bytes
        if len(chunk):
            kind = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
            at = np.dtype(kind).itemsize * chunk.offset
            offsets = np.frombuffer(chunk.buffers()[1], kind, len(chunk) + 1, at)
            parts.append(np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]])
    pixels = np.concatenate(parts) if parts else np.empty(0, np.uint8)  # a copy: writable
    if pixels.size != table.num_rows * int(np.prod(shape)):
        raise DataError(f"the shards' images are not all {'×'.join(map(str, shape))}; {FIX}")
    images = torch.from_numpy(pixels).view(-1, *shape)
    if not with_labels:
        return images, None
    return images, torch.from_numpy(table.column("label").to_numpy().astype(np.int64))


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1], on whatever device ``x`` is."""
    return x.float().div_(127.5).sub_(1.0)


def rank_rows(count: int, world: int, rank: int) -> range:
    """The rows, in file order, that ``rank`` keeps in memory: its equal share of ``count``."""
    per_rank = count // world
    return range(rank * per_rank, (rank + 1) * per_rank)


def load_rows(shard, shape: tuple[int, int, int], rows: range, with_labels: bool = False):
    """``rows`` of a Ray Data iterator that yields the whole dataset in file order (tables), as
    (N, C, H, W) uint8 and, with ``with_labels``, (N,) int64 labels (else None). Only those rows
    are kept, and reading stops after the last."""
    parts, at = [], 0
    for table in shard.iter_batches(batch_size=None, batch_format="pyarrow"):
        first, end = max(rows.start, at), min(rows.stop, at + table.num_rows)
        if first < end:
            parts.append(table.slice(first - at, end - first))
        at += table.num_rows
        if at >= rows.stop:
            break
    if not parts:
        raise DataError(
            "this worker's data shard is empty; the dataset has fewer rows than workers"
        )
    return table_rows(pa.concat_tables(parts), shape, with_labels)


def epoch_pieces(
    counts: Sequence[int], world: int, rank: int, seed: int, epoch: int
) -> list[Piece]:
    """The rows ``rank`` streams in ``epoch``, as pieces of shards, in order; ``counts``: rows of
    each shard. The shards are laid end to end in an order drawn from (seed, epoch), turned by an
    offset drawn from the same, and cut into ``world`` runs of ``sum(counts) // world`` rows:
    every rank computes the same cut, and takes its own run."""
    total = sum(counts)
    per_rank = total // world
    g = torch.Generator().manual_seed(hash((seed, epoch)) % 2**63)
    order = torch.randperm(len(counts), generator=g).tolist()
    begin = (int(torch.randint(total, (1,), generator=g)) + rank * per_rank) % total
    runs = [(begin, min(begin + per_rank, total))]
    if begin + per_rank > total:  # the run goes round the end, on from the first shard
        runs.append((0, begin + per_rank - total))
    pieces = []
    for low, high in runs:
        at = 0
        for s in order:
            first, end = max(low, at), min(high, at + counts[s])
            if first < end:
                pieces.append((s, first - at, end - at))
            at += counts[s]
    return pieces


def _within(pieces: list[Piece], low: int, high: int) -> list[Piece]:
    """The parts of ``pieces`` (a run of rows) from its row ``low`` up to ``high``."""
    out, at = [], 0
    for s, first, end in pieces:
        a, b = max(low, at), min(high, at + end - first)
        if a < b:
            out.append((s, first + a - at, first + b - at))
        at += end - first
    return out


class ShardFiles:
    """Reads pieces of a dataset's shards from ``data`` (a local folder or a bucket's prefix),
    each file whole and checked against its sha256 first; the last file read is kept, as the
    next piece is often in it."""

    def __init__(self, data: Location, shards: Sequence[ShardInfo], shape, with_labels: bool):
        self.data, self.shards, self.shape = data, shards, shape
        self.columns = ["image", "label"] if with_labels else ["image"]
        self._open: tuple[int, pq.ParquetFile] | None = None

    def _file(self, index: int) -> pq.ParquetFile:
        held = self._open  # a thread being replaced may still read: what it holds is its own
        if held is None or held[0] != index:
            self._open = None  # its bytes go before the next file's come
            info = self.shards[index]
            raw = self.data.read_bytes(info.file)
            held = index, verified_parquet(raw, str(self.data.child(info.file)), info.sha256)
            self._open = held
        return held[1]

    def read(self, pieces: list[Piece]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows of ``pieces``, in order: ((N, C, H, W) uint8, (N,) int64 or None)."""
        tables = []
        for index, first, end in pieces:
            parquet, start = self._file(index), 0
            for group in range(parquet.num_row_groups):  # only the groups that hold the rows
                rows = parquet.metadata.row_group(group).num_rows
                a, b = max(first, start), min(end, start + rows)
                if a < b:
                    table = parquet.read_row_group(group, columns=self.columns)
                    tables.append(table.slice(a - start, b - a))
                start += rows
        return table_rows(pa.concat_tables(tables), self.shape, len(self.columns) == 2)


class InMemoryBatches:
    """Full batches from an in-memory uint8 tensor, in a fresh order each epoch.

    The order of epoch e is a permutation drawn from (seed, epoch, rank), so a resumed run that
    skips the batches it already consumed sees exactly the batches an uninterrupted run would.
    With ``labels`` (N,) each batch is (images, labels). With ``weights`` (N,) (each row's chance,
    ``data.imbalance.sample_weights``) an epoch is as many batches as without, but its rows are
    drawn with replacement by weight (class-balanced sampling), again from (seed, epoch, rank).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        seed: int,
        rank: int,
        device: torch.device,
        labels: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ):
        if images.shape[0] < batch_size:
            raise DataError(
                f"a worker's shard holds {images.shape[0]} images, fewer than its batch of "
                f"{batch_size}; lower train.batch_size or scale.workers"
            )
        self.images = images.to(device)  # (N, C, H, W) uint8
        self.labels = None if labels is None else labels.to(device)  # (N,) int64
        self.weights = None if weights is None else weights.double().cpu()  # (N,)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return self.images.shape[0] // self.batch_size  # batches per epoch

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(hash((self.seed, epoch, self.rank)) % 2**63)
        if self.weights is None:
            order = torch.randperm(self.images.shape[0], generator=g)
        else:
            n = len(self) * self.batch_size
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        order = order.to(self.images.device)
        for i in range(skip, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.labels is None:
                yield to_unit_range(self.images[idx])  # (B, C, H, W)
            else:
                yield to_unit_range(self.images[idx]), self.labels[idx]


class StreamingBatches:
    """Full batches of this rank's rows (``epoch_pieces``), read from the shards every epoch
    (data larger than memory); (images, labels) with ``with_labels``.

    Each window of ``shuffle_bytes`` of pixels (whole batches, at least one) is shuffled on its
    own. A thread reads ahead, ``ahead`` batches at most, and goes on into the next epoch while the
    step trains on this one's last batches. A call for another place than the one the thread
    reads (the first call, a resume's ``skip``, the divergence guard's rollback) starts it again
    there: the batches of (epoch, skip) are the same whenever they are read. ``close`` stops it.
    """

    def __init__(
        self,
        data: Location,
        shards: Sequence[ShardInfo],
        shape: tuple[int, int, int],
        batch_size: int,
        seed: int,
        rank: int,
        world: int,
        device: torch.device,
        with_labels: bool = False,
        ahead: int = 64,
        shuffle_bytes: int = SHUFFLE_BYTES,
    ):
        self.counts = [s.count for s in shards]
        if sum(self.counts) // world < batch_size:
            raise DataError(
                f"a worker's share of the data is {sum(self.counts) // world} images, fewer than "
                f"its batch of {batch_size}; lower train.batch_size or scale.workers"
            )
        self.files = ShardFiles(data, shards, shape, with_labels)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.device = device
        self.ahead = ahead
        row_bytes = int(np.prod(shape))
        self.window = max(1, shuffle_bytes // (row_bytes * batch_size)) * batch_size  # rows
        self._next: tuple[int, int] | None = None  # (epoch, batch) the queue hands out next
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()

    def __len__(self) -> int:
        return sum(self.counts) // self.world // self.batch_size  # batches per epoch

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """Batches ``skip``.. of ``epoch`` (uint8, on the CPU), read in this thread."""
        b, w = self.batch_size, self.window
        pieces = epoch_pieces(self.counts, self.world, self.rank, self.seed, epoch)
        used = len(self) * b  # rows in whole batches
        for low in range(skip * b // w * w, used, w):
            high = min(low + w, used)
            images, labels = self.files.read(_within(pieces, low, high))
            g = torch.Generator().manual_seed(hash((self.seed, epoch, self.rank, low)) % 2**63)
            order = torch.randperm(high - low, generator=g)
            for i in range(max(0, skip * b - low), high - low, b):
                idx = order[i : i + b]
                yield images[idx] if labels is None else (images[idx], labels[idx])

    def _read(self, epoch: int, skip: int, out: queue.Queue, stop: threading.Event) -> None:
        """The thread: every epoch's batches from (epoch, skip) on, each epoch closed by _END."""
        try:
            while not stop.is_set():
                for batch in self.batches(epoch, skip):
                    _put(out, batch, stop)
                _put(out, _END, stop)
                epoch, skip = epoch + 1, 0
        except BaseException as e:  # the step raises it
            _put(out, _Failed(e), stop)

    def _start(self, epoch: int, skip: int) -> None:
        self.close()
        self._stop, self._queue = threading.Event(), queue.Queue(maxsize=self.ahead)
        self._thread = threading.Thread(
            target=self._read,
            args=(epoch, skip, self._queue, self._stop),
            name="distgan-batches",
            daemon=True,
        )
        self._thread.start()
        self._next = (epoch, skip)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        if self._next != (epoch, skip):
            self._start(epoch, skip)
        while True:
            batch = self._queue.get()
            if batch is _END:
                self._next = (epoch + 1, 0)
                return
            if isinstance(batch, _Failed):
                self._next = None  # the next call starts again
                raise batch.error
            self._next = (epoch, self._next[1] + 1)
            if isinstance(batch, tuple):
                x, y = batch
                yield to_unit_range(x.to(self.device, non_blocking=True)), y.to(self.device)
            else:
                yield to_unit_range(batch.to(self.device, non_blocking=True))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.5)
            return
        except queue.Full:
            continue


_END = object()  # an epoch's end, in StreamingBatches' queue


class _Failed:
    """The reading thread's error, handed to the step."""

    def __init__(self, error: BaseException):
        self.error = error
