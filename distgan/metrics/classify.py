"""Evaluation by classification: how well a conditional G's samples teach and pass a classifier.

    plan = plan_classification(G, spec, folder, real_test=None, count=3000, epochs=3, seed=0)
    figures, protocol = classification_scores(plan, ["cas", "gan_test"])
    # {"cas": 0.71, "cas_real": 0.86, "gan_test": 0.64, "gan_test_real": 0.86}

- CAS, the Classification Accuracy Score (Ravuri & Vinyals 2019), which is GAN-train (Shmelkov
  et al. 2018): a classifier trained on G's labelled samples (the labels are G's class inputs),
  tested on the real test split.
- GAN-test (Shmelkov et al. 2018): a classifier trained on real images, tested on G's samples.

Each is reported beside ``<name>_real``: the same classifier trained on as many real training
images, tested on the real test split, the ceiling a perfect G would reach. The classifier is
the feature network's (``features.FeatureNet``, trained by ``fitting.train_classifier``): small
enough for a few epochs on a CPU. These metrics need G itself, not features of its samples, so
``distgan eval`` computes them here rather than through the metric registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distgan.data import (
    ShardManifest,
    class_name,
    data_location,
    load_arrays,
    read_manifest,
)
from distgan.errors import CheckpointError, DataError
from distgan.images import to_uint8
from distgan.metrics.evaluate import dataset_hash
from distgan.metrics.features import FeatureNet
from distgan.metrics.fitting import classifier_accuracy, train_classifier
from distgan.models import generate
from distgan.specs import JobSpec
from distgan.storage import display, is_uri, open_location

CLASSIFICATION_METRICS = ("cas", "gan_train", "gan_test")
IMPORT_HINT = (
    "pass --real-test DATASET, a labelled test split (for Fashion-MNIST `make fashion-mnist` "
    "imports it to data/fashion-mnist-test)"
)
_BATCH = 128
CLASSIFIER = (
    "FeatureNet (3 conv blocks 32-64-128, global pool, 128-d layer, linear head); AdamW, "
    f"one-cycle lr 3e-3, batch {_BATCH}, random shifts of ±2 px"
)


@dataclass
class ClassificationPlan:
    """Everything checked before any training: G, its classes, the real splits, the protocol."""

    G: torch.nn.Module
    z_dim: int
    num_classes: int
    train: ShardManifest  # real training images (the run's data)
    test: ShardManifest  # the real test split
    count: int  # training images per classifier, real and generated alike
    epochs: int
    seed: int


def real_test_dir(spec: JobSpec, given: str | None, field: str = "--real-test") -> str:
    """The real test split: ``given``, else the job's ``eval.real`` when it is not the training
    data, else ``<data.source>-test`` when that exists (``data/fashion-mnist-test`` for the
    embedded data, a slice of Fashion-MNIST's training split). DataError saying how to get one
    otherwise."""
    if given:
        return given
    source = spec.data.source
    if spec.eval.real and spec.eval.real != source:
        return spec.eval.real
    guess = "data/fashion-mnist-test" if source == "embedded" else f"{source.rstrip('/')}-test"
    if _has_manifest(guess):
        return guess
    raise DataError(
        f"{field}: no real test split found (tried eval.real and {guess}); {IMPORT_HINT}"
    )


def _has_manifest(folder: str) -> bool:
    if not is_uri(folder):
        return (Path(folder) / "manifest.json").is_file()
    return open_location(folder, field="--real-test").is_file("manifest.json")


def plan_classification(
    G: torch.nn.Module,
    spec: JobSpec,
    folder,
    real_test: str | None,
    count: int,
    epochs: int,
    seed: int,
    metric: str = "cas",
) -> ClassificationPlan:
    """Checks that G is class-conditional and that the real splits are labelled, of G's image
    shape and classes. UserError naming the flag and the fix otherwise."""
    k = int(getattr(G, "num_classes", 0))
    if not k:
        raise CheckpointError(
            f"--metrics {metric}: {display(str(folder))} is not class-conditional "
            "(model.conditional false): classification metrics train on G's class inputs; "
            "evaluate a conditional run or leave them out"
        )
    source = data_location(spec.data.source)
    train = _labelled(source, "data.source", k)
    test_dir = real_test_dir(spec, real_test)
    test = _labelled(test_dir, "--real-test", k)
    if test.shape != train.shape:
        raise DataError(
            f"--real-test {display(test_dir)}: images are {_shape(test.shape)}, the run's "
            f"{_shape(train.shape)}; pass the test split of the run's dataset"
        )
    _check_same_classes(train, test, test_dir)
    return ClassificationPlan(G, spec.model.z_dim, k, train, test, count, epochs, seed)


def _labelled(folder: str, field: str, num_classes: int) -> ShardManifest:
    try:
        manifest = read_manifest(folder)
    except DataError as e:
        raise DataError(f"{field}: {e}") from None
    if not manifest.labels:
        raise DataError(
            f"{field} {display(folder)}: the dataset has no labels; classification metrics need "
            "a labelled dataset (`distgan data import SRC --labels FILE`)"
        )
    if min(manifest.labels) < 0 or max(manifest.labels) >= num_classes:
        raise DataError(
            f"{field} {display(folder)}: labels {min(manifest.labels)}..{max(manifest.labels)}, "
            f"but G knows classes 0..{num_classes - 1}; pass a dataset with G's classes"
        )
    return manifest


def _check_same_classes(train: ShardManifest, test: ShardManifest, test_dir: str) -> None:
    """DataError unless the test split has the run's classes: the same labels and, where both
    datasets name their classes, the same names."""
    where = f"--real-test {display(test_dir)}"
    fix = "pass the test split of the run's dataset"
    if set(test.labels) != set(train.labels):
        raise DataError(f"{where}: {_classes(test)}, the run's data {_classes(train)}; {fix}")
    if train.class_names and test.class_names:
        for k in sorted(set(train.labels)):
            if class_name(test, k) != class_name(train, k):
                raise DataError(
                    f"{where}: class {k} is {class_name(test, k)!r} there, "
                    f"{class_name(train, k)!r} in the run's data; {fix}"
                )


def _classes(manifest: ShardManifest) -> str:
    labels = sorted(set(manifest.labels))
    return f"{len(labels)} classes ({', '.join(class_name(manifest, k) for k in labels)})"


def classification_scores(
    plan: ClassificationPlan,
    names: list[str],
    log: Callable[[str], object] = print,
    sample: Callable[[int, torch.Tensor, int], torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict]:
    """Figures of the metrics ``names`` (of CLASSIFICATION_METRICS), each with ``<name>_real``,
    and their protocol. ``sample(n, labels, seed)`` -> uint8 (n, C, H, W) draws G's images of
    ``labels`` (default: ``generate`` from ``plan.G``; tests pass stand-ins)."""
    sample = sample or (lambda n, y, s: _generated(plan, n, y, s))
    rng = np.random.default_rng(plan.seed)
    train_x, train_y = _subset(plan.train, plan.count, rng)
    test_x, test_y = load_arrays(plan.test)
    test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)
    real_net = _fit(plan, train_x, train_y, "classifier on real images", log)
    baseline = classifier_accuracy(real_net, test_x, test_y)
    figures: dict[str, float] = {}
    fake_count = 0
    if {"cas", "gan_train"} & set(names):
        labels = torch.arange(plan.count) % plan.num_classes  # every class equally often
        fake_x = sample(plan.count, labels, plan.seed)
        fake_net = _fit(plan, fake_x, labels, "classifier on generated images", log)
        accuracy = classifier_accuracy(fake_net, test_x, test_y)
        figures |= {"cas": accuracy, "gan_train": accuracy}
        fake_count = plan.count
    if "gan_test" in names:
        labels = torch.arange(plan.count) % plan.num_classes
        fake_x = sample(plan.count, labels, plan.seed + 1)  # latents the training never saw
        figures["gan_test"] = classifier_accuracy(real_net, fake_x, labels)
    out = {}
    for name in names:
        out[name] = figures[name]
        out[f"{name}_real"] = baseline
    protocol = {
        "classifier": CLASSIFIER,
        "epochs": plan.epochs,
        "train_count": plan.count,
        "generated_train_count": fake_count,
        "generated_test_count": plan.count if "gan_test" in names else 0,
        "generated_labels": f"balanced: sample i has class i mod {plan.num_classes}",
        "real_train": plan.train.source,
        "real_train_sha256": dataset_hash(plan.train),
        "real_test": plan.test.source,
        "real_test_sha256": dataset_hash(plan.test),
        "real_test_count": plan.test.count,
        "num_classes": plan.num_classes,
        "seed": plan.seed,
        "baseline": "<metric>_real: the classifier trained on real training images, tested on "
        "the real test split",
    }
    return out, protocol


def _subset(
    manifest: ShardManifest, n: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random ``n`` (all if fewer) of a labelled dataset: uint8 images and labels."""
    images, labels = load_arrays(manifest)
    pick = np.sort(rng.permutation(len(images))[:n])
    return torch.from_numpy(images[pick]), torch.from_numpy(labels[pick])


def _generated(plan: ClassificationPlan, n: int, labels: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.from_numpy(to_uint8(generate(plan.G, plan.z_dim, n, seed, labels=labels)))


def _fit(
    plan: ClassificationPlan,
    images: torch.Tensor,
    labels: torch.Tensor,
    what: str,
    log: Callable[[str], object],
) -> FeatureNet:
    """A fresh classifier trained on uint8 ``images`` and ``labels``, seeded by the plan."""
    with torch.random.fork_rng(devices=[]):  # seeded without resetting the caller's RNG
        torch.manual_seed(plan.seed)
        net = train_classifier(
            FeatureNet(images.shape[1], plan.num_classes),
            images,
            labels,
            epochs=plan.epochs,
            batch_size=_BATCH,
            device="cpu",
            log=lambda line: log(f"{what}: {line}"),
        )
    return net.eval()


def _shape(shape) -> str:
    return "×".join(str(d) for d in shape)
