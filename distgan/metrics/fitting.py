"""Fitting distgan's feature network to a labelled dataset (``distgan eval fit-features``), and
the classifier training it shares with ``classify.py``.

    info = fit_features("data/fm-train", test_dir="data/fm-test")  # -> data/fm-train/features.pt
    extractor = load_feature_extractor("auto", "data/fm-train")    # features.py finds it
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distgan.data import load_arrays, read_manifest
from distgan.data.shards import file_sha256
from distgan.errors import DataError
from distgan.metrics.features import ARCHITECTURES, FORMAT, shape_text, to_float
from distgan.progress import Progress
from distgan.storage import check_reachable, display, is_uri, join, open_location

_MAX_SHIFT = 2  # pixels of random translation while training
_HOLDOUT = 0.1  # share of the dataset kept for testing when no test set is given
# A network whose test accuracy is under this many times chance (1/K) barely tells the classes
# apart, so distances in its feature space (FID, KID, ...) say little about the images.
NEAR_CHANCE = 1.5


def fit_features(
    dataset_dir: str | Path,
    *,
    test_dir: str | Path | None = None,
    out: str | Path | None = None,
    epochs: int = 6,
    batch_size: int = 128,
    seed: int = 0,
    arch: str = "featurenet",
    device: str = "cpu",
    log: Callable[[str], object] = print,
) -> dict:
    """Trains a feature network (``arch``, of features.ARCHITECTURES) on the labelled shard
    folder ``dataset_dir`` and saves its weights.

    The test accuracy is measured on ``test_dir`` if given, else on a seeded 10% of the dataset
    held out from training. Writes ``out`` (default ``<dataset_dir>/features.pt``: a plain dict
    for ``torch.load(weights_only=True)``) and a JSON sidecar ``<out stem>.json``. Prints one
    line per epoch and a last one through ``log``. Returns the sidecar's contents.
    DataError if a dataset has no labels or the two datasets differ in shape or labels.
    """
    start = time.perf_counter()
    dataset_dir = str(dataset_dir) if is_uri(str(dataset_dir)) else Path(dataset_dir)
    if out is None:
        out = join(str(dataset_dir), "features.pt") if is_uri(str(dataset_dir)) else None
        out = out or Path(dataset_dir) / "features.pt"
    remote = str(out) if is_uri(str(out)) else None  # written here, then put in the storage
    if remote is not None:
        check_reachable(open_location(remote, field="--out").parent(), "--out")  # before training
    out = None if remote is not None else Path(out)
    manifest = read_manifest(dataset_dir)
    images, labels = _labelled_arrays(manifest, dataset_dir)
    if test_dir is None:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, round(_HOLDOUT * len(images)))
        test_images, test_labels = images[order[:n_test]], labels[order[:n_test]]
        images, labels = images[order[n_test:]], labels[order[n_test:]]
        test_name = f"held-out {n_test} of {manifest.source} (seed {seed})"
    else:
        test_manifest = read_manifest(test_dir)
        test_images, test_labels = _labelled_arrays(test_manifest, Path(test_dir))
        if test_manifest.shape != manifest.shape:
            raise DataError(
                f"{test_dir}: images are {shape_text(test_manifest.shape)} but {dataset_dir} has "
                f"{shape_text(manifest.shape)}; pass a test set of the same image size"
            )
        test_name = test_manifest.source
    # Labels index the logits, so a test label the training set lacks has no output unit.
    num_classes = max(manifest.labels) + 1
    if min(manifest.labels) < 0 or test_labels.min() < 0 or test_labels.max() >= num_classes:
        raise DataError(
            f"{test_dir or dataset_dir}: labels must be 0..{num_classes - 1} (the training set's "
            f"range); re-import it with matching labels"
        )

    # A forked RNG: the seed fixes this run without resetting the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = train_classifier(
            ARCHITECTURES[arch](manifest.shape, num_classes),
            images,
            labels,
            epochs=epochs,
            batch_size=batch_size,
            device=device,
            log=log,
        )
    net.eval().cpu()
    accuracy = classifier_accuracy(net, test_images, test_labels)
    state = {
        "format": FORMAT,
        "arch": arch,
        "state_dict": net.state_dict(),
        "in_shape": list(manifest.shape),
        "num_classes": num_classes,
        "dim": net.dim,
        "accuracy": accuracy,
        "trained_on": manifest.source,
        "test": test_name,
    }
    with _written(out, remote) as path:
        _atomic_save(state, path)
        info = {
            "format": FORMAT,
            "arch": arch,
            "parameters": sum(p.numel() for p in net.parameters()),
            "accuracy": accuracy,
            "sha256": file_sha256(path),
            "in_shape": list(manifest.shape),
            "num_classes": num_classes,
            "dim": net.dim,
            "trained_on": manifest.source,
            "train_count": len(images),
            "test": test_name,
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "seconds": round(time.perf_counter() - start, 1),
            "command": _command(dataset_dir, test_dir, epochs, remote or path, seed, arch),
        }
        sidecar = path.with_suffix(".json")
        temp = sidecar.with_name(f".{sidecar.name}.tmp")
        temp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(temp, sidecar)
    log(f"test accuracy {accuracy:.4f} on {test_name}; wrote {display(remote or str(out))}")
    if near_chance(accuracy, num_classes):
        log(
            f"warning: test accuracy {accuracy:.4f} is near chance ({1 / num_classes:.4f} for "
            f"{num_classes} classes): figures in this network's features (FID, KID, ...) will "
            f"say little; fit it again with more --epochs (this: {epochs}) or more images"
        )
    return info


@contextmanager
def _written(out: Path | None, remote: str | None) -> Iterator[Path]:
    """Where ``fit_features`` writes the weights and their sidecar: ``out`` itself, or for a
    ``remote`` one, a temporary folder whose two files are uploaded when the block ends well, and
    which is removed however it ends."""
    if remote is None:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="distgan-features-") as staging:
        path = Path(staging) / "features.pt"
        yield path
        loc = open_location(remote, field="--out")
        loc.parent().upload(path, loc.name)
        loc.parent().upload(path.with_suffix(".json"), posixpath.splitext(loc.name)[0] + ".json")


def near_chance(accuracy: float, num_classes: int) -> bool:
    """Whether a classifier's ``accuracy`` over ``num_classes`` is under NEAR_CHANCE × chance."""
    return accuracy < NEAR_CHANCE / num_classes


def recorded_accuracy(path: Path) -> tuple[float, int] | None:
    """(test accuracy, classes) recorded in a feature network file that ``fit_features`` wrote;
    None for another kind of file (a TorchScript module records neither)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a TorchScript archive or any file torch.load refuses
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "accuracy" not in state:
        return None
    return float(state["accuracy"]), int(state["num_classes"])


def train_classifier(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    device: str,
    log: Callable[[str], object],
) -> nn.Module:
    """Trains ``net`` (images -> (features, logits)) on uint8 ``images`` (N, C, H, W) and
    ``labels`` (N,) on ``device``.

    AdamW with a one-cycle learning rate: it reaches good accuracy in few epochs, which is what
    keeps a 60,000-image run to a few minutes on two CPU cores.
    """
    net = net.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    total = epochs * math.ceil(len(images) / batch_size)
    # OneCycleLR's warm-up ends at step pct_start·total − 1 and divides by that: 20% of the
    # steps, but at least two, or it ends at step 0 (5 steps in all: one epoch of 600 images).
    warm_up = max(0.2, 2 / total) if total > 2 else 0.2
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=total, pct_start=warm_up
    )
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        net.train()
        order = torch.randperm(len(images))
        loss_sum, correct = 0.0, 0
        bar = Progress(f"epoch {epoch + 1}/{epochs}", total=len(images), unit="images")
        for i in range(0, len(images), batch_size):
            index = order[i : i + batch_size]
            x = _random_shift(to_float(images[index]).to(device))  # (B, C, H, W)
            y = labels[index].to(device)
            _, logits = net(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
            bar.update(len(index))
        bar.close()
        log(
            f"epoch {epoch + 1}/{epochs}: loss {loss_sum / len(images):.4f}, "
            f"train accuracy {correct / len(images):.4f}, "
            f"{time.perf_counter() - epoch_start:.1f} s"
        )
    return net


def _labelled_arrays(manifest, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A shard folder's images (N, C, H, W) uint8 and labels (N,) int64; DataError if unlabelled."""
    if manifest.labels is None:
        raise DataError(
            f"{folder}: the dataset has no labels, and a feature network is trained as a "
            f"classifier; import a labelled dataset (`distgan data import SRC --labels FILE`)"
        )
    images, labels = load_arrays(manifest)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _random_shift(x: torch.Tensor) -> torch.Tensor:
    """Translates each image by its own random offset of up to ±2 px (edges replicated)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (_MAX_SHIFT,) * 4, mode="replicate")  # (N, C, H+4, W+4)
    dy, dx = torch.randint(0, 2 * _MAX_SHIFT + 1, (2, n, 1), device=x.device)
    rows = (torch.arange(h, device=x.device) + dy)[:, :, None]  # (N, H, 1)
    cols = (torch.arange(w, device=x.device) + dx)[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def classifier_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (uint8) that ``net`` (in eval mode) classifies as ``labels``."""
    correct = 0
    for x, y in zip(images.split(1000), labels.split(1000), strict=True):
        correct += (net(to_float(x))[1].argmax(1) == y).sum().item()
    return correct / len(images)


def _atomic_save(state: dict, path: Path) -> None:
    """torch.save to a temporary name beside ``path``, then a rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _command(
    dataset_dir: Path, test_dir: str | Path | None, epochs: int, out: Path, seed: int, arch: str
) -> str:
    """The `distgan eval fit-features` command line that reproduces a run, paths as given."""
    parts = ["distgan", "eval", "fit-features", str(dataset_dir)]
    if test_dir is not None:
        parts += ["--test", str(test_dir)]
    if arch != "featurenet":
        parts += ["--arch", arch]
    if seed != 0:
        parts += ["--seed", str(seed)]
    return " ".join([*parts, "--epochs", str(epochs), "--out", str(out)])
