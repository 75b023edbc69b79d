"""A user's own G and D (``model.arch: module:function``): built, and checked against the contract
of a registered architecture before Ray starts.

    G, D = build_own(spec.model, (1, 28, 28), options)     # models_for_job calls this
    check_own_models(spec, (1, 28, 28), num_classes=0)     # launch.check_model: one forward each

The builder is the user's code (``distgan.user_models`` finds and imports it). What it returns
must be what a registered builder returns: two ``nn.Module``s, G with ``num_classes`` (0 when
unconditional), ``G(z, y=None)`` -> (B, C, H, W) and ``D(x, y=None)`` -> (B / model.pack,) logits
(``D(x, y, classes=True)`` -> (logits, (B, K)) with AC-GAN's head). Every way it falls short is a
JobError "model.arch: ..." that names the builder's file; the caller leads it with the job file.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from distgan.errors import JobError
from distgan.models.registry import ModelOptions, job_options
from distgan.user_models import load_builder, own_archs


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _described(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {', '.join(type(v).__name__ for v in value) or '()'}"
    return f"a {type(value).__name__}"


def build_own(
    model, shape: tuple[int, int, int], options: ModelOptions
) -> tuple[nn.Module, nn.Module]:
    """(G, D) from the builder ``model.arch`` names, called as ``builder(z_dim, width, shape,
    options)``. A ValueError it raises says what it does not serve; any other exception, or a
    result that is not two modules with G's ``num_classes`` right, is a fault to fix in it."""
    builder, file = load_builder(model)
    call = f"{model.arch.rsplit(':', 1)[1]}(z_dim, width, shape, options) in {file}"
    try:
        built = builder(model.z_dim, model.width, shape, options)
    except ValueError as e:  # the registry's way to say "not this shape or option"
        raise JobError(f"model.arch: {model.arch}: {e}") from None
    except Exception as e:
        raise JobError(
            f"model.arch: {model.arch}: {call} raised {_first_line(e)}; fix the builder (raise "
            "ValueError for a shape or option it does not serve)"
        ) from None
    if not (
        isinstance(built, (tuple, list))
        and len(built) == 2
        and all(isinstance(m, nn.Module) for m in built)
    ):
        raise JobError(
            f"model.arch: {model.arch}: {call} returned {_described(built)}; return (G, D), "
            "two torch.nn.Modules"
        )
    G, D = built
    classes = getattr(G, "num_classes", None)
    if classes != options.num_classes:
        now = "has no num_classes" if classes is None else f"has num_classes {classes!r}"
        raise JobError(
            f"model.arch: {model.arch}: the G of {call} {now}, and the job's is "
            f"{options.num_classes} (model.conditional and the data's classes); set "
            "self.num_classes = options.num_classes in G"
        )
    return G, D


def _forward(arch: str, what: str, call):
    try:
        return call()
    except Exception as e:
        raise JobError(f"model.arch: {arch}: {what} raised {_first_line(e)}") from None


def _shape(value) -> str:
    if not isinstance(value, torch.Tensor):
        return _described(value)
    return "×".join(map(str, value.shape)) if value.dim() else "a scalar"


@torch.no_grad()
def probe(
    G: nn.Module, D: nn.Module, arch: str, z_dim: int, shape: tuple[int, int, int], options
) -> None:
    """One forward of G and D on the CPU, in eval mode, on a batch of 2 (per pack and minibatch
    std group): G's images must have the data's ``shape`` and D must give one logit per pack.
    Raises JobError "model.arch: ..." naming what came back."""
    n = 2 * options.pack * max(1, options.mbstd_group)
    G, D = G.eval(), D.eval()
    z = torch.randn(n, z_dim)
    y = torch.arange(n) % options.num_classes if options.num_classes else None
    labels = () if y is None else (y,)
    x = _forward(arch, f"G(z) on z of {n}×{z_dim}", lambda: G(z, *labels))
    c, h, w = shape
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != (n, c, h, w):
        raise JobError(
            f"model.arch: {arch}: G(z) gives {_shape(x)} for a batch of {n}, and the data's "
            f"images are {c}×{h}×{w}; G must return (B, C, H, W) = ({n}, {c}, {h}, {w}) for the "
            "shape the builder is given"
        )
    logits = _forward(arch, f"D(x) on x of {n}×{c}×{h}×{w}", lambda: D(x, *labels))
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (n // options.pack,):
        raise JobError(
            f"model.arch: {arch}: D(x) gives {_shape(logits)} for a batch of {n}; D must return "
            f"one logit per input, ({n // options.pack},) (e.g. .flatten() its (B, 1) output"
            + (f", one per pack of {options.pack}" if options.pack > 1 else "")
            + ")"
        )
    if options.classifier:
        out = _forward(arch, "D(x, y, classes=True)", lambda: D(x, y, classes=True))
        want = (n, options.num_classes)
        classes = out[1] if isinstance(out, tuple) and len(out) == 2 else None
        if not isinstance(classes, torch.Tensor) or tuple(classes.shape) != want:
            raise JobError(
                f"model.arch: {arch}: D(x, y, classes=True) must return (logits, class logits "
                f"{want[0]}×{want[1]}) for AC-GAN (loss.ac_weight); it gives {_described(out)}"
            )


def check_own_models(spec, shape: tuple[int, int, int], num_classes: int) -> None:
    """Builds each own architecture a job names (``model.arch``, and the values a search tries for
    it) for data of ``shape`` and ``num_classes``, and runs ``probe`` on it. Raises JobError."""
    for arch in own_archs(spec):
        same = arch == spec.model.arch  # a search's other values are recorded by their trials
        model = dataclasses.replace(
            spec.model, arch=arch, arch_sha256=spec.model.arch_sha256 if same else ""
        )
        options = job_options(model, num_classes, classifier=spec.loss.ac_weight > 0)
        G, D = build_own(model, shape, options)
        probe(G, D, arch, model.z_dim, shape, options)
