"""Issue 26, 2 and 4: ``distgan eval`` keeps every evaluation in eval.json (the report shows the
latest figure of each metric), and a feature network that barely beats chance is flagged when it
is fitted and beside every figure measured in its features. A tiny run (tiny_runs.py) on random
28×28 images with random labels of 3 classes, which no network can learn: held-out accuracy
near 1/3. No Ray.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from tiny_runs import train_run

from distgan.cli import main
from distgan.data import write_shards
from distgan.report.run import run_sections
from distgan.storage import open_location

CLASSES = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run (its eval.json from tiny_runs: fid, kid, precision, recall at step 40) on
    ``data``, and ``data-test``: random images whose random labels nothing can learn."""
    root = tmp_path_factory.mktemp("evals")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (600, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, 600)
    write_shards(images, labels, root / "data", source="noise")
    test_labels = rng.integers(0, CLASSES, 600)
    test_images = rng.integers(0, 256, (600, 1, 28, 28), dtype=np.uint8)
    write_shards(test_images, test_labels, root / "data-test", source="noise test")
    return train_run(root, images=torch.from_numpy(images[:256]))


def test_a_network_near_chance_is_flagged_at_fitting_and_beside_its_figures(
    run, capsys, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(run.parent / "cache"))
    data, test = run.parent / "data", run.parent / "data-test"
    argv = ["eval", "fit-features", str(data), "--test", str(test), "--epochs", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy (\d\.\d+) on noise test", out).group(1))
    assert accuracy < 0.5  # 1.5 × chance for 3 classes
    (warning,) = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: test accuracy {accuracy:.4f} is near chance (0.3333 ")
    assert "more --epochs (this: 2)" in warning

    argv = ["eval", str(run), "--metrics", "fid", "--n", "40", "--n-real", "40"]
    assert main([*argv, "--features", str(data / "features.pt")]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("features ")]
    assert f"test accuracy {accuracy:.4f} over 3 classes, near chance (0.3333)" in line
    record = json.loads((run / "eval.json").read_text())
    (fid,) = record["results"]
    recorded = fid["protocol"]["features_accuracy"]
    assert recorded["num_classes"] == 3 and round(recorded["accuracy"], 4) == accuracy

    # The shipped network is far from chance: its figures carry its accuracy, no flag.
    assert main([*argv, "--features", "fashion-mnist", "--out", str(run / "other.json")]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "features " in line]
    assert "test accuracy 0.9196 over 10 classes)" in line and "near chance" not in line


def test_every_evaluation_is_kept_and_the_report_shows_the_latest_of_each_metric(
    run, capsys, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(run.parent / "cache"))
    first = json.loads((run / "eval.json").read_text())["evals"]  # tiny_runs', maybe one more
    base = ["eval", str(run), "--n", "40", "--n-real", "40", "--features", "fashion-mnist"]
    assert main([*base, "--metrics", "kid"]) == 0
    assert main([*base, "--metrics", "precision", "--seed", "1"]) == 0
    capsys.readouterr()

    record = json.loads((run / "eval.json").read_text())
    evals = record["evals"]
    assert evals[: len(first)] == first  # nothing earlier is lost
    assert [[r["metric"] for r in e["results"]] for e in evals[len(first) :]] == [
        ["kid", "kid_std"],
        ["precision"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", e["time"]) for e in evals)
    # The top of the file is the latest evaluation, as readers of eval.json expect.
    assert record["step"] == 40 and record["results"] == evals[-1]["results"]
    assert evals[-1]["results"][0]["protocol"]["seed"] == 1

    from distgan.config import load_job

    spec = load_job(run / "job.resolved.yaml")
    (section,) = [s for s in run_sections(open_location(run, "RUN"), spec) if s.key == "eval"]
    rows = re.findall(r"<tr><td>(\w+)</td><td class=\"num\">([^<]+)</td>", section.body)
    shown = dict(rows)
    assert set(shown) == {"fid", "kid", "kid_std", "precision", "recall"}  # all ever evaluated
    # Each metric's latest figure: kid and precision from the last two evaluations, recall
    # from tiny_runs' (never evaluated again).
    assert float(shown["kid"]) == pytest.approx(evals[-2]["results"][0]["value"], rel=1e-3)
    assert float(shown["precision"]) == pytest.approx(evals[-1]["results"][0]["value"], rel=1e-3)
    assert float(shown["recall"]) == pytest.approx(0.42)
    assert f"over {len(evals)} evaluation(s)" in section.body
