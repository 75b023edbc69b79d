"""Generators read back from checkpoints (``generate`` itself, which draws samples, is in models).

    G, spec, folder, ckpt = load_generator("runs/00003-quickstart")  # latest, EMA weights
    x = generate(G, spec.model.z_dim, n=1000, seed=0)  # distgan.models: (1000, C, H, W) in [-1, 1]

Used by ``distgan sample``, ``distgan eval`` and the in-training evaluation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distgan.config import load_resolved
from distgan.errors import CheckpointError, JobError
from distgan.models import models_for_job
from distgan.specs import JobSpec
from distgan.storage import display, is_uri, join, open_location
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import BEST


def resolve_checkpoint(source: str | Path) -> str | Path:
    """A checkpoint folder: ``source`` itself, or the latest loadable one of a run directory, or
    its ``best/`` when that is the only checkpoint it holds (a PBT trial's folder: Tune keeps its
    checkpoints elsewhere). ``source`` is a local path or a URI (a run in object storage)."""
    if is_uri(str(source)):
        loc = open_location(str(source), field="RUN")
        if loc.is_file(ckpts.STATE_FILE):
            return loc.uri
        if loc.name == ckpts.STATE_FILE and loc.is_file():
            return loc.parent().uri
        if not loc.exists():
            raise CheckpointError(f"{loc}: no such run or checkpoint in the storage")
        folder = ckpts.latest(loc.uri)
        only_best = not ckpts.checkpoints(loc.uri) and loc.is_file(f"{BEST}/{ckpts.STATE_FILE}")
        if folder is None and only_best:
            folder = loc.child(BEST).uri
        if folder is None:
            raise CheckpointError(f"{loc}: no loadable checkpoint in this run yet")
        return folder
    source = Path(source)
    if (source / ckpts.STATE_FILE).is_file():
        return source
    if source.is_file() and source.name == ckpts.STATE_FILE:
        return source.parent
    if not source.exists():
        raise CheckpointError(f"{source}: no such run directory or checkpoint")
    folder = ckpts.latest(source)
    if (
        folder is None
        and not ckpts.checkpoints(source)
        and (source / BEST / ckpts.STATE_FILE).is_file()
    ):
        folder = source / BEST
    if folder is None:
        raise CheckpointError(f"{source}: no loadable checkpoint in this run directory yet")
    return folder


def load_generator(source: str | Path) -> tuple[torch.nn.Module, JobSpec, str | Path, dict]:
    """The EMA generator (G if the run kept no EMA) of a checkpoint, in eval mode.

    Returns (G, the job it was trained by, the checkpoint folder, the checkpoint dict).
    """
    folder = resolve_checkpoint(source)
    ckpt = ckpts.load(folder)
    source = display(join(str(folder), ckpts.STATE_FILE))
    spec = load_resolved(ckpt["job"], source=source)
    num_classes = int(ckpt.get("num_classes") or 0)  # absent before conditional models
    if spec.model.conditional and num_classes < 1:
        raise CheckpointError(
            f"{source}: its job asks for a conditional model but the checkpoint records no "
            "classes; the file was altered or mixed up with another run's"
        )
    try:
        G, _ = models_for_job(spec.model, tuple(ckpt["image_shape"]), num_classes)
    except JobError as e:  # a user's own model whose module is gone or has changed
        raise JobError(f"{source}: {e}") from None
    try:
        G.load_state_dict(ckpt["G_ema"] or ckpt["G"])
    except (RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(
            f"{display(join(str(folder), ckpts.STATE_FILE))}: its generator does not match the "
            f"model section of the job stored in it ({first}); the file was altered or mixed up "
            "with another run's"
        ) from None
    return G.eval(), spec, folder, ckpt
