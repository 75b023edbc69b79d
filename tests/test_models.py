"""The architectures: the reference MLP layer by layer, DCGAN at every served resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.models import MODELS, build_models, unwrap


def linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def activations(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.LeakyReLU, nn.ReLU, nn.Tanh))]


def test_registry_holds_every_architecture():
    assert set(MODELS) == {"mlp", "dcgan", "resnet", "stylegan2"}


def test_reference_mlp_layer_sizes():
    torch.manual_seed(0)
    G, D = build_models("mlp", 100, 0, (1, 28, 28))
    assert linear_sizes(G) == [(100, 128), (128, 256), (256, 512), (512, 784)]
    assert linear_sizes(D) == [(784, 512), (512, 256), (256, 128), (128, 1)]
    for model in (G, D):
        acts = activations(model)
        assert len(acts) == 3
        assert all(isinstance(a, nn.LeakyReLU) and a.negative_slope == 0.2 for a in acts)
    # LeakyReLU between the layers, nothing after the last one: D gives raw logits.
    assert not isinstance(D.net[-1], nn.LeakyReLU)
    assert not isinstance(G.net[-1], nn.LeakyReLU)


def test_mlp_generator_output_is_tanh_shaped_image():
    torch.manual_seed(0)
    G, D = build_models("mlp", 100, 0, (1, 28, 28))
    z = 50.0 * torch.randn(16, 100)  # large latents drive the output into tanh's saturation
    x = G(z)
    assert x.shape == (16, 1, 28, 28)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.abs().max() > 0.99  # saturated, so not clipped to a narrower range
    assert D(x).shape == (16,)


def test_mlp_width_and_z_are_configurable():
    G, D = build_models("mlp", 16, 32, (3, 4, 5))
    assert linear_sizes(G) == [(16, 32), (32, 64), (64, 128), (128, 60)]
    assert linear_sizes(D) == [(60, 128), (128, 64), (64, 32), (32, 1)]
    assert G(torch.randn(2, 16)).shape == (2, 3, 4, 5)


SHAPES = [(c, s, s) for s in (28, 32, 64, 128, 256) for c in (1, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dcgan_serves_every_resolution(shape):
    torch.manual_seed(0)
    z_dim, width = 12, 8
    G, D = build_models("dcgan", z_dim, width, shape)
    x = G(torch.randn(3, z_dim))
    assert x.shape == (3, *shape)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert D(x).shape == (3,)
    assert D(torch.rand(3, *shape) * 2 - 1).shape == (3,)
    # D's first convolution reads the image's channels; the last of G writes them.
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == shape[0] and convs[0].out_channels == width
    deconvs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert deconvs[-1].out_channels == shape[0]
    assert linear_sizes(G)[0][0] == z_dim


def conv_channels(D: nn.Module) -> list[int]:
    return [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)]


def test_dcgan_width_scales_the_channels():
    _, D8 = build_models("dcgan", 100, 8, (1, 64, 64))
    _, D16 = build_models("dcgan", 100, 16, (1, 64, 64))
    assert conv_channels(D8) == [8, 16, 32, 64]
    assert conv_channels(D16) == [16, 32, 64, 128]
    G8, _ = build_models("dcgan", 100, 8, (1, 64, 64))
    first = next(m for m in G8.modules() if isinstance(m, nn.ConvTranspose2d))
    assert first.in_channels == 64  # 8w channels at 4×4


def test_dcgan_caps_its_channels_at_8w_past_64_pixels():
    G, D = build_models("dcgan", 100, 8, (3, 256, 256))
    deconvs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    # 4×4 -> 256×256 in six 2× steps; 64 × 8 (not 32w = 256) channels at 4×4, halving from 16×16
    assert [d.in_channels for d in deconvs] == [64, 64, 64, 32, 16, 8]
    assert linear_sizes(G)[0] == (100, 64 * 4 * 4)
    assert conv_channels(D) == [8, 16, 32, 64, 64, 64]
    assert D.head.in_features == 64 * 4 * 4
    _, D128 = build_models("dcgan", 100, 8, (1, 128, 128))
    assert conv_channels(D128) == [8, 16, 32, 64, 64]


def test_dcgan_default_width_is_64():
    G, D = build_models("dcgan", 100, 0, (1, 28, 28))
    assert conv_channels(D) == [64, 128]


def test_dcgan_discriminator_has_no_batchnorm():
    for shape in SHAPES:
        _, D = build_models("dcgan", 100, 8, shape)
        norms = [m for m in D.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
        assert norms == [], shape
        assert list(D.buffers()) == []


def test_dcgan_generator_uses_batchnorm_and_dcgan_init():
    torch.manual_seed(0)
    G, _ = build_models("dcgan", 100, 32, (3, 64, 64))
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 4
    weights = torch.cat(
        [m.weight.flatten() for m in G.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    )
    assert abs(weights.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("shape", [(1, 48, 48), (1, 28, 32), (2, 28, 28), (4, 64, 64), (1, 16, 16)])
def test_dcgan_rejects_unserved_shapes(shape):
    with pytest.raises(ValueError) as info:
        build_models("dcgan", 100, 8, shape)
    message = str(info.value)
    assert "28×28, 32×32, 64×64, 128×128 or 256×256" in message and "1 or 3 channels" in message
    assert "×".join(map(str, shape)) in message


def test_unknown_architecture():
    with pytest.raises(
        ValueError, match=r"unknown architecture 'biggan'; known: dcgan, mlp, resnet"
    ):
        build_models("biggan", 100, 0, (1, 28, 28))


def test_unwrap_returns_the_inner_module():
    G, _ = build_models("mlp", 4, 4, (1, 2, 2))

    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(Wrapper(G)) is G
    assert unwrap(G) is G


def test_square_sides_come_from_building_each_architecture(monkeypatch):
    from distgan.cli.data import resolution_warning
    from distgan.models import square_sides

    assert square_sides("dcgan", 1) == square_sides("dcgan", 3) == [28, 32, 64, 128, 256]
    assert square_sides("mlp", 3) is None  # any size
    assert resolution_warning((3, 32, 32)) is None
    warning = resolution_warning((3, 33, 33))
    assert "dcgan serves 28, 32, 64, 128, 256" in warning and "only mlp" in warning
    assert "resnet serves 28, 32, 64, 128, 256" in warning
    assert "stylegan2 serves 32, 64, 128, 256" in warning
    assert "--resolution 28, 32, 64, 128 or 256" in warning

    # A new architecture is covered by its own ValueError, with no list to update.
    def only_48(z_dim, width, shape, options):
        if shape[1:] != (48, 48):
            raise ValueError(f"only 48×48, not {shape}")
        return build_models("mlp", z_dim, width, shape)

    monkeypatch.setitem(MODELS, "only48", only_48)
    assert square_sides("only48", 1) == [48]
    assert resolution_warning((1, 48, 48)) is None
    assert "only48 serves 48" in resolution_warning((1, 33, 33))
