"""The data order is a function of (seed, epoch, rank): which rows each worker trains on in an
epoch, and in what order, whatever ran before, so that a resumed or restarted run is exact.

Each image here holds its own row number (two bytes), so a batch says which rows it holds. The
sources read real shards, written by ``write_shards`` into a folder or into the session's S3
server (moto on 127.0.0.1). No Ray: the end-to-end check (a streamed 2-worker run whose driver is
SIGKILLed, resumed and compared bit for bit) is in test_faults.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distgan.data import write_shards
from distgan.data.reader import StreamingBatches, epoch_pieces, rank_rows
from distgan.storage import open_location

SHAPE = (1, 1, 2)  # a row number, little-endian
CPU = torch.device("cpu")


def numbered(n: int) -> np.ndarray:
    """``n`` images whose two pixels spell their row number."""
    return np.arange(n, dtype="<u2").view(np.uint8).reshape(n, *SHAPE)


def row_numbers(x: torch.Tensor) -> list[int]:
    """The row numbers in a batch, back from its [-1, 1] pixels."""
    pixels = torch.round((x + 1) * 127.5).long().view(-1, 2)
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def epoch_rows(source: StreamingBatches, epoch: int, skip: int = 0) -> list[list[int]]:
    return [row_numbers(x) for x in source.epoch_batches(epoch, skip)]


@pytest.fixture
def shards(tmp_path):
    """107 numbered rows in shards of 30, 30, 30 and 17."""
    return write_shards(numbered(107), None, tmp_path / "data", shard_size=30, source="t")


def sources(manifest, world: int, **kwargs) -> list[StreamingBatches]:
    return [
        StreamingBatches(
            manifest.location(), manifest.shards, SHAPE, 4, 7, rank, world, CPU, **kwargs
        )
        for rank in range(world)
    ]


@pytest.mark.parametrize("counts", [[10_000], [30, 30, 30, 17], [7, 1, 12, 5, 40]])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_epoch_cuts_the_rows_into_equal_runs_one_a_rank(counts, world):
    starts = np.cumsum([0, *counts])
    runs = []
    for epoch in range(4):
        taken = []
        for rank in range(world):
            pieces = epoch_pieces(counts, world, rank, 3, epoch)
            assert pieces == epoch_pieces(counts, world, rank, 3, epoch)  # nothing else counts
            rows = [int(starts[s]) + i for s, first, end in pieces for i in range(first, end)]
            assert len(rows) == sum(counts) // world
            taken += rows
        assert len(set(taken)) == len(taken)  # no row on two ranks
        runs.append(epoch_pieces(counts, world, 0, 3, epoch))
    assert len({str(r) for r in runs}) > 1, "every epoch gave rank 0 the same rows"
    # In memory a rank keeps its equal share of the rows in file order, for the whole run.
    kept = [list(rank_rows(sum(counts), world, rank)) for rank in range(world)]
    assert sum(kept, []) == list(range(sum(counts) // world * world))


def test_each_rank_streams_its_own_rows_in_an_order_fixed_by_seed_epoch_and_rank(shards):
    world = 3
    first, again = sources(shards, world), sources(shards, world)
    for epoch in range(3):
        ranks = [epoch_rows(s, epoch) for s in first]
        # A fresh reader (a restarted worker) reads the same batches, in the same order.
        assert ranks == [epoch_rows(s, epoch) for s in again]
        rows = [r for batches in ranks for batch in batches for r in batch]
        assert all(len(batches) == 107 // world // 4 for batches in ranks)  # 8 batches each
        assert len(set(rows)) == len(rows) and set(rows) <= set(range(107))
    assert epoch_rows(first[0], 0) != epoch_rows(first[0], 1)
    for s in first + again:
        s.close()


@pytest.mark.parametrize("shuffle_bytes", [2**20, 3 * 4 * 2])  # one window, windows of 3 batches
def test_a_resume_skips_to_exactly_the_batches_an_uninterrupted_epoch_goes_on_with(
    shards, shuffle_bytes
):
    (straight,) = sources(shards, 1, shuffle_bytes=shuffle_bytes)
    epoch = epoch_rows(straight, 5)
    assert len(epoch) == 26
    for skip in (1, 3, 4, 25):
        (resumed,) = sources(shards, 1, shuffle_bytes=shuffle_bytes)
        assert epoch_rows(resumed, 5, skip) == epoch[skip:]
        assert epoch_rows(resumed, 6) == epoch_rows(straight, 6)  # and on into the next
        resumed.close()
    # The divergence guard goes back to a checkpoint: the stream starts again from there.
    assert epoch_rows(straight, 5, skip=2) == epoch[2:]
    straight.close()


def test_a_bucket_streams_the_same_batches_as_a_folder(shards, s3_env):
    s3_env.create_bucket("order")
    in_bucket = write_shards(numbered(107), None, s3_env.uri("order", "d"), shard_size=30,
                             source="t")  # fmt: skip
    assert open_location(in_bucket.root, "data.source").is_local is False
    for local, remote in zip(sources(shards, 2), sources(in_bucket, 2)):
        assert epoch_rows(local, 4) == epoch_rows(remote, 4)
        local.close()
        remote.close()
