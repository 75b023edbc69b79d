"""TensorBoard events of a run: scalars and sample grids, on local and on object storage.

The event files are read back record by record (TFRecord framing, CRCs checked) into
TensorBoard's own protobuf (``tensorboardX.proto.event_pb2``): TensorBoard itself is not a
dependency of distgan.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c
from tiny_runs import train_run

from distgan.images import grid
from distgan.storage import Location, open_location
from distgan.train.outputs import RunOutputs, read_metrics
from distgan.train.records import group_of
from distgan.train.tensorboard import TB, RunEvents

RECORDS = [  # as train/loop.py writes them (a stop message is a string, the step an int)
    {
        "step": 5,
        "d_loss": 1.25,
        "g_loss": 0.75,
        "d_real": 0.6,
        "images_per_s": 900.0,
        "d_wins": 0.0,
    },
    {"step": 10, "d_loss": 1.0, "g_loss": 0.5, "fid": 80.5, "rollbacks": 1, "stopped": "diverged"},
]


def read_events(data: bytes) -> list[event_pb2.Event]:
    """The events of one event file; fails on a bad length or payload CRC."""
    events, pos = [], 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
        payload = data[pos + 12 : pos + 12 + length]
        (crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert crc == masked_crc32c(payload)
        events.append(event_pb2.Event.FromString(payload))
        pos += 16 + length
    return events


def summaries(run: Location) -> tuple[dict, dict]:
    """(tag -> [(step, value)], tag -> [(step, PIL image)]) over every event file in tb/."""
    names = run.list(TB)
    assert names and all(n.startswith("events.out.tfevents.") for n in names), names
    scalars: dict = {}
    images: dict = {}
    for name in names:
        for event in read_events(run.read_bytes(f"{TB}/{name}")):
            for v in event.summary.value:
                if v.HasField("image"):
                    picture = Image.open(io.BytesIO(v.image.encoded_image_string))
                    images.setdefault(v.tag, []).append((event.step, picture))
                else:
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars, images


def write(run: Location) -> np.ndarray:
    events = RunEvents(run)
    batch = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    for record in RECORDS:
        events.scalars(record["step"], record)
    events.samples(10, batch)
    events.flush()
    return batch, events


def check(run: Location, batch: np.ndarray) -> None:
    scalars, images = summaries(run)
    assert scalars["loss/d_loss"] == [(5, 1.25), (10, 1.0)]
    assert scalars["loss/g_loss"] == [(5, 0.75), (10, 0.5)]
    assert scalars["D/d_real"] == [(5, 0.6000000238418579)]  # float32 in the protobuf
    assert scalars["speed/images_per_s"] == [(5, 900.0)]
    assert scalars["eval/fid"] == [(10, 80.5)]
    assert scalars["guard/rollbacks"] == [(10, 1.0)] and scalars["guard/d_wins"] == [(5, 0.0)]
    assert not any("step" in tag.split("/")[-1] or "stopped" in tag for tag in scalars)
    ((step, picture),) = images["samples"]
    expected = grid(batch)[:, :, 0]  # (H, W) gray; TensorBoard stores it as RGB
    assert step == 10 and picture.size == (expected.shape[1], expected.shape[0])
    assert np.array_equal(np.asarray(picture.convert("RGB"))[:, :, 0], expected)


def test_events_land_in_a_local_run(tmp_path):
    run = open_location(tmp_path / "00001-run", field="run")
    batch, events = write(run)
    check(run, batch)
    events.close()
    assert (tmp_path / "00001-run" / TB).is_dir()


def test_events_are_uploaded_to_object_storage_at_each_flush(tmp_path):
    fs = pafs._MockFileSystem()  # an in-memory file system: not local, like s3://
    run = Location("mock://bucket/runs/00001-run", fs, "bucket/runs/00001-run")
    assert not run.is_local
    batch, events = write(run)
    check(run, batch)  # read from the object store, after flush() and before close()
    events.scalars(15, {"step": 15, "d_loss": 0.5})
    events.close()
    scalars, _ = summaries(run)
    assert scalars["loss/d_loss"][-1] == (15, 0.5)
    assert not events.staging.exists()  # the local copy is gone


def test_a_writers_outputs_upload_their_events_and_clean_up_however_training_ends():
    """RunOutputs as rank 0 and a PBT trial hold it: the events reach the bucket and the local
    staging folder goes, when the training raises too."""
    fs = pafs._MockFileSystem()
    run = Location("mock://bucket/runs/00002-run", fs, "bucket/runs/00002-run")
    with pytest.raises(RuntimeError, match="a step failed"), RunOutputs(run) as outputs:
        outputs.write_metrics({"step": 5, "d_loss": 1.25})
        raise RuntimeError("a step failed")
    assert not outputs.events.staging.exists()
    scalars, _ = summaries(run)
    assert scalars["loss/d_loss"] == [(5, 1.25)]


def test_every_figure_and_grid_of_a_training_run_reaches_tensorboard(tmp_path):
    run_dir = train_run(tmp_path, arch="mlp", outputs=RunOutputs)  # no close(): flushed
    scalars, images = summaries(open_location(run_dir, field="run"))
    records = read_metrics(run_dir)
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "images_per_s", "fid",
                "kid", "skipped", "rollbacks", "lr_scale"):  # fmt: skip
        tag = f"{group_of(key)}/{key}"
        logged = [(r["step"], np.float32(r[key])) for r in records if key in r]
        assert scalars[tag] == logged, tag  # every log step, in order, rollback included
    grids = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "samples").iterdir())
    assert sorted(step for step, _ in images["samples"]) == grids
