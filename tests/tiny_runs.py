"""Run folders written by the real writers, for the report and export tests (no Ray).

``train_run`` trains a tiny job, built by ``train/build.py``, with ``train/loop.py`` in this
process, on random 28×28 images: ``job.resolved.yaml`` (write_resolved), ``metrics.jsonl`` and
``samples/`` (RunOutputs), ``checkpoints/step_N/`` (checkpoint.save of each snapshot the loop
reports, as the worker does through Ray), ``best/`` (RunOutputs.update_best) and ``eval.json``
(write_eval_json). NaN latents at steps 13-15 make the divergence guard skip them and roll back
once. The evaluator is a stand in (FID from the feature network would take minutes here): its
figures fall with the step. Given ``labels`` (and ``model={"conditional": True}``), it trains a
class-conditional model.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from distgan.config import from_dict
from distgan.metrics.evaluate import write_eval_json
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
from distgan.train.loop import run
from distgan.train.outputs import RunOutputs, write_resolved

SHAPE = (1, 28, 28)


def tiny_job(name: str, root: Path, arch: str = "dcgan", **sections) -> dict:
    job = {
        "data": {"source": str(root / "data")},
        "model": {"arch": arch, "width": 8, "z_dim": 8},
        "train": {"steps": 40, "batch_size": 16, "log_every": 5, "checkpoint_every": 10,
                  "sample_every": 5, "seed": 0},
        "eval": {"every": 10, "metric": "fid", "n_samples": 1000, "n_real": 1000},
        "guard": {"max_bad_steps": 3, "lr_factor": 0.5, "inject_nan": "13-15"},
        "scale": {"workers": 1},
        "run": {"name": name, "root": str(root)},
    }  # fmt: skip
    for section, values in sections.items():
        job[section] = {**job.get(section, {}), **values}
    return job


class FallingFid:
    """A stand-in evaluator: FID and KID that fall with the step, a precision that rises."""

    metric = "fid"
    higher_is_better = False

    def __call__(self, state: ckpts.TrainState) -> dict[str, float]:
        s = state.step
        return {"fid": 300 / math.sqrt(s), "kid": 0.3 / s, "precision": 1 - 1 / s}


def train_run(
    root: Path,
    name: str = "00000-tiny",
    outputs: type[RunOutputs] = RunOutputs,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    **job_sections,
) -> Path:
    """Trains the tiny job into ``root/name`` (rank 0's writer: ``outputs(run_dir)``) on uint8
    ``images`` (N, 1, 28, 28) (default: 256 random ones) and ``labels`` (N,) if given; returns
    the run folder."""
    spec = from_dict(tiny_job(name, root, **job_sections))
    run_dir = root / name
    run_dir.mkdir(parents=True)
    write_resolved(spec, run_dir)
    counts = None if labels is None else dict(enumerate(torch.bincount(labels).tolist()))
    cpu = torch.device("cpu")
    state = build_state(spec, SHAPE, cpu, num_classes=len(counts or ()), class_counts=counts)
    if images is None:
        images = torch.randint(0, 256, (256, *SHAPE), dtype=torch.uint8)
    source = memory_batches(spec, images, labels, counts, cpu)

    def report(metrics: dict, snapshot: dict | None) -> None:
        if snapshot is not None:
            folder = run_dir / ckpts.CHECKPOINTS / ckpts.checkpoint_dir_name(snapshot["step"])
            folder.mkdir(parents=True)
            ckpts.save(snapshot, folder)

    run(
        state,
        source,
        spec,
        device=torch.device("cpu"),
        report=report,
        outputs=outputs(run_dir),
        job_yaml=(run_dir / "job.resolved.yaml").read_text(),
        evaluate=FallingFid(),
    )
    protocol = {
        "features": "fashion-mnist", "features_sha256": "ab" * 32, "real": "test images",
        "real_sha256": "cd" * 32, "real_count": 1000, "real_seed": 0, "fake_count": 1000, "seed": 0,
    }  # fmt: skip
    figures = {"fid": 41.5, "kid": 0.0123, "precision": 0.61, "recall": 0.42}
    write_eval_json(run_dir / "eval.json", str(run_dir / "checkpoints" / "step_0000040"), 40,
                    figures, protocol)  # fmt: skip
    return run_dir
