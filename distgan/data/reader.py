"""Batches for one training worker, from its Ray Data shard.

    shard = ray.train.get_dataset_shard("train")
    source = InMemoryBatches(load_shard(shard, shape), batch_size=64, seed=0, rank=0)
    for x in source.epoch_batches(epoch=0, skip=0): ...   # (B, C, H, W) float in [-1, 1]

    # with labels (class-conditional models): batches are (x, y), y (B,) int64
    images, labels = load_shard(shard, shape, with_labels=True)
    source = InMemoryBatches(images, 64, seed=0, rank=0, labels=labels)

    # class-balanced draws (train.class_balance): rows drawn with replacement by weight
    source = InMemoryBatches(images, 64, seed=0, rank=0, weights=sample_weights(labels, prior))

Streaming small images through Ray Data is 6–10× slower than slicing a tensor (DESIGN.md), so a
worker whose shard fits in memory reads it once (``load_shard``) and reshuffles it in torch each
epoch; a larger shard is streamed again every epoch (``StreamingBatches``). Pixels stay uint8
until they reach the worker's device; scaling to [-1, 1] happens there on whole batches.

The rows themselves come from ``verified_shard_rows``, which Ray Data maps over whole shard files
(``ray.data.read_binary_files``): every byte a worker trains on has passed its shard's sha256.

This module never imports Ray: it is handed Ray's DataIterator by ``train/worker.py``.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distgan.data.manifest import FIX
from distgan.errors import DataError

ROWS_PER_READ = 1024  # rows per Ray Data batch when loading a shard into memory
Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # images, or (images, labels)


def verified_shard_rows(
    batch: dict[str, np.ndarray], sha256: dict[str, str], columns: list[str]
) -> Iterator[pa.Table]:
    """Whole shard files -> their rows, each file's bytes checked against its sha256 first.

    ``batch``: rows of ``ray.data.read_binary_files(paths, include_paths=True)`` (``bytes``: a
    file's content, ``path``: where it was read); ``sha256``: shard file name -> the manifest's
    hex digest. Yields a table of ``columns`` per Parquet row group (at most ~64 MiB each, as
    written); DataError naming the shard when its bytes are not the ones the manifest hashed
    (flipped on disk or in transit: the Parquet checks pass such bytes silently)::

        ray.data.read_binary_files(paths, include_paths=True).map_batches(
            verified_shard_rows, batch_size=1, fn_kwargs={"sha256": ..., "columns": ["image"]})
    """
    for raw, path in zip(batch["bytes"], batch["path"], strict=True):
        name = str(path).rsplit("/", 1)[-1]
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256[name]:
            raise DataError(
                f"{path}: sha256 is {digest}, manifest says {sha256[name]}; the file was "
                f"modified or damaged since it was imported; {FIX}"
            )
        parquet = pq.ParquetFile(pa.BufferReader(raw))
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group, columns=columns)


def decode_images(batch: dict[str, np.ndarray], shape: tuple[int, int, int]) -> torch.Tensor:
    """A Ray Data batch (``image``: object array of raw bytes) -> (N, C, H, W) uint8 tensor."""
    raw = np.frombuffer(b"".join(batch["image"]), dtype=np.uint8)
    return torch.from_numpy(raw.copy()).view(-1, *shape)


def decode_labelled(
    batch: dict[str, np.ndarray], shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Ray Data batch with ``image`` and ``label`` -> ((N, C, H, W) uint8, (N,) int64)."""
    labels = torch.from_numpy(np.asarray(batch["label"], dtype=np.int64))
    return decode_images(batch, shape), labels


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1], on whatever device ``x`` is."""
    return x.float().div_(127.5).sub_(1.0)


def load_shard(shard, shape: tuple[int, int, int], with_labels: bool = False):
    """Reads a whole Ray Data shard (a DataIterator) into one (N, C, H, W) uint8 tensor, or with
    ``with_labels`` into (images, labels (N,) int64) (the shard must hold a ``label`` column)."""
    collate = decode_labelled if with_labels else decode_images
    parts = list(
        shard.iter_torch_batches(batch_size=ROWS_PER_READ, collate_fn=lambda b: collate(b, shape))
    )
    if not parts:
        raise DataError(
            "this worker's data shard is empty; the dataset has fewer rows than workers"
        )
    if with_labels:
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
    return torch.cat(parts)


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
    """Full batches streamed from the Ray Data shard every epoch (data larger than memory);
    (images, labels) with ``with_labels``.

    A thread reads ahead, ``ahead`` batches at most, and goes on into the next epoch while the
    step trains on this one's last batches: Ray Data's split starts every epoch with a barrier
    across the workers and a fresh pipeline, which the step would otherwise wait for. The
    stream is one sequence of epochs: a call for an epoch other than the next (the divergence
    guard's rollback) goes on where the stream is, as rows streamed from a split come in no
    fixed order anyway. ``skip`` (a resumed run) applies to the first epoch read. ``close``
    stops the thread.
    """

    def __init__(
        self,
        shard,
        shape: tuple[int, int, int],
        batch_size: int,
        seed: int,
        device: torch.device,
        with_labels: bool = False,
        ahead: int = 64,
    ):
        self.shard = shard
        self.with_labels = with_labels
        self.shape = shape
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def _read(self, epoch: int) -> None:
        """The thread: every epoch's batches from ``epoch`` on, each epoch closed by _END."""
        collate = decode_labelled if self.with_labels else decode_images
        try:
            while not self._closed.is_set():
                batches = self.shard.iter_torch_batches(
                    batch_size=self.batch_size,
                    drop_last=True,
                    local_shuffle_buffer_size=16 * self.batch_size,
                    local_shuffle_seed=self.seed + epoch,
                    prefetch_batches=2,
                    collate_fn=lambda b: collate(b, self.shape),
                )
                for batch in batches:
                    self._put(batch)
                self._put(_END)
                epoch += 1
        except BaseException as e:  # the step raises it
            self._put(_Failed(e))

    def _put(self, item) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._read, args=(epoch,), name="distgan-batches", daemon=True
            )
            self._thread.start()
        else:
            skip = 0
        i = 0
        while True:
            batch = self._queue.get()
            if batch is _END:
                return
            if isinstance(batch, _Failed):
                raise batch.error
            i += 1
            if i <= skip:
                continue
            if self.with_labels:
                x, y = batch
                yield to_unit_range(x.to(self.device, non_blocking=True)), y.to(self.device)
            else:
                yield to_unit_range(batch.to(self.device, non_blocking=True))

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


_END = object()  # an epoch's end, in StreamingBatches' queue


class _Failed:
    """The reading thread's error, handed to the step."""

    def __init__(self, error: BaseException):
        self.error = error
