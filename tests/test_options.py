"""The model and regulariser options (issue 12): resnet, spectral norm, minibatch std, packing,
the linear MLP output, R1, DiffAugment, the EMA half-life, channels-last and torch.compile.

Plain unit tests, one process, small models. Class-conditional models: ``test_conditional.py``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import distgan.step
from distgan import augment
from distgan.config import from_dict
from distgan.ema import EMA, make_ema
from distgan.job_rules import AUGMENTATIONS
from distgan.losses import get_loss, r1_penalty
from distgan.models import ModelOptions, apply_speed_options, build_models
from distgan.models.layers import MinibatchStd, pack
from distgan.step import Game, Nets, d_step, g_step, train_step

Z_DIM = 8


def nets_of(
    G: nn.Module, D: nn.Module, kind: str = "nonsaturating", **settings
) -> tuple[Nets, Game]:
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    return Nets(G, D, opt_g, opt_d), Game(get_loss(kind), **settings)


def images(n: int, shape=(1, 28, 28), seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen) * 2 - 1


# --- resnet ----------------------------------------------------------------------------------

RESNET_SHAPES = [(c, s, s) for s in (28, 32, 64, 128, 256) for c in (1, 3)]


@pytest.mark.parametrize("shape", RESNET_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_resnet_serves_every_resolution(shape):
    torch.manual_seed(0)
    G, D = build_models("resnet", Z_DIM, 2, shape)
    x = G(torch.randn(2, Z_DIM))
    assert x.shape == (2, *shape)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert D(x).shape == (2,)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == shape[0]
    # G ends in BN, ReLU, conv 3×3 to the image's channels, tanh; D has no BatchNorm.
    assert isinstance(G.out[2], nn.Conv2d) and G.out[2].out_channels == shape[0]
    assert isinstance(G.out[3], nn.Tanh)
    assert not [m for m in D.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]


def test_resnet_layout_follows_sngan():
    G, D = build_models("resnet", 128, 0, (3, 32, 32))  # CIFAR-10: G 256 channels, D 128
    assert G.project.out_features == 256 * 4 * 4 and len(G.blocks) == 3
    assert {b.conv1.out_channels for b in G.blocks} == {256}
    assert [b.conv1.out_channels for b in D.blocks] == [128] * 4
    assert [b.down for b in D.blocks] == [True, True, False, False]
    assert D.blocks[0].first and not any(b.first for b in D.blocks[1:])
    G, D = build_models("resnet", 128, 0, (3, 128, 128))  # ImageNet: 1024 channels at the end
    assert len(G.blocks) == 5 and G.blocks[0].conv1.in_channels == 1024
    assert [b.conv1.out_channels for b in D.blocks] == [64, 128, 256, 512, 1024, 1024]
    assert D.head.in_features == 1024
    # 256 pixels: BigGAN's layout, no stage past 16w; a default width of 32 (512 channels)
    G, D = build_models("resnet", 128, 0, (3, 256, 256))
    assert len(G.blocks) == 6 and G.blocks[0].conv1.in_channels == 16 * 32
    assert [b.conv1.out_channels for b in G.blocks] == [512, 256, 256, 128, 64, 32]
    assert [b.conv1.out_channels for b in D.blocks] == [32, 64, 128, 256, 256, 512, 512]
    assert [b.down for b in D.blocks] == [True] * 6 + [False]


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 48, 48), (2, 32, 32), (1, 32, 28)])
def test_resnet_refuses_unserved_shapes(shape):
    with pytest.raises(ValueError) as info:
        build_models("resnet", Z_DIM, 2, shape)
    message = str(info.value)
    assert "28×28, 32×32, 64×64, 128×128 or 256×256" in message and "1 or 3 channels" in message
    assert "×".join(map(str, shape)) in message


def test_resnet_trains_a_step():
    torch.manual_seed(0)
    G, D = build_models("resnet", Z_DIM, 4, (1, 28, 28), ModelOptions(spectral_norm=True))
    nets, game = nets_of(G, D, "hinge")
    before = [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]
    metrics = train_step(nets, game, [images(4)], lambda n: torch.randn(n, Z_DIM))
    assert metrics["skipped"] == 0 and all(torch.isfinite(v) for v in metrics.values())
    after = [*G.parameters(), *D.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


# --- spectral normalisation ------------------------------------------------------------------


def weights(D: nn.Module) -> list[torch.Tensor]:
    """D's conv and linear weights as its forward uses them, (out, in·k·k)."""
    kinds = (nn.Conv2d, nn.Linear)
    return [m.weight.detach().flatten(1) for m in D.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_spectral_norm_bounds_every_layer_by_one(arch):
    torch.manual_seed(0)
    _, D = build_models(arch, Z_DIM, 8, (1, 28, 28), ModelOptions(spectral_norm=True))
    x = images(4)
    for _ in range(30):  # each forward in training mode is one power iteration
        D(x)
    sigmas = [torch.linalg.matrix_norm(w, ord=2).item() for w in weights(D)]
    assert len(sigmas) >= 3
    assert all(abs(s - 1) < 0.02 for s in sigmas), sigmas
    # Without the option the weights are left alone (DCGAN's init gives norms far from 1).
    torch.manual_seed(0)
    _, plain = build_models(arch, Z_DIM, 8, (1, 28, 28))
    assert any(abs(torch.linalg.matrix_norm(w, ord=2).item() - 1) > 0.1 for w in weights(plain))


def test_spectral_norm_is_off_by_default_and_keeps_parameter_names_otherwise():
    _, D = build_models("dcgan", Z_DIM, 8, (1, 28, 28))
    assert "head.weight" in dict(D.named_parameters())
    _, D = build_models("dcgan", Z_DIM, 8, (1, 28, 28), ModelOptions(spectral_norm=True))
    assert "head.parametrizations.weight.original" in dict(D.named_parameters())


# --- packing and minibatch standard deviation ------------------------------------------------


def first_input(D: nn.Module, x: torch.Tensor) -> tuple[tuple, torch.Tensor]:
    """(shape of the input of D's first conv or linear layer, D's logits) for ``x``."""
    first = next(m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    seen = []
    handle = first.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    logits = D(x)
    handle.remove()
    return tuple(seen[0]), logits


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_packed_d_judges_m_samples_per_input(arch):
    torch.manual_seed(0)
    B, m = 12, 3
    _, D = build_models(arch, Z_DIM, 4, (1, 28, 28), ModelOptions(pack=m))
    seen, logits = first_input(D, images(B))
    assert logits.shape == (B // m,)
    if arch == "mlp":
        assert seen == (B // m, m * 28 * 28)
    else:
        assert seen == (B // m, m, 28, 28)


def test_pack_groups_consecutive_samples():
    x = torch.arange(8.0).view(8, 1, 1, 1)  # sample i holds i
    packed = pack(x, 2)  # (4, 2, 1, 1)
    assert packed.flatten(1).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # A D batch [reals (4), fakes (4)] packs reals with reals and fakes with fakes.
    assert pack(x, 4).flatten(1).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_packed_d_step_splits_real_and_fake_logits():
    torch.manual_seed(0)
    G, D = build_models("dcgan", Z_DIM, 4, (1, 28, 28), ModelOptions(pack=2))
    nets, game = nets_of(G, D)
    fake, metrics = d_step(nets, game, images(6), torch.randn(6, Z_DIM), keep_graph=True)
    assert fake.shape == (6, 1, 28, 28) and torch.isfinite(metrics["d_loss"])
    assert 0 < metrics["d_real"] < 1 and 0 < metrics["d_fake"] < 1
    assert g_step(nets, game, fake)["g_skipped"] == 0


def test_minibatch_std_appends_each_groups_standard_deviation():
    layer = MinibatchStd(2)
    x = torch.tensor([[1.0, 3.0], [3.0, 5.0], [0.0, 0.0], [0.0, 4.0]])  # (4, 2): two groups of 2
    out = layer(x)
    assert out.shape == (4, 3) and torch.equal(out[:, :2], x)
    # group 1: per-feature std 1 and 1 -> 1; group 2: 0 and 2 -> 1 (means over the features)
    assert out[:, 2].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0], abs=1e-4)
    x[3, 1] = 8.0  # group 2's second feature std 4 -> mean (0 + 4) / 2 = 2; group 1 unchanged
    assert layer(x)[:, 2].tolist() == pytest.approx([1.0, 1.0, 2.0, 2.0], abs=1e-4)
    images4 = torch.randn(4, 3, 5, 5)
    assert layer(images4).shape == (4, 4, 5, 5)
    with pytest.raises(ValueError, match="groups of 2"):
        layer(torch.randn(3, 2))


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_minibatch_std_lets_a_sample_change_the_logits_of_its_group_only(arch):
    torch.manual_seed(0)
    _, D = build_models(arch, Z_DIM, 4, (1, 28, 28), ModelOptions(mbstd_group=2))
    x = images(4)
    before = D(x).detach()
    x[0] = -x[0]  # sample 0 is in the group {0, 1}
    after = D(x).detach()
    assert not torch.allclose(after[1], before[1])  # its group mate sees the change
    assert torch.equal(after[2:], before[2:])  # the other group does not


# --- the MLP's linear output -----------------------------------------------------------------


def test_mlp_linear_output_is_not_squashed():
    torch.manual_seed(0)
    G, _ = build_models("mlp", Z_DIM, 16, (2, 1, 1), ModelOptions(output="linear"))
    x = G(50.0 * torch.randn(64, Z_DIM))
    assert x.shape == (64, 2, 1, 1) and x.abs().max() > 1.5
    torch.manual_seed(0)
    tanh, _ = build_models("mlp", Z_DIM, 16, (2, 1, 1))
    assert tanh.state_dict().keys() == G.state_dict().keys()  # the same layers, tanh or not


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conv_archs_refuse_a_linear_output(arch):
    with pytest.raises(ValueError, match="served by mlp"):
        build_models(arch, Z_DIM, 4, (1, 28, 28), ModelOptions(output="linear"))


def test_synthetic_training_takes_the_options():
    from distgan.metrics.modes import SOURCES
    from distgan.train.synthetic import train_synthetic

    options = ModelOptions(output="linear", pack=2)
    G, history = train_synthetic(
        SOURCES["ring8"], "nonsaturating", 4, batch=32, width=16, log_every=4, options=options
    )
    assert not G.squash and history[-1]["step"] == 4


# --- R1 --------------------------------------------------------------------------------------


class LinearCritic(nn.Module):
    """D(x) = w·x over the flattened image: ∇ₓ D(x) = w for every x."""

    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w  # (B,)


def test_r1_penalty_is_the_squared_gradient_norm():
    D = LinearCritic(12)
    real = torch.randn(5, 3, 2, 2)
    penalty = r1_penalty(D, real)
    expected = D.w.detach().square().sum()  # ‖w‖²
    assert penalty.shape == (5,)
    assert torch.allclose(penalty, expected.expand(5))
    # Out of place with its graph: one backward reaches D's weights, d‖w‖²/dw = 2w.
    penalty.mean().backward()
    assert torch.allclose(D.w.grad, 2 * D.w.detach())
    assert real.grad is None


def test_d_step_adds_lazy_r1_weighted_by_gamma_half_and_the_interval():
    class G(nn.Module):  # a G whose output the D step ignores through a zero-weight D path
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.zeros(12))

        def forward(self, z):
            return (z[:, :1] * 0 + self.b).view(-1, 3, 2, 2)

    D = LinearCritic(12)
    nets, game = nets_of(
        G(), D, "wgan", r1_gamma=3.0, r1_every=4, clip=1e6
    )  # clipping: out of reach
    real = torch.randn(6, 3, 2, 2)
    w = D.w.detach().clone()
    nets.opt_d = torch.optim.SGD(D.parameters(), lr=1.0)
    _, metrics = d_step(nets, game, real, torch.randn(6, 1), r1=True)
    assert metrics["r1"] == pytest.approx(w.square().sum().item(), rel=1e-5)
    # wgan: d_loss = mean(f) - mean(r); f = b·w = 0 at b = 0. Its gradient is -mean(real);
    # R1 adds γ/2 · k · ‖w‖², whose gradient is γ · k · w.
    grad = -real.flatten(1).mean(0) + 3.0 * 4 * w
    assert torch.allclose(D.w.detach(), w - grad, atol=1e-5)


def test_train_step_places_r1_on_every_kth_d_step_of_the_run():
    torch.manual_seed(0)
    G, D = build_models("mlp", Z_DIM, 8, (1, 4, 4))
    nets, game = nets_of(G, D, r1_gamma=1.0, r1_every=3)
    with_r1 = []
    for step in range(7):
        metrics = train_step(
            nets, game, [images(4, (1, 4, 4))], lambda n: torch.randn(n, Z_DIM), step=step
        )
        with_r1.append("r1" in metrics)
    assert with_r1 == [True, False, False, True, False, False, True]
    game = dataclasses.replace(game, r1_gamma=0.0)
    step = train_step(nets, game, [images(4, (1, 4, 4))], lambda n: torch.randn(n, Z_DIM))
    assert "r1" not in step


# --- DiffAugment -----------------------------------------------------------------------------


def test_config_knows_every_augmentation():
    assert tuple(augment.AUGMENTATIONS) == AUGMENTATIONS


def test_policy_parsing():
    assert augment.parse_policy("") == ()
    assert augment.parse_policy(" color, cutout ") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown DiffAugment 'flip'"):
        augment.parse_policy("color,flip")


def test_translation_moves_the_image_by_whole_pixels_with_a_zero_border():
    torch.manual_seed(3)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    out = augment.translation(x)
    assert out.shape == x.shape
    positions = [tuple((img[0] == 1).nonzero()[0].tolist()) for img in out]
    shifts = {(r - 8, c - 8) for r, c in positions}
    assert len(shifts) > 5 and all(abs(dr) <= 2 and abs(dc) <= 2 for dr, dc in shifts)
    assert out.sum(dim=(1, 2, 3)).tolist() == [1.0] * 64  # moved, not blurred
    border = augment.translation(torch.ones(64, 1, 16, 16))
    assert (border == 0).any() and set(border.unique().tolist()) <= {0.0, 1.0}


def test_cutout_zeroes_a_square_of_half_the_side_and_color_changes_values():
    torch.manual_seed(0)
    out = augment.cutout(torch.ones(16, 1, 16, 16))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 64 and zeros.min() > 0  # 8×8, clipped at the borders
    x = torch.rand(8, 3, 4, 4)
    assert not torch.allclose(augment.diff_augment(x, ("color",)), x)


def test_augmentations_are_differentiable():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    augment.diff_augment(x, ("color", "translation", "cutout")).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_sees_reals_and_fakes_in_d_step_and_fakes_in_g_step(monkeypatch):
    calls = []

    def spy(x, policy):
        calls.append((x.shape[0], policy))
        return augment.diff_augment(x, policy)

    monkeypatch.setattr(distgan.step, "diff_augment", spy)
    torch.manual_seed(0)
    G, D = build_models("dcgan", Z_DIM, 4, (1, 28, 28))
    policy = ("color", "translation")
    nets, game = nets_of(G, D, augment=policy, r1_gamma=1.0)
    train_step(nets, game, [images(4)], lambda n: torch.randn(n, Z_DIM))
    # D step: one call on [reals, fakes] (one policy for both), one on the reals for R1;
    # G step: the fakes.
    assert calls == [(8, policy), (4, policy), (4, policy)]
    calls.clear()
    game = dataclasses.replace(game, augment=())
    train_step(nets, game, [images(4)], lambda n: torch.randn(n, Z_DIM))
    assert calls == []


def test_diffaugment_changes_what_d_judges_in_both_steps():
    torch.manual_seed(0)
    G, D = build_models("dcgan", Z_DIM, 4, (1, 28, 28))
    nets, _ = nets_of(G, D)
    real, z = images(4), torch.randn(4, Z_DIM)
    state = {k: v.clone() for k, v in [*G.state_dict().items(), *D.state_dict().items()]}

    def losses(policy):
        G.load_state_dict({k: state[k] for k in G.state_dict()})
        D.load_state_dict({k: state[k] for k in D.state_dict()})
        game = Game(get_loss("nonsaturating"), augment=policy)
        torch.manual_seed(5)
        fake, d = d_step(nets, game, real, z, keep_graph=True)
        nets.opt_d.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake_logits, _ = distgan.step.judge(D, game, fake, None)
        return d["d_real"], d["d_fake"], fake_logits

    plain, translated = losses(()), losses(("translation",))
    assert plain[0] != translated[0] and plain[1] != translated[1]
    assert not torch.equal(plain[2], translated[2])


# --- EMA with a half-life in images ----------------------------------------------------------


def test_ema_half_life_in_images():
    G = nn.Linear(2, 2)
    ema = EMA(G, 0.999, half_life_kimg=10.0, rampup=0.0, batch_size=100)
    assert ema.decay_at(5) == pytest.approx(0.5 ** (100 / 10_000))
    # After the half-life in images (100 steps of 100), the old weights weigh one half.
    assert ema.decay_at(1) ** 100 == pytest.approx(0.5)


def test_ema_rampup_limits_the_half_life_to_a_fraction_of_the_images_seen():
    ema = EMA(nn.Linear(2, 2), 0.999, half_life_kimg=10.0, rampup=0.05, batch_size=100)
    assert ema.decay_at(1) == pytest.approx(0.5 ** (100 / 5))  # 0.05 × 100 images
    assert ema.decay_at(1000) == pytest.approx(0.5 ** (100 / 5000))
    assert ema.decay_at(10_000) == pytest.approx(0.5 ** (100 / 10_000))  # the half-life itself
    assert ema.decay_at(2001) == ema.decay_at(5000)


def test_make_ema_follows_the_job():
    G = nn.Linear(2, 2)
    fixed = make_ema(G, from_dict({"train": {"ema_decay": 0.99}}).train)
    assert fixed.decay_at(1000) == 0.99  # ema_kimg 0: the fixed decay, as before
    spec = from_dict({"train": {"ema_kimg": 2.0, "ema_rampup": 0.0, "batch_size": 64}})
    assert make_ema(G, spec.train).decay_at(3) == pytest.approx(0.5 ** (64 / 2000))
    assert make_ema(G, from_dict({"train": {"ema": False}}).train) is None


# --- channels-last and torch.compile ---------------------------------------------------------


def test_channels_last_converts_conv_weights_and_trains_a_step():
    torch.manual_seed(0)
    G, D = build_models("dcgan", Z_DIM, 4, (1, 28, 28))
    G, D = (apply_speed_options(m, channels_last=True, compile=False) for m in (G, D))
    conv = [m for m in D.modules() if isinstance(m, nn.Conv2d)][1]  # (8, 4, 4, 4)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    metrics = train_step(*nets_of(G, D), [images(4)], lambda n: torch.randn(n, Z_DIM))
    assert metrics["skipped"] == 0 and math.isfinite(metrics["g_loss"].item())


def test_compile_trains_a_step_and_keeps_parameter_names():
    torch.manual_seed(0)
    G, D = build_models("mlp", Z_DIM, 8, (1, 4, 4))
    names = list(D.state_dict())
    G, D = (apply_speed_options(m, channels_last=False, compile=True) for m in (G, D))
    assert list(D.state_dict()) == names  # checkpoints keep their keys
    nets, game = nets_of(G, D)
    before = [p.detach().clone() for p in D.parameters()]
    metrics = train_step(nets, game, [images(4, (1, 4, 4))], lambda n: torch.randn(n, Z_DIM))
    assert metrics["skipped"] == 0
    assert all(not torch.equal(a, b) for a, b in zip(before, D.parameters()))
    torch._dynamo.reset()
