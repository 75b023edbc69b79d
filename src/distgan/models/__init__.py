"""Generator and discriminator architectures, registered by name.

    G, D = build_models("dcgan", z_dim=100, width=32, shape=(1, 28, 28))
    x = G(torch.randn(8, 100))   # (8, 1, 28, 28) in [-1, 1]
    logits = D(x)                # (8,)

An architecture is a function ``(z_dim, width, shape) -> (G, D)`` registered with
``@register_model("name")``. It raises ``ValueError`` for a shape it cannot serve; the caller
turns that into a user-facing error naming the job field.
"""

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


def build_models(
    arch: str, z_dim: int, width: int, shape: tuple[int, int, int]
) -> tuple[nn.Module, nn.Module]:
    """Builds (G, D) for images of ``shape`` = (C, H, W). ``width`` 0 means the arch's default."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[arch](z_dim, width, tuple(shape))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or any ``.module``) wrapper."""
    return getattr(model, "module", model)


from distgan.models import dcgan, mlp  # noqa: E402,F401  (registers the architectures)
