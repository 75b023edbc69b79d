"""The README's quickstart figures: ``jobs/quickstart.yaml`` trained as the README says, once a
seed, and scored against the Fashion-MNIST test split.

    .venv/bin/python benchmarks/quickstart.py                    # seeds 0 1 2
    .venv/bin/python benchmarks/quickstart.py --seeds 0 --set train.max_minutes=0.1 --n 500  # smoke

Each run is ``distgan train jobs/quickstart.yaml --set train.seed=S`` (``make train`` runs the
job as it is, which is seed 0): the 10,000 embedded training images, two CPU workers, two
minutes of training. Each is scored by ``distgan eval RUN --real data/fashion-mnist-test --n N
--features fashion-mnist``: its last checkpoint's EMA G against the 10,000 test images, which the
quickstart never trained on (``splits.py`` imports them). ``wall`` is the whole ``distgan train``
command, Ray's start-up included. The last row is the mean over the seeds, FID with its range
(min–max).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time

import splits
from cli_runs import ROOT, evaluate, protocol_line, speed, spread, train

JOB = "jobs/quickstart.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="a run each")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an override of the job (repeatable; smoke runs only)")  # fmt: skip
    ap.add_argument("--n", type=int, default=10000, help="samples scored a run")
    ap.add_argument("--out", default="runs/bench-quickstart", help="scratch runs root (emptied)")
    args = ap.parse_args()

    _, test = splits.imported()
    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    rows, proto = [], None
    for seed in args.seeds:
        start = time.perf_counter()
        run = train(JOB, args.set, out / f"seed{seed}", seed)
        wall = time.perf_counter() - start
        figures, proto = evaluate(run, test, args.n)
        rows.append({"seed": seed, "wall_s": wall, **speed(run), **figures})
        print(json.dumps(rows[-1]), flush=True)

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    sets = " ".join(f"--set {s}" for s in [*args.set, "train.seed=S"])
    print(f"\ndistgan train {JOB} {sets}")
    print(protocol_line(proto, test))
    print()
    print("| seed | G steps | images/s | wall | FID ↓ | KID ↓ | precision ↑ | recall ↑ "
          "| class. score ↑ | classes ↑ |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in [*rows, None]:
        if r is None and len(rows) < 2:
            break
        seed, get = ("mean", mean) if r is None else (r["seed"], r.get)
        fid = spread([x["fid"] for x in rows]) if r is None else f"{r['fid']:.1f}"
        wall = get("wall_s")
        print(f"| {seed} | {get('steps'):,.0f} | {get('images_per_s'):,.0f} | "
              f"{wall // 60:.0f} min {wall % 60:02.0f} s | {fid} | {get('kid'):.3f} | "
              f"{get('precision'):.3f} | {get('recall'):.3f} | {get('classifier_score'):.2f} | "
              f"{get('class_coverage') * 10:.1f}/10 |")  # fmt: skip


if __name__ == "__main__":
    main()
