"""A CPU worker's PyTorch threads: the node's cores (distgan's default) against OMP_NUM_THREADS=1,
on an idle machine and beside a busy loop (another program on one core, at nice 10).

    .venv/bin/python benchmarks/threads.py                    # 3 repeats, about 16 minutes
    .venv/bin/python benchmarks/threads.py --repeats 1 --minutes 0.25

Each run is ``distgan train jobs/quickstart.yaml`` with one worker (on a 2-core machine the
default gives it 2 threads), its own local Ray, ``train.max_minutes`` of training. Rows are taken
in turn, repeat by repeat, so that the machine's drift falls on every row alike. Figures: the
steady images/s (cli_runs.speed: the median over log intervals after the first), the threads the
run recorded (complexity.json's cpu_threads), and the CPU-seconds the machine spent during the
run besides the busy loop's own. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import speed, spread, train  # noqa: E402

ROWS = [  # (name, busy loop beside, OMP_NUM_THREADS or None)
    ("idle, default", False, None),
    ("idle, OMP_NUM_THREADS=1", False, "1"),
    ("busy loop, default", True, None),
    ("busy loop, OMP_NUM_THREADS=1", True, "1"),
]


def machine_cpu_s() -> float:
    """User, nice and system CPU-seconds of the whole machine so far."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system


def one_run(out: Path, busy: bool, omp: str | None, minutes: float, seed: int) -> dict:
    loop = None
    if busy:
        loop = subprocess.Popen(["nice", "-n", "10", "sh", "-c", "while :; do :; done"])
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ.pop("OMP_NUM_THREADS", None)
    if omp:
        os.environ["OMP_NUM_THREADS"] = omp
    try:
        before = machine_cpu_s()
        run = train(
            "jobs/quickstart.yaml",
            ["scale.workers=1", f"train.max_minutes={minutes}", "train.steps=1000000",
             "train.log_every=100", "train.sample_every=1000000", "train.checkpoint_every=1000000"],
            root=out, seed=seed,
        )  # fmt: skip
        spent = machine_cpu_s() - before
    finally:
        if loop is not None:
            spent_by_loop = sum(psutil.Process(loop.pid).cpu_times()[:2])  # user, system
            loop.kill()
            loop.wait()
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    cost = json.loads((run / "complexity.json").read_text())
    return {
        **speed(run),
        "threads": cost.get("cpu_threads"),
        "cpu_s": spent - (spent_by_loop if busy else 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=0.5, help="train.max_minutes a run")
    parser.add_argument("--out", type=Path, default=None, help="runs folder (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="distgan-threads-"))
    address = os.environ.pop("RAY_ADDRESS", None)  # each run starts its own local Ray
    results: dict[str, list[dict]] = {name: [] for name, _, _ in ROWS}
    for r in range(args.repeats):
        for i, (name, busy, omp) in enumerate(ROWS):
            got = one_run(out / f"{r}-{i}", busy, omp, args.minutes, seed=r)
            results[name].append(got)
            print(f"{name} (repeat {r}): {got}", file=sys.stderr, flush=True)
    if address is not None:
        os.environ["RAY_ADDRESS"] = address
    print("| row | threads | images/s | CPU-s a run (busy loop's not counted) |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        threads = sorted({str(g["threads"]) for g in runs})
        print(
            f"| {name} | {', '.join(threads)} | {spread([g['images_per_s'] for g in runs], 0)} | "
            f"{spread([g['cpu_s'] for g in runs], 0)} |"
        )


if __name__ == "__main__":
    main()
