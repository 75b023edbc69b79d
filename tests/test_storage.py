"""A run's home is its storage: locations, joins, the run's files, data read by row group.

These run on the local file system, through both its path and its ``file://`` URI (the same code
that serves ``s3://``); the object-store side is tested against a real S3-compatible server in
``test_storage_s3.py`` and on the split cluster (``test_split_cluster.py``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distgan.data import load_arrays, read_manifest, read_rows, write_shards
from distgan.errors import StorageError
from distgan.storage import display, is_uri, join, open_location, split_query
from distgan.train import checkpoint as ckpts
from distgan.train import stopping
from distgan.train.outputs import (
    RunOutputs,
    new_run_dir,
    read_best,
    read_metrics,
    request_stop,
)

Q = "?endpoint_override=127.0.0.1:9000&scheme=http"


def test_names_join_into_the_path_never_after_the_query():
    assert join(f"s3://bucket/runs{Q}", "00003-x") == f"s3://bucket/runs/00003-x{Q}"
    assert join(f"s3://bucket/runs/{Q}", "a", "b/") == f"s3://bucket/runs/a/b{Q}"
    assert join("s3://bucket/runs", "a") == "s3://bucket/runs/a"
    assert join("/data/runs", "a", "state.pt") == "/data/runs/a/state.pt"
    assert split_query(f"s3://b/x{Q}") == ("s3://b/x", Q)
    assert split_query("/a/b?c") == ("/a/b?c", "")  # a local name may hold a '?'
    assert display(f"s3://b/x{Q}") == "s3://b/x"
    assert is_uri("gs://b") and is_uri("file:///tmp") and not is_uri("runs/x")


def test_a_location_child_keeps_the_query_and_the_parent_drops_one_name():
    loc = open_location(f"s3://bucket/runs{Q}", field="run.storage")
    run = loc.child("00001-q")
    assert run.uri == f"s3://bucket/runs/00001-q{Q}" and run.path == "bucket/runs/00001-q"
    assert run.parent().uri == loc.uri and run.parent().path == loc.path
    assert str(run) == "s3://bucket/runs/00001-q"  # no endpoint in progress lines


def test_an_unknown_scheme_is_one_line_naming_the_field():
    with pytest.raises(StorageError, match=r"^run.storage: foo://x/y: pyarrow cannot open a 'foo'"):
        open_location("foo://x/y", field="run.storage")


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_run_files_written_whole_and_read_back(tmp_path, as_uri):
    home = f"file://{tmp_path}" if as_uri else str(tmp_path)
    run = new_run_dir(home, "q")
    assert run.name == "00000-q" and new_run_dir(home, "q").name == "00001-q"
    out = RunOutputs(run)
    for step in (10, 20, 30):
        out.write_metrics({"step": step, "d_loss": 1.0 / step})
    out.write_samples(30, np.zeros((4, 1, 8, 8), np.uint8))
    assert [m["step"] for m in read_metrics(run.uri)] == [10, 20, 30]
    assert run.list("samples") == ["step_000030.png"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporary left

    # Resumed at step 20 (the checkpoint): the lines after it are dropped, then logged again.
    again = RunOutputs(run.uri, resume_step=20)
    again.write_metrics({"step": 30, "d_loss": 0.5})
    again.write_metrics({"step": 40, "d_loss": 0.4})
    logged = read_metrics(run)
    assert [m["step"] for m in logged] == [10, 20, 30, 40] and logged[2]["d_loss"] == 0.5


def _ckpt(step: int, fid: float) -> dict:
    return {"format": ckpts.FORMAT, "step": step, "metrics": {"fid": fid}, "w": torch.ones(3)}


def test_best_and_checkpoints_through_a_uri(tmp_path):
    run = open_location(f"file://{tmp_path}/run", field="run.storage")
    out = RunOutputs(run)
    assert out.update_best(_ckpt(10, 50.0), "fid", higher_is_better=False)
    assert not out.update_best(_ckpt(20, 60.0), "fid", higher_is_better=False)
    assert read_best(run) == {"metric": "fid", "value": 50.0, "step": 10}
    for step in (10, 20):
        run.write_bytes(f"checkpoints/step_{step:07d}/state.pt", ckpts.to_bytes(_ckpt(step, 1)))
    run.write_bytes("checkpoints/step_0000030/state.pt", b"half a checkpoint")
    found = ckpts.checkpoints(run.uri)
    assert [display(str(f)).rsplit("/", 1)[1] for f in found] == [
        "step_0000010", "step_0000020", "step_0000030",
    ]  # fmt: skip
    assert ckpts.latest(run.uri) == found[1]  # the newest that loads
    assert ckpts.load(ckpts.latest(run.uri))["step"] == 20
    assert ckpts.load(run.child("best").uri)["step"] == 10


def test_read_rows_reads_the_picked_rows_of_many_shards(tmp_path, monkeypatch):
    import distgan.data.shards as shards

    monkeypatch.setattr(shards, "_ROW_GROUP_BYTES", 784 * 64)  # several row groups a shard
    images = np.random.default_rng(0).integers(0, 256, (1000, 1, 28, 28), dtype=np.uint8)
    manifest = write_shards(images, None, tmp_path / "d", shard_size=300, source="test")
    pick = np.sort(np.random.default_rng(1).permutation(1000)[:97])
    assert np.array_equal(read_rows(manifest, pick), images[pick])
    assert np.array_equal(read_rows(manifest, np.arange(1000)), load_arrays(manifest)[0])


def test_data_written_to_and_read_from_a_uri(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    uri = f"file://{tmp_path}/bucket/d"
    written = write_shards(images, np.arange(50) % 5, uri, shard_size=20, source="test")
    manifest = read_manifest(uri)
    assert manifest == written and manifest.count == 50 and len(manifest.shards) == 3
    assert np.array_equal(load_arrays(manifest)[0], images)
    record = json.loads((tmp_path / "bucket" / "d" / "manifest.json").read_text())
    assert [s["file"] for s in record["shards"]] == [s.file for s in manifest.shards]


class StopAfter17(RunOutputs):
    """The rank-0 writer of a run whose driver gets `distgan stop` after step 17 is logged."""

    def write_metrics(self, record: dict) -> None:
        super().write_metrics(record)
        if record["step"] >= 17:
            request_stop(self.run)


def test_a_stop_request_ends_the_run_at_the_next_probe_with_a_final_checkpoint(
    tmp_path, monkeypatch
):
    """The request is seen at StopCheck's next probe (about a second later; here every step), not
    at a log, sample or checkpoint step."""
    from tiny_runs import train_run

    monkeypatch.setattr(stopping, "PROBE_SECONDS", 0.0)

    run_dir = train_run(tmp_path, arch="mlp", outputs=StopAfter17, train={"log_every": 1,
                        "checkpoint_every": 100, "steps": 40, "sample_every": 100},
                        guard={"inject_nan": ""})  # fmt: skip
    steps = [m["step"] for m in read_metrics(run_dir)]
    assert steps[-1] == 18  # the next probe after the request: not the job's 40
    finals = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert finals[-1] == "step_0000018" and ckpts.load(run_dir / "checkpoints" / finals[-1])
    request_stop(open_location(str(run_dir), "run"), clear=True)
    assert not RunOutputs(run_dir).stop_requested()


def test_a_resumed_runs_clock_goes_on_from_its_checkpoint(tmp_path, monkeypatch):
    """A run restored from a checkpoint taken after 1,000 s of training logs elapsed_s from
    there, and its checkpoints carry the whole run's time to the next part."""
    import functools

    from tiny_runs import train_run

    monkeypatch.setattr(
        ckpts, "TrainState", functools.partial(ckpts.TrainState, train_seconds=1000.0)
    )  # what ckpts.restore sets from a checkpoint's metrics (checked below)
    run_dir = train_run(tmp_path, arch="mlp", guard={"inject_nan": ""})
    elapsed = [m["elapsed_s"] for m in read_metrics(run_dir)]
    assert all(1000.0 <= e < 1000.0 + 300 for e in elapsed) and elapsed == sorted(elapsed)
    ckpt = ckpts.load(ckpts.latest(run_dir))
    assert ckpt["metrics"]["elapsed_s"] >= 1000.0
    monkeypatch.undo()

    # The next part starts where this one ended: restore takes the clock from the checkpoint.
    from distgan.config import load_resolved
    from distgan.train.build import build_state

    spec = load_resolved(ckpt["job"], "ckpt")
    shape = tuple(ckpt["image_shape"])
    assert build_state(spec, shape, torch.device("cpu")).train_seconds == 0.0
    state = build_state(spec, shape, torch.device("cpu"), checkpoint=ckpt)
    assert state.train_seconds == ckpt["metrics"]["elapsed_s"]
