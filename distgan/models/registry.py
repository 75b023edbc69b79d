"""The registry of architectures: ``@register_model("name")`` on a ``(z_dim, width, shape,
options) -> (G, D)`` builder; ``distgan.models.build_models`` looks them up.

``ModelOptions`` carries what a job's model section asks beyond z_dim, width and the data's shape
(spectral norm, minibatch std, packing, the output of an MLP G, the number of classes, AC-GAN's
classifier head on D). A builder
raises ``ValueError`` for an option it does not serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelOptions:
    """Options of G and D; the defaults build the plain architectures."""

    spectral_norm: bool = False  # spectral normalisation of D's conv, linear and embedding layers
    mbstd_group: int = 0  # minibatch standard deviation over groups of this many; 0 = off
    pack: int = 1  # PacGAN: D judges this many samples at once; 1 = off
    output: str = "tanh"  # G's last activation: tanh (images) or linear (mlp, 2-D mixtures)
    num_classes: int = 0  # > 0: class-conditional G (conditional BatchNorm) and D (projection)
    # D also classifies each input (AC-GAN): a head of num_classes logits beside the projection
    classifier: bool = False


def job_options(model, num_classes: int = 0, classifier: bool = False) -> ModelOptions:
    """The options of a job's model section (``config.ModelSpec``) for data of ``num_classes``
    classes (used when ``model.conditional``); ``classifier``: AC-GAN's head on D."""
    return ModelOptions(
        spectral_norm=model.spectral_norm,
        mbstd_group=model.mbstd_group,
        pack=model.pack,
        output=model.output,
        num_classes=num_classes if model.conditional else 0,
        classifier=classifier,
    )


ModelBuilder = Callable[[int, int, tuple[int, int, int], ModelOptions], tuple[nn.Module, nn.Module]]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def wrap(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return wrap
