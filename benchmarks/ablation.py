"""Ablation of the model and training options on Fashion-MNIST, as a BENCHMARKS.md table: what
each option changes in FID, and what it costs in images/s.

    .venv/bin/python benchmarks/ablation.py --minutes 2                 # the maintainers' run
    .venv/bin/python benchmarks/ablation.py --steps 1500 --only base,sn_off
    .venv/bin/python benchmarks/ablation.py --minutes 1 --variant lr=optim.lr_d=4e-4,optim.lr_g=1e-4
    .venv/bin/python benchmarks/ablation.py --steps 20 --n 200 --limit 2000   # a smoke run

The base is a job file (``--job``, default the recommended ``jobs/fashion_dcgan.yaml``); each
row changes one option of it (``VARIANTS``; ``--variant NAME=FIELD=VALUE,...`` adds rows). Every
row trains in this process with distgan's own parts (``inprocess.py``: the worker's nets and
step, in-memory batches, EMA; no Ray) on the 60,000 Fashion-MNIST training images, for the same
``--minutes`` of wall time (or the same ``--steps``), and is scored in the shipped feature network
against the 10,000 test images with ``--n`` samples (seed 0; a conditional G draws every class in
turn, and ``asked class`` is how often the shipped classifier agrees with the class asked
for). ``images/s`` is the row's own training speed on this machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from inprocess import train
from longtail import fashion_folder

from distgan.config import parse_job
from distgan.data import read_idx
from distgan.metrics import FeatureSet, compute_metrics
from distgan.metrics.features import load_feature_extractor
from distgan.models import generate

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["fid", "precision", "recall", "classifier_score", "class_coverage"]
# name -> overrides of the base job (each row changes one thing, whatever the base says of it)
VARIANTS = {
    "base": [],
    "resnet": ["model.arch=resnet"],
    "sn_off": ["model.spectral_norm=false"],
    "sn_on": ["model.spectral_norm=true"],
    "r1": ["loss.r1_gamma=1.0"],
    "diffaugment": ["train.diffaugment=color,translation,cutout"],
    "pack2": ["model.pack=2"],
    "mbstd": ["model.mbstd_group=4"],
    "ema_fixed": ["train.ema_kimg=0", "train.ema_decay=0.999"],
    "ema_off": ["train.ema=false"],
    "conditional": ["model.conditional=true"],
    "acgan": ["model.conditional=true", "loss.ac_weight=0.1"],
    "ac_off": ["loss.ac_weight=0"],  # on a base with AC-GAN (jobs/fashion_conditional.yaml)
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job", default="jobs/fashion_dcgan.yaml", help="the base job")
    ap.add_argument("--minutes", type=float, default=0.0, help="wall time a row")
    ap.add_argument("--steps", type=int, default=0, help="G steps a row (instead of --minutes)")
    ap.add_argument("--only", help="comma-separated variant names")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FIELD=VALUE,...")
    ap.add_argument("--n", type=int, default=5000, help="samples a row")
    ap.add_argument("--limit", type=int, help="smoke runs: the first N training images only")
    args = ap.parse_args()
    if not (args.minutes or args.steps):
        ap.error("give --minutes or --steps")
    variants = dict(VARIANTS)
    for item in args.variant:
        name, _, sets = item.partition("=")
        variants[name] = [s for s in sets.split(",") if s]
    names = args.only.split(",") if args.only else list(variants)

    torch.set_num_threads(torch.get_num_threads())
    folder = fashion_folder()
    images, labels = read_idx(
        folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz", args.limit
    )
    test_x, _ = read_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    extractor = load_feature_extractor("fashion-mnist")
    f, p = extractor.extract(torch.from_numpy(test_x).float().div_(127.5).sub_(1))
    reference = FeatureSet(f.numpy(), p.numpy())
    job = (ROOT / args.job).read_bytes()
    budget = f"{args.minutes:g} min" if args.minutes else f"{args.steps:,} steps"
    print(f"base {args.job}, {budget} a row, {len(images):,} training images, {args.n:,} samples")

    rows = []
    for name in names:
        spec = parse_job(job, args.job, ["scale.workers=1", *variants[name]])
        G, info = train(spec, images, labels.astype("int64"), args.steps, args.minutes * 60)
        given = torch.arange(args.n) % 10 if spec.model.conditional else None
        f, p = extractor.extract(generate(G, spec.model.z_dim, args.n, seed=0, labels=given))
        m = compute_metrics(METRICS, reference, FeatureSet(f.numpy(), p.numpy()))
        if given is not None:  # how often the shipped classifier sees the class G was asked for
            m["asked_class"] = float((p.argmax(1) == given).float().mean())
        rows.append((name, variants[name], info, m))
        print(json.dumps({"variant": name, **info, **m}), flush=True)

    base = next((r for r in rows if r[0] == "base"), None)
    print()
    print("| option | change | G steps | images/s | FID ↓ | ΔFID | precision | recall "
          "| class. score | classes | asked class |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, sets, info, m in rows:
        delta = "" if base is None or name == "base" else f"{m['fid'] - base[3]['fid']:+.1f}"
        speed = f"{info['images_per_s']:,.0f}"
        if base is not None and name != "base":
            speed += f" (×{info['images_per_s'] / base[2]['images_per_s']:.2f})"
        print(f"| {name} | {', '.join(sets) or '(the job as it is)'} | {info['steps']:,} | "
              f"{speed} | {m['fid']:.1f} | {delta} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['classifier_score']:.2f} | {m['class_coverage'] * 10:.0f}/10 | "
              f"{'' if 'asked_class' not in m else format(m['asked_class'], '.1%')} |")  # fmt: skip


if __name__ == "__main__":
    main()
