"""report.html of a run and of a search, opened in a real headless Chromium.

The run folder comes from the real loop and writers (tests/tiny_runs.py); the search folder from
RunOutputs (each trial's metrics.jsonl and samples), the exploit lines PBT trials write, and
tune/results.py's write_results (results.csv, best.yaml, best_samples/). The browser checks:
the page loads with nothing in the console (its CSP refuses any fetch, and says so there),
every image decodes, and a screenshot is saved.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import train_run

from distgan.cli import main
from distgan.config import from_dict
from distgan.data import write_shards
from distgan.report import REPORT, build_report, write_report
from distgan.report.page import Section, page
from distgan.storage import Location, open_location
from distgan.train.outputs import RunOutputs, write_resolved, write_status
from distgan.tune.exploits import exploit_record, record_exploit
from distgan.tune.results import TrialRow, write_results
from distgan.tune.space import trial_spec
from distgan.tune.trials import TRIALS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs"), arch="mlp")


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    """A PBT search of three trials: trial 2 takes trial 0's state at step 20."""
    root = tmp_path_factory.mktemp("search")
    job = {
        "model": {"arch": "mlp", "width": 8, "z_dim": 8},
        "train": {"steps": 40, "batch_size": 16},
        "eval": {"every": 10},
        "tune": {"space": {"optim.lr_g": "loguniform(1e-4, 1e-3)"}, "scheduler": "pbt",
                 "num_samples": 3, "metric": "fid"},
        "run": {"name": "tiny-tune", "root": str(root)},
    }  # fmt: skip
    spec = from_dict(job)
    search = root / "00001-tiny-tune"
    search.mkdir()
    write_resolved(spec, search)
    rows, rng = [], np.random.default_rng(0)
    curves = {
        "t_00000": [90, 60, 45, 40],
        "t_00001": [120, 100, 95, 90],
        "t_00002": [150, 140, 52, 44],
    }
    for i, (tid, fids) in enumerate(curves.items()):
        lr = [2e-4, 5e-4, 8e-4][i]
        trial = search / TRIALS / tid
        trial.mkdir(parents=True)
        write_resolved(trial_spec(spec, {"optim.lr_g": lr}, "test"), trial)
        outputs = RunOutputs(trial)
        for step, fid in zip((10, 20, 30, 40), fids):
            outputs.write_metrics({"step": step, "d_loss": 1.2, "g_loss": 0.8, "fid": fid})
            outputs.write_samples(step, rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8))
        rows.append(TrialRow(tid, "done", {"optim.lr_g": lr}, min(fids), 40, 40))
    donor = trial_spec(spec, {"optim.lr_g": 2e-4}, "test")
    clone = trial_spec(spec, {"optim.lr_g": 2.4e-4}, "test")
    exploit = exploit_record("t_00002", "t_00000", 20, donor, clone)  # as a PBT trial writes it
    record_exploit(str(search), exploit)
    rows.sort(key=lambda r: r.best)
    write_results(rows, spec, open_location(str(search), field="search"))
    return search


def open_page(driver, path: Path, screenshot: Path) -> tuple[list[dict], list[list]]:
    """Loads ``path``; returns (console entries, [alt, complete, naturalWidth] per <img>)."""
    driver.get_log("browser")  # drop what an earlier page left
    driver.get(path.as_uri())
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(height + 40, 8000))
    driver.save_screenshot(str(screenshot))
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    return driver.get_log("browser"), images


def test_a_run_report_loads_cleanly_and_every_image_decodes(run_dir, browser, tmp_path):
    write_report(open_location(run_dir, field="RUN"))
    html = (run_dir / REPORT).read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    console, images = open_page(browser, run_dir / REPORT, tmp_path / "run.png")
    assert console == []
    alts = [alt for alt, _, _ in images]
    for chart in ("Losses", "D(x) and D(G(z))", "Gradient norms", "Speed", "fid", "kid",
                  "precision", "divergence guard"):  # fmt: skip
        assert chart in alts, alts
    grids = [alt for alt in alts if alt.startswith("step ")]
    assert grids == [f"step {s}" for s in range(40, 0, -5)]  # every grid, newest first
    assert all(complete and width > 0 for _, complete, width in images), images
    assert (tmp_path / "run.png").stat().st_size > 10_000

    text = browser.find_element("tag name", "body").text
    assert "40 of 40" in text  # steps
    assert "fid 47.43 at step 40 (best/)" in text  # 300/√40 from the stand-in evaluator
    assert "1 rollback(s)" in text and "×0.5" in text  # NaN at steps 13-15: one rollback
    assert "41.5" in text and "fashion-mnist (abababababab)" in text  # eval.json and protocol
    assert "inject_nan: 13-15" in text  # the resolved job


def grid_images(html: str) -> list[tuple[str, int, tuple[int, int]]]:
    """(alt, width shown, the PNG's own (width, height)) of each sample grid of a report."""
    tag = r'<img src="data:image/png;base64,([^"]+)" alt="(step [^"]+)" width="(\d+)"'
    found = re.findall(tag, html)
    return [
        (alt, int(width), Image.open(io.BytesIO(base64.b64decode(data))).size)
        for data, alt, width in found
    ]


def test_sample_grids_are_shown_large_with_square_pixels(run_dir):
    html = build_report(open_location(run_dir, field="RUN"))
    grids = grid_images(html)
    assert [alt for alt, _, _ in grids] == [f"step {s}" for s in range(40, 0, -5)]
    for _, shown, (width, _) in grids:  # 8×8 images of 28 px: 242 px, shown 3× (726)
        assert shown >= 512 and shown % width == 0 and shown - width < 512, (shown, width)
    assert 'class="rows"' not in html  # an unconditional G: no row is a class


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> Path:
    """A conditional run on three classes whose data names them (one name not ASCII)."""
    root = tmp_path_factory.mktemp("conditional")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(96) % 3
    names = {0: "étoile ★", 1: "Trouser", 2: "Bag"}
    write_shards(images, labels, root / "data", source="test", class_names=names)
    return train_run(
        root, images=torch.from_numpy(images), labels=torch.from_numpy(labels),
        model={"conditional": True}, train={"steps": 10, "sample_every": 10},
    )  # fmt: skip


def test_a_conditional_runs_grids_name_each_row_by_its_class(conditional_run, browser, tmp_path):
    write_report(open_location(conditional_run, field="RUN"))
    console, _ = open_page(browser, conditional_run / REPORT, tmp_path / "conditional.png")
    assert console == []
    figure = browser.find_element("css selector", "#samples figure")
    image = figure.find_element("tag name", "img")
    assert image.size["width"] == 3 * 242 + 2  # 8 columns of 28 px and their gaps, 3×; a border
    names = figure.find_elements("css selector", ".rows div")
    assert [n.text for n in names] == ["étoile ★", "Trouser", "Bag"]  # class 0 first
    top = image.location["y"] + 1  # inside its 1 px border
    for row, name in enumerate(names):  # each name level with the middle of its row
        middle = top + 3 * (2 + row * 30 + 14)  # the grid's 2 px gaps and 28 px images, 3×
        text = name.location["y"] + 3 * 14  # a line as high as the row's images, at its top
        assert abs(text - middle) <= 1, (row, text, middle)


def test_a_search_report_compares_the_trials(search_dir, browser, tmp_path):
    assert main(["report", str(search_dir)]) == 0
    console, images = open_page(browser, search_dir / REPORT, tmp_path / "search.png")
    assert console == []
    assert [alt for alt, _, _ in images][:1] == ["fid per trial"]
    assert all(complete and width > 0 for _, complete, width in images), images
    text = browser.find_element("tag name", "body").text
    assert "results.csv, best first." in text
    rows = [r.text for r in browser.find_elements("css selector", "#results tr")]
    assert rows[1].startswith("t_00000 done 0.0002 40") and rows[3].startswith("t_00001")
    exploits = browser.find_element("id", "exploits").text
    assert "20 t_00002 t_00000" in exploits  # step, the clone, its donor
    assert "optim.lr_g: 0.0002 → 0.00024" in exploits  # what changed
    assert "step 40 of the best trial" in text  # best_samples/, copied by write_results


def test_a_search_still_running_is_ranked_from_the_trials_own_metrics(search_dir, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(search_dir, running)
    for name in ("results.csv", "best.yaml", REPORT):
        (running / name).unlink(missing_ok=True)
    shutil.rmtree(running / "best_samples")
    html = build_report(open_location(running, field="RUN"))
    assert "No results.csv yet" in html
    order = [html.index(f"<td>{t}</td>") for t in ("t_00000", "t_00002", "t_00001")]
    assert order == sorted(order)  # best FID first: 40, 44, 90


def test_distgan_runs_shows_a_search_by_its_status_trials_and_best(search_dir, tmp_path, capsys):
    """Issue 26: a finished search was listed as a run that never started (`new 0 -`)."""
    home = tmp_path / "runs"
    shutil.copytree(search_dir, home / search_dir.name)
    # A search stopped before it ended: no results.csv, one trial fewer, status.json says so.
    stopped = home / "00002-tiny-tune"
    shutil.copytree(search_dir, stopped, ignore=shutil.ignore_patterns("results.csv", "t_00000"))
    write_status(open_location(stopped, field="search"), "stopped")
    assert main(["runs", str(home)]) == 0
    done, halted = capsys.readouterr().out.splitlines()[1:]
    assert re.match(r"00001-tiny-tune\s+done\s+3 trials\s+fid 40 @ 40 \(trial t_00000\)", done)
    assert re.match(r"00002-tiny-tune\s+stopped\s+2 trials\s+fid 44 @ 40 \(trial t_00002\)", halted)


def test_the_console_check_sees_a_fetch(browser, tmp_path):
    """The CSP turns any network fetch into a console error: the check above can fail."""
    bad = tmp_path / "bad.html"
    bad.write_text(page("t", "t", [Section("x", "x", '<img src="http://127.0.0.1:9/x.png">')]))
    console, _ = open_page(browser, bad, tmp_path / "bad.png")
    assert any("Content Security Policy" in e["message"] for e in console), console


def test_a_report_is_written_through_object_storage(run_dir):
    import pyarrow.fs as pafs

    fs = pafs._MockFileSystem()  # in memory, not local: like s3://
    remote = Location("mock://bucket/runs/00000-tiny", fs, "bucket/runs/00000-tiny")
    local = open_location(run_dir, field="RUN")
    for rel in ("job.resolved.yaml", "metrics.jsonl", "best/best.json", "eval.json",
                *(f"samples/{n}" for n in local.list("samples"))):  # fmt: skip
        remote.write_bytes(rel, local.read_bytes(rel))
    write_report(remote)
    html = remote.read_text(REPORT)
    assert "fid 47.43 at step 40 (best/)" in html and html.count('alt="step ') == 8


def test_training_rewrites_the_report_at_a_checkpoint_at_most_once_a_minute(run_dir, tmp_path):
    """distgan train's progress callback: the first checkpoint writes report.html, the next
    only a minute after it; log steps between checkpoints never do (README, "Seeing a run")."""
    from distgan.cli.train import CheckpointReports

    run = shutil.copytree(run_dir, tmp_path / "run")
    now = [0.0]
    reports = CheckpointReports(open_location(run, field="RUN"), every=20, clock=lambda: now[0])
    written = []
    for t, step in [(0, 20), (10, 30), (30, 40), (61, 50), (62, 60), (70, 80), (125, 100)]:
        now[0] = t
        (run / REPORT).unlink(missing_ok=True)
        reports({"step": step})
        if (run / REPORT).exists():
            written.append(step)
    assert written == [20, 60, 100]
    assert "fid 47.43 at step 40 (best/)" in (run / REPORT).read_text()


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "no job.resolved.yaml in it"),
    ],
)
def test_not_a_run_is_one_line_and_exit_2(tmp_path, capsys, setup, expected):
    target = tmp_path / "nothing"
    setup(target)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a distgan run or search folder" in err[0] and expected in err[0]
