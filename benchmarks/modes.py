"""Mode coverage (the GAN literature's stability test) for several losses, as BENCHMARKS.md tables.

    .venv/bin/python benchmarks/modes.py                         # grid25 and stacked, 2 losses
    .venv/bin/python benchmarks/modes.py --loss hinge --loss wgan-gp --grid-steps 4000
    # grid25 as BENCHMARKS.md measures it: 15 CPU-minutes, PacGAN 2, R1 0.1, G's EMA scored
    .venv/bin/python benchmarks/modes.py --only grid25 --loss nonsaturating --threads 1 \
        --grid-steps 1000000 --grid-minutes 15 --pack 2 --r1 0.1 --ema 0.999 --trace

- grid25: the reference MLP GAN (distgan.train.synthetic.train_synthetic) on 25 Gaussians on a
  5×5 grid; 2,500 samples scored: modes covered, share of high-quality samples, reverse KL.
- stacked Fashion-MNIST: a 3-channel DCGAN on three random Fashion-MNIST images stacked as
  channels (1,000 modes); 10,000 samples, each channel labelled by the shipped classifier.
  Its real-data row shows what the classifier sees on stacks of real images.

Plain PyTorch on this process (no Ray): the losses are compared, not the orchestration.
"""

from __future__ import annotations

import argparse
import time

import torch

from distgan.data import EMBEDDED_DIR, load_arrays, read_manifest
from distgan.ema import EMA
from distgan.metrics.features import load_feature_extractor
from distgan.metrics.modes import SOURCES, count_stacked_modes, score_modes, stacked_dataset
from distgan.models.registry import ModelOptions
from distgan.step import train_step
from distgan.train.synthetic import make_nets, n_critic, train_synthetic

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


def stacked(
    losses: list[str], steps: int, width: int, batch: int, options: ModelOptions, args
) -> None:
    images, labels = load_arrays(read_manifest(EMBEDDED_DIR))  # (10000, 1, 28, 28) uint8
    gen = torch.Generator().manual_seed(0)
    data, _ = stacked_dataset(images, labels, 50_000, gen)  # (50000, 3, 28, 28) uint8
    classifier = load_feature_extractor("fashion-mnist")

    def classify(x: torch.Tensor) -> torch.Tensor:
        return classifier.extract(x)[1].argmax(1)

    print()
    print(
        f"stacked Fashion-MNIST (1,000 modes): dcgan width {width} (pack {options.pack}, mbstd "
        f"{options.mbstd_group}, spectral norm {options.spectral_norm}), {steps} G steps, batch "
        f"{batch}, Adam {args.stacked_lr:g} (0.5, 0.9)"
        f"{f', EMA {args.stacked_ema:g}' if args.stacked_ema else ''}, 10,000 samples"
    )
    print("| loss | modes seen (of 1,000) | reverse KL | seconds |")
    print("|---|---|---|---|")
    real = data[:10_000].float().div(127.5).sub(1)
    s = count_stacked_modes(real, classify)
    print(f"| real stacks (reference) | {s['modes']} | {s['reverse_kl']:.3f} | - |", flush=True)
    for loss in losses:
        torch.manual_seed(0)
        nets = make_nets("dcgan", (3, 28, 28), loss, Z_DIM, width, options, args.stacked_lr)
        ema = EMA(nets.G, args.stacked_ema) if args.stacked_ema else None
        k = n_critic(loss)
        t0 = time.perf_counter()
        for step in range(steps):
            idx = torch.randint(len(data), (k, batch), generator=gen)
            reals = [data[i].float().div_(127.5).sub_(1) for i in idx]  # k × (B, 3, 28, 28)
            train_step(nets, reals, lambda b: torch.randn(b, Z_DIM, generator=gen), step=step)
            if ema is not None:
                ema.update(nets.G, step + 1)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            G = (nets.G if ema is None else ema.model).eval()
            z = torch.randn(10_000, Z_DIM, generator=torch.Generator().manual_seed(1))
            fakes = torch.cat([G(c) for c in z.split(500)])
        s = count_stacked_modes(fakes, classify)
        print(f"| {loss} | {s['modes']} | {s['reverse_kl']:.3f} | {seconds:.0f} |", flush=True)


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
    ap.add_argument("--threads", type=int, help="torch's CPU threads (default: every core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    losses = args.loss or ["nonsaturating", "hinge"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only != "stacked":
        options = ModelOptions(
            output=args.output, pack=args.pack, mbstd_group=args.mbstd,
            spectral_norm=args.spectral_norm,
        )  # fmt: skip
        grid25(losses, args.grid_steps, options, args)
    if args.only != "grid25":
        options = ModelOptions(
            pack=args.pack, mbstd_group=args.mbstd, spectral_norm=args.spectral_norm
        )
        stacked(losses, args.stacked_steps, args.width, args.batch, options, args)


if __name__ == "__main__":
    main()
