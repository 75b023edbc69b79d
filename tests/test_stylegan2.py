"""StyleGAN2 (``distgan/models/stylegan2.py``) against the paper's equations: demodulation, the
path-length penalty and its running mean, style mixing's crossover, the equalised learning rate,
every served shape and option, and a DDP step on two gloo processes (127.0.0.1).

Plain unit tests, no Ray; tiny widths, so the file runs in seconds.
"""

from __future__ import annotations

import math
import os
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from test_ddp import WORLD, flat, free_port, gather
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distgan.config import from_dict
from distgan.errors import JobError
from distgan.job_rules import STYLEGAN2_MBSTD_GROUP
from distgan.losses import get_loss
from distgan.models import ModelOptions, build_models, square_sides
from distgan.models.stylegan2 import (
    MBSTD_GROUP,
    EqualConv2d,
    EqualLinear,
    mix_styles,
    modulated_conv2d,
)
from distgan.path_length import PathLengthPenalty
from distgan.step import Game, Nets, train_step

Z_DIM = 4
SHAPE = (1, 32, 32)


def tiny(shape=SHAPE, options: ModelOptions | None = None, width: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_models("stylegan2", Z_DIM, width, shape, options)


def with_noise(G: nn.Module) -> nn.Module:
    """G with noise strengths of 0.5 (they start at 0, where the noise changes nothing)."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G


# --- 1. modulation and demodulation --------------------------------------------------------


def test_modulated_conv_is_the_papers_per_sample_weight():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)  # (B, I, H, W)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64)  # (O, I, k, k)
    styles = torch.rand(3, 5, dtype=torch.float64) * 2 + 0.1  # (B, I)
    out = modulated_conv2d(x, weight, styles)
    plain = modulated_conv2d(x, weight, styles, demodulate=False)
    for b in range(3):
        w1 = weight * styles[b][None, :, None, None]  # w'_oikk = s_i · w_oikk
        w2 = w1 / torch.sqrt(w1.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)  # w''
        assert torch.allclose(out[b], F.conv2d(x[b : b + 1], w2, padding=1)[0], atol=1e-12)
        assert torch.allclose(plain[b], F.conv2d(x[b : b + 1], w1, padding=1)[0], atol=1e-12)


def test_demodulation_gives_unit_std_outputs_for_unit_variance_inputs():
    torch.manual_seed(0)
    x = torch.randn(4, 32, 40, 40)  # i.i.d., unit variance
    weight = torch.randn(8, 32, 3, 3) * 5
    styles = torch.rand(4, 32) * 3  # scales that would otherwise change each map's std
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # past the zero padding
    std = modulated_conv2d(x, weight, styles)[inner].std(dim=(2, 3))  # (B, O)
    assert (std - 1).abs().max() < 0.1 and abs(std.mean().item() - 1) < 0.02
    plain = modulated_conv2d(x, weight, styles, demodulate=False)[inner].std(dim=(2, 3))
    assert (plain - 1).abs().min() > 1  # the point of demodulation


# --- 2. path-length penalty ----------------------------------------------------------------


def tiny_double_eval_g() -> nn.Module:
    G, _ = tiny()
    return with_noise(G).double().eval()  # "const" noise and no mixing: a function of z alone


def test_path_length_penalty_matches_the_jacobian_and_moves_its_mean():
    G = tiny_double_eval_g()
    pl = PathLengthPenalty(decay=0.25).double()
    pl.mean.fill_(0.3)
    z = torch.randn(2, Z_DIM, dtype=torch.float64)
    torch.manual_seed(7)
    penalty = pl(G, z)

    torch.manual_seed(7)  # the same noise image y
    y = torch.randn_like(G(z)) / math.sqrt(32 * 32)
    ws = G.styles(z).detach().clone()  # (B, num_ws, w_dim)
    # Forward-mode here, reverse-mode (a vector-Jacobian product) in the penalty.
    J = torch.autograd.functional.jacobian(
        lambda v: G.synthesis(v), ws, vectorize=True, strategy="forward-mode"
    )  # (B, C, H, W, B, num_ws, w_dim)
    Jy = torch.stack([torch.einsum("chw,chwkd->kd", y[i], J[i, ..., i, :, :]) for i in range(2)])
    lengths = Jy.square().sum(2).mean(1).sqrt()  # ‖J_wᵀ y‖ averaged over the layers' ws
    a = 0.3 + 0.25 * (lengths.mean().item() - 0.3)  # a ← a + decay·(mean length − a)
    assert pl.mean.item() == pytest.approx(a, rel=1e-12)
    assert torch.allclose(penalty, (lengths - a).square(), rtol=1e-10, atol=0)
    assert penalty.min() > 1e-6  # a real difference of lengths, not a trivial zero

    # The running mean is state a checkpoint holds.
    restored = PathLengthPenalty().double()
    restored.load_state_dict(pl.state_dict())
    assert restored.mean.item() == pl.mean.item()


def test_path_length_penalty_gradient_reaches_g_as_its_value_changes():
    """The gradient of the penalty (a double backward) against central differences of its
    value (checked against the Jacobian above), at entries of the mapping, a modulated conv, a
    noise strength, a style affine and the constant."""
    G = tiny_double_eval_g()
    pl = PathLengthPenalty(decay=0.0).double()  # a stays 0.3 between the calls
    pl.mean.fill_(0.3)
    z = torch.randn(2, Z_DIM, dtype=torch.float64)

    def value() -> torch.Tensor:
        torch.manual_seed(7)
        return pl(G, z).sum()

    params = dict(G.named_parameters())
    entries = {
        "mapping.layers.0.weight": (1, 2),
        "synthesis.convs[3].weight": (1, 0, 1, 2),
        "synthesis.convs[5].noise_strength": (1,),
        "synthesis.to_rgbs[2].affine.bias": (0,),
        "synthesis.const": (0, 1, 2),
    }
    grads = dict(zip(params, torch.autograd.grad(value(), list(params.values()))))
    h = 1e-6
    for dotted, index in entries.items():
        name = dotted.replace("[", ".").replace("]", "")
        p = params[name]
        p.data[index] += h
        up = value().item()
        p.data[index] -= 2 * h
        down = value().item()
        p.data[index] += h
        numeric = (up - down) / (2 * h)
        assert abs(numeric) > 1e-6, name  # the penalty does depend on it
        assert grads[name][index].item() == pytest.approx(numeric, rel=1e-5), name


# --- 3. style mixing -----------------------------------------------------------------------


def test_mix_styles_switches_from_w1_to_w2_at_the_cutoff():
    w1, w2 = torch.randn(3, 5), torch.randn(3, 5)
    ws = mix_styles(w1, w2, 3, 8)  # (B, num_ws, w_dim)
    assert ws.shape == (3, 8, 5)
    assert torch.equal(ws[:, :3], w1[:, None].expand(-1, 3, -1))
    assert torch.equal(ws[:, 3:], w2[:, None].expand(-1, 5, -1))
    assert torch.equal(mix_styles(w1, w2, torch.tensor(8), 8), w1[:, None].expand(-1, 8, -1))


def crossover(ws: torch.Tensor, w1: torch.Tensor) -> int:
    """The first layer whose ws are not w1's (num_ws when none)."""
    same = (ws == w1[:, None]).all(dim=2).all(dim=0).tolist()  # (num_ws,)
    return same.index(False) if False in same else len(same)


def test_style_mixing_in_training_takes_a_second_w_from_a_random_layer_on():
    G, _ = tiny()
    G.train()
    assert G.style_mixing == 0.9 and G.num_ws == 8  # 2·log2(32) − 2
    z = torch.randn(3, Z_DIM)
    w1 = G.mapping(z)
    G.style_mixing = 1.0
    cutoffs = set()
    for seed in range(100):
        torch.manual_seed(seed)
        ws = G.styles(z)
        c = crossover(ws, w1)
        w2 = ws[:, -1]  # the second latent's w, one per sample
        assert 1 <= c < G.num_ws
        assert torch.equal(ws[:, c:], w2[:, None].expand(-1, G.num_ws - c, -1))
        assert not torch.isclose(w2, w1).all(dim=1).any()
        cutoffs.add(c)
    assert cutoffs == set(range(1, G.num_ws))  # every crossover layer occurs

    G.style_mixing = 0.0
    assert crossover(G.styles(z), w1) == G.num_ws
    G.style_mixing = 1.0
    G.eval()
    assert crossover(G.styles(z), w1) == G.num_ws  # no mixing when sampling


def test_noise_is_random_in_training_and_repeatable_in_eval():
    G, _ = tiny()
    G = with_noise(G)
    G.style_mixing = 0.0
    z = torch.randn(2, Z_DIM)
    G.train()
    assert not torch.equal(G(z), G(z))  # a fresh noise draw each call
    ws = G.styles(z)
    assert torch.equal(G.synthesis(ws, noise="const"), G.synthesis(ws, noise="const"))
    assert not torch.equal(G.synthesis(ws, noise="const"), G.synthesis(ws, noise="none"))
    G.eval()
    assert torch.equal(G(z), G(z))
    assert torch.equal(G(z), G.synthesis(ws, noise="const"))
    # The noise images travel with the weights: a rebuilt G (another seed) samples alike.
    other, _ = tiny(seed=1)
    other.load_state_dict(G.state_dict())
    assert torch.equal(other.eval()(z), G(z))


# --- 4. shapes and options -----------------------------------------------------------------


@pytest.mark.parametrize("side", [32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_served_shape_builds_and_gives_images_of_it(side, channels):
    shape = (channels, side, side)
    G, D = tiny(shape)
    x = G(torch.randn(2, Z_DIM))
    assert x.shape == (2, *shape)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (2,)
    assert G.num_ws == 2 * int(math.log2(side)) - 2


def test_channels_hold_the_width_to_32_pixels_then_halve_down_to_16():
    G, D = build_models("stylegan2", 8, 0, (3, 256, 256))
    # The second conv of each resolution, 4×4 to 256×256: width 64 (the default) to 32×32.
    convs = [layer.weight.shape[0] for layer in G.synthesis.convs[::2]]
    assert convs == [64, 64, 64, 64, 32, 16, 16]
    assert D.from_rgb.weight.shape[:2] == (16, 3)
    assert [b.conv1.weight.shape[0] for b in D.blocks] == [16, 32, 64, 64, 64, 64]


def test_square_sides_names_the_served_sides():
    assert square_sides("stylegan2", 1) == square_sides("stylegan2", 3) == [32, 64, 128, 256]


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 48, 48), (3, 32, 64), (1, 16, 16)])
def test_unserved_shapes_are_refused(shape):
    with pytest.raises(ValueError) as info:
        build_models("stylegan2", Z_DIM, 2, shape)
    assert "32, 64, 128 or 256" in str(info.value)
    assert "×".join(map(str, shape)) in str(info.value)


@pytest.mark.parametrize(
    "options, field",
    [
        (ModelOptions(spectral_norm=True), "model.spectral_norm"),
        (ModelOptions(pack=2), "model.pack"),
        (ModelOptions(output="linear"), "output 'linear'"),
        (ModelOptions(classifier=True), "model.conditional"),
    ],
)
def test_unserved_options_are_refused(options, field):
    with pytest.raises(ValueError, match=field):
        build_models("stylegan2", Z_DIM, 2, SHAPE, options)


def job(batch: int, **model) -> dict:
    return {"model": {"arch": "stylegan2", **model}, "train": {"batch_size": batch}}


def test_a_job_checks_that_the_default_minibatch_std_groups_split_the_batch():
    assert STYLEGAN2_MBSTD_GROUP == MBSTD_GROUP
    assert from_dict({**job(16, conditional=True), "scale": {"workers": 2}}).model.conditional
    with pytest.raises(JobError, match=r"mbstd_group: 0 gives stylegan2's D groups of 4.* 6 "):
        from_dict({**job(12), "scale": {"workers": 2}})  # 6 images per worker
    assert from_dict({**job(12, mbstd_group=3), "scale": {"workers": 2}}).model.mbstd_group == 3


def test_conditional_g_and_projection_d_use_the_labels():
    G, D = tiny(options=ModelOptions(num_classes=3, classifier=True, mbstd_group=2))
    G.eval()
    z = torch.randn(4, Z_DIM).repeat(2, 1)  # the same latents with two sets of labels
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    x = G(z, y)
    assert x.shape == (8, *SHAPE)
    assert not torch.allclose(x[:4], x[4:])  # the labels change the images
    logits, classes = D(x, y, classes=True)
    assert logits.shape == (8,) and classes.shape == (8, 3)
    assert torch.equal(D(x, y), logits)
    assert not torch.allclose(D(x, (y + 1) % 3), logits)  # the projection term
    assert D.mbstd.group == 2


# --- 5. equalised learning rate ------------------------------------------------------------


def test_equalised_layers_scale_their_weights_by_one_over_sqrt_fan_in_at_run_time():
    torch.manual_seed(0)
    fc = EqualLinear(400, 300)
    assert abs(fc.weight.std().item() - 1) < 0.01  # stored at unit scale
    x = torch.randn(5, 400)
    with torch.no_grad():
        fc.weight.mul_(3)  # a change of the parameter reaches the output through the gain
        fc.bias.fill_(0.5)
    assert torch.allclose(fc(x), F.linear(x, fc.weight / 20, fc.bias), atol=1e-6)

    slow = EqualLinear(400, 300, bias_init=2.0, lr_mul=0.01)  # the mapping's
    assert abs(slow.weight.std().item() - 100) < 1
    expected = F.linear(x, slow.weight * 0.01 / 20, slow.bias * 0.01)
    assert torch.allclose(slow(x), expected, atol=1e-5)
    assert torch.allclose(slow.bias * 0.01, torch.full((300,), 2.0))

    conv = EqualConv2d(6, 4, 3)
    x = torch.randn(2, 6, 8, 8)
    expected = F.conv2d(x, conv.weight / math.sqrt(54), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_every_layer_of_g_and_d_is_equalised():
    G, D = build_models("stylegan2", 8, 0, (3, 32, 32), ModelOptions(num_classes=2))
    for model in (G, D):
        assert not [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    # The modulated convs store unit-scale weights too, scaled at run time: a toRGB with styles
    # of 1 is a plain 1×1 conv by weight / √c_in.
    to_rgb = G.synthesis.to_rgbs[-1]
    assert abs(to_rgb.weight.std().item() - 1) < 0.2
    with torch.no_grad():
        to_rgb.affine.weight.zero_()  # styles = the affine's bias, 1
    x, w = torch.randn(2, 64, 8, 8), torch.randn(2, 8)
    expected = F.conv2d(x, to_rgb.weight / 8, to_rgb.bias)
    assert torch.allclose(to_rgb(x, w), expected, atol=1e-5)


# --- 6. DDP ---------------------------------------------------------------------------------

BATCH = 4  # per rank


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
        plain_g, plain_d = tiny()  # the same initial weights on both ranks
        initial = flat([*plain_g.parameters(), *plain_d.parameters()])
        G = DistributedDataParallel(plain_g)
        D = DistributedDataParallel(plain_d, broadcast_buffers=False)
        nets = Nets(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()))
        game = Game(get_loss("nonsaturating"), r1_gamma=1.0, r1_every=1)
        pl = PathLengthPenalty()
        torch.manual_seed(100 + rank)  # each rank its own data, latents, noise and mixing
        reals = torch.rand(2, BATCH, *SHAPE) * 2 - 1
        for step, real in enumerate(reals):
            train_step(nets, game, [real], lambda n: torch.randn(n, Z_DIM), step=step)
            # The path-length step, as StyleGAN2 does it (weight 2 × interval 4, half batch).
            nets.opt_g.zero_grad(set_to_none=True)
            (8 * pl(G, torch.randn(BATCH // 2, Z_DIM)).mean()).backward()
            nets.opt_g.step()
        result = {
            "initial": gather(initial),
            "weights": gather(flat([*plain_g.parameters(), *plain_d.parameters()])),
            "pl_mean": gather(pl.mean.double().reshape(1)),
            "reals": gather(flat([reals])),
        }
        dist.barrier()
        dist.destroy_process_group()
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def test_ddp_training_and_path_length_steps_leave_identical_weights(tmp_path):
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=ddp_worker, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    errors = "\n".join(f.read_text() for f in sorted(tmp_path.glob("rank*.err")))
    assert [p.exitcode for p in procs] == [0] * WORLD, errors
    result = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert not torch.equal(result["reals"][0], result["reals"][1])  # different data per rank
    assert torch.equal(result["initial"][0], result["initial"][1])
    assert torch.equal(result["weights"][0], result["weights"][1])  # synced gradients
    assert not torch.equal(result["weights"][0], result["initial"][0])  # and they did move
    # a is the mean over both ranks' lengths, though each rank drew its own latents.
    assert torch.equal(result["pl_mean"][0], result["pl_mean"][1])
    assert result["pl_mean"][0].item() > 0
