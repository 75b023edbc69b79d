"""Batches for one training worker, from its Ray Data shard.

    shard = ray.train.get_dataset_shard("train")
    source = InMemoryBatches(load_shard(shard, shape), batch_size=64, seed=0, rank=0)
    for x in source.epoch_batches(epoch=0, skip=0): ...   # (B, C, H, W) float in [-1, 1]

Streaming small images through Ray Data is 6–10× slower than slicing a tensor (DESIGN.md), so a
worker whose shard fits in memory reads it once (``load_shard``) and reshuffles it in torch each
epoch; a larger shard is streamed again every epoch (``StreamingBatches``). Pixels stay uint8
until they reach the worker's device; scaling to [-1, 1] happens there on whole batches.

This module never imports Ray: it is handed Ray's DataIterator by ``train/worker.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from distgan.errors import DataError

ROWS_PER_READ = 1024  # rows per Ray Data batch when loading a shard into memory


def decode_images(batch: dict[str, np.ndarray], shape: tuple[int, int, int]) -> torch.Tensor:
    """A Ray Data batch (``image``: object array of raw bytes) -> (N, C, H, W) uint8 tensor."""
    raw = np.frombuffer(b"".join(batch["image"]), dtype=np.uint8)
    return torch.from_numpy(raw.copy()).view(-1, *shape)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1], on whatever device ``x`` is."""
    return x.float().div_(127.5).sub_(1.0)


def load_shard(shard, shape: tuple[int, int, int]) -> torch.Tensor:
    """Reads a whole Ray Data shard (a DataIterator) into one (N, C, H, W) uint8 tensor."""
    parts = list(
        shard.iter_torch_batches(
            batch_size=ROWS_PER_READ, collate_fn=lambda b: decode_images(b, shape)
        )
    )
    if not parts:
        raise DataError(
            "this worker's data shard is empty; the dataset has fewer rows than workers"
        )
    return torch.cat(parts)


class InMemoryBatches:
    """Full batches from an in-memory uint8 tensor, in a fresh order each epoch.

    The order of epoch e is a permutation drawn from (seed, epoch, rank), so a resumed run that
    skips the batches it already consumed sees exactly the batches an uninterrupted run would.
    """

    def __init__(
        self, images: torch.Tensor, batch_size: int, seed: int, rank: int, device: torch.device
    ):
        if images.shape[0] < batch_size:
            raise DataError(
                f"a worker's shard holds {images.shape[0]} images, fewer than its batch of "
                f"{batch_size}; lower train.batch_size or scale.workers"
            )
        self.images = images.to(device)  # (N, C, H, W) uint8
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return self.images.shape[0] // self.batch_size  # batches per epoch

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(hash((self.seed, epoch, self.rank)) % 2**63)
        order = torch.randperm(self.images.shape[0], generator=g).to(self.images.device)
        for i in range(skip, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield to_unit_range(self.images[idx])  # (B, C, H, W)


class StreamingBatches:
    """Full batches streamed from the Ray Data shard every epoch (data larger than memory)."""

    def __init__(
        self, shard, shape: tuple[int, int, int], batch_size: int, seed: int, device: torch.device
    ):
        self.shard = shard
        self.shape = shape
        self.batch_size = batch_size
        self.seed = seed
        self.device = device

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
        batches = self.shard.iter_torch_batches(
            batch_size=self.batch_size,
            drop_last=True,
            local_shuffle_buffer_size=16 * self.batch_size,
            local_shuffle_seed=self.seed + epoch,
            prefetch_batches=2,
            collate_fn=lambda b: decode_images(b, self.shape),
        )
        for i, x in enumerate(batches):
            if i >= skip:
                yield to_unit_range(x.to(self.device, non_blocking=True))
