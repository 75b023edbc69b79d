"""A manifest that lies about its shards, and shard bytes that differ from the manifest's hash.

``distgan data verify`` and ``distgan train`` (whose checks before Ray are ``verify_shards``
without hashes) refuse a manifest whose shape, label set or labels the shards contradict; the
workers' reader (``verified_parquet``: through Ray Data, or a streaming worker's own reads)
refuses a shard whose bytes are not the ones the manifest hashed. Every dataset here is written by
``write_shards`` and then edited, as a user's hand or a broken tool would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from distgan.cli import main
from distgan.data import load_arrays, read_manifest, verify_shards, write_shards
from distgan.data.verify import verified_shard_rows
from distgan.errors import DataError

# Each lie, as the manifest fields it changes in a dataset of 64 1×28×28 images labelled 0..3
# (16 of each) in two shards, and the words the refusal must hold.
LIES = {
    "shape": ({"shape": [1, 32, 32]}, ["field 'shape' is [1, 32, 32]", "are 784 bytes"]),
    "label-set": (
        {"labels": [0, 1, 2, 3, 4, 5], "label_counts": dict(zip("012345", [16, 16, 8, 8, 8, 8]))},
        ["field 'labels' is 0..5", "run from 0 to 3"],
    ),
    "label-outside": (
        {"labels": [0, 1, 2], "label_counts": {"0": 22, "1": 21, "2": 21}},
        ["field 'labels' is 0..2", "holds label 3, outside it"],
    ),
}


def _dataset(folder: Path, **lie) -> Path:
    """64 random 1×28×28 images labelled 0..3, two shards; ``lie``: manifest fields replaced."""
    images = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    write_shards(images, np.arange(64) % 4, folder, shard_size=32, source="test")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **lie}))
    return folder


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("lie", LIES, ids=list(LIES))
def test_data_verify_refuses_a_lying_manifest(tmp_path, capsys, lie):
    fields, words = LIES[lie]
    folder = _dataset(tmp_path / "data", **fields)
    assert main(["data", "verify", str(folder)]) == 2
    err = _one_line(capsys)
    for want in [f"{folder}/manifest.json", *words, "re-create it with `distgan data import"]:
        assert want in err, err


@pytest.mark.parametrize("lie", LIES, ids=list(LIES))
def test_train_dry_run_refuses_a_lying_manifest(tmp_path, capsys, monkeypatch, lie):
    fields, words = LIES[lie]
    folder = _dataset(tmp_path / "data", **fields)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"data:\n  source: {folder}\nmodel:\n  arch: mlp\nrun:\n  root: {tmp_path}/runs\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(job), "--dry-run"]) == 2
    err = _one_line(capsys)
    for want in [f"{job}: data.source: {folder}/manifest.json", *words, "re-create it"]:
        assert want in err, err
    assert not (tmp_path / "runs").exists()


def test_the_honest_manifest_passes_both_checks(tmp_path, capsys):
    folder = _dataset(tmp_path / "data")
    verify_shards(read_manifest(folder), hashes=False)
    assert main(["data", "verify", str(folder)]) == 0
    assert "image size and labels match" in capsys.readouterr().out


def test_labels_without_footer_statistics_are_read_from_the_column(tmp_path):
    folder = _dataset(tmp_path / "data", labels=[0, 1, 2], label_counts={"0": 22, "1": 21, "2": 21})
    shard = folder / "shard-00001.parquet"  # rows 32..63: labels 0..3, no min/max in its footer
    pq.write_table(pq.read_table(shard), shard, write_statistics=False)
    stats = pq.ParquetFile(shard).metadata.row_group(0).column(1).statistics
    assert stats is None or not stats.has_min_max
    manifest = read_manifest(folder)
    manifest = dataclasses.replace(manifest, shards=manifest.shards[1:])
    with pytest.raises(DataError, match="shard-00001.parquet holds label 3, outside it"):
        verify_shards(manifest, hashes=False)


def test_label_counts_that_lie_are_caught_by_the_full_verify(tmp_path):
    counts = {"0": 17, "1": 15, "2": 16, "3": 16}  # the right labels and total, wrong counts
    folder = _dataset(tmp_path / "data", label_counts=counts)
    with pytest.raises(
        DataError, match="field 'label_counts' gives label 0 17 images, the shards "
    ):
        verify_shards(read_manifest(folder))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label_counts": {"0": 32, "1": 32}}, "'label_counts' counts labels \\[0, 1\\], but 'la"),
        (
            {"label_counts": {"0": 16, "1": 16, "2": 16, "3": 15}},
            "adds up to 63, but 'count' is 64",
        ),
        ({"labels": [0, 2, 1, 3]}, "field 'labels' must be sorted and distinct"),
        ({"class_names": {"0": "a", "1": "b"}}, "'class_names' names 2 classes but not labels"),
    ],
    ids=["counts-of-other-labels", "counts-add-up-wrong", "labels-unsorted", "too-few-names"],
)
def test_read_manifest_refuses_label_fields_that_disagree(tmp_path, fields, message):
    folder = _dataset(tmp_path / "data", **fields)
    with pytest.raises(DataError, match=f"manifest.json: .*{message}.*re-create it"):
        read_manifest(folder)


def _file_batch(paths: list[str]) -> dict[str, np.ndarray]:
    """What ``ray.data.read_binary_files(paths, include_paths=True)`` hands ``map_batches``."""
    contents = [Path(p).read_bytes() for p in paths]
    return {"bytes": np.array(contents, dtype=object), "path": np.array(paths, dtype=object)}


def test_the_reader_yields_every_row_of_a_shard_it_verified(tmp_path):
    manifest = read_manifest(_dataset(tmp_path / "data"))
    sha256 = {s.file: s.sha256 for s in manifest.shards}
    batch = _file_batch(manifest.shard_paths)
    table = pa.concat_tables(verified_shard_rows(batch, sha256, ["image", "label"]))
    images, labels = load_arrays(manifest)
    raw = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8)
    np.testing.assert_array_equal(raw.reshape(images.shape), images)
    np.testing.assert_array_equal(table.column("label").to_numpy(), labels)


def test_the_reader_refuses_a_shard_with_a_flipped_byte(tmp_path):
    manifest = read_manifest(_dataset(tmp_path / "data"))
    shard = Path(manifest.shard_paths[1])
    # Flip a byte of the image data, not of the footer: the file still parses as Parquet.
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0x01
    shard.write_bytes(bytes(raw))
    sha256 = {s.file: s.sha256 for s in manifest.shards}
    rows = verified_shard_rows(_file_batch(manifest.shard_paths), sha256, ["image"])
    assert next(rows).num_rows == 32  # shard 0 is intact
    flipped = hashlib.sha256(raw).hexdigest()
    with pytest.raises(DataError, match=f"{shard}: sha256 is {flipped}, manifest says .*re-create"):
        next(rows)
    verify_shards(manifest, hashes=False)  # the footer checks cannot see it: only the hash does


def test_the_check_ray_data_runs_before_the_first_step_imports_no_pytorch():
    # Ray Data runs verified_shard_rows in a task worker of its own at the start of every run
    # that keeps its data in memory: PyTorch there cost about 1.5 s of CPU before the first step.
    probe = "import sys, distgan.data.verify; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
@pytest.mark.parametrize("cache", ["memory", "stream"])
def test_train_refuses_a_shard_whose_bytes_changed_in_one_line(
    ray_cluster, tmp_path, capsys, cache
):
    """distgan train through Ray Data (in memory) or a worker reading its own files (streamed):
    the reader hashes each shard as it reads it, and the flipped byte ends the run with the
    reader's line, not Ray's traceback. (One worker: a second reads the same way.)"""
    manifest = read_manifest(_dataset(tmp_path / "data"))
    shard = Path(manifest.shard_paths[0])
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0x01
    shard.write_bytes(bytes(raw))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "data": {"source": str(tmp_path / "data"), "cache": cache},
        "model": {"arch": "mlp", "width": 8},
        "train": {"steps": 20, "batch_size": 8, "log_every": 10},
        "scale": {"workers": 1, "max_failures": 0},
        "run": {"storage": str(tmp_path / "runs")},
    }))  # fmt: skip
    assert main(["train", str(job)]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert f"{shard}: sha256 is " in line and "modified or damaged since it was imported" in line
    assert "Traceback" not in err
