"""Image folders as data.source: listing and labels on the driver, decoding (crop, resize, modes,
corrupt files) as Ray Data's tasks run it, the job's checks, and one short run from a folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from distgan.cli import main
from distgan.config import parse_job
from distgan.data.folders import NO_LABEL, decode_images, folder_classes, list_folder
from distgan.errors import DataError, JobError
from distgan.train.outputs import read_metrics

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def banded(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Red left quarter, green middle half, blue right quarter: a centre crop is all green."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 4] = RED
    pixels[:, width // 4 : width - width // 4] = GREEN
    pixels[:, width - width // 4 :] = BLUE
    return Image.fromarray(pixels).convert(mode)


def write_folder(root: Path, per_class: int = 4) -> Path:
    """Two classes of mixed sizes, modes and formats, one corrupt file, and files that are not
    images (a note, a macOS resource fork)."""
    for name in ("dogs", "cats"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (48 + 8 * i, 32 + 4 * i)
            banded(*size).save(root / name / f"{i}.jpg", quality=95)
        banded(40, 40, "L").save(root / name / "gray.png")
        banded(64, 48, "RGBA").save(root / name / "alpha.webp", lossless=True)
        banded(36, 60, "P").save(root / name / "palette.png")
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "dogs" / "._0.jpg").write_bytes(b"resource fork")
    return root


def decode(root: Path, files: list[str], resolution: int, channels: int, classes=None):
    paths = [str(root / f) for f in files]
    batch = {
        "bytes": np.array([Path(p).read_bytes() for p in paths], dtype=object),
        "path": np.array(paths, dtype=object),
    }
    return decode_images(batch, str(root), classes, resolution, channels).to_pydict()


def test_listing_labels_sorted_class_subfolders_and_keeps_their_names(tmp_path):
    root = write_folder(tmp_path / "photos")
    m = list_folder(str(root), resolution=32, channels=3)
    assert m.shape == (3, 32, 32) and m.shards == ()
    assert m.count == 15 == len(m.files)  # 7 images a class and the corrupt one, listed
    assert m.files[0] == "cats/0.jpg" and m.files[-1] == "dogs/palette.png"
    assert not any(f.endswith((".txt", "._0.jpg")) for f in m.files)
    assert m.class_names == {0: "cats", 1: "dogs"} and m.labels == (0, 1)
    assert m.label_counts == {0: 8, 1: 7} and m.num_classes == 2
    assert folder_classes(m) == {"cats": 0, "dogs": 1}


def test_images_at_the_top_have_no_labels(tmp_path):
    banded(20, 20).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    banded(20, 20).save(tmp_path / "sub" / "b.PNG")
    m = list_folder(str(tmp_path), resolution=16, channels=1)
    assert m.files == ("a.png", "sub/b.PNG") and m.shape == (1, 16, 16)
    assert m.labels is None and m.label_counts is None and folder_classes(m) is None


def test_a_folder_without_images_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "cats" / "x.txt").write_text("no")
    with pytest.raises(DataError, match=r"empty: no JPEG, PNG or WebP images") as e:
        list_folder(str(tmp_path / "empty"), 32, 3)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        list_folder(str(tmp_path / "missing"), 32, 3)


def test_decoding_crops_the_centre_resizes_and_converts_every_mode(tmp_path):
    root = write_folder(tmp_path / "photos")
    files = list(list_folder(str(root), 16, 3).files)
    rows = decode(root, files, 16, 3, {"cats": 0, "dogs": 1})
    good = [i for i, e in enumerate(rows["error"]) if not e]
    assert len(good) == 14
    for i in good:
        image = np.frombuffer(rows["image"][i], np.uint8).reshape(3, 16, 16)
        # The red and blue bands lie outside the centre square of every banded image: a centre
        # crop (after resizing the shorter side to 16) leaves green, whatever the size or mode
        # (gray "L" comes back as equal channels, so its green is gray).
        centre = image[:, 4:12, 4:12].reshape(3, -1).mean(axis=1)
        if files[i].endswith("gray.png"):
            assert np.ptp(centre) < 2 and centre[0] > 100, (files[i], centre)
        else:
            assert centre[1] > 200 and centre[0] < 40 and centre[2] < 40, (files[i], centre)
    assert rows["label"] == [0] * 8 + [1] * 7


def test_a_corrupt_file_is_a_row_with_its_error_not_an_exception(tmp_path):
    root = write_folder(tmp_path / "photos")
    # A JPEG cut off half way, besides the garbage one: Pillow fails only when it decodes.
    whole = io.BytesIO()
    banded(64, 64).save(whole, "JPEG")
    (root / "dogs" / "cut.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    rows = decode(root, ["cats/broken.jpg", "cats/gray.png", "dogs/cut.jpg"], 8, 1)
    assert rows["error"][0].startswith("cats/broken.jpg: unreadable image (")
    assert rows["error"][1] == "" and len(rows["image"][1]) == 1 * 8 * 8
    assert rows["error"][2].startswith("dogs/cut.jpg: unreadable image (")
    assert rows["image"][0] == rows["image"][2] == b""
    assert rows["label"] == [NO_LABEL] * 3


def folder_job(tmp_path: Path, source: Path, **sections) -> Path:
    job = {
        "data": {"source": str(source), "resolution": 32},
        "model": {"arch": "stylegan2", "width": 8, "z_dim": 16},
        "train": {"steps": 4, "batch_size": 8, "log_every": 2, "checkpoint_every": 4,
                  "sample_every": 4, "ada_target": 0.6},
        "scale": {"workers": 2},
        "run": {"name": "folder", "root": str(tmp_path / "runs")},
    }  # fmt: skip
    for section, values in sections.items():
        job[section] = {**job.get(section, {}), **values}
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_job_fields_for_image_folders_are_checked_in_one_line():
    with pytest.raises(JobError, match=r"data\.channels: 2; use 3 \(RGB\) or 1 \(gray\)"):
        parse_job(b"data: {source: photos, resolution: 32, channels: 2}", "j.yaml")
    with pytest.raises(JobError, match=r"data\.cache: stream is not served for an image folder"):
        parse_job(b"data: {source: photos, resolution: 32, cache: stream}", "j.yaml")


def test_dry_run_checks_the_model_against_the_folders_shape_and_labels(tmp_path, capsys):
    root = write_folder(tmp_path / "photos")
    assert main(["train", str(folder_job(tmp_path, root, model={"conditional": True})),
                 "--dry-run"]) == 0  # fmt: skip
    bad = folder_job(tmp_path, root, data={"resolution": 48}, model={"arch": "dcgan"})
    assert main(["train", str(bad), "--dry-run"]) == 2
    assert "model.arch: dcgan serves" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    banded(20, 20).save(flat / "a.png")
    unlabelled = folder_job(tmp_path, flat, model={"conditional": True})
    assert main(["train", str(unlabelled), "--dry-run"]) == 2
    assert "model.conditional: the data at" in capsys.readouterr().err
    evaluated = folder_job(tmp_path, root, eval={"every": 2})
    assert main(["train", str(evaluated), "--dry-run"]) == 2
    assert "eval.every: an image folder (data.resolution set) is not a reference" in (
        capsys.readouterr().err
    )


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
def test_stylegan2_trains_straight_from_a_folder_and_samples(ray_cluster, tmp_path, capsys):
    root = write_folder(tmp_path / "photos", per_class=5)  # 16 images that decode, 1 that fails
    assert main(["train", str(folder_job(tmp_path, root))]) == 0
    out = capsys.readouterr().out
    assert out.count("distgan: warning: ") == 1
    assert "cats/broken.jpg: unreadable image (" in out
    assert "skipped 1 of 17 images that could not be read" in out
    assert "16 images 3×32×32" in out
    (run,) = (tmp_path / "runs").iterdir()
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [2, 4]
    assert all("ada_p" in m for m in metrics)
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "x.npy")]) == 0
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8


def test_a_bucket_prefix_is_listed_and_decoded_like_a_folder(s3_env, tmp_path):
    s3 = s3_env
    s3.create_bucket("photos")
    root = write_folder(tmp_path / "photos", per_class=1)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.write("photos", f"set/{path.relative_to(root).as_posix()}", path.read_bytes())
    m = list_folder(s3.uri("photos", "set"), resolution=16, channels=3)
    assert m.files == list_folder(str(root), 16, 3).files
    assert m.class_names == {0: "cats", 1: "dogs"} and m.count == 9
    # What Ray Data's read_binary_files hands decode_images from a bucket: paths in the file
    # system ("photos/set/cats/0.jpg"), under the location's path.
    loc = m.location()
    paths = [loc.child(f).path for f in m.files]
    batch = {
        "bytes": np.array([loc.fs.open_input_file(p).read() for p in paths], dtype=object),
        "path": np.array(paths, dtype=object),
    }
    rows = decode_images(batch, loc.path, folder_classes(m), 16, 3).to_pydict()
    assert rows["label"] == [0] * 5 + [1] * 4
    assert [bool(e) for e in rows["error"]] == [f == "cats/broken.jpg" for f in m.files]
