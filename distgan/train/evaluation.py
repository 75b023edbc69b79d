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
from distgan.config import JobSpec
from distgan.data import ShardManifest, read_manifest
from distgan.errors import DataError, JobError, UserError
from distgan.metrics import FeatureSet, compute_metrics, get_metric
from distgan.metrics.evaluate import real_reference
from distgan.metrics.features import SHIPPED, FeatureExtractor, load_feature_extractor
from distgan.models import generate
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
    reference = real_reference(real, extractor, e.n_real, e.seed)
    return {
        # The shipped network by name: each node has its own copy (at its own path).
        "features_path": extractor.name if extractor.name in SHIPPED else str(extractor.path),
        "higher_is_better": get_metric(e.metric).higher_is_better,
        "real_features": reference.features.features,
        "real_probs": reference.features.probs,
    }


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
        self.extractor = load_feature_extractor(config["features_path"], device=device)
        self.reference = FeatureSet(config["real_features"], config["real_probs"])

    def __call__(self, state: TrainState) -> dict[str, float]:
        with sampling_generator(state) as G:
            x = generate(G, self.z_dim, self.n, self.seed, device=self.device)  # (n, C, H, W)
        f, p = self.extractor.extract(x)
        f = dist.all_gather_cat(f.to(self.device)).cpu().numpy()
        if p is not None:
            p = dist.all_gather_cat(p.to(self.device)).cpu().numpy()
        if not dist.is_main():
            return {}
        figures = compute_metrics([self.metric], self.reference, FeatureSet(f, p))
        return {k: float(v) for k, v in figures.items() if np.isscalar(v)}
