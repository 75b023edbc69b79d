"""The project's feature network: shipped weights, training, loading, and metric sanity.

The shipped Fashion-MNIST weights must classify real images well, load without unpickling
code, and give a feature space where FID and KID grow with the damage done to real images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distgan.data import EMBEDDED_DIR, load_arrays, read_idx, read_manifest, write_shards
from distgan.errors import CheckpointError, DataError
from distgan.metrics import stats
from distgan.metrics.features import (
    FORMAT,
    SHIPPED,
    FeatureExtractor,
    load_feature_extractor,
)
from distgan.metrics.fitting import fit_features

FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion-mnist"
NOISE_LEVELS = (0.05, 0.1, 0.2, 0.4)
BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    return torch.from_numpy(images).float() / 127.5 - 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shipped() -> FeatureExtractor:
    return load_feature_extractor("fashion-mnist")


@pytest.fixture(scope="module")
def t10k() -> tuple[torch.Tensor, np.ndarray]:
    """The first 2,000 Fashion-MNIST test images in [-1, 1] and their labels."""
    images = FASHION / "t10k-images-idx3-ubyte.gz"
    if not images.is_file():
        pytest.skip(f"Fashion-MNIST test files not found in {FASHION}")
    x, y = read_idx(images, FASHION / "t10k-labels-idx1-ubyte.gz", limit=2000)
    return to_unit(x), y


def accuracy(extractor: FeatureExtractor, x: torch.Tensor, labels: np.ndarray) -> float:
    _, probs = extractor.extract(x)
    return float((probs.argmax(1).numpy() == labels).mean())


def test_shipped_weights_classify_training_and_test_images(shipped, t10k):
    state = torch.load(SHIPPED["fashion-mnist"], weights_only=True)
    assert state["format"] == FORMAT and state["in_shape"] == [1, 28, 28]
    assert state["accuracy"] >= 0.9
    assert SHIPPED["fashion-mnist"].stat().st_size < 3 * 2**20
    images, labels = load_arrays(read_manifest(EMBEDDED_DIR))
    assert accuracy(shipped, to_unit(images[:2000]), labels[:2000]) >= 0.9
    assert accuracy(shipped, *t10k) >= 0.88


def test_shipped_sidecar_hash_matches_file_and_extractor(shipped):
    path = SHIPPED["fashion-mnist"]
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["sha256"] == sha256(path) == shipped.sha256
    assert info["accuracy"] >= 0.9
    assert info["command"].startswith("distgan eval fit-features ")
    assert (shipped.dim, shipped.num_classes, shipped.in_shape) == (128, 10, (1, 28, 28))


def test_extract_outputs_and_shape_check(shipped, t10k):
    features, probs = shipped.extract(t10k[0][:300], batch_size=128)
    assert features.shape == (300, 128) and features.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(300), atol=1e-5)
    # Pre-ReLU features: no dimension is constant (a dead unit would make the covariance singular).
    assert (features.std(0) > 1e-3).all()
    with pytest.raises(ValueError, match=r"1×28×28"):
        shipped.extract(torch.zeros(2, 3, 32, 32))


def test_fit_features_on_a_small_dataset_is_picked_up_by_auto(tmp_path):
    images, labels = load_arrays(read_manifest(EMBEDDED_DIR))
    folder = tmp_path / "small"
    write_shards(images[:2000], labels[:2000], folder, source="embedded first 2000")
    lines = []
    info = fit_features(folder, epochs=2, batch_size=64, log=lines.append)

    assert len(lines) == 3 and lines[0].startswith("epoch 1/2: loss ")
    assert "test accuracy" in lines[-1] and str(folder / "features.pt") in lines[-1]
    assert info["accuracy"] > 0.5  # chance is 0.1
    assert "held-out 200 of embedded first 2000" in info["test"]
    assert json.loads((folder / "features.json").read_text()) == info
    assert info["sha256"] == sha256(folder / "features.pt")
    extractor = load_feature_extractor("auto", folder)
    assert extractor.sha256 == info["sha256"]
    assert accuracy(extractor, to_unit(images[:500]), labels[:500]) > 0.5


def test_fit_features_needs_labels(tmp_path):
    folder = tmp_path / "unlabelled"
    write_shards(np.zeros((4, 1, 28, 28), np.uint8), None, folder, source="zeros")
    with pytest.raises(DataError, match="unlabelled.*no labels"):
        fit_features(folder, epochs=1)


def test_fit_features_to_storage_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """The weights for a URI are written in a temporary folder, uploaded, and the folder goes:
    after a fit, and after one that fails (no labels) before it trains."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    folder = tmp_path / "labelled"
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28), dtype=np.uint8)
    write_shards(images, np.arange(40) % 2, folder, source="noise")
    out = f"file://{tmp_path}/store/features.pt"
    info = fit_features(folder, out=out, epochs=1, batch_size=20, log=[].append)
    assert info["command"].endswith(f"--out {out}")
    stored = tmp_path / "store"
    assert sorted(p.name for p in stored.iterdir()) == ["features.json", "features.pt"]
    assert json.loads((stored / "features.json").read_text())["sha256"] == info["sha256"]
    assert not list(temp.glob("distgan-features-*"))

    unlabelled = tmp_path / "unlabelled"
    write_shards(np.zeros((4, 1, 28, 28), np.uint8), None, unlabelled, source="zeros")
    with pytest.raises(DataError, match="no labels"):
        fit_features(unlabelled, out=f"file://{tmp_path}/other/features.pt", epochs=1)
    assert not list(temp.glob("distgan-features-*"))


def test_auto_without_weights_for_the_shape_asks_for_fit_features(tmp_path):
    folder = tmp_path / "rgb"
    write_shards(np.zeros((4, 3, 32, 32), np.uint8), np.arange(4), folder, source="zeros")
    with pytest.raises(DataError, match="distgan eval fit-features"):
        load_feature_extractor("auto", folder)


class Embed(nn.Module):
    def __init__(self, with_logits: bool):
        super().__init__()
        self.with_logits = with_logits
        self.features = nn.Linear(784, 16)
        self.classes = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x.flatten(1))
        return f, self.classes(f)


class EmbedOnly(Embed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still used
@pytest.mark.parametrize("module", [EmbedOnly(False), Embed(True)], ids=["features", "tuple"])
def test_torchscript_module_loads_by_path(tmp_path, module):
    path = tmp_path / "embed.pt"
    torch.jit.script(module).save(str(path))
    extractor = load_feature_extractor(path)
    features, probs = extractor.extract(torch.rand(7, 1, 28, 28) * 2 - 1, batch_size=3)
    assert features.shape == (7, 16) and extractor.dim == 16
    assert extractor.sha256 == sha256(path)
    if isinstance(module, EmbedOnly):
        assert probs is None and extractor.num_classes is None
    else:
        assert probs.shape == (7, 5) and extractor.num_classes == 5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_network_is_tried_on_the_datas_shape_before_a_run(tmp_path):
    from distgan.config import from_dict
    from distgan.errors import JobError
    from distgan.train.launch import check_job

    path = tmp_path / "embed.pt"
    torch.jit.script(Embed(True)).save(str(path))  # takes 784 pixels: 1×28×28 only
    for side in (28, 30):
        images = np.zeros((4, 1, side, side), np.uint8)
        write_shards(images, None, tmp_path / f"d{side}", source="z")
    job = {"model": {"arch": "mlp"}, "eval": {"every": 10, "features": str(path)}}
    ok = from_dict({**job, "data": {"source": str(tmp_path / "d28")}})
    assert check_job(ok, "ok.yaml").shape == (1, 28, 28)
    bad = from_dict({**job, "data": {"source": str(tmp_path / "d30")}})
    with pytest.raises(JobError, match=r"bad.yaml: eval.features: embed.pt fails on 1×30×30"):
        check_job(bad, "bad.yaml")


class Exploit:
    """Unpickling this runs a shell command; a safe loader must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    payload = {"format": FORMAT, "state_dict": Exploit(marker)}
    if writer == "torch.save":
        torch.save(payload, path)  # pickles the payload: __reduce__ is called, not os.system
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_feature_extractor(path)
    assert not marker.exists()


def test_missing_or_corrupt_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt: no such"):
        load_feature_extractor(tmp_path / "nothing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(SHIPPED["fashion-mnist"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_feature_extractor(truncated)


def noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * sigma
    return (x + noise).clamp(-1, 1)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of (N, C, H, W) images, edges replicated."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (radius,) * 4, mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def test_real_images_are_closer_to_real_than_to_noisy(shipped, t10k):
    x = t10k[0]
    a, _ = shipped.extract(x[:1000])
    b, _ = shipped.extract(x[1000:])
    b_noisy, _ = shipped.extract(noisy(x[1000:], 0.5))
    a, b, b_noisy = (f.numpy().astype(np.float64) for f in (a, b, b_noisy))
    real_gap = np.linalg.norm(a.mean(0) - b.mean(0))
    noisy_gap = np.linalg.norm(a.mean(0) - b_noisy.mean(0))
    assert real_gap < 0.1 * noisy_gap


def test_fid_and_kid_grow_with_noise_and_blur(shipped, t10k):
    x = t10k[0]
    real = shipped.extract(x[:1000])[0].numpy()
    mu, sigma = stats.mean_cov(real)

    def scores(images: torch.Tensor) -> tuple[float, float]:
        f = shipped.extract(images)[0].numpy()
        kid, _ = stats.kid(real, f, subsets=10, subset_size=500)
        return stats.frechet_distance(mu, sigma, *stats.mean_cov(f)), kid

    fid_real, kid_real = scores(x[1000:])
    by_noise = [scores(noisy(x[1000:], s)) for s in NOISE_LEVELS]
    by_blur = [scores(blurred(x[1000:], s)) for s in BLUR_SIGMAS]

    # FID of 1,000 against 1,000 samples keeps a small positive bias (about 2 in these 128-d
    # features); KID is unbiased. Both stay below the mildest damage of either kind.
    assert fid_real < 0.1 * by_noise[1][0] and fid_real < min(by_noise[0][0], by_blur[0][0])
    assert abs(kid_real) < 0.05 * by_noise[1][1] and kid_real < min(by_noise[0][1], by_blur[0][1])
    for levels in (by_noise, by_blur):
        fids, kids = zip(*levels, strict=True)
        assert all(lo < hi for lo, hi in zip(fids, fids[1:])), fids
        assert all(lo < hi for lo, hi in zip(kids, kids[1:])), kids


class Marker(nn.Module):
    """A TorchScript feature network that overwrites ``path`` (8 bytes) each time it runs:
    ``torch.from_file(..., shared=True)`` maps the file, so a planted archive can write files."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.features = nn.Linear(784, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.path, True, 8, dtype=torch.uint8)
        written.fill_(33)
        return self.features(x.flatten(1)) + written.sum().float()  # used: never optimised out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_features_pt_found_beside_the_data_never_runs(tmp_path, capsys):
    """A dataset folder's features.pt that is code: `auto` (train --dry-run, eval) refuses it in
    one line and it writes nothing; named in the job, the same file runs (the user asked)."""
    from distgan.cli import main
    from tests.tiny_runs import train_run

    marker = tmp_path / "marker"
    marker.write_bytes(bytes(8))
    data = tmp_path / "data"
    write_shards(np.zeros((64, 1, 28, 28), np.uint8), None, data, source="zeros")
    planted = data / "features.pt"
    torch.jit.script(Marker(str(marker))).save(str(planted))

    with pytest.raises(CheckpointError, match="TorchScript module, which is code"):
        load_feature_extractor("auto", data)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"data: {{source: {data}}}\nmodel: {{arch: mlp}}\neval: {{every: 10, features: auto}}\n"
    )
    assert main(["train", str(job), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.features" in err[0] and "features.pt" in err[0], err
    run_dir = train_run(tmp_path, arch="mlp")
    assert main(["eval", str(run_dir), "--n", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TorchScript" in err[0], err
    assert marker.read_bytes() == bytes(8)  # nothing ran

    named = load_feature_extractor(planted)  # the user's own choice: it runs
    named.extract(torch.zeros(2, 1, 28, 28))
    assert marker.read_bytes() == b"!" * 8


def test_fit_features_of_one_epoch_on_600_images_trains(tmp_path, capsys):
    # 540 training images in batches of 128: 5 steps in all, where the one-cycle schedule's
    # warm-up once ended at step 0 and divided by it (ZeroDivisionError).
    from distgan.cli import main

    images, labels = load_arrays(read_manifest(EMBEDDED_DIR))
    folder = tmp_path / "six-hundred"
    write_shards(images[:600], labels[:600], folder, source="embedded first 600")
    assert main(["eval", "fit-features", str(folder), "--epochs", "1"]) == 0
    assert "epoch 1/1: loss " in capsys.readouterr().out
    assert json.loads((folder / "features.json").read_text())["epochs"] == 1
    assert load_feature_extractor("auto", folder).sha256 == sha256(folder / "features.pt")
