"""``distgan eval RUN_DIR|CHECKPOINT [--metrics fid,kid,precision,recall] [--n 10000]``,
``distgan eval RUN --metrics cas,gan_train,gan_test [--real-test DATASET]`` (a conditional run)
and ``distgan eval fit-features DATASET [--test DATASET] [--epochs N] [--out FILE]``.

The first scores a run's latest checkpoint (or the given one) against real images in the project's
feature space: a table on screen and ``eval.json`` with the protocol beside each figure, so two
figures are only compared when comparable. A conditional run's figures include ``asked_class``
(how often the network names the class G was asked for); on Fashion-MNIST-shaped data, FID and
asked_class are measured again by a second network trained apart from the first
(``<metric>@fashion-mnist-b``, ``metrics/judges.py``). Classification metrics
(``metrics/classify.py``) train small classifiers on G's labelled samples and on real images
instead. The second trains the feature network of a labelled dataset (a small CNN classifier,
or with ``--arch strided-cnn`` the second judge's architecture) and stores it beside it.
"""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument(
        "--seed", type=int, default=0, help="latent and real-subset seed (fit-features: training)"
    )
    p.add_argument(
        "--features", default="auto", help="auto, fashion-mnist, fashion-mnist-b, or a .pt file"
    )
    p.add_argument("--real", help="real dataset folder (default: the run's training data)")
    p.add_argument("--test", help="with fit-features: a labelled test dataset")
    p.add_argument("--epochs", type=int, default=6, help="with fit-features (default 6)")
    p.add_argument(
        "--arch",
        default="featurenet",
        help="with fit-features: featurenet (default) or strided-cnn (the second judge's)",
    )
    p.add_argument("--out", help="eval.json path, or with fit-features the weights file")
    p.add_argument("--real-test", help="cas, gan_train, gan_test: the labelled real test split")
    p.add_argument(
        "--classify-n",
        type=int,
        default=3000,
        help="cas, gan_train, gan_test: training images per classifier (default 3000)",
    )
    p.add_argument(
        "--classify-epochs", type=int, default=3, help="cas, gan_train, gan_test (default 3)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.source == "fit-features":
        return _fit_features(args)
    if args.dataset:
        raise JobError(f"distgan eval: unexpected argument {args.dataset!r} after {args.source}")
    return _evaluate(args)


def _fit_features(args: argparse.Namespace) -> int:
    from distgan.metrics.features import ARCHITECTURES
    from distgan.metrics.fitting import fit_features

    if not args.dataset:
        raise JobError("distgan eval fit-features: name the labelled dataset folder to train on")
    if args.epochs < 1:
        raise JobError(f"--epochs: expected a positive number, got {args.epochs}")
    if args.arch not in ARCHITECTURES:
        raise JobError(f"--arch: expected one of {', '.join(ARCHITECTURES)}, got {args.arch!r}")
    fit_features(
        args.dataset, test_dir=args.test, out=args.out, epochs=args.epochs, seed=args.seed,
        arch=args.arch,
    )  # fmt: skip
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from distgan.generators import load_generator
    from distgan.metrics import get_metric
    from distgan.metrics.classify import (
        CLASSIFICATION_METRICS,
        classification_scores,
        plan_classification,
    )
    from distgan.metrics.evaluate import per_class_lines, write_eval_json

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    by_classifier = [n for n in names if n in CLASSIFICATION_METRICS]
    for name in (n for n in names if n not in CLASSIFICATION_METRICS):
        try:
            get_metric(name)
        except ValueError as e:
            raise JobError(f"--metrics: {e}") from None
    for flag, value in (("--n", args.n), ("--n-real", args.n_real)):
        if value < 2:
            raise JobError(f"{flag}: expected at least 2 samples, got {value}")
    if by_classifier and (args.classify_n < 2 or args.classify_epochs < 1):
        raise JobError("--classify-n, --classify-epochs: expected at least 2 images and 1 epoch")
    G, spec, folder, ckpt = load_generator(args.source)
    plan = None
    if by_classifier:  # every check before any work
        plan = plan_classification(
            G, spec, folder, args.real_test, args.classify_n, args.classify_epochs, args.seed,
            metric=by_classifier[0],
        )  # fmt: skip
    if len(by_classifier) == len(names):
        figures, proto, fake, manifest, own_protocols, class_note = {}, {}, None, None, {}, ""
    else:
        figures, proto, fake, manifest, own_protocols, class_note = _feature_figures(
            args, G, spec, names, by_classifier
        )
    if plan is not None:
        scores, classify_proto = classification_scores(plan, by_classifier, log=_stderr)
        figures |= scores
        own_protocols |= dict.fromkeys(scores, classify_proto)

    if args.out:
        out = args.out
    else:  # beside the run's other files (a run directory given), else in the checkpoint
        given = open_location(args.source, field="RUN")
        out = join(given.uri if given.is_file(RESOLVED_JOB) else str(folder), "eval.json")
    step = int(ckpt["step"])
    written = write_eval_json(out, str(folder), step, figures, proto, own_protocols)
    print(f"{display(str(folder))} (step {ckpt['step']})")
    width = max([18, *(len(k) + 2 for k in figures)])  # the second judge's names are long
    print(f"{'metric':<{width}}{'value':>12}")
    for k, v in figures.items():
        print(f"{k:<{width}}{v:>12.4f}")
    if "class_coverage" in figures:  # which classes: the share of samples in each
        print("class_coverage by class (share of samples):")
        print("\n".join(per_class_lines(fake, manifest)))
    if class_note:
        print(class_note)
    if proto:
        print(
            f"features {proto['features']} ({proto['features_sha256'][:12]}, "
            f"{_accuracy_text(proto['features_accuracy'])}) · real {proto['real']}: "
            f"{proto['real_count']:,} images · fake {proto['fake_count']:,} · seed {proto['seed']}"
        )
    judged = [k for k in figures if "@" in k]  # <metric>@<network>: the second judge's
    if judged:
        p = own_protocols[judged[0]]
        print(
            f"second judge {p['features']} ({p['features_sha256'][:12]}, "
            f"{_accuracy_text(p['features_accuracy'])}): {', '.join(judged)}, on the same real "
            "images and samples"
        )
    if plan is not None:
        print(
            f"classifiers: {plan.epochs} epochs on {plan.count:,} images each · real test "
            f"{plan.test.source}: {plan.test.count:,} images · seed {plan.seed}; "
            "<metric>_real: trained on real images"
        )
    print(f"written: {written}")
    return 0


def _accuracy_text(recorded: dict | None) -> str:
    """The feature network's test accuracy as the figures in its features should be read."""
    from distgan.metrics.fitting import near_chance

    if recorded is None:
        return "test accuracy not recorded"
    accuracy, k = recorded["accuracy"], recorded["num_classes"]
    text = f"test accuracy {accuracy:.4f} over {k} classes"
    if near_chance(accuracy, k):
        text += (
            f", near chance ({1 / k:.4f}): these figures say little; refit it "
            "(distgan eval fit-features --epochs N)"
        )
    return text


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _feature_figures(args, G, spec, names: list[str], by_classifier: list[str]):
    """The metrics of ``names`` not in ``by_classifier``, computed in the feature space:
    (figures, protocol, fake features, real manifest, the per-class figures' own protocols,
    a line describing their classes)."""
    from distgan.data import data_location, read_manifest
    from distgan.metrics import compute_metrics, get_metric
    from distgan.metrics.evaluate import (
        embed,
        fake_images,
        figure_protocols,
        protocol,
        real_reference,
    )
    from distgan.metrics.features import load_feature_extractor
    from distgan.metrics.judges import ASKED_CLASS, asked_class, second_judge, second_judge_figures

    real_dir = args.real or data_location(spec.data.source)
    try:
        manifest = read_manifest(real_dir)
    except DataError as e:
        raise DataError(f"--real: {e}") from None
    asked = [n for n in names if n not in by_classifier]
    per_class = [n for n in asked if PER_CLASS_INPUT in get_metric(n).uses]
    trained_on = None if args.real else manifest  # the training data's manifest, when the same
    classes = _training_classes(spec, trained_on, per_class) if per_class else None
    extractor = load_feature_extractor(args.features, real_dir)
    second = second_judge(manifest, extractor)
    reference = real_reference(manifest, extractor, args.n_real, args.seed, classes)
    images, given = fake_images(G, spec.model.z_dim, args.n, args.seed)
    fake = embed(extractor, images, given)
    try:
        figures = compute_metrics(asked, reference.features, fake)
    except ValueError as e:  # a metric the feature network cannot serve (no class probabilities)
        raise JobError(f"--metrics: {e}; pick other metrics or --features") from None
    proto = protocol(reference, extractor, args.n, args.seed)
    own: dict[str, dict] = {}  # figures with a protocol of their own
    num_classes = int(getattr(G, "num_classes", 0))  # 0: an unconditional G
    share = asked_class(fake, num_classes)  # how often G draws the class asked for
    if share is not None:
        figures["asked_class"] = share
        own["asked_class"] = {**proto, "asked_class": ASKED_CLASS}
    if second is not None:  # the same figures by a network trained apart (metrics/judges.py)
        judged, protocols = second_judge_figures(
            manifest, second, images, given, num_classes, asked, args.n_real, args.seed
        )
        figures |= judged
        own |= protocols
    note = ""
    if per_class:
        from distgan.metrics.classes import class_protocol

        c = class_protocol(reference.features, fake)
        own |= figure_protocols(figures, per_class, proto, c)
        note = (
            f"classes: rare {', '.join(map(str, c['rare_classes']))} ({c['rare_rule']}); "
            f"prior {c['class_balance']}; generated classed by {c['fake_classes']}; samples a "
            f"class real {c['real_per_class']}, generated {c['fake_per_class']}"
        )
    return figures, proto, fake, manifest, own, note


def _training_classes(spec, trained_on, names: list[str]):
    """The class counts, prior (train.class_balance) and rare classes of the run's training
    data (``trained_on``: its manifest, or None to read it), for the per-class metrics
    ``names``; JobError when it has no labels."""
    from distgan.data import data_location, read_manifest
    from distgan.data.imbalance import ClassPrior

    source = data_location(spec.data.source)
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
