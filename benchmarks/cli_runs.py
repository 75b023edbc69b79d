"""distgan's CLI as the benchmarks drive it, the way a user runs it: ``distgan train`` in a
subprocess, then ``distgan eval`` or ``distgan sample`` on the run it left; and a plain loop's
images scored with the same protocol as ``distgan eval``.

    run = train("jobs/fashion_dcgan.yaml", ["train.max_minutes=2"], seed=0, root=out / "base-0")
    figures, protocol = evaluate(run, real=splits.VAL10K, n=10000)
    print(protocol_line(protocol, splits.VAL10K), spread([f["fid"] for f in each_seed]))

Every run gets a runs root of its own (``run.root``), so the one run directory in it is the run's.
Nothing here builds or steps distgan's training state: the CLI does.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FEATURES = "fashion-mnist"  # the shipped feature network, named so that "auto" never picks another
METRICS = ["fid", "kid", "precision", "recall", "classifier_score", "class_coverage"]


def cli(*args: str, log: Path | None = None) -> str:
    """Runs ``python -m distgan.cli ARGS`` in the repository's root; returns its stdout. Output
    goes to ``log`` when given (stdout and stderr). SystemExit with the output's last lines when
    the command fails."""
    cmd = [sys.executable, "-m", "distgan.cli", *map(str, args)]
    if log is None:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        output = done.stdout + done.stderr
    else:
        with open(log, "w") as f:
            done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)
        output = log.read_text()
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{tail}")
    return output if log is not None else done.stdout


def train(job: str | Path, sets: list[str], root: Path, seed: int) -> Path:
    """``distgan train JOB --set train.seed=SEED --set run.root=ROOT --set ...`` (``sets``
    override the job, the seed and the root); the output goes to ``ROOT/train.log``. ``root``
    must be new or empty. Returns the run directory."""
    root.mkdir(parents=True, exist_ok=False)
    overrides = [f"train.seed={seed}", f"run.root={root}", *sets]
    cli("train", job, *(a for s in overrides for a in ("--set", s)), log=root / "train.log")
    return run_in(root)


def run_in(root: Path) -> Path:
    """The one run directory under a runs root written by ``train``."""
    (run,) = [p.parent for p in root.glob("*/job.resolved.yaml")]
    return run


def evaluate(
    source: str | Path,
    real: str | Path,
    n: int,
    metrics: list[str] = METRICS,
    n_real: int = 10000,
    seed: int = 0,
) -> tuple[dict, dict]:
    """``distgan eval SOURCE --real REAL --n N --n-real N_REAL --features fashion-mnist``:
    SOURCE (a run directory or a checkpoint folder) scored against ``n_real`` images of the
    dataset folder ``real``. The figures land in SOURCE's ``eval.json`` (which keeps every
    evaluation). Returns (figures, the protocol of the first of them)."""
    out = Path(source) / "eval.json"
    cli("eval", source, "--real", real, "--n", n, "--n-real", n_real, "--seed", seed,
        "--features", FEATURES, "--metrics", ",".join(metrics), "--out", out)  # fmt: skip
    results = json.loads(out.read_text())["results"]  # this evaluation, at the top
    return {r["metric"]: r["value"] for r in results}, results[0]["protocol"]


def sample(source: str | Path, n: int, seed: int = 0) -> np.ndarray:
    """``distgan sample SOURCE --n N --seed SEED --out x.npy``: (n, C, H, W) uint8 from G's
    EMA (or G without one); a conditional G draws every class in turn (0, 1, ..., K-1, 0, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.npy"
        cli("sample", source, "--n", n, "--seed", seed, "--out", out)
        return np.load(out)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, C, H, W) as floats in [-1, 1], as distgan's reader scales them."""
    return torch.from_numpy(images).float().div_(127.5).sub_(1)


def feature_network():
    from distgan.metrics.features import load_feature_extractor

    return load_feature_extractor(FEATURES)


def score_images(
    images: torch.Tensor,
    real: str | Path,
    metrics: list[str] = METRICS,
    n_real: int = 10000,
    seed: int = 0,
) -> tuple[dict, dict]:
    """A plain loop's samples (N, C, H, W) in [-1, 1] scored as ``evaluate`` scores a run: the
    same feature network, the same seeded subset of ``real`` (``distgan eval``'s functions).
    Returns (figures, protocol)."""
    from distgan.data import read_manifest
    from distgan.metrics import FeatureSet, compute_metrics
    from distgan.metrics.evaluate import protocol, real_reference

    extractor = feature_network()
    reference = real_reference(read_manifest(real), extractor, n_real, seed)
    f, p = extractor.extract(images)
    figures = compute_metrics(metrics, reference.features, FeatureSet(f.numpy(), p.numpy()))
    return figures, protocol(reference, extractor, len(images), seed)


def speed(run: Path) -> dict:
    """A run's G steps, training seconds and steady images/s (the median over its log intervals
    after the first, which holds the start-up), from its ``metrics.jsonl``."""
    from distgan.train.outputs import read_metrics

    records = read_metrics(run)
    rates = [r["images_per_s"] for r in records[1:]] or [records[-1]["images_per_s"]]
    last = records[-1]
    return {
        "steps": last["step"],
        "seconds": last["elapsed_s"],
        "images_per_s": statistics.median(rates),
    }


def protocol_line(proto: dict, real: Path) -> str:
    """The protocol of a figure in one line: the reference (the dataset folder ``real``) and its
    size, the samples, the feature network."""
    return (
        f"reference {real.relative_to(ROOT)} ({proto['real_count']:,} images, subset seed "
        f"{proto['real_seed']}) · {proto['fake_count']:,} samples (latent seed {proto['seed']}) · "
        f"features {proto['features']} ({proto['features_sha256'][:12]})"
    )


def spread(values: list[float], digits: int = 1) -> str:
    """Mean and range of a figure over seeds: ``12.3 (11.9–12.8)``; one value alone."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (
        f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"
    )
