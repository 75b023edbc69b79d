"""Ablation of the model and training options on Fashion-MNIST, as a BENCHMARKS.md table: what
each option changes in FID, and what it costs in images/s. It chooses recipes, so it never sees
the test split: it trains on 50,000 training images and scores against the 10,000 held out
(``splits.py``).

    .venv/bin/python benchmarks/ablation.py --minutes 1.5               # the maintainers' run
    .venv/bin/python benchmarks/ablation.py --minutes 5 --only base,decay \
        --variant decay=optim.lr_decay=linear
    .venv/bin/python benchmarks/ablation.py --steps 20 --n 500 --seeds 0 --only base,ema_off

The base is a job file (``--job``, default the recommended ``jobs/fashion_dcgan.yaml``); each
row changes one option of it (``VARIANTS``; ``--variant NAME=FIELD=VALUE,...`` adds rows). Each
row is trained once a seed (``--seeds``) by ``distgan train JOB --set
data.source=data/fashion-mnist-train50k --set train.seed=S --set ...`` as a user runs it (Ray, the
job's workers, Ray Data, checkpoints), for the same ``--minutes`` of training
(``train.max_minutes``) or the same ``--steps``; then ``distgan eval RUN --real
data/fashion-mnist-val10k --n N --features fashion-mnist`` scores the run's last checkpoint (G's
EMA where the job keeps one). For a conditional run it also reports ``asked class``: how often the
shipped classifier names the class asked for, over its samples drawn every class in turn.
``images/s`` is the run's steady rate (``metrics.jsonl``). Figures are means over the seeds, FID
with its range (min–max).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics

import splits
from cli_runs import ROOT, evaluate, protocol_line, speed, spread, train

from distgan.data import read_manifest
from distgan.metrics.judges import SECOND

FID_2 = f"fid@{SECOND}"  # distgan eval's FID by the second judge, the network trained apart
# name -> overrides of the base job (each row changes one thing, whatever the base says of it)
VARIANTS = {
    "base": [],
    # the recipe's own choices against the classic DCGAN's (Radford et al.): width, rate, beta2
    "width64": ["model.width=64"],
    "lr_2e-4": ["optim.lr_g=2e-4", "optim.lr_d=2e-4"],
    "beta2_0.999": ["optim.beta2=0.999"],
    "resnet": ["model.arch=resnet"],
    "sn_off": ["model.spectral_norm=false"],
    "sn_on": ["model.spectral_norm=true"],
    "r1": ["loss.r1_gamma=1.0"],
    "r1_off": ["loss.r1_gamma=0"],
    "diffaugment": ["train.diffaugment=color,translation,cutout"],
    "pack2": ["model.pack=2"],
    "mbstd": ["model.mbstd_group=4"],
    "mbstd_off": ["model.mbstd_group=0"],
    "decay_off": ["optim.lr_decay=none"],
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
    ap.add_argument("--minutes", type=float, default=0.0, help="minutes of training a run")
    ap.add_argument("--steps", type=int, default=0, help="G steps a run (instead of --minutes)")
    ap.add_argument("--only", help="comma-separated variant names")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FIELD=VALUE,...")
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed of each run"
    )
    ap.add_argument("--n", type=int, default=10000, help="samples scored a run")
    ap.add_argument("--out", default="runs/bench-ablation", help="scratch runs root (emptied)")
    args = ap.parse_args()
    if not (args.minutes or args.steps):
        ap.error("give --minutes or --steps")
    variants = dict(VARIANTS)
    for item in args.variant:
        name, _, sets = item.partition("=")
        variants[name] = [s for s in sets.split(",") if s]
    names = args.only.split(",") if args.only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(variants)}")

    train50k, val10k = splits.held_out()
    trained_on = read_manifest(train50k)
    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    if args.minutes:
        budget = f"{args.minutes:g} min of training"
        sets = [f"train.max_minutes={args.minutes:g}", "train.steps=100000000"]
    else:
        budget = f"{args.steps:,} G steps"
        sets = [f"train.steps={args.steps}", "train.max_minutes=0"]
    sets.append(f"data.source={train50k}")

    # Seed by seed, every row in turn: this machine's speed drifts by 10-15% within an hour,
    # and a row run at a slow moment would train fewer steps in its minutes.
    done: dict[str, list[dict]] = {name: [] for name in names}
    proto = None
    for seed in args.seeds:
        for name in names:
            run = train(args.job, [*sets, *variants[name]], out / f"{name}-seed{seed}", seed)
            figures, proto = evaluate(run, val10k, args.n)  # asked_class too, for a conditional G
            done[name].append({"variant": name, "seed": seed, **speed(run), **figures})
            print(json.dumps(done[name][-1]), flush=True)
    rows = [(name, variants[name], done[name]) for name in names]  # (name, overrides, per seed)

    def mean(runs: list[dict], key: str) -> float:
        return statistics.mean(r[key] for r in runs)

    base = next((r for r in rows if r[0] == "base"), None)
    print()
    seeds = ", ".join(map(str, args.seeds))
    print(f"base {args.job}, {budget} a run, trained on {train50k.relative_to(ROOT)} "
          f"({trained_on.count:,} images); seeds {seeds}: the mean over them, FID with its range "
          "(min–max)")  # fmt: skip
    print(protocol_line(proto, val10k))
    print()
    print("| option | change | G steps | images/s | FID ↓ | ΔFID | judge 2 FID ↓ | precision "
          "| recall | class. score | classes | asked class |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, changes, runs in rows:
        fids = [r["fid"] for r in runs]
        delta, rate = "", f"{mean(runs, 'images_per_s'):,.0f}"
        if base is not None and name != "base":
            delta = f"{mean(runs, 'fid') - mean(base[2], 'fid'):+.1f}"
            rate += f" (×{mean(runs, 'images_per_s') / mean(base[2], 'images_per_s'):.2f})"
        asked = f"{mean(runs, 'asked_class'):.1%}" if "asked_class" in runs[0] else ""
        # another feature network: another FID scale
        judge_2 = spread([r[FID_2] for r in runs]) if FID_2 in runs[0] else ""
        print(f"| {name} | {', '.join(changes) or '(the job as it is)'} | "
              f"{mean(runs, 'steps'):,.0f} | {rate} | {spread(fids)} | {delta} | {judge_2} | "
              f"{mean(runs, 'precision'):.3f} | {mean(runs, 'recall'):.3f} | "
              f"{mean(runs, 'classifier_score'):.2f} | {mean(runs, 'class_coverage') * 10:.1f}/10 "
              f"| {asked} |")  # fmt: skip


if __name__ == "__main__":
    main()
