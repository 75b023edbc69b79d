"""Progress a person reads: bars on a terminal, plain lines in logs, the training ETA."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from distgan import progress
from distgan.data import import_source
from distgan.progress import Progress, duration, track
from distgan.train.follow import eta_seconds, progress_line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def every_update(monkeypatch):
    """Plain lines at every update instead of every 10 s."""
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)


def test_durations_read_as_clock_times():
    assert [duration(s) for s in (0, 59.6, 65, 3600, 3725)] == [
        "0:00",
        "1:00",
        "1:05",
        "1:00:00",
        "1:02:05",
    ]


def test_a_terminal_gets_a_tqdm_bar():
    out = _Terminal()
    with Progress("decoding", total=10, unit="images", stream=out) as bar:
        for _ in range(10):
            bar.update(1)
    text = out.getvalue()
    assert "\r" in text and "decoding" in text and "100%" in text and "10/10" in text


def test_a_log_gets_plain_lines_and_a_last_one(every_update):
    out = io.StringIO()
    with Progress("features", total=4, unit="images", stream=out) as bar:
        for _ in range(4):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("features: 1/4 images (25%), 0:00, about 0:00 left")
    assert lines[-1] == "features: 4/4 images in 0:00"
    assert len(lines) == 5


def test_a_short_step_in_a_log_prints_nothing():
    out = io.StringIO()
    with Progress("features", total=3, stream=out) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_an_error_ends_without_the_last_line_and_no_desc_is_silent(every_update):
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("import", total=3, stream=out) as bar:
        bar.update(1)
        raise RuntimeError("broken file")
    assert out.getvalue().splitlines() == ["import: 1/3 it (33%), 0:00, about 0:00 left"]
    quiet = io.StringIO()
    with Progress(None, total=3, stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_track_counts_items(every_update, capsys):
    assert list(track(["a", "b"], "files")) == ["a", "b"]
    assert capsys.readouterr().err.splitlines()[-1] == "files: 2/2 it in 0:00"


def test_image_folder_import_and_feature_extraction_report_progress(every_update, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.fromarray(np.full((12, 12), i * 40, np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    import_source(tmp_path / "photos", tmp_path / "out", resolution=8)
    err = capsys.readouterr().err
    assert f"decoding {tmp_path / 'photos'}: 3/3 images in" in err

    from distgan.metrics.features import FeatureExtractor, FeatureNet

    net = FeatureNet(1, 10)
    extractor = FeatureExtractor(
        net, name="t", path=tmp_path, sha256="0", in_shape=None, dim=128, num_classes=10
    )
    extractor.extract(torch.zeros(6, 1, 28, 28), batch_size=4, desc="generated images")
    assert "generated images: 6/6 images in" in capsys.readouterr().err
    extractor.extract(torch.zeros(6, 1, 28, 28), batch_size=4)  # in workers: nothing
    assert capsys.readouterr().err == ""


# --- the training progress line ------------------------------------------------------------


def record(step: int, elapsed: float, **extra) -> dict:
    return {"step": step, "elapsed_s": elapsed, "images_seen": 64 * step, **extra}


def test_eta_from_the_mean_speed_since_the_first_record():
    first = record(100, 20.0, images_per_s=640.0)  # 10 steps/s in its own interval
    later = record(300, 120.0, images_per_s=6400.0)  # 2 steps/s since `first`
    assert eta_seconds(first, 1000) == (90.0, False)  # 900 steps at 10/s
    assert eta_seconds(later, 1000, anchor=first) == (350.0, False)  # 700 steps at 2/s
    line = progress_line(later, 1000, anchor=first)
    assert line.endswith("2:00  ETA 5:50"), line


def test_the_time_limit_ends_the_run_first():
    first, later = record(100, 20.0), record(300, 120.0)
    eta, limited = eta_seconds(later, 1000, max_minutes=4, anchor=first)
    assert (eta, limited) == (120.0, True)  # 240 s allowed, 120 s gone
    assert progress_line(later, 1000, 4, first).endswith("ETA 2:00 (max_minutes)")


def test_no_eta_without_a_speed_or_at_the_end_and_gpu_memory_is_shown():
    assert eta_seconds({"step": 5, "elapsed_s": 1.0}, 10) is None
    assert "ETA" not in progress_line(record(10, 5.0, images_per_s=100.0), 10)
    line = progress_line(record(5, 5.0, images_per_s=100.0, gpu_mem_gb=3.21), 10)
    assert "GPU 3.2 GB" in line and "ETA 0:03" in line
