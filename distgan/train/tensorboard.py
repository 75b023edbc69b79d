"""TensorBoard event files of a run, in its ``tb/`` folder, wherever the run is stored.

    events = RunEvents(open_location("runs/00003-quickstart", field="run"))
    events.scalars(500, record)          # every figure of a metrics.jsonl line, tag group/key
    events.samples(500, images)          # (N, C, H, W) uint8 -> one grid image, tag "samples"
    events.flush()                       # at checkpoints; close() at the end

    tensorboard --logdir runs            # (pip install tensorboard) then http://localhost:6006

tensorboardX builds the summaries and frames the records. Its ``SummaryWriter`` is not used:
it hands events to a background thread, and its ``flush()`` does not wait for that thread, so an
upload right after a flush could miss the last events. Here each event is written in the
caller's thread (rank 0, at log and sample steps: a few records), and ``flush()`` means on disk.

A local run's events go straight to ``RUN/tb/``, flushed as they come (TensorBoard shows a
running job live). For a run on object storage (``s3://...``) they are written to a local
temporary folder and each ``flush()`` uploads the event file whole through the run's
``Location`` (an object store cannot append: the file is sent again, so flush at checkpoints).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary

from distgan.images import grid
from distgan.storage import Location
from distgan.train.records import group_of, numbers

TB = "tb"  # inside a run: the event files


class RunEvents:
    """Rank 0's TensorBoard writer for one run; one new event file per writer (a resumed run
    adds a file, and TensorBoard reads them all)."""

    def __init__(self, run: Location):
        self.run = run
        self.staging = None if run.is_local else Path(tempfile.mkdtemp(prefix="distgan-tb-"))
        folder = Path(run.path, TB) if self.staging is None else self.staging
        os.makedirs(folder, exist_ok=True)
        # events.out.tfevents.<time>.<host>.<suffix>: two writers started within a second on
        # one host (a quick resume) must not share a name.
        self.writer = EventsWriter(str(folder / "events"), f".{uuid.uuid4().hex[:8]}")

    def scalars(self, step: int, record: dict) -> None:
        """Every numeric figure of a metrics record, as ``group/key`` (e.g. ``loss/d_loss``)."""
        values = [
            v
            for key, x in numbers(record).items()
            for v in summary.scalar(f"{group_of(key)}/{key}", x).value
        ]
        if values:
            self._write(step, Summary(value=values))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """One uint8 image: (H, W, C) with C 1 or 3, or (H, W) gray."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 (H, W, C) or (H, W) image, got {image.shape}")
        self._write(step, summary.image(tag, image, dataformats="HWC"[: image.ndim]))

    def samples(self, step: int, images: np.ndarray) -> None:
        """A batch of samples (N, C, H, W) uint8 as one grid, tag ``samples``."""
        self.image(step, "samples", grid(images))

    def flush(self) -> None:
        """Puts the events on disk; on object storage, uploads the event file."""
        self.writer.flush()
        if self.staging is not None:  # it holds this writer's file alone
            for path in self.staging.iterdir():
                self.run.upload(path, f"{TB}/{path.name}")

    def close(self) -> None:
        self.flush()
        self.writer.close()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _write(self, step: int, values: Summary) -> None:
        self.writer.write_event(Event(wall_time=time.time(), step=step, summary=values))
        if self.staging is None:  # local: on disk at once, for a TensorBoard watching the run
            self.writer.flush()
