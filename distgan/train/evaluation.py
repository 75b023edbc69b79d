"""In-training evaluation: G_ema's samples scored against real reference features.

The driver computes the reference once (``prepare_evaluation``, cached on disk) and hands it to
the workers in their config. At each evaluation every rank generates its share of the samples
and extracts their features; rank 0 gathers them and computes the metric. No Ray here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distgan import dist
from distgan.data import ShardManifest, read_manifest
from distgan.data.imbalance import ClassPrior
from distgan.errors import DataError, JobError, UserError
from distgan.metrics import FeatureSet, compute_metrics, get_metric
from distgan.metrics.classes import RECALL_K
from distgan.metrics.evaluate import real_reference
from distgan.metrics.features import SHIPPED, FeatureExtractor, load_feature_extractor
from distgan.models import class_labels, generate
from distgan.specs import JobSpec
from distgan.train.checkpoint import TrainState
from distgan.train.loop import sampling_generator


def check_evaluation(
    spec: JobSpec, manifest: ShardManifest, job_source: str
) -> tuple[ShardManifest, FeatureExtractor]:
    """The evaluation's checks that need no Ray: ``eval.real`` (a dataset of the training data's
    shape) and ``eval.features`` (a feature network that loads and takes those images).

    Returns (the real dataset's manifest, the loaded feature network); DataError, JobError or
    CheckpointError naming the job file and the field.
    """
    e = spec.eval
    real_dir = e.real or manifest.root
    try:
        real = read_manifest(real_dir) if e.real else manifest
    except DataError as err:
        raise DataError(f"{job_source}: eval.real: {err}") from None
    if real.shape != manifest.shape:
        raise JobError(
            f"{job_source}: eval.real: its images are {_shape(real.shape)}, the training "
            f"data's {_shape(manifest.shape)}; use a dataset of the same shape"
        )
    if _per_class(spec):
        for field, data in (("data.source", manifest), ("eval.real", real)):
            if not data.labels:
                raise JobError(
                    f"{job_source}: eval.metric: {e.metric} measures each class, and the "
                    f"{field} data at {data.root} has no labels; import it with labels or pick "
                    "another eval.metric"
                )
    try:
        extractor = load_feature_extractor(e.features, real_dir)
    except UserError as err:
        raise type(err)(f"{job_source}: eval.features: {err}") from None
    fix = f"train one with `distgan eval fit-features {real_dir}` or set eval.features"
    if extractor.in_shape is not None and extractor.in_shape != manifest.shape:
        raise JobError(
            f"{job_source}: eval.features: {extractor.name} takes {_shape(extractor.in_shape)} "
            f"images, the data's are {_shape(manifest.shape)}; {fix}"
        )
    if extractor.in_shape is None:  # TorchScript: its input size is known only by trying
        try:
            extractor.extract(torch.zeros(2, *manifest.shape))
        except (RuntimeError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise JobError(
                f"{job_source}: eval.features: {extractor.name} fails on "
                f"{_shape(manifest.shape)} images ({first}); {fix}"
            ) from None
        except UserError as err:
            raise type(err)(f"{job_source}: eval.features: {err}") from None
    return real, extractor


def prepare_evaluation(spec: JobSpec, manifest: ShardManifest, job_source: str) -> dict[str, Any]:
    """The workers' evaluation config: the feature network and the real features."""
    e = spec.eval
    real, extractor = check_evaluation(spec, manifest, job_source)
    classes = None
    if _per_class(spec):  # the training data's classes, prior and rare classes
        classes = ClassPrior.of(manifest.label_counts, spec.train.class_balance)
    reference = real_reference(real, extractor, e.n_real, e.seed, classes)
    if classes is not None:
        rare = int(np.isin(reference.features.labels, classes.rare).sum())
        if rare < 2 * RECALL_K:
            raise JobError(
                f"{job_source}: eval.n_real: the {reference.count} real images of the reference "
                f"hold {rare} of the rare classes {list(classes.rare)}, too few to measure "
                f"{e.metric} on; raise eval.n_real"
            )
    return {
        # The shipped network by name (each node has its own copy, at its own path), one in
        # storage by its URI (each node fetches it), else its path.
        "features_path": extractor.origin,
        # Code runs only from a file the user named; one "auto" found is weights-only here and
        # on the workers too, should it be replaced between the two loads.
        "features_code": e.features not in ("auto", *SHIPPED),
        "higher_is_better": get_metric(e.metric).higher_is_better,
        "real_features": reference.features.features,
        "real_probs": reference.features.probs,
        "real_labels": reference.features.labels,
        "classes": classes,
    }


def _per_class(spec: JobSpec) -> bool:
    """Whether eval.metric is a per-class metric (it reads the real images' labels)."""
    return "real_labels" in get_metric(spec.eval.metric).uses


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


class InTrainingEvaluator:
    """Called by every rank at the same steps (it gathers features across ranks)."""

    def __init__(self, spec: JobSpec, config: dict[str, Any], device: torch.device):
        self.metric = spec.eval.metric
        self.higher_is_better = config["higher_is_better"]
        self.z_dim = spec.model.z_dim
        self.n = spec.eval.n_samples // dist.world_size()
        # Fixed latents, different on each rank: every evaluation scores the same draw.
        self.seed = spec.eval.seed * 100_003 + dist.rank()
        self.device = device
        self.extractor = load_feature_extractor(
            config["features_path"], device=device, allow_code=config["features_code"]
        )
        self.reference = FeatureSet(
            config["real_features"],
            config["real_probs"],
            labels=config.get("real_labels"),
            classes=config.get("classes"),
        )

    def __call__(self, state: TrainState) -> dict[str, float]:
        with sampling_generator(state) as G:
            y = class_labels(G, self.n)  # a conditional G: every class in turn, else None
            x = generate(G, self.z_dim, self.n, self.seed, device=self.device, labels=y)
        f, p = self.extractor.extract(x)  # (n, C, H, W) -> (n, d), (n, K)
        f = dist.all_gather_cat(f.to(self.device)).cpu().numpy()
        if p is not None:
            p = dist.all_gather_cat(p.to(self.device)).cpu().numpy()
        if y is not None:
            y = dist.all_gather_cat(y.to(self.device)).cpu().numpy()
        if not dist.is_main():
            return {}
        figures = compute_metrics([self.metric], self.reference, FeatureSet(f, p, labels=y))
        return {k: float(v) for k, v in figures.items() if np.isscalar(v)}
