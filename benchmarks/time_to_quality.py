"""Time to quality: distgan's recommended Fashion-MNIST job beside a classic single-process
DCGAN loop, both scored at the same minutes of wall time, as a BENCHMARKS.md table.

    .venv/bin/python benchmarks/time_to_quality.py                      # the maintainers' run
    .venv/bin/python benchmarks/time_to_quality.py --only plain         # the plain loop alone
    .venv/bin/python benchmarks/time_to_quality.py --marks 0.5 1 --n 1000   # a smoke run

The plain loop is the classic recipe (Radford et al. 2016 as the PyTorch and TensorFlow DCGAN
examples give it for 28×28 images): BCE, Adam 2e-4 (0.5, 0.999), batch 64, BatchNorm in G and
D, G 256 → 128 channels from a 7×7 start, D 64 → 128 channels; the 60,000 training images in
memory, one process, every core this machine has. It is written here in plain PyTorch and shares
no code with distgan.

distgan's side is ``distgan train JOB`` (default ``jobs/fashion_dcgan.yaml``, on
``data/fashion-mnist``: ``make fashion-mnist`` imports it) as a user runs it: Ray's start-up,
the workers, DDP, checkpoints. Both clocks start when their process is launched; the plain loop
saves G at each mark, distgan's side is scored on the last checkpoint written (file time) before
each mark, with the job's checkpoints kept every ``--every`` steps. Every row is scored in the
shipped feature network against the 10,000 Fashion-MNIST test images (which neither trained on),
``--n`` samples of G (distgan: its EMA weights, as ``distgan sample`` draws), seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from longtail import fashion_folder
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["fid", "kid", "precision", "recall", "classifier_score", "class_coverage"]


class PlainG(nn.Module):
    def __init__(self, z: int = 100):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z, 256 * 7 * 7, bias=False), nn.Unflatten(1, (256, 7, 7)),
            nn.BatchNorm2d(256), nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, 1, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        return self.net(z)


class PlainD(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x).squeeze(1)


def plain_loop(out: Path, marks: list[float], launched: float) -> None:
    """The classic DCGAN loop; saves G's weights as ``plain-<seconds>.pt`` at each mark."""
    from distgan.data import read_idx  # the IDX reader only; the loop itself is plain PyTorch

    folder = fashion_folder()
    x, _ = read_idx(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    x = torch.from_numpy(x).float().div_(127.5).sub_(1)  # (60000, 1, 28, 28) in [-1, 1]
    torch.manual_seed(0)
    G, D = PlainG(), PlainD()
    for m in (*G.modules(), *D.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    todo, steps = sorted(marks), 0
    while todo:
        for idx in torch.randperm(len(x)).split(64):
            real = x[idx]
            fake = G(torch.randn(len(real), 100))
            ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
            loss_d = bce(D(real), ones) + bce(D(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(D(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            steps += 1
            if time.time() - launched >= todo[0]:
                torch.save({"G": G.state_dict(), "steps": steps}, out / f"plain-{todo[0]:g}.pt")
                print(f"plain: {todo.pop(0):g} s, step {steps}", flush=True)
                if not todo:
                    break


def run_plain(out: Path, marks: list[float]) -> dict[float, tuple[nn.Module, int]]:
    cmd = [sys.executable, __file__, "--plain-worker", str(out), "--launched", "{launched}"]
    cmd += ["--marks", *map(str, [m / 60 for m in marks])]
    launched = time.time()
    cmd[cmd.index("{launched}")] = repr(launched)
    subprocess.run(cmd, check=True)
    got = {}
    for mark in marks:
        state = torch.load(out / f"plain-{mark:g}.pt")
        G = PlainG()
        G.load_state_dict(state["G"])
        got[mark] = (G.eval(), state["steps"])
    return got


def run_distgan(
    out: Path, job: str, marks: list[float], every: int, extra: list[str], launched=None
):
    """Runs ``distgan train JOB`` until the last mark; the checkpoint before each mark.
    With ``launched`` (a time.time()), scores the run already in ``out`` instead."""
    from distgan.generators import load_generator
    from distgan.train import checkpoint as ckpts

    minutes = marks[-1] / 60
    sets = [f"run.root={out}", f"train.max_minutes={minutes:g}", f"train.checkpoint_every={every}",
            "train.keep_checkpoints=100000", "train.steps=10000000", *extra]  # fmt: skip
    cmd = [sys.executable, "-m", "distgan.cli", "train", job]
    cmd += [a for s in sets for a in ("--set", s)]
    if launched is None:
        launched = time.time()
        (out / "launched").write_text(repr(launched))
        subprocess.run(cmd, check=True, cwd=ROOT)
    (run,) = [p for p in out.iterdir() if p.is_dir() and (p / "checkpoints").is_dir()]
    times = []
    for folder in ckpts.checkpoints(run):
        folder = Path(folder)
        times.append((os.stat(folder / ckpts.STATE_FILE).st_mtime - launched, folder))
    times.sort()
    print(f"distgan: {len(times)} checkpoints, the last at {times[-1][0]:.0f} s", flush=True)
    got = {}
    for mark in marks:
        before = [folder for t, folder in times if t <= mark]
        if not before:
            continue
        G, spec, _, ckpt = load_generator(before[-1])
        at = next(t for t, f in times if f == before[-1])
        got[mark] = (G, ckpt["step"], at, spec)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job", default="jobs/fashion_dcgan.yaml", help="distgan's job")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an override of the job (repeatable)")  # fmt: skip
    ap.add_argument("--marks", type=float, nargs="+", default=[2, 5, 10], help="minutes")
    ap.add_argument("--every", type=int, default=250, help="distgan's checkpoint interval")
    ap.add_argument("--n", type=int, default=5000, help="samples a row")
    ap.add_argument("--only", choices=["plain", "distgan"], help="one side only")
    ap.add_argument("--out", default="runs/time_to_quality", help="scratch folder (emptied)")
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="score the distgan run already in --out (its launch time is kept there)",
    )
    ap.add_argument("--plain-worker", help=argparse.SUPPRESS)
    ap.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_worker:
        plain_loop(Path(args.plain_worker), [m * 60 for m in args.marks], args.launched)
        return

    from distgan.data import read_idx
    from distgan.metrics import FeatureSet, compute_metrics
    from distgan.metrics.features import load_feature_extractor
    from distgan.models import generate

    out = (ROOT / args.out).resolve()
    launched = float((out / "launched").read_text()) if args.rescore else None
    if not args.rescore:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    marks = [m * 60 for m in args.marks]
    extractor = load_feature_extractor("fashion-mnist")
    folder = fashion_folder()
    test_x, _ = read_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    f, p = extractor.extract(torch.from_numpy(test_x).float().div_(127.5).sub_(1))
    reference = FeatureSet(f.numpy(), p.numpy())

    def score(G, z_dim: int) -> dict:
        if isinstance(G, PlainG):
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                images = torch.cat([G(torch.randn(500, 100, generator=g))
                                    for _ in range(-(-args.n // 500))])[: args.n]  # fmt: skip
        else:
            images = generate(G, z_dim, args.n, seed=0)
        f, p = extractor.extract(images)
        return compute_metrics(METRICS, reference, FeatureSet(f.numpy(), p.numpy()))

    rows = []
    if args.only in (None, "plain") and not args.rescore:
        for mark, (G, steps) in run_plain(out, marks).items():
            rows.append(("plain DCGAN loop", mark, steps, steps * 64, score(G, 100)))
            print(json.dumps({"plain": mark, "steps": steps, **rows[-1][-1]}), flush=True)
    if args.only in (None, "distgan"):
        got = run_distgan(out, args.job, marks, args.every, args.set, launched)
        for mark, (G, step, at, spec) in got.items():
            images = step * spec.train.batch_size
            rows.append((f"distgan ({at:.0f} s)", mark, step, images, score(G, spec.model.z_dim)))
            print(json.dumps({"distgan": mark, "step": step, **rows[-1][-1]}), flush=True)

    print()
    print("| trainer | minutes | G steps | images | FID ↓ | KID ↓ | precision ↑ | recall ↑ "
          "| class. score ↑ | classes ↑ |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, mark, steps, images, m in rows:
        print(f"| {name} | {mark / 60:g} | {steps:,} | {images:,} | {m['fid']:.1f} | "
              f"{m['kid']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['classifier_score']:.2f} | {m['class_coverage'] * 10:.0f}/10 |")  # fmt: skip


if __name__ == "__main__":
    main()
