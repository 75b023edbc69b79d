"""Fashion-MNIST-LT: what conditioning and class balance do for the rare classes, as a
BENCHMARKS.md table.

    .venv/bin/python benchmarks/longtail.py --steps 5000               # the maintainers' run
    .venv/bin/python benchmarks/longtail.py --steps 20 --limit 3000 --n 200 --n-real 500  # smoke

The training set (60,000 images, ``../shared/datasets/fashion-mnist/`` or Debian's
``/usr/share/datasets/fashion-mnist``) is cut to its long tail at ``--ratio`` (100: class k keeps
6000 · 100^(-k/9) images, 6,000 T-shirts down to 60 ankle boots; ``data/imbalance.py``), and
three GANs of one architecture are trained on it with distgan's own step (``step.train_step``,
``data.reader.InMemoryBatches``, EMA), in this process, without Ray:

- (a) unconditional, real batches as the data has them;
- (b) conditional (``model.conditional``), fake labels drawn from the data's class frequencies;
- (c) conditional + ``train.class_balance: balanced``: real batches and fake labels each class
  equally often.

Every row is scored with one protocol, in the shipped Fashion-MNIST feature network, against
the balanced Fashion-MNIST test set (``--n-real`` images, 1,000 a class for all 10,000): the
rare classes are the third (rounded up: 4) with the fewest training images. ``rare FID`` is
``intra_fid_rare`` (a conditional G draws every class in turn, ``--n`` in all; an unconditional
G's samples are grouped by the feature network's classifier), ``rare recall`` is
``rare_recall``, and ``rare share`` is the share of samples the classifier puts in the rare
classes when each G is sampled as trained (a conditional G with labels from its training prior);
``target`` is that prior's rare share and ``class KL`` the KL of the classified histogram to
what was asked (``class_kl``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import inprocess
import numpy as np
import torch

from distgan.config import from_dict
from distgan.data import read_idx
from distgan.data.imbalance import ClassPrior, long_tail_rows
from distgan.metrics import FeatureSet, compute_metrics
from distgan.metrics.features import load_feature_extractor
from distgan.models import generate

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (
    ROOT.parent / "shared" / "datasets" / "fashion-mnist",
    Path("/usr/share/datasets/fashion-mnist"),
)
ROWS = (  # name, model.conditional, train.class_balance
    ("(a) unconditional", False, "none"),
    ("(b) conditional", True, "none"),
    ("(c) conditional + balanced", True, "balanced"),
)
METRICS = ["fid", "intra_fid", "rare_recall", "class_kl"]


def fashion_folder() -> Path:
    for folder in FOLDERS:
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    raise SystemExit(f"no Fashion-MNIST IDX files in {' or '.join(map(str, FOLDERS))}")


def train(spec, images, labels, counts: dict[int, int], device: torch.device) -> torch.nn.Module:
    """Trains the job's G and D on ``images`` (N, 1, 28, 28) uint8 with ``labels`` (N,) for
    ``train.steps`` G steps, as a one-worker run of ``distgan train`` would; returns G_ema."""
    prior = ClassPrior.of(counts, spec.train.class_balance).prior
    G, _ = inprocess.train(
        spec, torch.from_numpy(images), torch.from_numpy(labels), steps=spec.train.steps,
        device=device, prior=prior,
    )  # fmt: skip
    return G


def score(G, spec, extractor, real: FeatureSet, n: int, seed: int, device) -> dict:
    """The row's figures: the per-class metrics on every class in turn (conditional) or on G's
    own draw (unconditional), and the rare share of samples drawn as G was trained."""
    z_dim = spec.model.z_dim
    classes = real.classes
    given = torch.arange(n) % len(classes.counts) if G.num_classes else None
    f, p = extractor.extract(generate(G, z_dim, n, seed, device=device, labels=given))
    fake = FeatureSet(f.numpy(), p.numpy(), labels=None if given is None else given.numpy())
    figures = compute_metrics(["fid", "intra_fid", "rare_recall"], real, fake)
    # Sampled as trained: an unconditional G as it is, a conditional one from its prior.
    as_trained = None
    if G.num_classes:
        g = torch.Generator().manual_seed(seed + 1)
        prior = torch.as_tensor(classes.prior)
        as_trained = torch.multinomial(prior, n, replacement=True, generator=g)
        f, p = extractor.extract(generate(G, z_dim, n, seed + 1, device=device, labels=as_trained))
        fake = FeatureSet(f.numpy(), p.numpy(), labels=as_trained.numpy())
    figures.update(compute_metrics(["class_kl"], real, fake))
    figures["target_share"] = float(classes.prior[list(classes.rare)].sum())
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5000, help="G steps a model (default 5000)")
    ap.add_argument("--ratio", type=float, default=100.0, help="imbalance ratio (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="long-tail, weights and latents seed")
    ap.add_argument("--arch", default="dcgan", choices=["dcgan", "resnet"])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=10000, help="generated samples a row")
    ap.add_argument("--n-real", type=int, default=10000, help="test images in the reference")
    ap.add_argument("--limit", type=int, help="smoke runs: the first N training images only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    folder = fashion_folder()
    images, labels = read_idx(
        folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz", args.limit
    )
    keep = long_tail_rows(labels, args.ratio, args.seed)
    images, labels = images[keep], labels[keep]
    counts = dict(enumerate(np.bincount(labels, minlength=10).tolist()))
    test_x, test_y = read_idx(
        folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz", args.n_real
    )
    extractor = load_feature_extractor("fashion-mnist", device=args.device)
    f, p = extractor.extract(torch.from_numpy(test_x).float().div_(127.5).sub_(1))
    print(
        f"Fashion-MNIST-LT ×{args.ratio:g} (seed {args.seed}): {len(labels):,} images, "
        f"{', '.join(map(str, counts.values()))} a class · reference {len(test_y):,} test images "
        f"· {args.arch} width {args.width}, batch {args.batch}, {args.steps} steps · {device}"
    )
    rows = []
    for name, conditional, balance in ROWS:
        spec = from_dict({
            "model": {"arch": args.arch, "width": args.width, "conditional": conditional},
            "train": {"steps": args.steps, "batch_size": args.batch, "class_balance": balance,
                      "seed": args.seed},
            "scale": {"workers": 1},
        })  # fmt: skip
        start = time.perf_counter()
        G = train(spec, images, labels, counts, device)
        seconds = time.perf_counter() - start
        real = FeatureSet(
            f.numpy(), p.numpy(), labels=test_y, classes=ClassPrior.of(counts, balance)
        )
        figures = score(G, spec, extractor, real, args.n, args.seed, device)
        rows.append((name, figures, seconds))
        print(f"{name}: {figures} ({seconds:.0f} s)", flush=True)

    rare = ", ".join(str(c) for c in real.classes.rare)
    print(f"\nrare classes: {rare} (the 4 with the fewest training images)\n")
    print(
        "| model | FID | intra-FID | rare FID | rare recall | rare share | target | class KL "
        "| train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m, seconds in rows:
        print(
            f"| {name} | {m['fid']:.1f} | {m['intra_fid']:.1f} | {m['intra_fid_rare']:.1f} | "
            f"{m['rare_recall']:.3f} | {m['class_kl_rare_share']:.1%} | {m['target_share']:.1%} "
            f"| {m['class_kl']:.3f} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
