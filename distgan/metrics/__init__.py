"""The quality metrics, registered by name; the math lives in ``stats.py``.

    real, fake = FeatureSet(real_features, real_probs), FeatureSet(fake_features, fake_probs)
    figures = compute_metrics(["fid", "kid", "precision"], real, fake)
    # {"fid": 12.3, "kid": 0.004, "kid_std": 0.0007, "precision": 0.71}

The per-class metrics (``intra_fid``, ``class_kl``, ``rare_recall``: ``metrics/classes.py``)
read the real images' labels and the training data's class prior as well::

    real = FeatureSet(features, probs, labels=real_labels, classes=ClassPrior.of(counts, "none"))
    fake = FeatureSet(features, probs, labels=given_labels)   # labels: a conditional G's only

A metric's figures are named after it: ``<name>`` or ``<name>_<detail>`` (``kid_std``).
Metrics registered on one compute function (precision and recall) are computed once per
``compute_metrics`` call, and each reports only its own figures.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from distgan.data.imbalance import ClassPrior
from distgan.metrics import classes, stats

INPUTS = frozenset({"real_features", "fake_features", "fake_probs", "real_labels"})


@dataclass(eq=False)
class FeatureSet:
    """Features (N, d) of a set of images, and class probabilities (N, K) if the net classifies;
    ``labels`` (N,): the real images' classes, or the classes a conditional G was given;
    ``classes``: for the real set, the training data's class counts, prior and rare classes."""

    features: np.ndarray
    probs: np.ndarray | None = None
    labels: np.ndarray | None = None
    classes: ClassPrior | None = None
    _stats: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (d,) and covariance (d, d) of the features, computed once."""
        if self._stats is None:
            self._stats = stats.mean_cov(self.features)
        return self._stats


Compute = Callable[[FeatureSet, FeatureSet], dict[str, float]]  # (real, fake) -> figures


@dataclass(frozen=True)
class Metric:
    """A figure of merit and what it reads; ``compute`` may be shared with sibling metrics."""

    name: str
    higher_is_better: bool
    uses: frozenset[str]  # subset of INPUTS
    compute: Compute


METRICS: dict[str, Metric] = {}


def register_metric(name: str, higher_is_better: bool, uses: set[str] | frozenset[str]):
    """Decorator registering ``compute(real, fake) -> figures`` as metric ``name``.

    Returns the function unchanged, so stacked decorators register several metrics on one
    function, which ``compute_metrics`` then calls once for all of them.
    """
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    if not uses <= INPUTS:
        raise ValueError(f"metric {name!r}: unknown inputs {sorted(uses - INPUTS)}")

    def register(compute: Compute) -> Compute:
        METRICS[name] = Metric(name, higher_is_better, frozenset(uses), compute)
        return compute

    return register


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; ValueError naming the closest known ones otherwise."""
    if name in METRICS:
        return METRICS[name]
    close = difflib.get_close_matches(name, METRICS, n=1)
    hint = f" did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown metric {name!r};{hint} known: {', '.join(sorted(METRICS))}")


def compute_metrics(names: list[str], real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
    """Figures of the metrics ``names`` for real and fake features, in the order asked."""
    metrics = [get_metric(n) for n in names]
    for m in metrics:
        if "fake_probs" in m.uses and fake.probs is None:
            raise ValueError(f"{m.name} needs a feature network that classifies (no fake probs)")
        if "real_labels" in m.uses and (real.labels is None or real.classes is None):
            raise ValueError(f"{m.name} needs labelled real and training data (per-class)")
    done: dict[Compute, dict[str, float]] = {}
    figures: dict[str, float] = {}
    for m in metrics:
        if m.compute not in done:
            done[m.compute] = m.compute(real, fake)
        own = {
            k: v for k, v in done[m.compute].items() if k == m.name or k.startswith(m.name + "_")
        }
        figures.update(own)
    return figures


@register_metric("fid", higher_is_better=False, uses={"real_features", "fake_features"})
def _fid(real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
    return {"fid": stats.frechet_distance(*real.stats(), *fake.stats())}


@register_metric("kid", higher_is_better=False, uses={"real_features", "fake_features"})
def _kid(real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
    mean, std = stats.kid(real.features, fake.features)
    return {"kid": mean, "kid_std": std}


@register_metric("recall", higher_is_better=True, uses={"real_features", "fake_features"})
@register_metric("precision", higher_is_better=True, uses={"real_features", "fake_features"})
def _precision_recall(real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
    precision, recall = stats.precision_recall(real.features, fake.features)
    return {"precision": precision, "recall": recall}


@register_metric("classifier_score", higher_is_better=True, uses={"fake_probs"})
def _classifier_score(real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
    return {"classifier_score": stats.classifier_score(fake.probs)}


@register_metric("class_coverage", higher_is_better=True, uses={"fake_probs"})
def _class_coverage(real: FeatureSet, fake: FeatureSet) -> dict[str, float]:
    return {"class_coverage": stats.class_coverage(fake.probs, num_classes=fake.probs.shape[1])}


# The per-class metrics (intra-FID, class histogram KL, rare-class recall): metrics/classes.py.
_PER_CLASS = {"real_features", "fake_features", "real_labels"}
register_metric("intra_fid", higher_is_better=False, uses=_PER_CLASS)(classes.intra_fid)
register_metric("class_kl", False, _PER_CLASS | {"fake_probs"})(classes.class_kl_figures)
register_metric("rare_recall", higher_is_better=True, uses=_PER_CLASS)(classes.rare_recall)
