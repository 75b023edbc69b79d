"""Classes have names: the importers keep them in manifest.json, and grids and per-class figures
show them; a dataset without names shows the label numbers, as before. No Ray."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgan.cli import main
from distgan.data import EMBEDDED_DIR, class_name, import_source, read_manifest, write_shards
from distgan.data.importers import idx_class_names
from distgan.errors import DataError
from distgan.images import grid, save_grid
from distgan.metrics import FeatureSet
from distgan.metrics.evaluate import per_class_lines

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")  # fmt: skip


def write_idx_pair(folder: Path, n: int = 20) -> Path:
    """Fashion-MNIST's file names and layout (gzipped), ``n`` random images with labels 0..9."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for name, magic, array in (("train-images-idx3-ubyte.gz", 2051, images),
                               ("train-labels-idx1-ubyte.gz", 2049, labels)):  # fmt: skip
        header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
        (folder / name).write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return folder / "train-images-idx3-ubyte.gz"


def test_embedded_dataset_names_its_classes():
    manifest = read_manifest(EMBEDDED_DIR)
    assert [class_name(manifest, k) for k in manifest.labels] == list(FASHION)


def test_an_idx_import_keeps_the_documented_names(tmp_path):
    src = write_idx_pair(tmp_path / "datasets" / "fashion-mnist")
    labels = src.with_name("train-labels-idx1-ubyte.gz")
    manifest, _ = import_source(src, tmp_path / "fm", labels=labels)
    assert manifest.class_names == dict(enumerate(FASHION))
    assert read_manifest(tmp_path / "fm").class_names == dict(enumerate(FASHION))
    saved = json.loads((tmp_path / "fm" / "manifest.json").read_text())
    assert saved["class_names"]["0"] == "T-shirt/top" and saved["class_names"]["9"] == "Ankle boot"

    # Without labels there is nothing to name; --class-names overrides the documented names.
    unlabelled, _ = import_source(src, tmp_path / "nolabels")
    assert unlabelled.class_names is None
    mine = [f"c{i}" for i in range(10)]
    renamed, _ = import_source(src, tmp_path / "renamed", labels=labels, class_names=mine)
    assert class_name(renamed, 3) == "c3"


def test_idx_datasets_are_recognised_by_file_and_folder_names(tmp_path):
    assert idx_class_names("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") == FASHION
    assert idx_class_names("/data/FashionMNIST/raw/train-images-idx3-ubyte") == FASHION
    assert idx_class_names("/data/MNIST/raw/train-images-idx3-ubyte") == tuple("0123456789")
    assert idx_class_names("/data/mnist/train-images.idx3-ubyte") == tuple("0123456789")
    # Another folder, or another file name, is not guessed at: the labels stay numbers.
    assert idx_class_names("/data/kmnist-like/train-images-idx3-ubyte.gz") is None
    assert idx_class_names("/data/fashion-mnist/my-images.gz") is None


def test_an_image_folder_import_keeps_the_folder_names(tmp_path):
    for cls in ("zebra", "ant"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (10, 10), 40 * i).save(tmp_path / "photos" / cls / f"{i}.png")
    manifest, _ = import_source(tmp_path / "photos", tmp_path / "out", resolution=8)
    assert manifest.class_names == {0: "ant", 1: "zebra"}  # labels in sorted name order
    assert manifest.labels == (0, 1)


def test_class_names_flag_takes_a_list_or_a_file(tmp_path, capsys):
    src = write_idx_pair(tmp_path / "raw")  # a folder distgan does not recognise
    labels = ["--labels", str(src.with_name("train-labels-idx1-ubyte.gz"))]
    assert main(["data", "import", str(src), *labels, "--out", str(tmp_path / "a")]) == 0
    assert read_manifest(tmp_path / "a").class_names is None  # numbers, as before
    assert class_name(read_manifest(tmp_path / "a"), 7) == "7"

    names = ",".join(f"n{i}" for i in range(10))
    argv = [
        "data",
        "import",
        str(src),
        *labels,
        "--class-names",
        names,
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(argv) == 0
    assert "10 classes (n0, n1, n2, ...)" in capsys.readouterr().out
    assert class_name(read_manifest(tmp_path / "b"), 9) == "n9"

    file = tmp_path / "names.txt"
    file.write_text("\n".join(FASHION) + "\n\n")
    argv = ["data", "import", str(src), *labels, "--class-names", str(file)]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert read_manifest(tmp_path / "c").class_names == dict(enumerate(FASHION))

    assert main([*argv[:-1], "a,b,c", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--class-names: 3 names" in err and "labels run to 9" in err
    assert not (tmp_path / "d").exists()


def test_manifests_without_names_stay_valid_and_bad_names_are_refused(tmp_path):
    write_shards(np.zeros((4, 1, 8, 8), np.uint8), np.arange(4), tmp_path / "d", source="t")
    path = tmp_path / "d" / "manifest.json"
    data = json.loads(path.read_text())
    assert "class_names" not in data  # written as before when nothing names the classes
    assert read_manifest(tmp_path / "d").class_names is None
    data["class_names"] = {"0": ""}
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="'class_names' must be null or"):
        read_manifest(tmp_path / "d")


def test_a_grid_names_its_rows(tmp_path):
    images = np.full((6, 1, 28, 28), 100, np.uint8)
    plain = grid(images, nrow=3)  # (2 rows) -> (62, 92, 1)
    save_grid(images, tmp_path / "named.png", nrow=3, row_names=["Ankle boot", "Bag"])
    named = np.asarray(Image.open(tmp_path / "named.png"))[:, :, None]
    margin = named.shape[1] - plain.shape[1]
    assert named.shape[0] == plain.shape[0] and margin > 20
    np.testing.assert_array_equal(named[:, margin:], plain)  # the images, unchanged
    for row in range(2):  # text beside each row, nothing between them
        band = named[2 + row * 30 : 2 + row * 30 + 28, :margin]
        assert (band > 128).any(), row
    assert not (named[:2, :margin] > 0).any()


def test_per_class_figures_show_names_or_numbers(tmp_path):
    probs = np.eye(10)[[0] * 40 + [1] * 40 + list(range(2, 10)) * 2]  # 2..9 starved
    lines = per_class_lines(FeatureSet(np.zeros((96, 2)), probs), read_manifest(EMBEDDED_DIR))
    assert len(lines) == 10
    assert lines[0].split() == ["T-shirt/top", "41.7%"]
    assert lines[9].split() == ["Ankle", "boot", "2.1%", "missing"]
    assert lines[1].split()[-1] == "41.7%" and all(line.endswith("missing") for line in lines[2:])

    write_shards(np.zeros((4, 1, 8, 8), np.uint8), np.arange(4) % 2, tmp_path / "d", source="t")
    numbered = per_class_lines(
        FeatureSet(np.zeros((2, 2)), np.eye(2)), read_manifest(tmp_path / "d")
    )
    assert [line.split()[0] for line in numbered] == ["0", "1"]


def test_row_names_draw_accents_and_symbols_not_boxes():
    """Issue 26: ``étoiles rouges ★`` came out as ``□toiles rouges□`` in explore's classes.png.
    U+E000 (private use) is in no font: it draws as the font's box, which é and ★ must not."""
    from distgan.images import label_rows

    def drawn(name: str) -> np.ndarray:
        image = label_rows(grid(np.zeros((1, 1, 28, 28), np.uint8)), [name], 28)
        margin = image[:, : image.shape[1] - 32, 0]
        cols = np.nonzero(margin.any(axis=0))[0]
        return margin[:, cols.min() : cols.max() + 1]  # the ink, (H, w)

    box = drawn("\ue000")
    for text in ("é", "★"):
        ink = drawn(text)
        assert ink.shape != box.shape or not np.array_equal(ink, box), text
    assert not np.array_equal(drawn("é"), drawn("e"))  # the accent is there
    assert drawn("étoiles rouges ★").shape[1] > drawn("toiles rouges").shape[1]
