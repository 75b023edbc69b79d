"""``distgan eval RUN_DIR|CHECKPOINT [--metrics fid,kid,precision,recall] [--n 10000]``
and ``distgan eval fit-features DATASET [--test DATASET] [--epochs N] [--out FILE]``.

The first scores a run's latest checkpoint (or the given one) against real images in the project's
feature space: a table on screen and ``eval.json`` with the protocol beside each figure, so two
figures are only compared when comparable. The second trains the feature network of a labelled
dataset (a small CNN classifier) and stores it beside the dataset.
"""

from __future__ import annotations

import argparse

from distgan.config import RESOLVED_JOB
from distgan.errors import DataError, JobError
from distgan.storage import display, join, open_location

DEFAULT_METRICS = "fid,kid,precision,recall"
PER_CLASS_INPUT = "real_labels"  # what the per-class metrics (intra_fid, ...) read


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "eval",
        help="score a trained generator, or fit a feature network",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", help="a run directory or checkpoint folder, or 'fit-features'")
    p.add_argument("dataset", nargs="?", help="with fit-features: the labelled dataset folder")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"default {DEFAULT_METRICS}")
    p.add_argument("--n", type=int, default=10000, help="generated samples (default 10000)")
    p.add_argument("--n-real", type=int, default=10000, help="real images (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="latent and real-subset seed")
    p.add_argument("--features", default="auto", help="auto, fashion-mnist, or a .pt file")
    p.add_argument("--real", help="real dataset folder (default: the run's training data)")
    p.add_argument("--test", help="with fit-features: a labelled test dataset")
    p.add_argument("--epochs", type=int, default=6, help="with fit-features (default 6)")
    p.add_argument("--out", help="eval.json path, or with fit-features the weights file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.source == "fit-features":
        return _fit_features(args)
    if args.dataset:
        raise JobError(f"distgan eval: unexpected argument {args.dataset!r} after {args.source}")
    return _evaluate(args)


def _fit_features(args: argparse.Namespace) -> int:
    from distgan.metrics.features import fit_features

    if not args.dataset:
        raise JobError("distgan eval fit-features: name the labelled dataset folder to train on")
    if args.epochs < 1:
        raise JobError(f"--epochs: expected a positive number, got {args.epochs}")
    fit_features(args.dataset, test_dir=args.test, out=args.out, epochs=args.epochs)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from distgan.data import EMBEDDED_DIR, read_manifest
    from distgan.generate import load_generator
    from distgan.metrics import compute_metrics, get_metric
    from distgan.metrics.evaluate import (
        fake_features,
        per_class_lines,
        protocol,
        real_reference,
        write_eval_json,
    )
    from distgan.metrics.features import load_feature_extractor

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for name in names:
        try:
            get_metric(name)
        except ValueError as e:
            raise JobError(f"--metrics: {e}") from None
    for flag, value in (("--n", args.n), ("--n-real", args.n_real)):
        if value < 2:
            raise JobError(f"{flag}: expected at least 2 samples, got {value}")
    G, spec, folder, ckpt = load_generator(args.source)
    if args.real:
        real_dir = args.real
    elif spec.data.source == "embedded":
        real_dir = str(EMBEDDED_DIR)
    else:
        real_dir = spec.data.source
    try:
        manifest = read_manifest(real_dir)
    except DataError as e:
        raise DataError(f"--real: {e}") from None
    per_class = [n for n in names if PER_CLASS_INPUT in get_metric(n).uses]
    trained_on = None if args.real else manifest  # the training data's manifest, when the same
    classes = _training_classes(spec, trained_on, per_class) if per_class else None
    extractor = load_feature_extractor(args.features, real_dir)
    reference = real_reference(manifest, extractor, args.n_real, args.seed, classes)
    fake = fake_features(G, spec.model.z_dim, extractor, args.n, args.seed)
    try:
        figures = compute_metrics(names, reference.features, fake)
    except ValueError as e:  # a metric the feature network cannot serve (no class probabilities)
        raise JobError(f"--metrics: {e}; pick other metrics or --features") from None
    proto = protocol(reference, extractor, args.n, args.seed)
    extra = {}
    if per_class:
        from distgan.metrics.classes import class_protocol

        extra = dict.fromkeys(per_class, class_protocol(reference.features, fake))

    if args.out:
        out = args.out
    else:  # beside the run's other files (a run directory given), else in the checkpoint
        given = open_location(args.source, field="RUN")
        out = join(given.uri if given.is_file(RESOLVED_JOB) else str(folder), "eval.json")
    written = write_eval_json(out, str(folder), int(ckpt["step"]), figures, proto, extra)
    print(f"{display(str(folder))} (step {ckpt['step']})")
    print(f"{'metric':<18}{'value':>12}")
    for k, v in figures.items():
        print(f"{k:<18}{v:>12.4f}")
    if "class_coverage" in figures:  # which classes: the share of samples in each
        print("class_coverage by class (share of samples):")
        print("\n".join(per_class_lines(fake, manifest)))
    if per_class:
        c = extra[per_class[0]]
        print(
            f"classes: rare {', '.join(map(str, c['rare_classes']))} ({c['rare_rule']}); "
            f"prior {c['class_balance']}; generated classed by {c['fake_classes']}; samples a "
            f"class real {c['real_per_class']}, generated {c['fake_per_class']}"
        )
    print(
        f"features {proto['features']} ({proto['features_sha256'][:12]}) · real {proto['real']}: "
        f"{proto['real_count']:,} images · fake {proto['fake_count']:,} · seed {proto['seed']}"
    )
    print(f"written: {written}")
    return 0


def _training_classes(spec, trained_on, names: list[str]):
    """The class counts, prior (train.class_balance) and rare classes of the run's training
    data (``trained_on``: its manifest, or None to read it), for the per-class metrics
    ``names``; JobError when it has no labels."""
    from distgan.data import EMBEDDED_DIR, read_manifest
    from distgan.data.imbalance import ClassPrior

    source = str(EMBEDDED_DIR) if spec.data.source == "embedded" else spec.data.source
    if trained_on is None:
        try:
            trained_on = read_manifest(source)
        except DataError as e:
            raise DataError(f"--metrics {','.join(names)}: the training data: {e}") from None
    if not trained_on.label_counts:
        raise JobError(
            f"--metrics {','.join(names)}: the training data at {display(source)} has no labels, "
            "so there are no classes to measure; drop the per-class metrics"
        )
    return ClassPrior.of(trained_on.label_counts, spec.train.class_balance)
