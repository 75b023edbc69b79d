"""Scoring generators against a real dataset, with the protocol that makes figures comparable.

    extractor = load_feature_extractor("auto", "data/fashion-mnist")
    reference = real_reference(read_manifest("data/fashion-mnist"), extractor, n=10000, seed=0)
    images, given = fake_images(G, z_dim, n=10000, seed=0)
    figures = compute_metrics(["fid", "kid"], reference.features, embed(extractor, images, given))

Reference statistics (the real images' features) are cached on disk per dataset, feature network,
sample count and seed, in ``$XDG_CACHE_HOME/distgan/reference`` (``~/.cache`` by default): they
are costly to compute and identical for every run on the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from distgan.data import ShardManifest, class_name, read_rows
from distgan.data.imbalance import ClassPrior
from distgan.data.reading import read_labels
from distgan.errors import DataError
from distgan.metrics import FeatureSet, stats
from distgan.metrics.features import FeatureExtractor, user_cache
from distgan.metrics.fitting import recorded_accuracy
from distgan.models import class_labels, generate
from distgan.storage import display, open_location

REAL_BATCH = 1000


@dataclass
class Reference:
    """Features of a real subset, and where they came from."""

    features: FeatureSet
    dataset: str  # the manifest's source text
    dataset_sha256: str  # hash of the shard hashes: identifies the data, not its folder
    count: int
    seed: int


def dataset_hash(manifest: ShardManifest) -> str:
    joined = "".join(sorted(s.sha256 for s in manifest.shards))
    return hashlib.sha256(joined.encode()).hexdigest()


def cache_dir() -> Path:
    return user_cache() / "reference"


def _to_unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(127.5).sub_(1.0)


def subset_rows(manifest: ShardManifest, n: int, seed: int) -> np.ndarray:
    """The rows (n,) of a seeded random subset of ``n`` real images (all if fewer), sorted."""
    pick = np.random.default_rng(seed).permutation(manifest.count)[:n]
    pick.sort()  # the same subset in file order, whatever the seed's permutation
    return pick


def real_subset(manifest: ShardManifest, n: int, seed: int) -> torch.Tensor:
    """``n`` real images (all if fewer) in [-1, 1]: a seeded random subset, in file order.
    Only the row groups that hold them are read."""
    return _to_unit(read_rows(manifest, subset_rows(manifest, n, seed)))


def real_reference(
    manifest: ShardManifest,
    extractor: FeatureExtractor,
    n: int,
    seed: int,
    classes: ClassPrior | None = None,
) -> Reference:
    """Features of ``n`` real images (a seeded random subset; all if fewer), cached on disk.
    With ``classes`` (the training data's, for the per-class metrics) the features carry them
    and the images' labels (DataError if ``manifest`` has none)."""
    data_hash = dataset_hash(manifest)
    count = min(n, manifest.count)
    key = f"{data_hash[:16]}-{extractor.sha256[:16]}-{count}-{seed}"
    path = cache_dir() / f"{key}.npz"
    if path.is_file():
        cached = np.load(path)
        probs = cached["probs"] if cached["probs"].size else None
        feats = FeatureSet(cached["features"], probs)
    else:
        real = real_subset(manifest, count, seed)
        f, p = extractor.extract(real, batch_size=REAL_BATCH, desc="reference statistics")
        feats = FeatureSet(f.numpy(), None if p is None else p.numpy())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        probs = feats.probs if feats.probs is not None else np.zeros(0, np.float32)
        np.savez(tmp, features=feats.features, probs=probs)
        tmp.replace(path)
    if classes is not None:
        feats.labels = read_labels(manifest)[subset_rows(manifest, count, seed)]
        feats.classes = classes
    return Reference(feats, manifest.source, data_hash, count, seed)


def fake_images(
    G: torch.nn.Module, z_dim: int, n: int, seed: int, device="cpu"
) -> tuple[torch.Tensor, np.ndarray | None]:
    """``n`` samples (N, C, H, W) in [-1, 1] of G drawn from latents seeded by ``seed``, and the
    labels (N,) a conditional G was given (it draws every class in turn; None if unconditional).
    Drawn once, they are embedded by each feature network that judges them (``embed``)."""
    labels = class_labels(G, n)
    x = generate(G, z_dim, n, seed, device=device, labels=labels)
    return x, None if labels is None else labels.numpy()


def embed(
    extractor: FeatureExtractor, images: torch.Tensor, given: np.ndarray | None
) -> FeatureSet:
    """The features of generated ``images`` in ``extractor``'s space, with the labels ``given``
    to a conditional G."""
    f, p = extractor.extract(images, desc=f"generated images ({extractor.name})")
    return FeatureSet(f.numpy(), None if p is None else p.numpy(), labels=given)


def per_class_lines(fake: FeatureSet, manifest: ShardManifest) -> list[str]:
    """The per-class figures behind ``class_coverage``, one line a class of the feature network:
    the share of samples it classifies as that class, named from ``manifest`` (the real data it
    was trained on) or numbered; "missing" marks the classes class_coverage counts as not drawn."""
    k = fake.probs.shape[1]
    counts = stats.class_histogram(fake.probs, k)
    names = [class_name(manifest, c) for c in range(k)]
    width = max(len(n) for n in names) + 2
    drawn = counts >= stats.FAIR_SHARE * counts.sum() / k  # what class_coverage counts
    shares = counts / counts.sum()
    return [
        f"  {name:<{width}}{share:>7.1%}" + ("" if ok else "  missing")
        for name, share, ok in zip(names, shares, drawn, strict=True)
    ]


def protocol(reference: Reference, extractor: FeatureExtractor, fake_count: int, seed: int) -> dict:
    """What a figure was measured with; two figures compare only when their protocols match.
    ``features_accuracy``: the feature network's recorded test accuracy and classes (None for a
    network that records none), so a figure is never read without how well it sees classes."""
    recorded = recorded_accuracy(extractor.path)
    return {
        "features": extractor.name,
        "features_sha256": extractor.sha256,
        "features_accuracy": (
            None if recorded is None else {"accuracy": recorded[0], "num_classes": recorded[1]}
        ),
        "real": reference.dataset,
        "real_sha256": reference.dataset_sha256,
        "real_count": reference.count,
        "real_seed": reference.seed,
        "fake_count": fake_count,
        "seed": seed,
    }


def figure_protocols(figures: dict, names: list[str], proto: dict, more: dict) -> dict:
    """``proto`` with ``more`` for each figure of the metrics ``names`` (``<name>`` and its
    ``<name>_<detail>`` figures): what ``write_eval_json`` takes as ``own_protocols``."""
    return {
        k: {**proto, **more} for k in figures if any(k == n or k.startswith(f"{n}_") for n in names)
    }


def write_eval_json(
    path: str | Path,
    checkpoint: str,
    step: int,
    figures: dict,
    proto: dict,
    own_protocols: dict[str, dict] | None = None,
) -> str:
    """``eval.json`` (a local path or a URI in the run's storage): this evaluation at the top
    (``checkpoint``, ``step``, ``time``, ``results``: each figure beside its protocol, ``proto``
    or the figure's own in ``own_protocols``), and under ``evals`` every evaluation the file
    held before and this one last, so that no evaluation erases an earlier one's figures."""
    own = own_protocols or {}
    this = {
        "checkpoint": display(checkpoint),
        "step": step,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": [
            {"metric": k, "value": v, "protocol": own.get(k, proto)} for k, v in figures.items()
        ],
    }
    target = open_location(str(path), field="--out")
    folder = target.parent()
    earlier = []
    if folder.is_file(target.name):
        try:
            earlier = evaluations(json.loads(folder.read_text(target.name)))
        except (json.JSONDecodeError, AttributeError, TypeError):
            raise DataError(
                f"--out: {target}: not an eval.json distgan can add to; move it aside or pass "
                "--out another path"
            ) from None
    record = {**this, "evals": [*earlier, this]}
    folder.write_text(target.name, json.dumps(record, indent=2) + "\n")
    return str(target)


def evaluations(record: dict) -> list[dict]:
    """Every evaluation an ``eval.json`` record holds, oldest first (one written before
    eval.json kept them all is its one evaluation, without a time)."""
    if "evals" in record:
        return list(record["evals"])
    if "results" in record:
        return [{k: v for k, v in record.items() if k != "evals"}]
    raise TypeError("no results")


def latest_results(record: dict) -> list[tuple[dict, dict]]:
    """(evaluation, result) of the latest figure of each metric in an ``eval.json`` record, in
    the order the metrics were first evaluated."""
    latest: dict[str, tuple[dict, dict]] = {}
    for e in evaluations(record):
        for r in e.get("results", []):
            latest[r["metric"]] = (e, r)  # later evaluations replace earlier ones
    return list(latest.values())
