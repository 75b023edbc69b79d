"""Per-class quality, for imbalanced data: intra-FID, the class histogram against the prior, and
recall on the rare classes.

    real = FeatureSet(features, probs, labels=real_labels, classes=ClassPrior.of(counts, "none"))
    fake = FeatureSet(features, probs, labels=given)   # given: a conditional G's labels, or None
    compute_metrics(["intra_fid", "class_kl", "rare_recall"], real, fake)
    # {"intra_fid": 41.2, "intra_fid_rare": 88.0, "intra_fid_missing": 0, "class_kl": 0.03,
    #  "class_kl_rare_share": 0.02, "rare_recall": 0.31}

The class of a generated sample: for a conditional G, the label it was given (evaluation draws
every class in turn, so each gets n/K samples); for an unconditional G, the feature network's
classifier head (the argmax of its probabilities), so the classes get what G happens to draw.
The classes are the training data's (``real.classes``: its counts, the prior its real batches
drew from under ``train.class_balance``, and the rare classes: the third with the fewest
training images, ``data.imbalance.rare_classes``).

| figure              | what                                                               |
|---------------------|--------------------------------------------------------------------|
| intra_fid           | mean over classes of the FID between real and generated of class k |
| intra_fid_rare      | the same mean over the rare classes                                |
| intra_fid_missing   | classes left out of the means: fewer than 2 real or generated      |
| class_kl            | KL(p_gen ‖ p_target) in nats: p_gen the classifier's histogram of   |
|                     | the samples, p_target the prior (unconditional G) or the labels     |
|                     | given (conditional G: how well it draws the class it is asked for) |
| class_kl_rare_share | share of the samples the classifier puts in the rare classes       |
| rare_recall         | recall (Kynkäänniemi et al. 2019) of the rare classes' real images |
|                     | against the generated images of those classes; 0 when G draws      |
|                     | fewer than k + 1 = 4 of them (no manifold to be inside of)         |

A class's FID from few samples is biased upwards: compare intra-FIDs only at equal sample
counts, which ``class_protocol`` records beside them.
"""

from __future__ import annotations

import numpy as np

from distgan.metrics import stats

MIN_PER_CLASS = 2  # samples a covariance needs
RECALL_K = 3  # the k-th neighbour of Kynkäänniemi et al.'s manifolds (stats.precision_recall)
# ``real`` and ``fake`` below are ``distgan.metrics.FeatureSet``s, which registers these
# functions as metrics (this module does not import it back).


def fake_classes(fake) -> np.ndarray:
    """The class (N,) of each generated sample: the label a conditional G was given, else the
    feature network's argmax. ValueError when neither is known."""
    if fake.labels is not None:
        return np.asarray(fake.labels, dtype=np.int64)
    if fake.probs is None:
        raise ValueError(
            "per-class metrics of an unconditional G need a feature network that classifies"
        )
    return fake.probs.argmax(axis=1)


def per_class_fid(real, fake) -> dict[int, float]:
    """FID of each class of the training data with at least MIN_PER_CLASS real and generated
    samples: label -> FID of real.features[class k] against fake.features[class k]."""
    classes = fake_classes(fake)
    out = {}
    for k in np.flatnonzero(real.classes.counts):
        r, f = real.features[real.labels == k], fake.features[classes == k]
        if len(r) >= MIN_PER_CLASS and len(f) >= MIN_PER_CLASS:
            out[int(k)] = stats.frechet_distance(*stats.mean_cov(r), *stats.mean_cov(f))
    return out


def intra_fid(real, fake) -> dict[str, float]:
    """intra_fid, intra_fid_rare and intra_fid_missing (the module's table)."""
    fids = per_class_fid(real, fake)
    rare = [fids[k] for k in real.classes.rare if k in fids]
    present = len(np.flatnonzero(real.classes.counts))
    return {
        "intra_fid": float(np.mean(list(fids.values()))) if fids else float("nan"),
        "intra_fid_rare": float(np.mean(rare)) if rare else float("nan"),
        "intra_fid_missing": float(present - len(fids)),
    }


def class_kl_figures(real, fake) -> dict[str, float]:
    """class_kl and class_kl_rare_share (the module's table)."""
    prior = real.classes.prior
    width = max(len(prior), fake.probs.shape[1])
    drawn = stats.class_histogram(fake.probs, fake.probs.shape[1])
    p_gen = np.zeros(width)
    p_gen[: len(drawn)] = drawn / drawn.sum()
    if fake.labels is not None:  # a conditional G: what it was asked to draw
        asked = np.bincount(np.asarray(fake.labels, dtype=np.int64), minlength=width)
        p_target = asked / asked.sum()
    else:
        p_target = np.zeros(width)
        p_target[: len(prior)] = prior
    return {
        "class_kl": class_kl(p_gen, p_target),
        "class_kl_rare_share": float(p_gen[list(real.classes.rare)].sum()),
    }


def class_kl(p_gen: np.ndarray, p_target: np.ndarray) -> float:
    """KL(p_gen ‖ p_target) in nats of two distributions (K,): 0 when they match; infinite when
    p_gen puts mass on a class p_target gives none. A class G never draws adds 0·log 0 = 0."""
    p, q = np.asarray(p_gen, np.float64), np.asarray(p_target, np.float64)
    if np.any((p > 0) & (q == 0)):
        return float("inf")
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def rare_recall(real, fake) -> dict[str, float]:
    """rare_recall (the module's table); ValueError when the reference holds too few of the rare
    classes' images."""
    rare = list(real.classes.rare)
    r = real.features[np.isin(real.labels, rare)]
    f = fake.features[np.isin(fake_classes(fake), rare)]
    if len(r) <= RECALL_K:
        raise ValueError(
            f"rare_recall needs more than {RECALL_K} real images of the rare classes {rare}, "
            f"the reference holds {len(r)}; use more real images (--n-real, eval.n_real)"
        )
    if len(f) <= RECALL_K:  # G draws (almost) none of them: no manifold covers any real image
        return {"rare_recall": 0.0}
    return {"rare_recall": stats.precision_recall(r, f, k=RECALL_K)[1]}


def class_protocol(real, fake) -> dict:
    """What the per-class figures were measured with: the training data's classes, prior and
    rare classes, the real and generated samples per class, and how the fakes were classed."""
    width = len(real.classes.counts)
    classes = fake_classes(fake)
    return {
        **real.classes.to_json(),
        "fake_classes": "the labels given to the conditional G"
        if fake.labels is not None
        else "the feature network's classifier (argmax)",
        "real_per_class": np.bincount(real.labels, minlength=width)[:width].tolist(),
        "fake_per_class": np.bincount(classes[classes < width], minlength=width).tolist(),
        "min_per_class": MIN_PER_CLASS,
        "class_kl": "KL(p_gen || p_target), p_gen the classifier's histogram of the samples, "
        "p_target the prior (unconditional G) or the labels given (conditional G)",
    }
