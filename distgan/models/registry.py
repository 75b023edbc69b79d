"""The registry of architectures: ``@register_model("name")`` on a ``(z_dim, width, shape) ->
(G, D)`` builder; ``distgan.models.build_models`` looks them up."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelBuilder = Callable[[int, int, tuple[int, int, int]], tuple[nn.Module, nn.Module]]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def wrap(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder

    return wrap
