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
``classifier_score`` come from the same classifier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distgan.data import EMBEDDED_DIR, read_idx, read_manifest
from distgan.generate import load_generator
from distgan.metrics import FeatureSet, compute_metrics
from distgan.metrics.evaluate import fake_features, real_reference
from distgan.metrics.features import load_feature_extractor

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
METRICS = ["fid", "kid", "precision", "recall", "classifier_score", "class_coverage"]


def _features(extractor, images: torch.Tensor) -> FeatureSet:
    f, p = extractor.extract(images)
    return FeatureSet(f.numpy(), p.numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", help="run directories or checkpoint folders")
    ap.add_argument("--n", type=int, default=5000, help="real and generated images a row")
    ap.add_argument("--real", default=str(EMBEDDED_DIR), help="reference dataset folder")
    ap.add_argument("--test", default=str(FASHION), help="folder of the t10k IDX files")
    args = ap.parse_args()

    extractor = load_feature_extractor("fashion-mnist")
    reference = real_reference(read_manifest(args.real), extractor, args.n, seed=0).features
    test_x, test_y = read_idx(
        Path(args.test) / "t10k-images-idx3-ubyte.gz", Path(args.test) / "t10k-labels-idx1-ubyte.gz"
    )
    test = torch.from_numpy(test_x).float().div_(127.5).sub_(1)  # (10000, 1, 28, 28)
    one_class = test[torch.from_numpy(test_y == 0)]
    noise = torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1

    rows = [
        ("floor: real test images", _features(extractor, test[: args.n])),
        ("ceiling: one class only (real T-shirts)", _features(extractor, one_class)),
        ("ceiling: uniform noise", _features(extractor, noise)),
    ]
    for run in args.runs:
        G, spec, folder, ckpt = load_generator(run)
        fake = fake_features(G, spec.model.z_dim, extractor, args.n, seed=0)
        rows.append((f"{Path(run).name} (step {ckpt['step']})", fake))

    source = read_manifest(args.real).source
    print(f"features: shipped fashion-mnist ({extractor.sha256[:12]}); real: {args.n:,} of")
    print(f"{source}; {args.n:,} samples a row (one class: {len(one_class):,})")
    print()
    print("| images | FID ↓ | KID ↓ | precision ↑ | recall ↑ | class. score ↑ | classes ↑ |")
    print("|---|---|---|---|---|---|---|")
    for name, fake in rows:
        m = compute_metrics(METRICS, reference, fake)
        print(
            f"| {name} | {m['fid']:.2f} | {m['kid']:.4f} ± {m['kid_std']:.4f} | "
            f"{m['precision']:.3f} | {m['recall']:.3f} | {m['classifier_score']:.2f} | "
            f"{m['class_coverage'] * 10:.0f}/10 |",
            flush=True,
        )


if __name__ == "__main__":
    main()
