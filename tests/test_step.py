"""The adversarial step (``distgan.step``) and the EMA of G, on small real models, one process."""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from distgan.ema import EMA
from distgan.losses import LOSSES, get_loss
from distgan.models import build_models
from distgan.step import Game, Nets, d_step, g_step, train_step

Z_DIM = 8
ARCH_SHAPES = {"mlp": (1, 4, 4), "dcgan": (1, 28, 28)}


def make_nets(
    arch: str = "mlp", kind: str = "nonsaturating", width: int = 8, **settings
) -> tuple[Nets, Game]:
    torch.manual_seed(0)
    G, D = build_models(arch, Z_DIM, width, ARCH_SHAPES[arch])
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    return Nets(G, D, opt_g, opt_d), Game(get_loss(kind), **settings)


def batch(arch: str, n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A real batch (n, C, H, W) in [-1, 1] and latents (n, Z_DIM)."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand(n, *ARCH_SHAPES[arch], generator=gen) * 2 - 1
    return real, torch.randn(n, Z_DIM, generator=gen)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]


CASES = [(arch, kind) for arch in ARCH_SHAPES for kind in sorted(LOSSES)]


@pytest.mark.parametrize("arch, kind", CASES)
def test_d_step_updates_only_d(arch, kind):
    nets, game = make_nets(arch, kind)
    real, z = batch(arch)
    g_before, d_before = params(nets.G), params(nets.D)
    fake, metrics = d_step(nets, game, real, z)
    assert changed(nets.G, g_before) == []
    assert all(p.grad is None for p in nets.G.parameters())
    assert sorted(changed(nets.D, d_before)) == sorted(d_before)
    assert fake.shape == real.shape and fake.grad_fn is None
    assert {"d_loss", "d_real", "d_fake"} <= set(metrics)
    assert ("gp" in metrics) == (kind == "wgan-gp")
    assert all(torch.isfinite(v) and v.dim() == 0 for v in metrics.values())


def test_d_step_keep_graph_returns_g_output_with_its_graph():
    nets, game = make_nets("dcgan")
    real, z = batch("dcgan")
    fake, _ = d_step(nets, game, real, z, keep_graph=True)
    assert fake.grad_fn is not None
    assert all(p.grad is None for p in nets.G.parameters())


@pytest.mark.parametrize("arch, kind", CASES)
def test_g_step_updates_only_g(arch, kind):
    nets, game = make_nets(arch, kind)
    real, z = batch(arch)
    fake, _ = d_step(nets, game, real, z, keep_graph=True)
    nets.opt_d.zero_grad(set_to_none=True)  # d_step left D's gradients in place
    g_before, d_before = params(nets.G), params(nets.D)
    metrics = g_step(nets, game, fake)
    assert changed(nets.D, d_before) == []
    assert all(p.grad is None for p in nets.D.parameters())
    assert all(p.requires_grad for p in nets.D.parameters())
    assert sorted(changed(nets.G, g_before)) == sorted(g_before)
    assert set(metrics) == {"g_loss", "g_skipped"} and torch.isfinite(metrics["g_loss"])
    assert metrics["g_skipped"] == 0


def test_g_step_restores_requires_grad_when_it_fails():
    nets, game = make_nets("mlp")
    wrong = torch.randn(3, 5, requires_grad=True)  # not an image D can read
    with pytest.raises(RuntimeError):
        g_step(nets, game, wrong)
    assert all(p.requires_grad for p in nets.D.parameters())


def test_train_step_with_n_critic_3_does_three_d_updates_and_one_g_update():
    nets, game = make_nets("dcgan", "wgan-gp")
    reals = [batch("dcgan", n=4, seed=s)[0] for s in range(3)]
    drawn = []

    def sample_z(n: int) -> torch.Tensor:
        drawn.append(n)
        return torch.randn(n, Z_DIM)

    metrics = train_step(nets, game, reals, sample_z)
    assert drawn == [4, 4, 4]
    d_steps = {int(nets.opt_d.state[p]["step"]) for p in nets.D.parameters()}
    g_steps = {int(nets.opt_g.state[p]["step"]) for p in nets.G.parameters()}
    assert d_steps == {3} and g_steps == {1}
    assert {"d_loss", "d_real", "d_fake", "gp", "g_loss"} <= set(metrics)
    assert all(p.requires_grad for p in nets.D.parameters())


@pytest.mark.parametrize("arch", sorted(ARCH_SHAPES))
def test_wgan_clips_d_weights_to_the_configured_bound(arch):
    clip = 0.005
    nets, game = make_nets(arch, "wgan", clip=clip)
    real, z = batch(arch)
    d_step(nets, game, real, z)
    weights = torch.cat([p.detach().flatten() for p in nets.D.parameters()])
    assert weights.abs().max() <= clip
    assert (weights.abs() == clip).any()  # the bound was reached, so clipping happened


def test_losses_without_clipping_leave_d_weights_alone():
    nets, game = make_nets("mlp", "hinge", clip=0.005)
    real, z = batch("mlp")
    d_step(nets, game, real, z)
    assert max(p.detach().abs().max() for p in nets.D.parameters()) > 0.1


def test_wgan_gp_reports_a_finite_penalty_that_shapes_the_update():
    real, z = batch("dcgan")
    results = []
    for weight in (0.0, 10.0):
        nets, game = make_nets("dcgan", "wgan-gp", gp_weight=weight)
        torch.manual_seed(5)  # the same interpolation ε in both runs
        _, metrics = d_step(nets, game, real, z)
        assert torch.isfinite(metrics["gp"]) and metrics["gp"] > 0
        results.append(torch.cat([p.detach().flatten() for p in nets.D.parameters()]))
    assert not torch.equal(results[0], results[1])


def global_norm(grads) -> torch.Tensor:
    return torch.sqrt(sum((g.double() ** 2).sum() for g in grads))


@pytest.mark.parametrize("arch", sorted(ARCH_SHAPES))
def test_measure_reports_the_gradient_norms(arch):
    nets, game = make_nets(arch, "nonsaturating")
    nets.G.eval()  # the same G(z) in the step and in the check below (no BatchNorm updates)
    real, z = batch(arch)
    G0, D0 = copy.deepcopy(nets.G), copy.deepcopy(nets.D)

    fake, d_metrics = d_step(nets, game, real, z, keep_graph=True, measure=True)
    d_loss = game.loss.d(D0(real), D0(G0(z).detach())).mean()
    d_expected = global_norm(torch.autograd.grad(d_loss, list(D0.parameters())))
    torch.testing.assert_close(d_metrics["d_grad_norm"].double(), d_expected, rtol=1e-5, atol=0)

    D1 = copy.deepcopy(nets.D)  # D after its update, which the G step reads
    g_metrics = g_step(nets, game, fake, measure=True)
    g_loss = game.loss.g(D1(G0(z))).mean()
    g_expected = global_norm(torch.autograd.grad(g_loss, list(G0.parameters())))
    torch.testing.assert_close(g_metrics["g_grad_norm"].double(), g_expected, rtol=1e-5, atol=0)
    assert d_expected > 0 and g_expected > 0


def test_no_gradient_norms_unless_measured():
    nets, game = make_nets("mlp")
    real, _ = batch("mlp")
    metrics = train_step(nets, game, [real], lambda n: torch.randn(n, Z_DIM))
    assert "d_grad_norm" not in metrics and "g_grad_norm" not in metrics


def test_short_training_plays_the_game_the_right_way():
    """On a 2-D Gaussian, D learns to score real above fake and G's samples move to the data."""
    torch.manual_seed(0)
    G, D = build_models("mlp", 4, 32, (1, 1, 2))
    nets = Nets(
        G,
        D,
        torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999)),
        torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999)),
    )
    game = Game(get_loss("nonsaturating"))
    center = torch.tensor([0.5, -0.5])

    def real_batch() -> torch.Tensor:
        return (center + 0.05 * torch.randn(64, 2)).view(64, 1, 1, 2)

    def distance() -> float:
        with torch.no_grad():
            return (G(torch.randn(512, 4)).view(512, 2).mean(0) - center).norm().item()

    start = distance()
    for _ in range(30):  # D alone first: it must learn to score real above fake
        _, m = d_step(nets, game, real_batch(), torch.randn(64, 4))
    assert m["d_real"] > 0.6 and m["d_fake"] < 0.4, m
    for _ in range(300):
        train_step(nets, game, [real_batch()], lambda n: torch.randn(n, 4))
    assert distance() < 0.3 * start, (start, distance())


# --- layering: no Ray, no torch.distributed --------------------------------------------------

SRC = Path(__file__).resolve().parents[1]


def imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def dotted_attributes(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            out.add(f"{node.value.id}.{node.attr}")
    return out


def test_step_and_ema_import_neither_ray_nor_torch_distributed():
    code = (
        "import json, sys, distgan.step, distgan.ema\n"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('ray', 'distgan'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    assert not [m for m in loaded if m == "ray" or m.startswith("ray.")]
    ours = [m for m in loaded if m.startswith("distgan.")]
    assert "distgan.step" in ours and "distgan.ema" in ours
    assert "distgan.dist" not in ours
    # Every distgan module the step pulls in is free of Ray and of torch.distributed.
    for module in ours:
        path = SRC / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(path.read_text())
        imports = imported_names(tree)
        bad = {
            n
            for n in imports
            if n.split(".")[0] == "ray"
            or n.startswith("torch.distributed")
            or n in ("torch.distributed", "distgan.dist")
        }
        assert not bad, (module, bad)
        assert not {"torch.distributed", "dist.all_reduce"} & dotted_attributes(tree), module
        assert not {a for a in dotted_attributes(tree) if a.startswith("dist.")}, module


# --- EMA -----------------------------------------------------------------------------------


def test_ema_update_is_the_weighted_average_and_copies_buffers():
    torch.manual_seed(0)
    G, _ = build_models("dcgan", Z_DIM, 4, (1, 28, 28))
    ema = EMA(G, decay=0.9)
    old = params(ema.model)
    assert all(torch.equal(old[n], p) for n, p in G.named_parameters())

    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p))
    G.train()
    G(torch.randn(5, Z_DIM))  # moves BatchNorm's running statistics
    assert not torch.equal(params(ema.model)["project.2.weight"], params(G)["project.2.weight"])

    ema.update(G)
    for name, p in ema.model.named_parameters():
        new = dict(G.named_parameters())[name].detach()
        torch.testing.assert_close(p, 0.9 * old[name] + 0.1 * new)
    for (name, b_ema), b in zip(ema.model.named_buffers(), G.buffers()):
        assert torch.equal(b_ema, b), name
    assert any(b.dtype == torch.long for b in G.buffers())  # num_batches_tracked was copied too


def test_ema_decay_ramps_up_with_the_step():
    G, _ = build_models("mlp", Z_DIM, 4, (1, 2, 2))
    ema = EMA(G, decay=0.999)
    assert ema.decay_at(None) == 0.999
    assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(90) == pytest.approx(0.91)
    assert ema.decay_at(100_000) == 0.999  # the configured decay caps the ramp
    old = params(ema.model)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(G, step=1)
    for name, p in ema.model.named_parameters():
        new = dict(G.named_parameters())[name].detach()
        torch.testing.assert_close(p, (2 / 11) * old[name] + (9 / 11) * new)


def test_ema_model_is_a_frozen_copy():
    G, _ = build_models("mlp", Z_DIM, 4, (1, 2, 2))
    ema = EMA(G, decay=0.5)
    assert not ema.model.training
    assert not any(p.requires_grad for p in ema.model.parameters())
    with torch.no_grad():
        for p in G.parameters():
            p.fill_(1.0)
    assert not any(torch.equal(p, torch.ones_like(p)) for p in ema.model.parameters())
    ema.update(G)
    restored = EMA(build_models("mlp", Z_DIM, 4, (1, 2, 2))[0], decay=0.5)
    restored.load_state_dict(ema.state_dict())
    for a, b in zip(restored.model.parameters(), ema.model.parameters()):
        assert torch.equal(a, b)
