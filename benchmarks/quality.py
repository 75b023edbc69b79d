"""Quality of trained runs beside the floor and ceilings of the metrics, as a BENCHMARKS.md table.

    .venv/bin/python benchmarks/quality.py runs/00001-quickstart runs/00002-fashion_dcgan
    .venv/bin/python benchmarks/quality.py --n 10000 --real data/fashion-mnist RUN ...

Every row is scored with one protocol: the shipped Fashion-MNIST feature network, the same
real reference (``--n`` images of ``--real``, default the embedded 10,000, seed 0), and ``--n``
samples of each generator (its latest checkpoint's EMA weights, seed 0). The reference rows:

- floor: real images that are not in the reference (the Fashion-MNIST test set): what a perfect
  generator would score with this many samples;
- one class only: real test images of a single class (T-shirt/top): perfect images, no variety;
- noise: uniform noise images: neither.

A generator should sit between the floor and the ceilings; ``class_coverage`` and
``classifier_score`` come from the same classifier. A class-conditional generator draws every
class in turn, and ``asked class`` is how often the classifier agrees with the class asked for
(what ``distgan sample RUN --class K`` should give).

``--independent`` adds a second opinion from a classifier that shares nothing with the shipped
feature network but the data: a pixel-space MLP (784 → 512 → 256 → 10), trained here on all
60,000 training images for a few epochs with its own seed. For every row it reports its own
FID (in its 256-d hidden layer), classifier score, classes covered, the share of samples it
classifies with p ≥ 0.9 and the classes covered among those (recognisable images), and at
the end the Kendall rank correlation of distgan's FID with each: the rankings agree when τ is
near 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distgan.data import EMBEDDED_DIR, read_idx, read_manifest
from distgan.generators import load_generator
from distgan.metrics import FeatureSet, compute_metrics
from distgan.metrics.evaluate import real_reference, real_subset
from distgan.metrics.features import load_feature_extractor
from distgan.metrics.stats import class_coverage
from distgan.models import generate

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
METRICS = ["fid", "kid", "precision", "recall", "classifier_score", "class_coverage"]


def _features(extractor, images: torch.Tensor) -> FeatureSet:
    f, p = extractor.extract(images)
    return FeatureSet(f.numpy(), p.numpy())


class PixelMLP(torch.nn.Module):
    """The independent classifier: no convolutions, no shared weights, no shared code."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Dropout(0.2),
            torch.nn.Linear(512, 256), torch.nn.ReLU(),
        )  # fmt: skip
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.head(h)


def fit_independent(folder: Path, test: tuple[torch.Tensor, torch.Tensor], epochs: int):
    """Trains PixelMLP on the 60,000 training IDX images; returns it and its test accuracy."""
    x, y = read_idx(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    x, y = torch.from_numpy(x).float().div_(127.5).sub_(1), torch.from_numpy(y).long()
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    net = PixelMLP()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            loss = torch.nn.functional.cross_entropy(net(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(test[0])[1].argmax(1) == test[1]).float().mean().item()
    return net, accuracy


@torch.no_grad()
def _independent(net: PixelMLP, images: torch.Tensor) -> FeatureSet:
    h, logits = net(images)
    return FeatureSet(h.numpy().astype(np.float64), logits.softmax(1).numpy())


def _agreement(fake: FeatureSet, given: torch.Tensor | None) -> str:
    """How often the classifier's class is the one asked for ('' for an unconditional row)."""
    if given is None:
        return ""
    return f"{float((torch.from_numpy(fake.probs).argmax(1) == given).float().mean()):.1%}"


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-a of two rankings (1: the same order, -1: reversed)."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    signs = [np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs]
    return float(np.mean(signs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", help="run directories or checkpoint folders")
    ap.add_argument("--n", type=int, default=5000, help="real and generated images a row")
    ap.add_argument("--real", default=str(EMBEDDED_DIR), help="reference dataset folder")
    ap.add_argument("--test", default=str(FASHION), help="folder of the Fashion-MNIST IDX files")
    ap.add_argument(
        "--independent", type=int, default=0, metavar="EPOCHS",
        help="also score every row with an independent pixel-MLP trained this many epochs",
    )  # fmt: skip
    args = ap.parse_args()

    extractor = load_feature_extractor("fashion-mnist")
    manifest = read_manifest(args.real)
    reference = real_reference(manifest, extractor, args.n, seed=0).features
    test_x, test_y = read_idx(
        Path(args.test) / "t10k-images-idx3-ubyte.gz", Path(args.test) / "t10k-labels-idx1-ubyte.gz"
    )
    test = torch.from_numpy(test_x).float().div_(127.5).sub_(1)  # (10000, 1, 28, 28)
    one_class = test[torch.from_numpy(test_y == 0)]
    noise = torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1

    rows = [
        ("floor: real test images", test[: args.n]),
        ("ceiling: one class only (real T-shirts)", one_class),
        ("ceiling: uniform noise", noise),
    ]
    asked = [None] * len(rows)  # the classes a conditional G was asked for
    for run in args.runs:
        G, spec, folder, ckpt = load_generator(run)
        given = torch.arange(args.n) % G.num_classes if G.num_classes else None
        fake = generate(G, spec.model.z_dim, args.n, seed=0, labels=given)
        rows.append((f"{Path(run).name} (step {ckpt['step']})", fake))
        asked.append(given)

    print(f"features: shipped fashion-mnist ({extractor.sha256[:12]}); real: {args.n:,} of")
    print(f"{manifest.source}; {args.n:,} samples a row (one class: {len(one_class):,})")
    print()
    print("| images | FID ↓ | KID ↓ | precision ↑ | recall ↑ | class. score ↑ | classes ↑ "
          "| asked class ↑ |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    fids = []
    for (name, images), given in zip(rows, asked):
        fake = _features(extractor, images)
        m = compute_metrics(METRICS, reference, fake)
        fids.append(m["fid"])
        print(
            f"| {name} | {m['fid']:.2f} | {m['kid']:.4f} ± {m['kid_std']:.4f} | "
            f"{m['precision']:.3f} | {m['recall']:.3f} | {m['classifier_score']:.2f} | "
            f"{m['class_coverage'] * 10:.0f}/10 | {_agreement(fake, given)} |",
            flush=True,
        )
    if not args.independent:
        return

    net, accuracy = fit_independent(Path(args.test), (test, torch.from_numpy(test_y).long()),
                                    args.independent)  # fmt: skip
    ind_reference = _independent(net, real_subset(manifest, args.n, seed=0))  # distgan's subset
    print()
    print(f"independent: pixel MLP, {args.independent} epochs on 60,000 training images, "
          f"t10k accuracy {accuracy:.3f}")  # fmt: skip
    print()
    print(
        "| images | distgan FID | independent FID ↓ | independent class. score ↑ | classes ↑ "
        "| confident (p ≥ 0.9) | classes among the confident ↑ | asked class ↑ |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ind_fids, ind_scores = [], []
    for (name, images), fid, given in zip(rows, fids, asked):
        fake = _independent(net, images)
        m = compute_metrics(["fid", "classifier_score", "class_coverage"], ind_reference, fake)
        ind_fids.append(m["fid"])
        ind_scores.append(m["classifier_score"])
        probs = fake.probs
        confident = probs[probs.max(1) >= 0.9]
        covered = class_coverage(confident, 10) * 10 if len(confident) else 0
        print(
            f"| {name} | {fid:.2f} | {m['fid']:.2f} | {m['classifier_score']:.2f} | "
            f"{m['class_coverage'] * 10:.0f}/10 | {len(confident) / len(probs):.2f} | "
            f"{covered:.0f}/10 | {_agreement(fake, given)} |",
            flush=True,
        )
    print()
    print(f"Kendall τ of distgan FID with independent FID: {kendall_tau(fids, ind_fids):.2f}; "
          f"with independent classifier score (reversed): "
          f"{kendall_tau(fids, [-s for s in ind_scores]):.2f} (all rows)")  # fmt: skip
    if len(args.runs) >= 2:  # the generators alone, without the reference rows
        g = slice(3, None)
        print(f"Over the {len(args.runs)} generators alone: "
              f"{kendall_tau(fids[g], ind_fids[g]):.2f} and "
              f"{kendall_tau(fids[g], [-s for s in ind_scores[g]]):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
