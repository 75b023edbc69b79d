"""Steady-state images/s of a 1-worker distgan run against a plain single-process PyTorch loop.

    .venv/bin/python benchmarks/throughput.py                 # mlp and dcgan, batch 64
    .venv/bin/python benchmarks/throughput.py --arch dcgan --steps 600
    python benchmarks/throughput.py --device cuda --batch 128     # on a GPU: one worker, one GPU

Both sides train the same G and D (distgan.models), with the same batch, Adam settings and
number of threads, on the embedded Fashion-MNIST images held in memory. The plain loop is the
classic tutorial loop: no Ray, no DDP, no EMA, no checkpoints. distgan runs through its CLI
(Ray Train, one worker, Ray Data input), once with the EMA off (the same work as the plain
loop) and once with its defaults. Steady state: the median images/s over log intervals after
the first (which holds start-up). Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from distgan.data import EMBEDDED_DIR, load_arrays, read_manifest
from distgan.models import build_models

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(arch: str, batch: int, steps: int, log_every: int, device: str) -> float:
    """Images/s (median over log intervals after the first) of a hand-written GAN loop."""
    images, _ = load_arrays(read_manifest(EMBEDDED_DIR))
    data = torch.from_numpy(images).to(device)  # (N, C, H, W) uint8
    torch.manual_seed(0)
    G, D = build_models(arch, 100, 0, tuple(data.shape[1:]))
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    rates, order, pos = [], torch.randperm(len(data), device=device), 0
    t = time.perf_counter()
    for step in range(1, steps + 1):
        if pos + batch > len(data):
            order, pos = torch.randperm(len(data), device=device), 0
        real = data[order[pos : pos + batch]].float().div_(127.5).sub_(1)
        pos += batch
        fake = G(torch.randn(batch, 100, device=device))
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        g_loss = F.softplus(-D(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        for p in D.parameters():
            p.requires_grad_(True)
        if step % log_every == 0:
            d_loss.item()  # waits for the GPU, like distgan's log step
            now = time.perf_counter()
            rates.append(log_every * batch / (now - t))
            t = now
    return statistics.median(rates[1:])


def distgan_run(arch: str, batch: int, steps: int, log_every: int, ema: bool, device: str) -> float:
    """Images/s (median over log intervals after the first) of `distgan train`, one worker."""
    with tempfile.TemporaryDirectory() as runs:
        cmd = [
            sys.executable, "-m", "distgan.cli", "train", str(ROOT / "jobs" / "quickstart.yaml"),
            "--set", f"model.arch={arch}", "--set", "model.width=0",
            "--set", "scale.workers=1", "--set", f"train.batch_size={batch}",
            "--set", f"train.steps={steps}", "--set", f"train.log_every={log_every}",
            "--set", f"train.checkpoint_every={steps}", "--set", f"train.sample_every={steps}",
            "--set", "train.max_minutes=0", "--set", f"train.ema={str(ema).lower()}",
            "--set", f"run.root={runs}",
            "--set", f"scale.use_gpu={str(device == 'cuda').lower()}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
        (metrics,) = Path(runs).glob("*/metrics.jsonl")
        rates = [json.loads(line)["images_per_s"] for line in metrics.read_text().splitlines()]
    return statistics.median(rates[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append", help="mlp and/or dcgan (default both)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=0, help="steps a run (default per arch)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: one GPU")
    args = ap.parse_args()
    default_steps = {"mlp": 12000, "dcgan": 1200}
    where = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(f"{where}, batch {args.batch}, torch {torch.__version__}")
    print(
        "| model | plain loop img/s | distgan 1 worker, EMA off | ratio | distgan, EMA on | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for arch in args.arch or ["mlp", "dcgan"]:
        steps = args.steps or default_steps[arch]
        log_every = steps // 6
        plain = plain_loop(arch, args.batch, steps, log_every, args.device)
        no_ema = distgan_run(arch, args.batch, steps, log_every, False, args.device)
        with_ema = distgan_run(arch, args.batch, steps, log_every, True, args.device)
        print(
            f"| {arch} | {plain:,.0f} | {no_ema:,.0f} | {no_ema / plain:.2f} "
            f"| {with_ema:,.0f} | {with_ema / plain:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
