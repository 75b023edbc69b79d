"""``distgan explore RUN_DIR|CHECKPOINT [--out DIR] [--pairs 6] [--k 5] [--steps 9] [--seed 0]``.

Pictures of what a trained generator has learnt, with ``index.json`` saying what each shows and
its parameters: slerp interpolations between latent pairs, SeFa's closed-form directions (the
top eigenvectors of WᵀW for G's first latent-to-feature weight W), for a conditional G the same
latents drawn as every class, and the nearest training images of generated samples in the
feature space of the run's evaluation, with a memorisation check against the real test split.
Written into the run's storage under ``explore/`` (a folder or a URI), or into ``--out``.
"""

from __future__ import annotations

import argparse
import json

from distgan.errors import DataError, JobError

FORMAT = "distgan-explore/1"


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "explore",
        help="pictures of a trained generator: interpolations, directions, neighbours",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", help="a run directory or checkpoint folder (a path or a URI)")
    p.add_argument("--out", help="folder or URI for the pictures (default: <run>/explore)")
    p.add_argument("--pairs", type=int, default=6, help="latent pairs interpolated (default 6)")
    p.add_argument("--k", type=int, default=5, help="SeFa directions drawn (default 5)")
    p.add_argument("--steps", type=int, default=9, help="columns of each path (default 9)")
    p.add_argument("--seed", type=int, default=0, help="latent and real-subset seed (default 0)")
    p.add_argument("--n", type=int, default=1000, help="samples searched for neighbours")
    p.add_argument("--n-train", type=int, default=10000, help="training images searched")
    p.add_argument("--n-test", type=int, default=1000, help="real test images (memorisation)")
    p.add_argument("--real-test", help="the real test split (default: as distgan eval's cas)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from distgan.config import RESOLVED_JOB
    from distgan.generators import load_generator
    from distgan.storage import display, join, open_location

    for flag, value, least in (
        ("--pairs", args.pairs, 1), ("--k", args.k, 1), ("--steps", args.steps, 2),
        ("--n", args.n, 1), ("--n-train", args.n_train, 1), ("--n-test", args.n_test, 2),
    ):  # fmt: skip
        if value < least:
            raise JobError(f"{flag}: expected at least {least}, got {value}")
    G, spec, folder, ckpt = load_generator(args.source)
    z_dim = spec.model.z_dim
    if args.k > z_dim:
        raise JobError(
            f"--k {args.k}: {display(str(folder))} has a {z_dim}-dimensional latent, so at most "
            f"{z_dim} directions; pass --k {z_dim} or less"
        )
    if args.out:
        out = open_location(args.out, field="--out")
    else:  # beside the run's other files (a run directory given), else in the checkpoint
        given = open_location(args.source, field="RUN")
        out = open_location(
            join(given.uri if given.is_file(RESOLVED_JOB) else str(folder), "explore"), "RUN"
        )
    data = _datasets(spec, folder, args.real_test)
    pictures, index = _explore(G, spec, data, args)
    index = {"format": FORMAT, "checkpoint": display(str(folder)), "step": int(ckpt["step"]),
             **index}  # fmt: skip
    for picture in pictures:
        out.write_bytes(picture.file, picture.png)
    out.write_text("index.json", json.dumps(index, indent=2) + "\n")
    print(f"{display(str(folder))} (step {ckpt['step']}): {len(pictures)} pictures")
    for picture in pictures:
        print(f"  {picture.file:<18}{picture.shows}")
    check = index["neighbours"]["memorisation"]
    if "skipped" in check:
        print(f"memorisation check skipped: {check['skipped']}")
    else:
        print(
            f"memorised: {check['memorised_share']:.1%} of {check['generated']} samples are "
            f"closer to a training image than {check['percentile']:g}% of real test images are "
            f"(about {check['expected_share']:.0%} if none is copied)"
        )
    print(f"written: {out}")
    return 0


def _datasets(spec, folder, real_test: str | None) -> dict:
    """The training data, its feature network and the real test split (None when none is found
    and none was asked for), checked before anything is drawn."""
    from distgan.data import data_location, read_manifest
    from distgan.metrics.classify import real_test_dir
    from distgan.storage import display, join
    from distgan.train.checkpoint import STATE_FILE
    from distgan.train.evaluation import check_evaluation

    source = data_location(spec.data.source)
    try:
        train = read_manifest(source)
    except DataError as e:
        raise DataError(f"data.source: {e}") from None
    _, extractor = check_evaluation(spec, train, display(join(str(folder), STATE_FILE)))
    test = None
    try:
        test_dir = real_test_dir(spec, real_test)
    except DataError:
        test_dir = None  # the check is skipped, and index.json says why
    if test_dir is not None:
        try:
            test = read_manifest(test_dir)
        except DataError as e:
            raise DataError(f"--real-test: {e}") from None
        if test.shape != train.shape:
            raise DataError(
                f"--real-test {display(test_dir)}: its images are {test.shape}, the training "
                f"data's {train.shape}; pass the test split of the run's dataset"
            )
    return {"train": train, "test": test, "extractor": extractor}


def _explore(G, spec, data: dict, args) -> tuple[list, dict]:
    """Every picture, and the index entries beside them."""
    from distgan.data import class_name
    from distgan.explore.neighbours import neighbour_pictures
    from distgan.explore.pictures import class_sweep, interpolations, sefa
    from distgan.images import to_uint8
    from distgan.metrics.evaluate import real_reference, real_subset
    from distgan.models import generate

    z_dim = spec.model.z_dim
    pictures = [interpolations(G, z_dim, args.pairs, args.steps, args.seed)]
    traversals, sefa_summary = sefa(G, z_dim, args.k, args.steps, args.seed)
    pictures += traversals
    if G.num_classes:
        names = [class_name(data["train"], k) for k in range(G.num_classes)]
        pictures.append(class_sweep(G, z_dim, args.seed, names))

    extractor, train, test = data["extractor"], data["train"], data["test"]
    fakes = generate(G, z_dim, args.n, args.seed)  # (n, C, H, W) in [-1, 1]
    fake_features = extractor.extract(fakes, desc="generated images")[0].numpy()
    reference = real_reference(train, extractor, args.n_train, args.seed)
    train_images = to_uint8(real_subset(train, args.n_train, args.seed))  # the same subset
    test_features = None
    if test is not None:
        test_images = real_subset(test, args.n_test, args.seed)
        test_features = extractor.extract(test_images, desc="test images")[0].numpy()
    found, summary = neighbour_pictures(
        to_uint8(fakes), fake_features, train_images, reference.features.features, test_features
    )
    pictures += found
    summary |= {
        "features": extractor.name,
        "features_sha256": extractor.sha256,
        "training_data": train.source,
        "test_data": None if test is None else test.source,
        "seed": args.seed,
    }
    index = {
        "seed": args.seed,
        "pictures": [p.entry() for p in pictures],
        "sefa": sefa_summary,
        "neighbours": summary,
    }
    return pictures, index
