"""Issue 23: a second, independent judge. The shipped ``fashion-mnist-b`` is another network than
``fashion-mnist`` (architecture, seed, training rows), loads weights-only, scores what its card
says, and ``distgan eval`` of a conditional run on Fashion-MNIST-shaped data writes FID and the
asked-class share by both, each beside its own protocol; the report shows both. No Ray.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import train_run

from distgan.cli import main
from distgan.config import load_job
from distgan.data import read_idx, read_manifest, write_shards
from distgan.generators import load_generator
from distgan.metrics import stats
from distgan.metrics.evaluate import fake_images, real_subset
from distgan.metrics.features import FORMAT, SHIPPED, FeatureNet, load_feature_extractor
from distgan.metrics.fitting import fit_features
from distgan.metrics.judges import SECOND
from distgan.metrics.strided_net import StridedNet
from distgan.report.run import run_sections
from distgan.storage import open_location

FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion-mnist"
CHECKED = 500  # test images the card's accuracy is checked on
N = 60  # real images and samples of the tiny evaluation


def card(name: str) -> dict:
    return json.loads(SHIPPED[name].with_suffix(".json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_second_judge_is_another_network_shipped_weights_only():
    state = torch.load(SHIPPED[SECOND], map_location="cpu", weights_only=True)
    assert state["format"] == FORMAT and state["arch"] == "strided-cnn"
    assert SHIPPED[SECOND].stat().st_size < 2 * 2**20
    first, second = load_feature_extractor("fashion-mnist"), load_feature_extractor(SECOND)
    assert isinstance(first.module, FeatureNet) and isinstance(second.module, StridedNet)
    layers = [{type(m) for m in e.module.modules()} for e in (first, second)]
    assert torch.nn.BatchNorm2d in layers[0] and torch.nn.BatchNorm2d not in layers[1]
    assert (first.dim, second.dim) == (128, 64)
    assert (second.in_shape, second.num_classes) == ((1, 28, 28), 10)

    a, b = card("fashion-mnist"), card(SECOND)
    assert b["sha256"] == sha256(SHIPPED[SECOND]) == second.sha256
    assert (b["arch"], b["seed"], b["train_count"]) == ("strided-cnn", 1, 30000)
    assert a["seed"] != b["seed"] and "first 30000" in b["trained_on"]
    assert b["parameters"] == sum(p.numel() for p in second.module.parameters())
    assert b["command"] == (  # as `make judge-b` runs it
        "distgan eval fit-features data/fashion-mnist-30k --test data/fashion-mnist-test "
        f"--arch strided-cnn --seed 1 --epochs {b['epochs']} "
        f"--out distgan/metrics/weights/{SECOND}.pt"
    )


def test_the_cards_accuracy_is_what_the_network_scores_on_test_images():
    images = FASHION / "t10k-images-idx3-ubyte.gz"
    if not images.is_file():
        pytest.skip(f"Fashion-MNIST test files not found in {FASHION}")
    x, y = read_idx(images, FASHION / "t10k-labels-idx1-ubyte.gz", limit=CHECKED)
    _, probs = load_feature_extractor(SECOND).extract(torch.from_numpy(x).float() / 127.5 - 1)
    accuracy = float((probs.argmax(1).numpy() == y).mean())
    # The card's figure is over all 10,000; 500 of them vary by about 1.3 points (binomial σ).
    assert accuracy == pytest.approx(card(SECOND)["accuracy"], abs=0.04)
    assert card(SECOND)["test"].startswith("idx t10k-images-idx3-ubyte.gz")


def test_fit_features_trains_the_second_architecture_and_says_how(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 1, 28, 28), dtype=np.uint8)
    write_shards(images, np.arange(200) % 10, tmp_path / "data", source="noise")
    info = fit_features(tmp_path / "data", epochs=1, seed=3, arch="strided-cnn", log=[].append)
    assert isinstance(load_feature_extractor(tmp_path / "data" / "features.pt").module, StridedNet)
    assert (info["arch"], info["dim"], info["train_count"]) == ("strided-cnn", 64, 180)
    assert info["command"].endswith(
        f"--arch strided-cnn --seed 3 --epochs 1 --out {tmp_path / 'data' / 'features.pt'}"
    )


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A tiny conditional run on random 1×28×28 images of 10 classes: Fashion-MNIST-shaped."""
    root = tmp_path_factory.mktemp("judges")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(256) % 10
    write_shards(images, labels, root / "data", source="noise of 10 classes")
    return train_run(
        root,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        model={"conditional": True},
    )


def test_eval_writes_both_judges_figures_with_their_protocols(conditional_run, capsys, monkeypatch):
    run = conditional_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(run.parent / "cache"))
    assert main(["eval", str(run), "--metrics", "fid,kid", "--n", str(N), "--n-real", str(N)]) == 0
    out = capsys.readouterr().out
    results = {r["metric"]: r for r in json.loads((run / "eval.json").read_text())["results"]}
    b = f"@{SECOND}"
    assert list(results) == ["fid", "kid", "kid_std", "asked_class", f"fid{b}", f"asked_class{b}"]

    for metric, name in (("fid", "fashion-mnist"), (f"fid{b}", SECOND)):
        p = results[metric]["protocol"]
        assert (p["features"], p["features_sha256"]) == (name, sha256(SHIPPED[name]))
        assert p["features_accuracy"] == {"accuracy": card(name)["accuracy"], "num_classes": 10}
        assert (p["real_count"], p["fake_count"], p["seed"]) == (N, N, 0)
    assert "asked_class" in results[f"asked_class{b}"]["protocol"]  # what the share counts
    assert f"second judge {SECOND} ({card(SECOND)['sha256'][:12]}, test accuracy" in out

    # The second judge's figures are its network's, on the same samples and real images.
    G, spec, _, _ = load_generator(str(run))
    images, given = fake_images(G, spec.model.z_dim, N, seed=0)
    second = load_feature_extractor(SECOND)
    fake, probs = second.extract(images)
    real, _ = second.extract(real_subset(read_manifest(run.parent / "data"), N, seed=0))
    fid = stats.frechet_distance(*stats.mean_cov(real.numpy()), *stats.mean_cov(fake.numpy()))
    assert results[f"fid{b}"]["value"] == pytest.approx(fid, rel=1e-4)
    assert results[f"fid{b}"]["value"] != pytest.approx(results["fid"]["value"], rel=1e-2)
    share = float((probs.argmax(1).numpy() == given).mean())
    assert results[f"asked_class{b}"]["value"] == pytest.approx(share)

    (section,) = [
        s
        for s in run_sections(open_location(run, "RUN"), load_job(run / "job.resolved.yaml"))
        if s.key == "eval"
    ]
    shown = dict(re.findall(r"<tr><td>([\w@-]+)</td><td class=\"num\">([^<]+)</td>", section.body))
    assert {"fid", f"fid{b}", "asked_class", f"asked_class{b}"} <= set(shown)
    assert f"metric@{SECOND} is the same figure by a second feature network" in section.body
