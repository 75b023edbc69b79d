"""The data layer: importers (IDX, image folders, npz) -> Parquet shards + manifest.json.

Every test writes real files under tmp_path and reads them back through the public API.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgan.cli import main
from distgan.data import (
    EMBEDDED_DIR,
    import_source,
    load_arrays,
    read_idx,
    read_image_folder,
    read_manifest,
    read_npz,
    verify_shards,
    write_shards,
)
from distgan.errors import DataError

FASHION_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion-mnist"


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Writes ``array`` (N,) or (N, H, W) uint8 as an IDX file, gzipped when ``gz``."""
    magic = 2049 if array.ndim == 1 else 2051
    payload = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def idx_pair():
    """25 non-square 7×5 images with labels 0..3, as raw arrays."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(25, 7, 5), dtype=np.uint8)
    labels = (np.arange(25) % 4).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_idx_round_trip(tmp_path, idx_pair, gz):
    images, labels = idx_pair
    src = write_idx(tmp_path / "imgs-idx3-ubyte", images, gz)
    lab = write_idx(tmp_path / "labs-idx1-ubyte", labels, gz)

    manifest, skipped = import_source(src, tmp_path / "out", labels=lab, shard_size=10)

    assert skipped == 0
    assert (manifest.count, manifest.shape) == (25, (1, 7, 5))
    assert manifest.labels == (0, 1, 2, 3)
    assert manifest.label_counts == {0: 7, 1: 6, 2: 6, 3: 6}
    assert [s.count for s in manifest.shards] == [10, 10, 5]
    assert [s.sha256 for s in manifest.shards] == [sha256(p) for p in manifest.shard_paths]
    assert read_manifest(tmp_path / "out") == manifest
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["source"] == "idx imgs-idx3-ubyte + labs-idx1-ubyte"
    assert on_disk["label_counts"] == {"0": 7, "1": 6, "2": 6, "3": 6}
    got_images, got_labels = load_arrays(manifest)
    np.testing.assert_array_equal(got_images, images[:, None])
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))
    assert got_labels.dtype == np.int64


def test_idx_limit_and_no_labels(tmp_path, idx_pair):
    images, _ = idx_pair
    src = write_idx(tmp_path / "imgs.gz", images, gz=True)
    got, labels = read_idx(src, limit=4)
    assert labels is None
    np.testing.assert_array_equal(got, images[:4, None])


def test_import_is_deterministic(tmp_path, idx_pair):
    images, labels = idx_pair
    src = write_idx(tmp_path / "imgs", images, gz=False)
    lab = write_idx(tmp_path / "labs", labels, gz=False)
    first, _ = import_source(src, tmp_path / "a", labels=lab)
    second, _ = import_source(src, tmp_path / "b", labels=lab)
    assert first.shards == second.shards
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_truncated_idx_names_file(tmp_path, idx_pair, gz):
    images, _ = idx_pair
    whole = tmp_path / "whole"
    write_idx(whole, images, gz)
    cut = tmp_path / "cut-images-idx3-ubyte"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(cut)
    assert str(cut) in str(err.value)
    if not gz:
        assert "header says 25 images of 7×5 (875 bytes)" in str(err.value)


def test_idx_wrong_magic_and_count_mismatch(tmp_path, idx_pair):
    images, labels = idx_pair
    src = write_idx(tmp_path / "imgs", images, gz=False)
    lab = write_idx(tmp_path / "labs", labels, gz=False)
    with pytest.raises(DataError, match="labels file .*--labels"):
        read_idx(lab)
    short = write_idx(tmp_path / "short", labels[:20], gz=False)
    with pytest.raises(DataError, match="has 20 labels but .* has 25 images"):
        read_idx(src, short)


def make_image(path: Path, size: tuple[int, int], mode: str, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture
def class_folder(tmp_path):
    """Two classes of images of different sizes and modes: cat (3 images), dog (2 images)."""
    root = tmp_path / "pets"
    make_image(root / "cat/a.png", (40, 30), "RGB", (255, 0, 0))
    make_image(root / "cat/b.jpg", (12, 50), "L", 128)
    make_image(root / "cat/nested/c.png", (8, 8), "RGB", (0, 0, 255))
    make_image(root / "dog/d.PNG", (100, 20), "RGB", (0, 255, 0))
    make_image(root / "dog/e.jpeg", (16, 16), "L", 10)
    return root


def test_image_folder_classes_and_shape(class_folder):
    images, labels, skipped = read_image_folder(class_folder, 8, channels=3)
    assert images.shape == (5, 3, 8, 8) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1])
    assert skipped == []
    # sorted order: cat/a.png (red), cat/b.jpg (gray 128), cat/nested/c.png (blue), dog/...
    np.testing.assert_array_equal(images[0, :, 4, 4], [255, 0, 0])
    np.testing.assert_array_equal(images[2, :, 4, 4], [0, 0, 255])
    assert abs(int(images[1, 0, 4, 4]) - 128) <= 2  # JPEG is lossy


def test_image_folder_center_crops(tmp_path):
    # 48 wide, 16 high: black | white | black thirds. Resizing the short side to 8 and cropping
    # the centre keeps the white third; squashing the whole image would average to ~85.
    pixels = np.zeros((16, 48), np.uint8)
    pixels[:, 16:32] = 255
    (tmp_path / "flat").mkdir()
    Image.fromarray(pixels).save(tmp_path / "flat/wide.png")
    images, labels, _ = read_image_folder(tmp_path / "flat", 8)
    assert images.shape == (1, 1, 8, 8)  # all sources gray -> one channel
    assert labels is None  # images directly in the folder: no classes
    assert images[0, 0, :, 2:6].min() >= 250 and images.mean() > 200


def test_unreadable_image_fails_or_is_skipped(tmp_path, class_folder):
    (class_folder / "dog/broken.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match="--on-error skip") as err:
        import_source(class_folder, tmp_path / "out", resolution=8)
    assert "broken.png" in str(err.value)

    manifest, skipped = import_source(class_folder, tmp_path / "out", resolution=8, on_error="skip")
    assert skipped == 1
    assert (manifest.count, manifest.shape) == (5, (3, 8, 8))
    assert manifest.label_counts == {0: 3, 1: 2}


def test_folder_without_images(tmp_path):
    (tmp_path / "empty/sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no PNG or JPEG images"):
        import_source(tmp_path / "empty", tmp_path / "out", resolution=8)


def test_npz_with_labels_nhwc(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 4, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    labels = np.array([2, 0, 2, 1, 0, 2])
    np.savez(tmp_path / "set.npz", images=images, labels=labels)

    manifest, _ = import_source(tmp_path / "set.npz", tmp_path / "out")

    assert (manifest.shape, manifest.labels, manifest.source) == (
        (3, 4, 5),
        (0, 1, 2),
        "npz set.npz",
    )
    got_images, got_labels = load_arrays(read_manifest(tmp_path / "out"))
    np.testing.assert_array_equal(got_images, images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got_labels, labels)


def test_npz_without_labels(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)  # (N, H, W)
    np.savez(tmp_path / "gray.npz", images=images)
    manifest, _ = import_source(tmp_path / "gray.npz", tmp_path / "out", limit=2)
    assert (manifest.count, manifest.shape, manifest.labels) == (2, (1, 4, 4), None)
    assert json.loads((tmp_path / "out/manifest.json").read_text())["label_counts"] is None
    got_images, got_labels = load_arrays(manifest)
    assert got_labels is None
    np.testing.assert_array_equal(got_images, images[:2, None])


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_npz_float_images_refused(tmp_path, low):
    np.savez(tmp_path / "f.npz", images=np.linspace(low, 1.0, 48).reshape(3, 4, 4))
    with pytest.raises(DataError, match="float64 .*convert it to uint8"):
        read_npz(tmp_path / "f.npz")


@pytest.fixture
def shard_folder(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, size=(30, 1, 6, 6), dtype=np.uint8)
    return write_shards(images, np.arange(30) % 3, tmp_path / "shards", shard_size=12, source="t")


def test_verify_catches_modified_shard(shard_folder):
    verify_shards(shard_folder)
    path = Path(shard_folder.shard_paths[1])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="shard-00001.parquet: sha256"):
        verify_shards(shard_folder)


def test_verify_catches_truncated_shard(shard_folder):
    path = Path(shard_folder.shard_paths[2])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="shard-00002.parquet: truncated or corrupt"):
        verify_shards(read_manifest(shard_folder.root))


def test_read_manifest_errors(tmp_path, shard_folder):
    root = Path(shard_folder.root)
    with pytest.raises(DataError, match="no such dataset folder"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="has no manifest.json; create one with `distgan data"):
        read_manifest(tmp_path / "bare")
    Path(shard_folder.shard_paths[0]).unlink()
    with pytest.raises(DataError, match="shard-00000.parquet: shard listed in .* is missing"):
        read_manifest(root)
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["shape"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="field 'shape' is missing"):
        read_manifest(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        read_manifest(root)


def test_write_refuses_foreign_folder_and_replaces_own(tmp_path, shard_folder):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    images = np.zeros((4, 1, 2, 2), np.uint8)
    with pytest.raises(DataError, match="not a distgan shard folder"):
        write_shards(images, None, tmp_path / "mine", source="t")
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"

    replaced = write_shards(images, None, shard_folder.root, source="again")
    assert sorted(p.name for p in Path(shard_folder.root).iterdir()) == [
        "manifest.json",
        "shard-00000.parquet",
    ]
    assert read_manifest(shard_folder.root) == replaced
    assert replaced.labels is None and replaced.count == 4


def test_embedded_dataset():
    manifest = read_manifest(EMBEDDED_DIR)
    assert (manifest.count, manifest.shape) == (10000, (1, 28, 28))
    assert manifest.labels == tuple(range(10))
    assert sum(manifest.label_counts.values()) == 10000
    assert "/" not in manifest.source
    verify_shards(manifest)


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason=f"Fashion-MNIST IDX files not found at {FASHION_MNIST}"
)
def test_embedded_dataset_matches_reimport(tmp_path):
    embedded_images, embedded_labels = load_arrays(read_manifest(EMBEDDED_DIR))
    manifest, _ = import_source(
        FASHION_MNIST / "train-images-idx3-ubyte.gz",
        tmp_path / "fm",
        labels=FASHION_MNIST / "train-labels-idx1-ubyte.gz",
        limit=10000,
    )
    images, labels = load_arrays(manifest)
    np.testing.assert_array_equal(images, embedded_images)
    np.testing.assert_array_equal(labels, embedded_labels)


def test_cli_import_and_verify(tmp_path, capsys, class_folder):
    (class_folder / "dog/broken.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    argv = ["data", "import", str(class_folder), "--out", str(out), "--resolution", "8"]
    assert main([*argv, "--channels", "1", "--on-error", "skip", "--shard-size", "2"]) == 0
    line, changes = capsys.readouterr().out.splitlines()
    assert "imported 5 images of 1×8×8, 2 classes (cat, dog), 3 shards" in line
    assert "skipped 1 unreadable image" in line
    # Said once, with counts: all but the 8×8 one resized, three not square, three in colour.
    assert changes == (
        "to make them 8×8 gray: resized 4 images, cropped 3 to their centre square, "
        "converted 3 to gray (3 RGB)"
    )
    assert read_manifest(out).shape == (1, 8, 8)

    assert main(["data", "verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {out}: 5 images")


def test_cli_import_of_images_that_fit_as_they_are_says_nothing_more(tmp_path, capsys):
    make_image(tmp_path / "rgb/a.png", (8, 8), "RGB", (255, 0, 0))
    make_image(tmp_path / "rgb/b.png", (8, 8), "RGBA", (0, 0, 255, 128))
    argv = ["data", "import", str(tmp_path / "rgb"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--resolution", "8"]) == 0
    _, changes = capsys.readouterr().out.splitlines()
    assert changes == "to make them 8×8 RGB: converted 1 to RGB (1 RGBA)"
    (tmp_path / "rgb/b.png").unlink()
    assert main([*argv, "--resolution", "8"]) == 0
    (only,) = capsys.readouterr().out.splitlines()  # nothing resized, cropped or converted
    assert only.startswith("imported 1 images of 3×8×8")


def test_cli_missing_source(tmp_path, capsys):
    missing = tmp_path / "nope-idx3-ubyte.gz"
    assert main(["data", "import", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "no such file" in err
    assert not (tmp_path / "out").exists()


def test_reimport_over_a_fitted_feature_network_removes_it_with_a_line(tmp_path, capsys):
    """Issue 26: distgan's own features.pt / features.json (eval fit-features) made a re-import
    into the folder fail as "not a distgan shard folder"; they describe the images the import
    replaces, so they go, with a line that says so. A file of the user's is still refused."""
    out = tmp_path / "ds"
    for seed in (0, 1):
        images = np.random.default_rng(seed).integers(0, 256, (12, 28, 28), dtype=np.uint8)
        np.savez(tmp_path / f"x{seed}.npz", images=images, labels=np.arange(12) % 3)
    assert main(["data", "import", str(tmp_path / "x0.npz"), "--out", str(out)]) == 0
    (out / "features.pt").write_bytes(b"weights fitted on x0")
    (out / "features.json").write_text("{}")
    capsys.readouterr()

    assert main(["data", "import", str(tmp_path / "x1.npz"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("imported 12 images of 1×28×28")
    assert lines[1] == (
        f"removed features.pt, features.json from {out}: fitted on the images this import "
        f"replaced; fit it again: distgan eval fit-features {out}"
    )
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.parquet"]
    assert read_manifest(out).source == "npz x1.npz"

    (out / "notes.txt").write_text("mine")
    assert main(["data", "import", str(tmp_path / "x0.npz"), "--out", str(out)]) == 2
    assert "not a distgan shard folder (it holds notes.txt)" in capsys.readouterr().err


def test_verify_takes_the_name_jobs_use_for_the_packaged_data(capsys):
    """Issue 26: `distgan data verify embedded` said "no such dataset folder"."""
    assert main(["data", "verify", "embedded"]) == 0
    assert capsys.readouterr().out.startswith("OK embedded: 10000 images of 1×28×28")
