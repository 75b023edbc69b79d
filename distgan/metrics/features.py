"""The feature space that distgan's quality metrics are computed in.

    extractor = load_feature_extractor("auto", "data/fm-train")
    features, probs = extractor.extract(images)  # images (N, C, H, W) in [-1, 1]

No Inception weights can be downloaded here, so the project trains its own small classifier
(``FeatureNet``) on labelled real data and ships weights for Fashion-MNIST. A user who has a
feature network of their own (Inception, say) as TorchScript can load that file instead.
Fitting a FeatureNet to a dataset (``distgan eval fit-features``) is ``fitting.py``.

Two networks are shipped for Fashion-MNIST, trained apart: ``fashion-mnist`` (a FeatureNet, the
one training's evaluation and "auto" use) and ``fashion-mnist-b`` (a ``StridedNet``, another
architecture, seed and share of the data), the second judge that ``distgan eval`` reports beside
the first (``judges.py``).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distgan.data import read_manifest
from distgan.data.shards import file_sha256
from distgan.errors import CheckpointError, DataError
from distgan.metrics.strided_net import StridedNet
from distgan.progress import Progress
from distgan.storage import display, is_uri, join, open_location, split_query

FORMAT = "distgan-features/1"
FEATURE_DIM = 128
SHIPPED = {
    name: Path(__file__).parent / "weights" / f"{name}.pt"
    for name in ("fashion-mnist", "fashion-mnist-b")
}


class FeatureNet(nn.Module):
    """A small CNN classifier whose 128-d penultimate layer is the metrics' feature space.

    Three conv blocks (32, 64, 128 channels; BatchNorm, ReLU, 2×2 max pooling), a global
    average pool, then the feature layer ``Linear(128, 128) + BatchNorm1d``, then ReLU and the
    linear classifier. Global pooling makes it work for any image size of 28 px and up.

    The features are taken *before* the ReLU: every dimension then varies across images (a
    ReLU output has dead units, whose zero-variance columns make the covariance singular and
    Fréchet distance ill-conditioned), and the values are closer to Gaussian, which FID assumes.
    """

    dim = FEATURE_DIM

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        blocks = []
        for cin, cout in ((in_channels, 32), (32, 64), (64, 128)):
            blocks += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.trunk = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature = nn.Sequential(
            nn.Linear(128, FEATURE_DIM, bias=False), nn.BatchNorm1d(FEATURE_DIM)
        )
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)
        # Channels-last convolutions and BatchNorm run 2-5x faster on CPU (oneDNN) than NCHW.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) in [-1, 1] -> (features (N, 128), logits (N, K))."""
        features = self.feature(self.trunk(x.contiguous(memory_format=torch.channels_last)))
        return features, self.classifier(F.relu(features))


# The architectures of our format, by its "arch" key (a file without one, such as the first
# shipped network, is a FeatureNet): name -> builder of (in_shape, num_classes).
ARCHITECTURES = {
    "featurenet": lambda in_shape, k: FeatureNet(in_shape[0], k),
    "strided-cnn": StridedNet,
}


class FeatureExtractor:
    """A feature network ready to embed images: ours (FeatureNet weights) or a TorchScript one.

    ``name`` says which network and ``path`` is its (local) file, ``origin`` what loads it
    again on another node (a shipped name, a URI in storage, or ``path``); ``sha256`` is the
    file's hash, so reports can state exactly which features a score was computed in. ``dim`` and
    ``num_classes`` describe the output (``num_classes`` is None for a module that returns
    features only). For a TorchScript module they are learnt from its first output, and
    ``in_shape`` is None (its input size is not recorded anywhere) unless a dataset gave it.
    """

    def __init__(
        self,
        module: nn.Module | torch.jit.ScriptModule,
        *,
        name: str,
        path: Path,
        sha256: str,
        in_shape: tuple[int, int, int] | None,
        dim: int | None,
        num_classes: int | None,
        device: str | torch.device = "cpu",
    ):
        self.module = module.to(device).eval()
        self.name = name
        self.path = path
        self.sha256 = sha256
        self.in_shape = in_shape
        self.dim = dim
        self.num_classes = num_classes
        self.device = torch.device(device)
        # What loads this network again on any node: the shipped name, a URI, or the path.
        self.origin = name if path in SHIPPED.values() else str(path)

    @torch.no_grad()
    def extract(
        self, x: torch.Tensor, batch_size: int = 500, desc: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (N, C, H, W) floats in [-1, 1] -> (features (N, dim), probs (N, K) or None).

        Both are float32 on the CPU; ``probs`` are softmax class probabilities, None when the
        network has no classifier. ValueError if the images do not have the network's shape.
        ``desc`` names the progress shown (distgan.progress); None (in workers) shows none.
        """
        if x.ndim != 4 or (self.in_shape is not None and tuple(x.shape[1:]) != self.in_shape):
            want = "(N, C, H, W)" if self.in_shape is None else f"(N, {shape_text(self.in_shape)})"
            raise ValueError(
                f"feature network {self.name} takes images {want}, got {tuple(x.shape)}; "
                f"use a feature network trained on this data (`distgan eval fit-features`)"
            )
        features, probs = [], []
        with Progress(desc, total=len(x), unit="images") as bar:
            for batch in x.split(batch_size):
                f, logits = self._forward(batch.to(self.device, torch.float32))
                features.append(f.float().cpu())
                if logits is not None:
                    probs.append(logits.float().softmax(1).cpu())
                bar.update(len(batch))
        if not features:
            return torch.empty(0, self.dim or 0), None
        return torch.cat(features), torch.cat(probs) if probs else None

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One batch through the module; checks and records the shapes of what comes out."""
        output = self.module(x)
        features, logits = output if isinstance(output, tuple) else (output, None)
        n = len(x)
        if (
            features.ndim != 2
            or len(features) != n
            or (logits is not None and (logits.ndim != 2 or len(logits) != n))
        ):
            got = [tuple(t.shape) for t in (output if isinstance(output, tuple) else [output])]
            raise CheckpointError(
                f"{self.name}: the module returned {got} for {n} images; a feature network "
                f"must return features (N, d) or a tuple (features (N, d), logits (N, K))"
            )
        if self.dim is None:
            self.dim = features.shape[1]
            self.num_classes = None if logits is None else logits.shape[1]
        return features, logits


def load_feature_extractor(
    ref: str | Path,
    dataset_dir: str | Path | None = None,
    device: str = "cpu",
    allow_code: bool = True,
) -> FeatureExtractor:
    """Loads the feature network named by ``ref`` onto ``device``.

    ``ref`` is "auto" (``<dataset_dir>/features.pt`` if it exists, else the shipped
    Fashion-MNIST weights if the dataset is 1×28×28), "fashion-mnist" (the shipped weights),
    "fashion-mnist-b" (the second judge's shipped weights), or the path of a ``features.pt``
    written by ``fit_features`` or of a TorchScript module.
    Our format is read with ``weights_only=True``, so no file can run code while loading. A
    TorchScript module is code: it runs only when the user named its file (``ref`` a path or URI
    and ``allow_code``), never when "auto" finds it beside a dataset (DESIGN.md, Security).
    DataError if "auto" finds nothing for the dataset; CheckpointError for a missing or
    unusable file.
    """
    ref = str(ref)
    if ref == "auto":
        if dataset_dir is None:
            raise ValueError("load_feature_extractor('auto') needs dataset_dir")
        if is_uri(str(dataset_dir)):  # a dataset in object storage: its features.pt, if any
            own_uri = join(str(dataset_dir), "features.pt")
            if open_location(own_uri, field="eval.features").is_file():
                return _from_uri(own_uri, device, allow_code=False)
        else:
            own = Path(dataset_dir) / "features.pt"
            if own.is_file():
                return _load_file(own, own.name, device, allow_code=False)
        shape = read_manifest(dataset_dir).shape
        if shape != (1, 28, 28):
            raise DataError(
                f"{display(str(dataset_dir))}: no features.pt and no shipped feature network "
                f"for {shape_text(shape)} images; run `distgan eval fit-features {dataset_dir}`"
            )
        ref = "fashion-mnist"
    if ref in SHIPPED:
        return _load_file(SHIPPED[ref], ref, device, allow_code=False)
    if is_uri(ref):
        return _from_uri(ref, device, allow_code)
    return _load_file(Path(ref), Path(ref).name, device, allow_code)


def _from_uri(uri: str, device: str, allow_code: bool) -> FeatureExtractor:
    """A feature network in object storage; its ``origin`` is the URI, which any node reads."""
    name = posixpath.basename(split_query(uri)[0])
    extractor = _load_file(_fetched(uri), name, device, allow_code, shown=uri)
    extractor.origin = uri
    return extractor


def user_cache() -> Path:
    """distgan's folder in the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distgan"


def _fetched(uri: str) -> Path:
    """A local copy of the feature network at ``uri`` (read through pyarrow's file systems),
    kept under the user's cache and named by its content's hash, so that every process (each
    evaluation, each worker) reads the same file and a changed network is a new file."""
    loc = open_location(uri, field="eval.features")
    if not loc.is_file():
        raise CheckpointError(
            f"{display(uri)}: no such feature network file in the storage; pass a features.pt "
            "from `distgan eval fit-features` or a TorchScript module"
        )
    data = loc.read_bytes()
    folder = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distgan" / "features"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()}.pt"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _load_file(
    path: Path, name: str, device: str, allow_code: bool, shown: str | None = None
) -> FeatureExtractor:
    """Reads our format, or with ``allow_code`` a TorchScript module, from ``path``;
    CheckpointError if neither. ``shown``: how the message names the file (its URI)."""
    fix = "pass a features.pt from `distgan eval fit-features` or a TorchScript module"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such feature network file; {fix}")
    digest = file_sha256(path)
    if _is_torchscript(path):
        if not allow_code:
            raise CheckpointError(
                f"{display(shown or str(path))}: a TorchScript module, which is code: distgan "
                "runs one only when you name it (eval.features: PATH, or eval --features PATH); "
                "name it if you trust it, or replace it with `distgan eval fit-features`"
            )
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise CheckpointError(f"{path}: unreadable TorchScript module ({e}); {fix}") from None
        return FeatureExtractor(
            module, name=name, path=path, sha256=digest, in_shape=None, dim=None, num_classes=None,
            device=device,
        )  # fmt: skip
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad or hostile file
        reason = str(e).splitlines()[0][:200]
        raise CheckpointError(f"{path}: not a loadable weights file ({reason}); {fix}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a distgan feature network ({FORMAT}); {fix}")
    arch = state.get("arch", "featurenet")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{path}: a feature network of architecture {arch!r}, which this distgan does not "
            f"know ({', '.join(ARCHITECTURES)}); {fix}"
        )
    try:
        in_shape = tuple(int(d) for d in state["in_shape"])
        net = ARCHITECTURES[arch](in_shape, int(state["num_classes"]))
        net.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        reason = str(e).splitlines()[0][:200]
        raise CheckpointError(f"{path}: damaged feature network ({reason}); {fix}") from None
    return FeatureExtractor(
        net, name=name, path=path, sha256=digest, in_shape=in_shape, dim=net.dim,
        num_classes=int(state["num_classes"]), device=device,
    )  # fmt: skip


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip holding ``code/`` and ``constants.pkl``.

    Checked before ``torch.load``, which would otherwise warn and refuse such a file.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1


def shape_text(shape) -> str:
    return "×".join(str(d) for d in shape)
