"""Mode coverage (the GAN literature's stability test) for several losses, as BENCHMARKS.md tables.

    .venv/bin/python benchmarks/modes.py                         # grid25 and stacked, 2 losses
    .venv/bin/python benchmarks/modes.py --loss hinge --loss wgan-gp --grid-steps 4000
    # grid25 as BENCHMARKS.md measures it: 15 CPU-minutes, PacGAN 2, R1 0.1, G's EMA scored
    .venv/bin/python benchmarks/modes.py --only grid25 --loss nonsaturating --threads 1 \
        --grid-steps 1000000 --grid-minutes 15 --pack 2 --r1 0.1 --ema 0.999 --trace
    # stacked as BENCHMARKS.md measures it: PacGAN 2, lr 5e-4, EMA 0.999, 30,000 steps, 3 seeds
    .venv/bin/python benchmarks/modes.py --only stacked --loss nonsaturating --pack 2 \
        --stacked-ema 0.999 --stacked-lr 5e-4 --stacked-steps 30000
    .venv/bin/python benchmarks/modes.py --only stacked --loss nonsaturating \
        --stacked-steps 20 --stacked-seeds 0                             # a smoke run

- grid25: the reference MLP GAN on 25 Gaussians on a 5×5 grid, trained in this process by
  ``distgan.train.synthetic.train_synthetic`` (``train/build.py`` and ``train/loop.py``, without
  Ray: 2-D points are no dataset ``distgan train`` reads); 2,500 samples scored: modes covered,
  share of high-quality samples, reverse KL.
- stacked Fashion-MNIST: three random embedded Fashion-MNIST images stacked as the channels of
  one 3×28×28 image (1,000 modes), written as a dataset folder; a 3-channel DCGAN trained on it
  by ``distgan train`` as a user runs it (a job file the script writes, one worker, once a seed
  of ``--stacked-seeds``); 10,000 samples drawn by ``distgan sample RUN --n 10000 --out x.npy``
  (G's EMA when ``--stacked-ema``), each channel labelled by the shipped classifier. Its
  real-data row shows what the classifier sees on stacks of real images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import torch
import yaml
from cli_runs import ROOT, feature_network, sample, speed, spread, to_unit, train

from distgan.data import EMBEDDED_DIR, load_arrays, read_manifest, write_shards
from distgan.metrics.modes import SOURCES, count_stacked_modes, score_modes, stacked_dataset
from distgan.models import ModelOptions
from distgan.train.synthetic import n_critic, train_synthetic

Z_DIM = 100


def grid25(losses: list[str], steps: int, options: ModelOptions, args) -> None:
    budget = f", at most {args.grid_minutes:g} min" if args.grid_minutes else ""
    ema = f", EMA {args.ema:g}" if args.ema else ""
    print(
        f"grid25: mlp GAN ({options.output} output, pack {options.pack}, mbstd "
        f"{options.mbstd_group}, width {args.grid_width}), {steps} G steps{budget}, batch "
        f"{args.grid_batch}, Adam {args.lr:g} (0.5, 0.9), lr decay {args.lr_decay}{ema}, R1 "
        f"{args.r1:g}, seed {args.seed}, 2,500 samples"
    )
    print(
        "| loss | modes covered (of 25), ≥ 20 high-quality | modes, literature rule (≥ 1 within "
        "3σ) | high-quality samples | reverse KL | G steps | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for loss in losses:
        G, history = train_synthetic(
            SOURCES["grid25"], loss, steps, batch=args.grid_batch, width=args.grid_width,
            options=options, lr=args.lr, ema_decay=args.ema, seconds=args.grid_minutes * 60,
            lr_decay=args.lr_decay, r1_gamma=args.r1, seed=args.seed,
        )  # fmt: skip
        if args.trace:  # the run's course: strict modes and high-quality share every ~minute
            minute = -1
            for h in history:
                if int(h["seconds"] // 60) > minute or h is history[-1]:
                    minute = int(h["seconds"] // 60)
                    print(
                        f"  {h['seconds']:5.0f} s  step {h['step']:>7,}  modes {h['modes']:>2} "
                        f"(literature {h['modes_literature']:>2})  high-quality "
                        f"{h['high_quality']:.3f}", flush=True
                    )  # fmt: skip
        with torch.no_grad():
            z = torch.randn(2500, 64, generator=torch.Generator().manual_seed(1))
            x = G(z)
            s = score_modes(x, SOURCES["grid25"])
            loose = score_modes(x, SOURCES["grid25"], min_count=1)
        print(
            f"| {loss} | {s['modes']} | {loose['modes']} | {s['high_quality']:.3f} "
            f"| {s['reverse_kl']:.3f} | {history[-1]['step']:,} | {history[-1]['seconds']:.0f} |",
            flush=True,
        )


def stacked_data(n: int = 50_000, seed: int = 0) -> tuple[Path, torch.Tensor]:
    """The stacked dataset as a dataset folder (data/stacked-fashion-mnist-<n>-seed<seed>,
    written if absent): ``n`` stacks of three embedded images (3×28×28 uint8, 1,000 modes).
    Returns the folder and its first 10,000 stacks in [-1, 1] (the real-data row)."""
    out = ROOT / "data" / f"stacked-fashion-mnist-{n}-seed{seed}"
    if not (out / "manifest.json").is_file():
        images, labels = load_arrays(read_manifest(EMBEDDED_DIR))  # (10000, 1, 28, 28) uint8
        data, _ = stacked_dataset(images, labels, n, torch.Generator().manual_seed(seed))
        source = f"{n:,} stacks of three embedded Fashion-MNIST images as channels (seed {seed})"
        write_shards(data.numpy(), None, out, source=source)  # (n, 3, 28, 28) uint8
    real, _ = load_arrays(read_manifest(out))
    return out, to_unit(real[:10_000])


def stacked_job(data: Path, loss: str, steps: int, options: ModelOptions, args) -> dict:
    """The job a user would write for the stacked runs: a 3-channel DCGAN, one worker."""
    return {
        "data": {"source": str(data)},
        "model": {"arch": "dcgan", "z_dim": Z_DIM, "width": args.width, "pack": options.pack,
                  "mbstd_group": options.mbstd_group, "spectral_norm": options.spectral_norm},
        "loss": {"kind": loss},
        "optim": {"lr_g": args.stacked_lr, "lr_d": args.stacked_lr, "beta1": 0.5, "beta2": 0.9,
                  "n_critic": n_critic(loss)},
        "train": {"steps": steps, "batch_size": args.batch, "log_every": max(1, steps // 20),
                  "checkpoint_every": steps, "sample_every": steps,
                  "ema": args.stacked_ema > 0, "ema_decay": args.stacked_ema or 0.999},
        "scale": {"workers": 1},
        "run": {"name": f"stacked-{loss}"},
    }  # fmt: skip


def stacked(losses: list[str], steps: int, options: ModelOptions, args) -> None:
    data, real = stacked_data()
    classifier = feature_network()

    def classify(x: torch.Tensor) -> torch.Tensor:
        return classifier.extract(x)[1].argmax(1)

    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = []
    for loss in losses:
        job = out / f"stacked-{loss}.yaml"
        job.write_text(
            yaml.safe_dump(stacked_job(data, loss, steps, options, args), sort_keys=False)
        )
        runs = []
        for seed in args.stacked_seeds:
            run = train(job, [], out / f"{loss}-seed{seed}", seed)
            fakes = to_unit(sample(run, 10_000))  # (10000, 3, 28, 28) from G's EMA if any
            runs.append({"loss": loss, "seed": seed, **speed(run),
                         **count_stacked_modes(fakes, classify)})  # fmt: skip
            print(json.dumps(runs[-1]), flush=True)
        rows.append((loss, runs))

    print()
    print(
        f"stacked Fashion-MNIST (1,000 modes; {data.relative_to(ROOT)}): distgan train of "
        f"{out.relative_to(ROOT)}/stacked-<loss>.yaml: dcgan width {args.width}, z {Z_DIM} "
        f"(pack {options.pack}, mbstd {options.mbstd_group}, spectral norm "
        f"{options.spectral_norm}), {steps} G steps, batch {args.batch}, Adam {args.stacked_lr:g} "
        f"(0.5, 0.9){f', EMA {args.stacked_ema:g}' if args.stacked_ema else ''}, one worker; "
        f"10,000 samples by distgan sample, each channel labelled by the shipped classifier; "
        f"seeds {', '.join(map(str, args.stacked_seeds))}: the mean over them, modes with their "
        f"range (min–max)"
    )
    print("| loss | modes seen (of 1,000) | reverse KL | train s |")
    print("|---|---|---|---|")
    s = count_stacked_modes(real, classify)
    print(f"| real stacks (reference) | {s['modes']} | {s['reverse_kl']:.3f} | - |", flush=True)
    for loss, runs in rows:
        print(
            f"| {loss} | {spread([r['modes'] for r in runs], 0)} | "
            f"{statistics.mean(r['reverse_kl'] for r in runs):.3f} | "
            f"{statistics.mean(r['seconds'] for r in runs):.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loss", action="append", help="losses (default nonsaturating, hinge)")
    ap.add_argument("--grid-steps", type=int, default=3000)
    ap.add_argument("--stacked-steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=32, help="stacked DCGAN base width")
    ap.add_argument("--batch", type=int, default=64, help="stacked batch")
    ap.add_argument("--only", choices=["grid25", "stacked"], help="run one of the two")
    ap.add_argument("--output", choices=["tanh", "linear"], default="tanh", help="grid25 G's end")
    ap.add_argument("--pack", type=int, default=1, help="D judges this many samples at once")
    ap.add_argument("--mbstd", type=int, default=0, help="D's minibatch-std group; 0 = off")
    ap.add_argument("--spectral-norm", action="store_true", help="spectral norm on D")
    ap.add_argument("--lr", type=float, default=1e-4, help="grid25: Adam's learning rate")
    ap.add_argument("--ema", type=float, default=0.0, help="grid25: score G's EMA (this decay)")
    ap.add_argument("--lr-decay", default="none", choices=["none", "linear", "cosine"],
                    help="grid25: the rate falls to 0 by the steps or the time limit")  # fmt: skip
    ap.add_argument("--r1", type=float, default=0.0, help="grid25: D's R1 weight γ (lazy)")
    ap.add_argument("--seed", type=int, default=0, help="grid25: the run's seed")
    ap.add_argument("--trace", action="store_true", help="grid25: print the run's course")
    ap.add_argument("--grid-batch", type=int, default=256)
    ap.add_argument("--grid-width", type=int, default=128)
    ap.add_argument("--grid-minutes", type=float, default=0.0, help="grid25: a time limit")
    ap.add_argument("--stacked-lr", type=float, default=1e-4, help="stacked: Adam's rate")
    ap.add_argument("--stacked-ema", type=float, default=0.0, help="stacked: score G's EMA")
    ap.add_argument("--stacked-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="stacked: train.seed of each run")  # fmt: skip
    ap.add_argument(
        "--out", default="runs/bench-modes", help="stacked: scratch runs root (emptied)"
    )
    ap.add_argument("--threads", type=int, help="grid25: torch's CPU threads (default: every core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    losses = args.loss or ["nonsaturating", "hinge"]
    if args.only != "stacked":
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        options = ModelOptions(
            output=args.output, pack=args.pack, mbstd_group=args.mbstd,
            spectral_norm=args.spectral_norm,
        )  # fmt: skip
        grid25(losses, args.grid_steps, options, args)
    if args.only != "grid25":
        options = ModelOptions(
            pack=args.pack, mbstd_group=args.mbstd, spectral_norm=args.spectral_norm
        )
        stacked(losses, args.stacked_steps, options, args)


if __name__ == "__main__":
    main()
