"""Cost against quality on Fashion-MNIST: which models are on the front, as a BENCHMARKS.md table.
DCGAN and ResNet over widths, each trained for the same minutes on this machine.

    .venv/bin/python benchmarks/front.py                 # every model, seeds 0 1 2, 5 minutes
    .venv/bin/python benchmarks/front.py --models dcgan:8 resnet:16 --minutes 0.5 \
        --n 500 --n-real 2000 --seeds 0                  # a smoke run

Each model (``--models ARCH:WIDTH ...``) is its architecture's shipped job at that width, trained
once a seed by ``distgan train JOB --set model.width=WIDTH`` as a user runs it:

- ``dcgan``: ``jobs/fashion_dcgan.yaml`` (minibatch std and lazy R1 in D, Adam 1e-3 falling
  linearly to 0 by the end of the budget, G's EMA scored);
- ``resnet``: ``jobs/fashion_resnet.yaml`` (SNGAN's: hinge loss, spectral norm in D, Adam 2e-4,
  5 D steps per G step, no EMA).

Every run trains on the 60,000 training images (``data/fashion-mnist``) with one worker on all
the machine's cores (``scale.workers=1``) until ``train.max_minutes`` (``--minutes``) is up, and
is scored once by ``distgan eval RUN --real data/fashion-mnist-test --n N --metrics fid
--features fashion-mnist``: its last checkpoint against the 10,000 test images, on which no
recipe was chosen (``splits.py``). The cost figures are the run's ``complexity.json``: G's
parameters and GFLOPs per image (counted on the built model), and ``sec_per_kimg`` (seconds per
thousand real images shown to D, the median over its log intervals; resnet's D sees 5 real
batches a G step). The table gives the mean over the seeds, FID with its range (min–max), and
marks the models on the non-dominated front (``distgan.objectives.pareto_front``, both figures
lower is better) of mean FID against G's GFLOPs and of mean FID against sec/kimg.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics

import splits
from cli_runs import ROOT, evaluate, protocol_line, speed, spread, train

from distgan.objectives import pareto_front
from distgan.train.complexity import COMPLEXITY

JOBS = {"dcgan": "jobs/fashion_dcgan.yaml", "resnet": "jobs/fashion_resnet.yaml"}
MODELS = ["dcgan:8", "dcgan:16", "dcgan:32", "dcgan:64", "resnet:16", "resnet:32", "resnet:64"]


def model(text: str) -> tuple[str, int]:
    """``"dcgan:32"`` -> ("dcgan", 32), for argparse."""
    arch, _, width = text.partition(":")
    if arch not in JOBS or not width.isdigit() or int(width) < 1:
        raise argparse.ArgumentTypeError(
            f"expected ARCH:WIDTH with ARCH one of {', '.join(JOBS)}, e.g. dcgan:32; got {text!r}"
        )
    return arch, int(width)


def measured(run, test, n: int, n_real: int) -> dict:
    """One run's cost (complexity.json), G steps and FID against ``test`` (``distgan eval``)."""
    cost = json.loads((run / COMPLEXITY).read_text())
    figures, proto = evaluate(run, test, n, ["fid"], n_real)
    return {**cost, "steps": speed(run)["steps"], "fid": figures["fid"], "protocol": proto}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=model, nargs="+", default=[model(m) for m in MODELS],
                    metavar="ARCH:WIDTH", help=f"default {' '.join(MODELS)}")  # fmt: skip
    ap.add_argument(
        "--minutes", type=float, default=5.0, help="train.max_minutes a run (default 5)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed a run")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an override of every run's job (repeatable)")  # fmt: skip
    ap.add_argument("--n", type=int, default=10000, help="generated samples a run")
    ap.add_argument("--n-real", type=int, default=10000, help="test images in the reference")
    ap.add_argument("--out", default="runs/bench-front", help="scratch runs root (emptied)")
    args = ap.parse_args()

    train60k, test = splits.imported()
    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    # Steps never end a run: the time budget does, the same for every model.
    sets = [f"data.source={train60k}", f"train.max_minutes={args.minutes:g}",
            "train.steps=100000000", "scale.workers=1", *args.set]  # fmt: skip

    rows = []  # (arch, width, [one dict a seed])
    for arch, width in args.models:
        runs = []
        for seed in args.seeds:
            root = out / f"{arch}-w{width}-seed{seed}"
            run = train(JOBS[arch], [f"model.width={width}", *sets], root, seed)
            runs.append(measured(run, test, args.n, args.n_real))
            shown = {k: v for k, v in runs[-1].items() if k not in ("protocol", "flops")}
            print(json.dumps({"arch": arch, "width": width, "seed": seed, **shown}), flush=True)
        rows.append((arch, width, runs))

    def mean(runs: list[dict], key: str) -> float:
        return statistics.mean(r[key] for r in runs)

    points = [(mean(runs, "fid"), mean(runs, "g_gflops"), mean(runs, "sec_per_kimg"))
              for *_, runs in rows]  # fmt: skip
    fronts = [set(pareto_front([(p[0], p[k]) for p in points], ["min", "min"])) for k in (1, 2)]

    print(
        f"\n{', '.join(f'{a}: {j}' for a, j in JOBS.items())}, each --set model.width=WIDTH "
        f"--set {' --set '.join(sets[1:])}; trained on {train60k.relative_to(ROOT)} (60,000 "
        f"images); seeds {', '.join(map(str, args.seeds))}: the mean over them, FID with its "
        "range (min–max); a model is on a front when no other model is as good on both figures "
        "and better on one"
    )
    print(protocol_line(rows[0][2][0]["protocol"], test))
    print()
    print("| arch | width | G params | G GFLOPs/image | sec/kimg | G steps | FID ↓ "
          "| front: FID, GFLOPs | front: FID, sec/kimg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (arch, width, runs) in enumerate(rows):
        on = " | ".join("yes" if i in front else "no" for front in fronts)
        print(f"| {arch} | {width} | {mean(runs, 'g_params'):,.0f} | {points[i][1]:.3g} | "
              f"{points[i][2]:.3g} | {mean(runs, 'steps'):,.0f} | "
              f"{spread([r['fid'] for r in runs])} | {on} |")  # fmt: skip


if __name__ == "__main__":
    main()
