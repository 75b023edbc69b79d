"""The checkpoint format: one ``state.pt`` holding the whole adversarial state.

    ckpt = snapshot(state, job_yaml, rng_states, metrics)   # on rank 0
    save(ckpt, folder)                                       # folder/state.pt, written atomically
    ckpt = load(latest(run_dir))                             # weights_only=True: never runs code
    restore(state, ckpt, rank)

A checkpoint holds G, D, G_ema, both optimizers, both AMP grad scalers, step, epoch, the position
inside the epoch, every rank's RNG states, the last metrics and the resolved job (as YAML text).
Only tensors, numbers, strings, lists and dicts go in, so ``torch.load(weights_only=True)`` reads
it and a checkpoint cannot execute code when loaded.
"""

from __future__ import annotations

import io
import os
import pickle
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distgan.ada_tuner import AdaTuner
from distgan.ema import EMA
from distgan.errors import CheckpointError
from distgan.models import models_for_job, unwrap
from distgan.step import Game, Nets
from distgan.storage import Location, is_uri, join, open_location, split_query

FORMAT = "distgan-checkpoint/1"
STATE_FILE = "state.pt"
MARKER = "registered.json"  # what Ray Train copies into a checkpoint folder (worker.py)
CHECKPOINTS = "checkpoints"  # inside a run directory; Ray Train's storage folder for the run
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainState:
    """Everything that changes while training, i.e. everything a checkpoint must hold."""

    nets: Nets
    game: Game  # fixed for the run: not in the checkpoint (the job and the data rebuild it)
    ema: EMA | None
    ada: AdaTuner | None  # ADA's augmentation probability (train.ada_target), None when off
    path_length: torch.nn.Module | None  # its running mean of G's path lengths (loss.pl_weight)
    image_shape: tuple[int, int, int]  # (C, H, W) of the data G learns
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch already consumed (exact resume)
    images_seen: int = 0
    lr_scale: float = 1.0  # the divergence guard's factor on the job's learning rates
    rollbacks: int = 0  # the divergence guard's rollbacks so far
    train_seconds: float = 0.0  # training time of the whole run up to ``step`` (all parts)


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def snapshot(
    state: TrainState, job_yaml: str, rng_states: list[dict], metrics: dict[str, float]
) -> dict[str, Any]:
    nets = state.nets
    return {
        "format": FORMAT,
        "step": state.step,
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "images_seen": state.images_seen,
        "image_shape": list(state.image_shape),
        "num_classes": unwrap(nets.G).num_classes,  # of a conditional G, else 0
        "G": unwrap(nets.G).state_dict(),
        "D": unwrap(nets.D).state_dict(),
        "G_ema": state.ema.state_dict() if state.ema else None,
        "opt_g": nets.opt_g.state_dict(),
        "opt_d": nets.opt_d.state_dict(),
        "scaler_g": nets.scaler_g.state_dict(),
        "scaler_d": nets.scaler_d.state_dict(),
        "rng": rng_states,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "job": job_yaml,
        "guard": {"lr_scale": state.lr_scale, "rollbacks": state.rollbacks},
        "ada": state.ada.state_dict() if state.ada else None,
        "path_length": state.path_length.state_dict() if state.path_length else None,
    }


def restore(state: TrainState, ckpt: dict[str, Any], rank: int, source: str) -> None:
    """Loads a checkpoint into ``state``; this rank's RNG too when the world size matches."""
    nets = state.nets
    _load_weights(unwrap(nets.G), unwrap(nets.D), ckpt, source)
    if state.ema is not None:
        state.ema.load_state_dict(ckpt["G_ema"] or ckpt["G"])
    nets.opt_g.load_state_dict(ckpt["opt_g"])
    nets.opt_d.load_state_dict(ckpt["opt_d"])
    nets.scaler_g.load_state_dict(ckpt["scaler_g"])
    nets.scaler_d.load_state_dict(ckpt["scaler_d"])
    state.step = int(ckpt["step"])
    state.epoch = int(ckpt["epoch"])
    state.batch_in_epoch = int(ckpt["batch_in_epoch"])
    state.images_seen = int(ckpt["images_seen"])
    guard = ckpt.get("guard") or {}  # absent in checkpoints written before the guard
    state.lr_scale = float(guard.get("lr_scale", 1.0))
    state.rollbacks = int(guard.get("rollbacks", 0))
    state.train_seconds = float(ckpt.get("metrics", {}).get("elapsed_s", 0.0))
    if state.ada is not None and ckpt.get("ada"):  # a resume goes on with the same p
        state.ada.load_state_dict(ckpt["ada"])
    if state.path_length is not None and ckpt.get("path_length"):
        state.path_length.load_state_dict(ckpt["path_length"])
    if rank < len(ckpt["rng"]):
        set_rng_state(ckpt["rng"][rank])


def _load_weights(G: torch.nn.Module, D: torch.nn.Module, ckpt: dict[str, Any], source: str):
    try:
        G.load_state_dict(ckpt["G"])
        D.load_state_dict(ckpt["D"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(
            f"{source}: its G/D do not match this job's model section ({first}); resume with "
            "the job the checkpoint was written by (its job.resolved.yaml)"
        ) from None


def check_compatible(
    ckpt: dict[str, Any], spec, shape: tuple[int, int, int], source: str, num_classes: int = 0
) -> None:
    """CheckpointError unless ``ckpt`` was trained on images of ``shape`` (and, for a conditional
    model, ``num_classes`` classes) and its G and D load into the models of ``spec`` (a JobSpec).
    Run on the driver before a resume writes anything."""
    trained = tuple(ckpt.get("image_shape") or ())
    if trained != tuple(shape):
        raise CheckpointError(
            f"{source}: trained on {'×'.join(map(str, trained))} images, but data.source now "
            f"holds {'×'.join(map(str, shape))} images; resume with the data the run was "
            "trained on, or start a new run"
        )
    trained_classes = int(ckpt.get("num_classes") or 0)  # absent before conditional models
    if spec.model.conditional and trained_classes != num_classes:
        raise CheckpointError(
            f"{source}: trained on {trained_classes} classes, but data.source now holds "
            f"{num_classes}; resume with the data the run was trained on, or start a new run"
        )
    G, D = models_for_job(spec.model, shape, num_classes, classifier=spec.loss.ac_weight > 0)
    _load_weights(G, D, ckpt, source)


def save(ckpt: dict[str, Any], folder: str | Path) -> Path:
    """Writes ``folder/state.pt`` through a temporary name, so a crash or a full disk leaves no
    half file (and no temporary one)."""
    path = Path(folder) / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    try:
        # Through a Python file, whose failed write raises OSError with its errno (ENOSPC for a
        # full disk), where torch.save to a path raises a bare RuntimeError.
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_into_run(ckpt: dict[str, Any], run: Location, name: str) -> None:
    """Writes the checkpoint ``name`` (``step_N``) into the run's storage, whole or not at all:
    on a disk through a temporary name renamed into place, in a bucket as one PUT. Ray Train's
    own copy of a checkpoint writes straight under the final name, which a full disk leaves
    half written."""
    if run.is_local:
        folder = Path(run.path) / CHECKPOINTS / name
        folder.mkdir(parents=True, exist_ok=True)
        save(ckpt, folder)
    else:
        run.write_bytes(f"{CHECKPOINTS}/{name}/{STATE_FILE}", to_bytes(ckpt))


def to_bytes(ckpt: dict[str, Any]) -> bytes:
    """The checkpoint as the bytes of a ``state.pt`` (for storage that is not a local disk)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint (a ``state.pt`` or its folder, a local path or a storage URI)
    without executing any code in it."""
    if is_uri(str(path)):
        folder = open_location(str(path), field="checkpoint")
        if not folder.path.endswith(f"/{STATE_FILE}"):
            folder = folder.child(STATE_FILE)
        if not folder.is_file():
            raise CheckpointError(f"{folder}: no such checkpoint file")
        return _unpickle(io.BytesIO(folder.read_bytes()), str(folder), map_location)
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return _unpickle(path, str(path), map_location)


def _unpickle(source, path: str, map_location) -> dict[str, Any]:
    try:
        ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own text suggests weights_only=False, which is exactly what must not be done.
        found = re.search(r"GLOBAL (\S+)", str(e))
        if not found:
            raise CheckpointError(
                f"{path}: not a loadable distgan checkpoint (not a torch file, or damaged); use "
                "an earlier checkpoint"
            ) from None
        code = found.group(1)
        raise CheckpointError(
            f"{path}: refused: unpickling it would run Python code ({code}); distgan loads only "
            "tensors, so use a checkpoint that distgan wrote"
        ) from None
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a loadable distgan checkpoint ({reason}); use an earlier checkpoint"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a distgan checkpoint (format {FORMAT} expected); pass a checkpoint "
            "folder that distgan train wrote (RUN/checkpoints/step_N) or a run directory"
        )
    return ckpt


def checkpoints(run_dir: str | Path) -> list[Path] | list[str]:
    """The run's checkpoint folders that hold a state file, oldest first (Paths for a local run,
    URIs for a run in object storage)."""
    if is_uri(str(run_dir)):
        root = open_location(str(run_dir), field="run").child(CHECKPOINTS)
        steps = [(int(m.group(1)), n) for n in root.list() if (m := _STEP_DIR.match(n))]
        return [
            join(root.uri, name)
            for _, name in sorted(steps)
            if root.is_file(f"{name}/{STATE_FILE}")
        ]
    root = Path(run_dir) / CHECKPOINTS
    found = []
    for d in root.glob("step_*") if root.is_dir() else ():
        m = _STEP_DIR.match(d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def step_of(checkpoint: str | Path) -> int:
    """The step in a checkpoint's folder name (``.../step_0000500`` or its ``state.pt``, a path
    or a URI); -1 for a name that holds none."""
    path = split_query(str(checkpoint))[0].rstrip("/")
    if posixpath.basename(path) == STATE_FILE:
        path = posixpath.dirname(path)
    m = _STEP_DIR.match(posixpath.basename(path))
    return int(m.group(1)) if m else -1


def checkpoint_step(run: Location | str | Path) -> int | None:
    """The step of the run's newest checkpoint, or None. Its state.pt is listed, not loaded (a
    stop or a failure says this, and a checkpoint can be gigabytes in a bucket): distgan writes
    each one whole or not at all (``save_into_run``)."""
    written = checkpoints(run.uri if isinstance(run, Location) else run)
    return step_of(written[-1]) if written else None


def latest(run_dir: str | Path) -> Path | str | None:
    """The newest checkpoint folder of a run whose state file loads, or None."""
    for folder in reversed(checkpoints(run_dir)):
        try:
            load(folder)
        except CheckpointError:
            continue
        return folder
    return None
