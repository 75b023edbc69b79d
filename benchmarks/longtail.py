"""Fashion-MNIST-LT: what conditioning and class balance do for the rare classes, as a
BENCHMARKS.md table. It compares options, so it never sees the test split: it trains on the long
tail of the 50,000 training images of ``splits.py`` and scores against the 10,000 held out.

    .venv/bin/python benchmarks/longtail.py --steps 5000             # the maintainers' run
    .venv/bin/python benchmarks/longtail.py --steps 20 --n 500 --seeds 0      # a smoke run

The 50,000 images are cut to their long tail at ``--ratio`` by ``distgan data import
--long-tail RATIO --seed S`` (100: class k of 10 keeps 100^(-k/9) of its images, about 5,000
T-shirts down to 50 ankle boots), and the job (``--job``, default ``jobs/fashion_dcgan.yaml``,
with ``--set`` overrides) is trained on it three ways, each once a seed (``--seeds``), by
``distgan train`` as a user runs it, for ``--steps`` G steps:

- (a) unconditional, real batches as the data has them;
- (b) conditional (``model.conditional``), fake labels drawn from the data's class frequencies;
- (c) conditional + ``train.class_balance: balanced``: real batches and fake labels each class
  equally often.

Every run is scored by ``distgan eval RUN --real data/fashion-mnist-val10k --metrics
fid,intra_fid,rare_recall,class_kl --n N --features fashion-mnist``: the reference is 1,000 held-out
images of each class, the rare classes the third (rounded up: 4) with the fewest training
images. ``rare FID`` is ``intra_fid_rare`` (a conditional G draws every class in turn; an
unconditional G's samples are classed by the shipped classifier), ``rare recall`` is
``rare_recall`` and ``class KL`` is ``class_kl`` (the classifier's histogram against the prior
for an unconditional G, against the classes asked for by a conditional one). ``rare share`` is
the share of samples the classifier puts in the rare classes when G is sampled as trained (a
conditional G with labels drawn from its training prior), and ``target`` that prior's rare share.
Figures are means over the seeds, FID and rare FID with their range (min–max).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics

import numpy as np
import splits
import torch
from cli_runs import ROOT, evaluate, feature_network, protocol_line, speed, spread, train

from distgan.data import read_manifest
from distgan.data.imbalance import ClassPrior

ROWS = (  # name, model.conditional, train.class_balance
    ("(a) unconditional", False, "none"),
    ("(b) conditional", True, "none"),
    ("(c) conditional + balanced", True, "balanced"),
)
METRICS = ["fid", "intra_fid", "rare_recall", "class_kl"]


def rare_share_as_trained(run, classes: ClassPrior, n: int, seed: int) -> float:
    """The share of ``n`` samples the shipped classifier puts in the rare classes, G sampled as
    it was trained: a conditional G with labels drawn from its training prior, an unconditional
    one as it is."""
    from distgan.generators import load_generator
    from distgan.models import generate

    G, spec, _, _ = load_generator(run)
    labels = None
    if G.num_classes:
        g = torch.Generator().manual_seed(seed)
        labels = torch.multinomial(torch.as_tensor(classes.prior), n, replacement=True, generator=g)
    probs = feature_network().extract(generate(G, spec.model.z_dim, n, seed, labels=labels))[1]
    return float(np.isin(probs.argmax(1).numpy(), classes.rare).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job", default="jobs/fashion_dcgan.yaml", help="the job of every row")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an override of the job (repeatable)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=5000, help="G steps a run (default 5000)")
    ap.add_argument("--ratio", type=float, default=100.0, help="imbalance ratio (default 100)")
    ap.add_argument("--lt-seed", type=int, default=0, help="which images the long tail keeps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed a run")
    ap.add_argument("--n", type=int, default=10000, help="generated samples a run")
    ap.add_argument("--n-real", type=int, default=10000, help="held-out images in the reference")
    ap.add_argument("--out", default="runs/bench-longtail", help="scratch runs root (emptied)")
    args = ap.parse_args()

    _, val10k = splits.held_out()
    data = splits.long_tail(args.ratio, args.lt_seed)
    counts = read_manifest(data).label_counts
    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    sets = [f"data.source={data}", f"train.steps={args.steps}", "train.max_minutes=0", *args.set]

    rows, proto = [], None
    for i, (name, conditional, balance) in enumerate(ROWS):
        classes = ClassPrior.of(counts, balance)
        row = [f"model.conditional={str(conditional).lower()}", f"train.class_balance={balance}"]
        runs = []
        for seed in args.seeds:
            run = train(args.job, [*sets, *row], out / f"row{'abc'[i]}-seed{seed}", seed)
            figures, proto = evaluate(run, val10k, args.n, METRICS, args.n_real)
            figures["rare_share"] = rare_share_as_trained(run, classes, args.n, seed + 1)
            figures["target_share"] = float(classes.prior[list(classes.rare)].sum())
            runs.append({"row": name, "seed": seed, **speed(run), **figures})
            print(json.dumps(runs[-1]), flush=True)
        rows.append((name, runs))

    def mean(runs: list[dict], key: str) -> float:
        return statistics.mean(r[key] for r in runs)

    rare = ", ".join(str(c) for c in ClassPrior.of(counts, "none").rare)
    print(
        f"\n{data.relative_to(ROOT)}: {sum(counts.values()):,} images, "
        f"{', '.join(str(counts[k]) for k in sorted(counts))} a class; rare classes {rare} (the 4 "
        f"with the fewest); {' '.join([args.job, *args.set])}, {args.steps:,} G steps; seeds "
        f"{', '.join(map(str, args.seeds))}: the mean over them, FID and rare FID with their range"
    )
    print(protocol_line(proto, val10k))
    print()
    print("| model | FID | intra-FID | rare FID | rare recall | rare share | target | class KL "
          "| train s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in rows:
        print(f"| {name} | {spread([r['fid'] for r in runs])} | {mean(runs, 'intra_fid'):.1f} | "
              f"{spread([r['intra_fid_rare'] for r in runs])} | {mean(runs, 'rare_recall'):.3f} | "
              f"{mean(runs, 'rare_share'):.1%} | {mean(runs, 'target_share'):.1%} | "
              f"{mean(runs, 'class_kl'):.3f} | {mean(runs, 'seconds'):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
