"""A second, independent judge of Fashion-MNIST generators, and the asked-class share.

    second = second_judge(manifest, first)  # None unless the data is Fashion-MNIST-shaped
    figures, protocols = second_judge_figures(manifest, second, images, given, num_classes,
                                              ["fid"], n_real=10000, seed=0)
    # {"fid@fashion-mnist-b": 9.1, "asked_class@fashion-mnist-b": 0.88}

The shipped Fashion-MNIST network (``fashion-mnist``) is at once the feature space of FID, the
judge of a conditional G's classes and, through AC-GAN's head and the recipes chosen by its
figures, something a generator can learn to please: G once reached 95.4% "asked class" by it,
above its own 92.0% on real test images. ``fashion-mnist-b`` was trained apart: another
architecture (``strided_net.StridedNet``), seed and share of the data (the card beside its
weights says which). ``distgan eval`` measures FID and the asked-class share in both, from the
same real images and the same samples; a figure by the second judge is named
``<metric>@fashion-mnist-b``. The two agreeing is evidence that a figure is about the images,
not about one network.
"""

from __future__ import annotations

import numpy as np
import torch

from distgan.data import ShardManifest
from distgan.metrics import FeatureSet, compute_metrics
from distgan.metrics.evaluate import embed, protocol, real_reference
from distgan.metrics.features import FeatureExtractor, load_feature_extractor

SECOND = "fashion-mnist-b"
FASHION_SHAPE, FASHION_CLASSES = (1, 28, 28), 10
JUDGED = ("fid",)  # the registered metrics the second judge measures again, when asked
ASKED_CLASS = (
    "share of the samples the feature network classifies as the class G was asked for "
    "(every class in turn)"
)


def asked_class(fake: FeatureSet, num_classes: int) -> float | None:
    """The share of a conditional G's samples (``fake.labels``: the classes it was given) that
    the feature network's classifier names as given; None for an unconditional G, a network
    without a classifier, or one whose classes are not G's ``num_classes`` (whose class k would
    then be another thing than G's)."""
    if fake.labels is None or fake.probs is None or fake.probs.shape[1] != num_classes:
        return None
    return float(np.mean(fake.probs.argmax(axis=1) == fake.labels))


def second_judge(manifest: ShardManifest, first: FeatureExtractor) -> FeatureExtractor | None:
    """The second judge for the real data of ``manifest``: the shipped ``fashion-mnist-b`` when
    the images are Fashion-MNIST-shaped (1×28×28, 10 labelled classes) and ``first`` (the feature
    network the other figures are measured in) is not that network already; else None."""
    if manifest.shape != FASHION_SHAPE or len(manifest.label_counts or {}) != FASHION_CLASSES:
        return None
    second = load_feature_extractor(SECOND, device=str(first.device))
    return None if second.sha256 == first.sha256 else second


def second_judge_figures(
    manifest: ShardManifest,
    second: FeatureExtractor,
    images: torch.Tensor,
    given: np.ndarray | None,
    num_classes: int,
    metrics: list[str],
    n_real: int,
    seed: int,
) -> tuple[dict[str, float], dict[str, dict]]:
    """The second judge's figures on generated ``images`` (with the classes ``given`` to a
    conditional G of ``num_classes``), against ``n_real`` real images of ``manifest`` (the
    subset of ``seed``, as the first judge's): ``<metric>@<judge>`` for each of ``metrics`` in
    JUDGED, and ``asked_class@<judge>`` for a conditional G. Returns (figures, each figure's
    protocol)."""
    judged = [m for m in metrics if m in JUDGED]
    if not judged and given is None:  # nothing this judge measures again: spare the work
        return {}, {}
    reference = real_reference(manifest, second, n_real, seed)
    fake = embed(second, images, given)
    figures = {
        f"{m}@{second.name}": v
        for m, v in compute_metrics(judged, reference.features, fake).items()
    }
    proto = protocol(reference, second, len(images), seed)
    protocols = dict.fromkeys(figures, proto)
    share = asked_class(fake, num_classes)
    if share is not None:
        name = f"asked_class@{second.name}"
        figures[name] = share
        protocols[name] = {**proto, "asked_class": ASKED_CLASS}
    return figures, protocols
