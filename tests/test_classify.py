"""Evaluation by classification (issue 13): CAS / GAN-train and GAN-test against the real-trained
baseline, on a toy dataset whose classes a small CNN learns in a few epochs, with stand-in
generators that return real images of the asked class or of any class; their refusals; and
``distgan eval --metrics ...`` writing each figure's protocol into eval.json. No Ray.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import train_run

from distgan.cli import main
from distgan.config import from_dict
from distgan.data import write_shards
from distgan.errors import CheckpointError, DataError
from distgan.metrics.classify import classification_scores, plan_classification, real_test_dir
from distgan.models import ModelOptions, build_models

SHAPE = (1, 28, 28)
CLASSES = 4
TOY_SIDE = 8  # small images: enough training steps for a CPU test


def toy_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """8×8 images whose class is a texture a small CNN learns in a few dozen steps: horizontal
    stripes, vertical stripes, a checkerboard, or none, over noise; (N, 1, 8, 8) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:TOY_SIDE, :TOY_SIDE]
    textures = np.stack([y % 2, x % 2, (x + y) % 2, 0 * x])  # (4, 8, 8)
    noise = rng.integers(0, 80, (len(labels), 1, TOY_SIDE, TOY_SIDE))
    return (noise + 170 * textures[labels][:, None]).astype(np.uint8)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Labelled toy shards at ``data`` and their test split at ``data-test``; a pool of other
    real images for the stand-in generators; a conditional G (for its classes) and its job."""
    root = tmp_path_factory.mktemp("classify")
    train_labels, test_labels = np.arange(1000) % CLASSES, np.arange(400) % CLASSES
    write_shards(toy_images(train_labels, 0), train_labels, root / "data", source="toy")
    write_shards(toy_images(test_labels, 1), test_labels, root / "data-test", source="toy test")
    pool_labels = np.arange(2000) % CLASSES
    pool = torch.from_numpy(toy_images(pool_labels, 2))
    job = {"data": {"source": str(root / "data")},
           "model": {"arch": "dcgan", "width": 4, "z_dim": 8, "conditional": True}}  # fmt: skip
    torch.manual_seed(0)
    G, _ = build_models("dcgan", 8, 4, SHAPE, ModelOptions(num_classes=CLASSES))
    return root, from_dict(job), G, pool, torch.from_numpy(pool_labels)


def _faithful(pool, pool_labels):
    """A 'generator' that returns real images of the class asked for."""

    def sample(n, labels, seed):
        g = torch.Generator().manual_seed(seed)
        picks = [torch.nonzero(pool_labels == k)[:, 0] for k in range(CLASSES)]
        return torch.stack([pool[picks[k][torch.randint(len(picks[k]), (1,), generator=g)][0]]
                            for k in labels.tolist()])  # fmt: skip

    return sample


def _ignoring(pool, pool_labels):
    """A 'generator' that ignores the class: real images of whatever class comes."""
    return lambda n, labels, seed: pool[
        torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    ]


def test_a_generator_of_real_images_of_the_asked_class_scores_like_real_data(toy):
    root, spec, G, pool, pool_labels = toy
    plan = plan_classification(G, spec, "run", None, count=1000, epochs=3, seed=0)
    assert plan.test.source == "toy test"  # found at <data.source>-test
    names = ["cas", "gan_train", "gan_test"]
    figures, protocol = classification_scores(
        plan, names, lambda s: None, _faithful(pool, pool_labels)
    )
    assert figures["cas_real"] > 0.9  # the toy classes are learnt
    assert abs(figures["cas"] - figures["cas_real"]) < 0.1
    assert (
        figures["gan_train"] == figures["cas"] and figures["gan_train_real"] == figures["cas_real"]
    )
    assert figures["gan_test"] > 0.9 and figures["gan_test_real"] == figures["cas_real"]
    assert protocol["epochs"] == 3 and protocol["train_count"] == 1000
    assert protocol["generated_train_count"] == 1000 and protocol["real_test_count"] == 400
    assert protocol["real_test"] == "toy test" and protocol["num_classes"] == CLASSES
    assert "FeatureNet" in protocol["classifier"] and protocol["seed"] == 0


def test_a_generator_that_ignores_the_class_scores_chance(toy):
    root, spec, G, pool, pool_labels = toy
    plan = plan_classification(G, spec, "run", None, count=1000, epochs=3, seed=0)
    figures, _ = classification_scores(
        plan, ["cas", "gan_test"], lambda s: None, _ignoring(pool, pool_labels)
    )
    assert figures["cas_real"] > 0.9
    assert figures["cas"] < 0.45 and figures["gan_test"] < 0.45  # chance is 0.25


def test_classification_is_refused_for_an_unconditional_g_or_without_a_test_split(toy, tmp_path):
    root, spec, _, _, _ = toy
    G, _ = build_models("dcgan", 8, 4, SHAPE)
    with pytest.raises(CheckpointError, match="not class-conditional"):
        plan_classification(G, spec, "run", None, 100, 1, 0)
    lonely = from_dict({"data": {"source": str(tmp_path / "data")}})
    with pytest.raises(DataError, match="pass --real-test DATASET.*make fashion-mnist"):
        real_test_dir(lonely, None)
    assert real_test_dir(lonely, "given") == "given"
    other = from_dict({"data": {"source": str(tmp_path)}, "eval": {"real": "held-out"}})
    assert real_test_dir(other, None) == "held-out"  # eval.real, when it is not the train data


def test_eval_writes_each_figure_with_its_own_protocol(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    labels = np.arange(64) % CLASSES
    images = np.random.default_rng(0).integers(0, 256, (64, *SHAPE), dtype=np.uint8)
    write_shards(images, labels, tmp_path / "data", source="random")
    write_shards(images[:32], labels[:32], tmp_path / "data-test", source="random test")
    run = train_run(
        tmp_path, images=torch.from_numpy(images), labels=torch.from_numpy(labels),
        train={"steps": 10}, model={"conditional": True},
    )  # fmt: skip
    argv = ["eval", str(run), "--metrics", "fid,cas,gan_test", "--n", "20", "--n-real", "20",
            "--classify-n", "60", "--classify-epochs", "1",
            "--out", f"{tmp_path}/e.json"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((tmp_path / "e.json").read_text())
    results = {r["metric"]: r for r in record["results"]}
    assert list(results) == ["fid", "cas", "cas_real", "gan_test", "gan_test_real"]
    assert results["fid"]["protocol"]["features"] == "fashion-mnist"
    classify = results["cas"]["protocol"]
    assert classify["epochs"] == 1 and classify["train_count"] == 60
    assert (
        classify["real_test"] == "random test" and results["gan_test_real"]["protocol"] == classify
    )
    assert 0 <= results["cas"]["value"] <= 1
    out = capsys.readouterr().out
    assert "cas_real" in out and "classifiers: 1 epochs on 60 images each" in out


def test_a_real_test_split_of_other_classes_is_refused(toy, tmp_path):
    """Issue 26: a 2-class test split was taken for a run of more classes (its labels lie
    within G's, so the label range alone let it through); so are other names for the classes."""
    root, spec, G, _, _ = toy  # the run's data and G: 4 classes
    fewer = np.arange(60) % (CLASSES - 1)
    write_shards(toy_images(fewer, 3), fewer, tmp_path / "fewer", source="fewer")
    with pytest.raises(DataError) as info:
        plan_classification(G, spec, "run", str(tmp_path / "fewer"), 100, 1, 0)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"--real-test {tmp_path / 'fewer'}: 3 classes (0, 1, 2), the run's ")
    assert "data 4 classes (0, 1, 2, 3); pass the test split of the run's dataset" in line

    labels = np.arange(80) % CLASSES
    names = dict(enumerate(["stripes", "columns", "checks", "plain"]))
    write_shards(toy_images(labels, 4), labels, tmp_path / "named", source="t", class_names=names)
    renamed = {**names, 2: "dots"}
    write_shards(
        toy_images(labels, 5), labels, tmp_path / "renamed", source="t", class_names=renamed
    )
    named = from_dict({"data": {"source": str(tmp_path / "named")}, "model": {"conditional": True}})
    with pytest.raises(DataError, match="class 2 is 'dots' there, 'checks' in the run's data"):
        plan_classification(G, named, "run", str(tmp_path / "renamed"), 100, 1, 0)
    assert plan_classification(G, named, "run", str(tmp_path / "named"), 100, 1, 0).num_classes == 4
