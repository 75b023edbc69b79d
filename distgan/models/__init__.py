"""Generator and discriminator architectures, registered by name.

    G, D = build_models("dcgan", z_dim=100, width=32, shape=(1, 28, 28))
    x = G(torch.randn(8, 100))   # (8, 1, 28, 28) in [-1, 1]
    logits = D(x)                # (8,)
    x = generate(G, z_dim=100, n=1000, seed=0)   # (1000, 1, 28, 28) in [-1, 1], batched

    G, D = models_for_job(spec.model, shape, num_classes=10)   # the options of a job
    x = G(z, y)                  # a conditional G: labels y (B,) in 0..num_classes-1
    logits = D(x, y)             # (B / model.pack,)
    logits, classes = D(x, y, classes=True)  # with AC-GAN's head (loss.ac_weight): + (B, K)

An architecture is a function ``(z_dim, width, shape, options) -> (G, D)`` registered with
``@register_model("name")``, or a user's own, named by ``module:function`` (``models/own.py``).
It raises ``ValueError`` for a shape or option it cannot serve; the caller turns that into a
user-facing error naming the job field. Every G has ``num_classes`` (0 when unconditional).
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.models import dcgan, mlp, resnet, stylegan2  # noqa: F401  (each registers itself)
from distgan.models.own import build_own
from distgan.models.registry import MODELS, ModelOptions, job_options
from distgan.user_models import is_reference


def build_models(
    arch: str,
    z_dim: int,
    width: int,
    shape: tuple[int, int, int],
    options: ModelOptions | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Builds (G, D) for images of ``shape`` = (C, H, W). ``width`` 0 means the arch's default;
    ``options`` None: the plain architecture."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[arch](z_dim, width, tuple(shape), options or ModelOptions())


def models_for_job(
    model, shape: tuple[int, int, int], num_classes: int = 0, classifier: bool = False
) -> tuple[nn.Module, nn.Module]:
    """(G, D) of a job's model section (``config.ModelSpec``) for data of ``shape``.

    ``num_classes``: the data's classes (its manifest); used when ``model.conditional``.
    ``classifier``: D gets AC-GAN's class head (the job's ``loss.ac_weight`` > 0).
    ``model.arch`` ``module:function`` (a user's builder) raises JobError ("model.arch: ...")
    when its module is missing or has changed, or what it builds is not a (G, D) (models/own.py).
    """
    if model.conditional and num_classes < 1:
        raise ValueError("a conditional model needs labelled data (num_classes ≥ 1)")
    options = job_options(model, num_classes, classifier)
    if is_reference(model.arch):  # the user's builder, from the module file the job recorded
        return build_own(model, tuple(shape), options)
    return build_models(model.arch, model.z_dim, model.width, shape, options)


def apply_speed_options(model: nn.Module, channels_last: bool, compile: bool) -> nn.Module:
    """The job's ``train.channels_last`` and ``train.compile`` applied to a plain module, before
    DDP wraps it. ``Module.compile`` compiles in place, so parameter names (checkpoints) and the
    module that EMA copies stay as they were."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # 4-D weights only; a no-op on mlp
    if compile:
        model.compile()
    return model


PROBE_SIDES = range(1, 257)  # the square image sides that ``square_sides`` tries


def square_sides(arch: str, channels: int) -> list[int] | None:
    """The square sides (of ``PROBE_SIDES``) of ``channels``-channel images that ``arch`` serves,
    found by building it at each one (on the meta device: no weights are allocated), so that a new
    architecture is covered by its own ``ValueError``. None when it serves every side tried."""
    sides = []
    for side in PROBE_SIDES:
        try:
            with torch.device("meta"):
                build_models(arch, 1, 8, (channels, side, side))
        except ValueError:
            continue
        sides.append(side)
    return None if len(sides) == len(PROBE_SIDES) else sides


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or any ``.module``) wrapper."""
    return getattr(model, "module", model)


def class_labels(G: nn.Module, n: int) -> torch.Tensor | None:
    """Labels 0, 1, ..., K-1, 0, 1, ... (n of them) for a conditional G of K classes, else None:
    every class equally often, as evaluation wants."""
    k = getattr(G, "num_classes", 0)
    return torch.arange(n) % k if k else None


@torch.no_grad()
def generate(
    G: nn.Module,
    z_dim: int,
    n: int,
    seed: int,
    batch: int = 500,
    device="cpu",
    labels: torch.Tensor | None = None,
):
    """``n`` samples (n, C, H, W) in [-1, 1] on the CPU; the same seed gives the same latents.

    A conditional G draws ``labels`` (n,), or every class in turn when none are given.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    if labels is None:
        labels = class_labels(G, n)
    if labels is None:
        return torch.cat([G(z[i : i + batch].to(device)).float().cpu() for i in range(0, n, batch)])
    return torch.cat(
        [
            G(z[i : i + batch].to(device), labels[i : i + batch].to(device)).float().cpu()
            for i in range(0, n, batch)
        ]
    )
