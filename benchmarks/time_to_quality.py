"""Time to quality on Fashion-MNIST, with the code and the recipe apart, as the BENCHMARKS.md
table: five trainers, each once a seed, scored at the same minutes of wall time since launch.

    .venv/bin/python benchmarks/time_to_quality.py                 # every row, seeds 0 1 2
    .venv/bin/python benchmarks/time_to_quality.py --only plain-classic distgan --seeds 0
    .venv/bin/python benchmarks/time_to_quality.py --marks 0.75 1 --every 20 --n 500 --seeds 0
    .venv/bin/python benchmarks/time_to_quality.py --rescore --features fashion-mnist-b  # judge 2

| row             | trainer                                       | recipe                       |
|-----------------|-----------------------------------------------|------------------------------|
| plain-classic   | a plain PyTorch loop written here             | the classic DCGAN recipe     |
| plain-recipe    | the same kind of loop                         | distgan's, written out       |
| distgan-classic | ``distgan train JOB --set`` CLASSIC           | the classic, as far as       |
|                 |                                               | distgan's DCGAN goes         |
| distgan         | ``distgan train JOB``                         | distgan's (the job's)        |
| distgan-ddp     | ``distgan train JOB --set scale.workers=2``   | distgan's, two DDP workers   |

The classic recipe (Radford et al. 2016 as the PyTorch and TensorFlow DCGAN examples give it for
28×28): BCE, Adam 2e-4 (0.5, 0.999), batch 64, no EMA (the raw G is scored). The plain loop's
nets are the examples': BatchNorm in G and D, G 256 → 128 channels from 7×7, D 64 → 128.
distgan's DCGAN at width 64 has G 128 → 64 and D 64 → 128 without BatchNorm (DESIGN.md: DDP).

distgan's recipe (JOB, default ``jobs/fashion_dcgan.yaml``): a DCGAN of width 32 (G 64 → 32, D
32 → 64), StyleGAN's minibatch standard deviation (groups of 4) before D's head, a lazy R1
penalty (γ 1, every 16th D step, its weight × 16), Adam 1e-3 (0.5, 0.99) falling linearly to 0
by the end (the last mark), batch 64, and G's EMA with a half-life of 10,000 images (at most 5%
of the images seen so far), which is what is scored. The plain loop writes each of these out
itself, and shares no code with distgan.

Protocol: every row trains on the 60,000 training images (``data/fashion-mnist``; the plain loop
reads the same IDX files) and is scored against the 10,000 test images
(``data/fashion-mnist-test``), on which no recipe was chosen (``splits.py``), with ``--n``
samples (latent seed 0) in the shipped feature network. Clocks start when a trainer's process
is launched (Ray's start-up counts for distgan). The plain loop saves G (or its EMA) at each
mark; a distgan run keeps a checkpoint every ``--every`` steps, and the last one written (file
time) before each mark is scored by ``distgan eval CKPT --real data/fashion-mnist-test``. The
table gives the mean over the seeds, FID and KID with their range (min–max). A conditional job
(``--job jobs/fashion_conditional.yaml``) also gives ``asked class``, which ``distgan eval``
reports for a conditional G: how often the judge names the class G was asked for, over its
``--n`` samples drawn every class in turn.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cli_runs
import splits
import torch
from cli_runs import ROOT, evaluate, protocol_line, run_in, score_images, spread, train
from torch import nn

BATCH = 64
ASKED = "asked_class"  # distgan eval's, for a conditional G: how often the judge names its class
Z = 100
# distgan's DCGAN with the classic recipe: the recommended job with each of its lines undone
CLASSIC = [
    "model.width=64", "model.mbstd_group=0", "loss.r1_gamma=0", "optim.lr_g=2e-4",
    "optim.lr_d=2e-4", "optim.beta2=0.999", "optim.lr_decay=none", "train.ema=false",
]  # fmt: skip
ROWS = {  # name -> (label, the --set overrides of a distgan row, or the plain loop's recipe)
    "plain-classic": ("plain loop, classic recipe", "classic"),
    "plain-recipe": ("plain loop, distgan's recipe", "distgan"),
    "distgan-classic": ("distgan, classic recipe", CLASSIC),
    "distgan": ("distgan, its recipe", []),
    "distgan-ddp": ("distgan, its recipe, 2 DDP workers", ["scale.workers=2"]),
}


class ClassicG(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(Z, 256 * 7 * 7, bias=False), nn.Unflatten(1, (256, 7, 7)),
            nn.BatchNorm2d(256), nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.ConvTranspose2d(128, 1, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        return self.net(z)  # (B, 100) -> (B, 1, 28, 28)


class ClassicD(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x).squeeze(1)  # (B, 1, 28, 28) -> (B,) logits


class RecipeG(nn.Module):
    """distgan's recipe's G: a DCGAN of width 32."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(Z, 64 * 7 * 7, bias=False), nn.Unflatten(1, (64, 7, 7)),
            nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        return self.net(z)  # (B, 100) -> (B, 1, 28, 28)


class RecipeD(nn.Module):
    """distgan's recipe's D: width 32, no BatchNorm, the minibatch std before the head."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2, True),
        )  # fmt: skip
        self.head = nn.Linear(65 * 7 * 7, 1)

    def forward(self, x):
        h = self.features(x)  # (B, 64, 7, 7)
        b = len(h)
        g = h.reshape(b // self.group, self.group, *h.shape[1:])  # (B/4, 4, 64, 7, 7)
        g = g - g.mean(dim=1, keepdim=True)  # the std over each group, as StyleGAN2's code has it
        std = (g.square().mean(dim=1) + 1e-8).sqrt().flatten(1).mean(1)  # (B/4,)
        std = std.repeat_interleave(self.group).view(b, 1, 1, 1).expand(b, 1, 7, 7)
        return self.head(torch.cat([h, std], 1).flatten(1)).squeeze(1)  # (B,) logits


def init_dcgan(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def plain_loop(out: Path, recipe: str, seed: int, marks: list[float], launched: float) -> None:
    """A plain GAN loop with the ``recipe`` (classic or distgan); saves the G it would sample
    from (distgan's recipe: the EMA) as ``G-<seconds>.pt`` at each mark (seconds since
    ``launched``)."""
    from distgan.data import read_idx  # the IDX reader only; the loop itself is plain PyTorch

    folder = splits.fashion_folder()
    x, _ = read_idx(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    x = torch.from_numpy(x).float().div_(127.5).sub_(1)  # (60000, 1, 28, 28) in [-1, 1]
    torch.manual_seed(seed)
    classic = recipe == "classic"
    G, D = (ClassicG(), ClassicD()) if classic else (RecipeG(), RecipeD())
    G.apply(init_dcgan)
    D.apply(init_dcgan)
    lr, betas = (2e-4, (0.5, 0.999)) if classic else (1e-3, (0.5, 0.99))
    opt_g = torch.optim.Adam(G.parameters(), lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr, betas=betas)
    ema = None if classic else copy.deepcopy(G).eval().requires_grad_(False)
    bce = nn.BCEWithLogitsLoss()
    todo, steps = sorted(marks), 0
    while todo:
        for idx in torch.randperm(len(x)).split(BATCH):
            if not classic:  # the rates fall linearly to 0 by the last mark
                for group in (*opt_g.param_groups, *opt_d.param_groups):
                    group["lr"] = lr * max(0.0, 1 - (time.time() - launched) / marks[-1])
            real = x[idx]
            fake = G(torch.randn(len(real), Z))
            ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
            loss_d = bce(D(real), ones) + bce(D(fake.detach()), zeros)
            if not classic and steps % 16 == 0:  # lazy R1: γ/2 · ‖∇D(real)‖², × 16, γ = 1
                real.requires_grad_(True)
                (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
                loss_d = loss_d + 0.5 * 16 * grad.square().flatten(1).sum(1).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(D(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            steps += 1
            if ema is not None:  # half-life 10,000 images, at most 5% of the images seen
                decay = 0.5 ** (BATCH / min(10_000, 0.05 * steps * BATCH))
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), G.parameters()):
                        p_ema.lerp_(p, 1 - decay)
                    for b_ema, b in zip(ema.buffers(), G.buffers()):
                        b_ema.copy_(b)
            if time.time() - launched >= todo[0]:
                state = (G if ema is None else ema).state_dict()
                torch.save({"G": state, "steps": steps}, out / f"G-{todo[0]:g}.pt")
                print(f"{recipe}: {todo.pop(0):g} s, step {steps}", flush=True)
                if not todo:
                    break


def run_plain(out: Path, recipe: str, seed: int, marks: list[float]) -> None:
    """The plain loop in a process of its own, launched now, into ``out`` (new)."""
    out.mkdir(parents=True)
    launched = time.time()
    (out / "launched").write_text(repr(launched))
    cmd = [sys.executable, __file__, "--plain-worker", str(out), "--recipe", recipe,
           "--seeds", str(seed), "--launched", repr(launched),
           "--marks", *(str(m / 60) for m in marks)]  # fmt: skip
    subprocess.run(cmd, check=True)


def plain_marks(out: Path, recipe: str, marks: list[float], n: int, test: Path):
    """{mark: (steps, seconds since launch, figures, protocol)} of a plain loop's saved Gs."""
    got = {}
    for mark in marks:
        state = torch.load(out / f"G-{mark:g}.pt")
        G = ClassicG() if recipe == "classic" else RecipeG()
        G.load_state_dict(state["G"])
        G.eval()
        g = torch.Generator().manual_seed(0)  # latent seed 0, as distgan eval's default
        z = torch.randn(n, Z, generator=g)
        with torch.no_grad():
            images = torch.cat([G(c) for c in z.split(500)])  # (n, 1, 28, 28)
        got[mark] = (state["steps"], mark, *score_images(images, test))
    return got


def run_distgan(root: Path, job: str, sets: list[str], seed: int, marks: list[float], every: int):
    """``distgan train JOB`` launched now into the runs root ``root`` (new), until the last
    mark (``train.max_minutes``), a checkpoint every ``every`` steps, all kept."""
    sets = [f"data.source={splits.TRAIN60K}", f"train.max_minutes={marks[-1] / 60:g}",
            "train.steps=100000000", f"train.checkpoint_every={every}",
            "train.keep_checkpoints=100000", *sets]  # fmt: skip
    launched = time.time()
    train(job, sets, root, seed)
    (root / "launched").write_text(repr(launched))


def distgan_marks(root: Path, marks: list[float], n: int, test: Path):
    """{mark: (step, seconds since launch, figures, protocol)}: the run's last checkpoint written
    before each mark, scored by ``distgan eval``. The checkpoints no mark uses are removed."""
    from distgan.train import checkpoint as ckpts

    run, launched = run_in(root), float((root / "launched").read_text())
    written = [Path(f) for f in ckpts.checkpoints(run)]
    at = {f: os.stat(f / ckpts.STATE_FILE).st_mtime - launched for f in written}
    chosen = {}
    for mark in marks:
        before = [f for f in written if at[f] <= mark]
        if before:
            chosen[mark] = before[-1]
    for folder in written[:-1]:
        if folder not in chosen.values():
            shutil.rmtree(folder)
    got = {}
    for mark, folder in chosen.items():
        figures, proto = evaluate(folder, test, n)
        step = json.loads((folder / "eval.json").read_text())["step"]
        got[mark] = (step, at[folder], figures, proto)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(ROWS), help="these rows (default all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="a run each")
    ap.add_argument("--job", default="jobs/fashion_dcgan.yaml", help="distgan's job")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an override of the job in every distgan row (repeatable)")  # fmt: skip
    ap.add_argument("--marks", type=float, nargs="+", default=[2, 5, 10], help="minutes")
    ap.add_argument("--every", type=int, default=250, help="distgan's checkpoint interval")
    ap.add_argument("--n", type=int, default=10000, help="samples scored at a mark")
    ap.add_argument("--out", default="runs/bench-time_to_quality", help="scratch (emptied)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the runs already in --out again, without training")  # fmt: skip
    ap.add_argument("--features", default=cli_runs.FEATURES,
                    help="the judge: fashion-mnist (shipped) or fashion-mnist-b (the second, "
                         "trained apart)")  # fmt: skip
    ap.add_argument("--plain-worker", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", help=argparse.SUPPRESS)
    ap.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    marks = sorted(m * 60 for m in args.marks)  # seconds
    if args.plain_worker:
        plain_loop(Path(args.plain_worker), args.recipe, args.seeds[0], marks, args.launched)
        return

    cli_runs.FEATURES = args.features  # what evaluate and score_images judge with
    _, test = splits.imported()
    out = (ROOT / args.out).resolve()
    if not args.rescore:
        shutil.rmtree(out, ignore_errors=True)
    names = args.only or list(ROWS)
    scored = {}  # (row, seed) -> {mark: (steps, at, figures, protocol)}
    for name in names:
        recipe = ROWS[name][1]
        for seed in args.seeds:
            folder = out / f"{name}-seed{seed}"
            if isinstance(recipe, str):
                if not args.rescore:
                    run_plain(folder, recipe, seed, marks)
                scored[name, seed] = plain_marks(folder, recipe, marks, args.n, test)
            else:
                if not args.rescore:
                    run_distgan(folder, args.job, [*recipe, *args.set], seed, marks, args.every)
                scored[name, seed] = distgan_marks(folder, marks, args.n, test)
            for mark, (steps, at, figures, _) in scored[name, seed].items():
                print(json.dumps({"row": name, "seed": seed, "mark_s": mark, "steps": steps,
                                  "at_s": round(at, 1), **figures}), flush=True)  # fmt: skip

    proto = next(p for got in scored.values() for (*_, p) in got.values())
    print()
    print(f"distgan: {' '.join([args.job, *(f'--set {s}' for s in args.set)])}; classic: "
          f"--set {' --set '.join(CLASSIC)}; trained on {splits.TRAIN60K.relative_to(ROOT)} "
          f"(60,000 images); seeds {', '.join(map(str, args.seeds))}: the mean over the seeds "
          "scored at a mark, FID and KID with their range (min–max)")  # fmt: skip
    print(protocol_line(proto, test))
    print()
    print("| trainer | minutes | seeds | scored at (s) | G steps | images | FID ↓ | KID ↓ "
          "| precision ↑ | recall ↑ | class. score ↑ | classes ↑ | asked class ↑ |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for mark in marks:
            got = [scored[name, s][mark] for s in args.seeds if mark in scored[name, s]]
            if not got:
                continue
            figures = [f for *_, f, _ in got]

            def mean(key: str, figures=figures) -> float:
                return statistics.mean(f[key] for f in figures)

            steps = statistics.mean(g[0] for g in got)
            asked = f"{mean(ASKED):.1%}" if all(ASKED in f for f in figures) else ""
            print(f"| {ROWS[name][0]} | {mark / 60:g} | {len(got)} | "
                  f"{statistics.mean(g[1] for g in got):.0f} | {steps:,.0f} | "
                  f"{steps * BATCH:,.0f} | {spread([f['fid'] for f in figures])} | "
                  f"{spread([f['kid'] for f in figures], 3)} | {mean('precision'):.3f} | "
                  f"{mean('recall'):.3f} | {mean('classifier_score'):.2f} | "
                  f"{mean('class_coverage') * 10:.1f}/10 | {asked} |")  # fmt: skip


if __name__ == "__main__":
    main()
