"""ADA: each augmentation against its definition, forced on its own through ``Draws``; the draws'
probabilities; the controller's arithmetic, its state and its agreement across two gloo ranks.

The geometric maps that do not land on pixel centres are checked on linear ramps, which bilinear
sampling reproduces exactly wherever the map samples inside the image (zoomed in, it always does).
"""

from __future__ import annotations

import ast
import io
import math
import os
import socket
import traceback
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distgan import ada
from distgan.ada import Draws, apply, apply_colour, apply_geometric, augment, draw
from distgan.ada_tuner import AdaTuner
from distgan.config import from_dict
from distgan.errors import JobError

B, S = 4, 16  # images and their side


def rgb(seed: int = 0, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, S, S, generator=g) * 2 - 1  # (B, 3, S, S)


def forced(**ops) -> Draws:
    """Identity draws for B images but for ``ops``, each given as a value for all images."""
    values = {}
    for name, value in ops.items():
        value = torch.as_tensor(value, dtype=torch.float32)
        shape = (B, 2) if name in ("shift", "frac_shift") else (B,)
        values[name] = value.expand(shape).clone()
    return replace(Draws.identity(B), **values)


def pixel_coords() -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of every pixel centre, (S, S) each, around the image's centre, y down."""
    c = torch.arange(S, dtype=torch.float64) + 0.5 - S / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


GRADIENT = (0.05, -0.03)  # the ramp's slope along x and y


def ramp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return GRADIENT[0] * x + GRADIENT[1] * y


def ramp_image() -> torch.Tensor:
    return ramp(*pixel_coords()).float().expand(B, 3, S, S).clone()  # (B, 3, S, S)


def rotation(theta: float) -> torch.Tensor:
    """A turn by ``theta`` in (x right, y down) pixel coordinates: (2, 2)."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def resampled_ramp(forward: torch.Tensor, shift=(0.0, 0.0)) -> torch.Tensor:
    """The ramp moved by the map p -> forward @ p + shift (pixels): out(q) = ramp(inv(q))."""
    x, y = pixel_coords()
    q = torch.stack([x.flatten() - shift[0], y.flatten() - shift[1]])  # (2, S·S)
    src = torch.linalg.inv(forward) @ q
    return ramp(src[0], src[1]).reshape(S, S).float()


# --- the pipeline as a whole ------------------------------------------------------------------


def test_p_zero_returns_x_itself_and_draws_nothing():
    x = rgb()
    g = torch.Generator().manual_seed(1)
    before = g.get_state()
    assert augment(x, 0.0, generator=g) is x
    assert torch.equal(g.get_state(), before)


def test_p_one_changes_every_image_rgb_and_grey():
    x = rgb(batch=64)
    g = torch.Generator().manual_seed(2)
    out = augment(x, 1.0, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out - x).abs().amax(dim=(1, 2, 3)).min() > 0.05
    grey = x[:, :1]
    out = augment(grey, 1.0, generator=g)
    assert out.shape == grey.shape
    assert (out - grey).abs().amax(dim=(1, 2, 3)).min() > 0.05


def test_the_generator_reproduces_the_draws():
    x = rgb()

    def run(seed: int) -> torch.Tensor:
        return augment(x, 0.5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_gradients_flow_to_x_through_the_augmentations():
    x = rgb().requires_grad_(True)
    out = augment(x, 1.0, generator=torch.Generator().manual_seed(5))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()
    # Through a flip, the gradient is the flipped weight.
    x.grad = None
    weight = torch.randn(B, 3, S, S)
    (apply(x, forced(xflip=1)) * weight).sum().backward()
    torch.testing.assert_close(x.grad, weight.flip(3))


def test_autocast_does_not_blur_a_flip():
    x = rgb()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = apply(x, forced(xflip=1, shift=(2 / S, 0)))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[..., 2:], x.flip(3)[..., :-2], atol=1e-5, rtol=0)


def test_only_grey_or_rgb_images():
    with pytest.raises(ValueError, match=r"\(1 or 3 channels\), not 2"):
        augment(torch.zeros(2, 2, S, S), 0.5)


def test_ada_imports_nothing_of_torch_distributed():
    # The step imports distgan.ada, and the step knows nothing of torch.distributed.
    tree = ast.parse(Path(ada.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert names == {"__future__", "annotations", "math", "dataclasses", "dataclass", "torch",
                     "torch.nn.functional"}  # fmt: skip


# --- geometric operations, each forced ---------------------------------------------------------


def test_x_flip_mirrors_left_right():
    x = rgb()
    torch.testing.assert_close(apply_geometric(x, forced(xflip=1)), x.flip(3))


def test_quarter_turns_are_torch_rot90():
    x = rgb()
    turns = torch.tensor([0.0, 1.0, 2.0, 3.0])
    out = apply_geometric(x, replace(Draws.identity(B), rot90=turns))
    for i, k in enumerate(turns.int().tolist()):
        torch.testing.assert_close(out[i], torch.rot90(x[i], k, (1, 2)), atol=1e-5, rtol=0)


def test_integer_shift_moves_whole_pixels_and_reflects_the_border():
    x = rgb()
    # 0.19 · 16 = 3.04 and -0.12 · 16 = -1.92: 3 pixels right, 2 up.
    out = apply_geometric(x, forced(shift=(0.19, -0.12)))
    torch.testing.assert_close(out[..., :-2, 3:], x[..., 2:, :-3], atol=1e-5, rtol=0)
    # The 3 columns shifted in from the left mirror the image's first 3.
    torch.testing.assert_close(out[..., :-2, :3], x[..., 2:, :3].flip(3), atol=1e-5, rtol=0)


def test_isotropic_scale_zooms_around_the_centre():
    out = apply_geometric(ramp_image(), forced(scale=2.0))
    expected = resampled_ramp(torch.eye(2, dtype=torch.float64) * 2)
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)


@pytest.mark.parametrize("op", ["pre_rot", "post_rot"])
def test_a_rotation_turns_around_the_centre(op):
    out = apply_geometric(ramp_image(), forced(scale=2.0, **{op: 0.7}))
    expected = resampled_ramp(rotation(0.7) * 2)
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)


def test_anisotropic_scale_stretches_x_and_squeezes_y():
    out = apply_geometric(ramp_image(), forced(scale=2.0, aniso=1.5))
    expected = resampled_ramp(torch.diag(torch.tensor([2 * 1.5, 2 / 1.5], dtype=torch.float64)))
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)


def test_fractional_shift_moves_by_a_share_of_the_side():
    out = apply_geometric(ramp_image(), forced(scale=2.0, frac_shift=(0.02, -0.05)))
    expected = resampled_ramp(torch.eye(2, dtype=torch.float64) * 2, shift=(0.02 * S, -0.05 * S))
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)


def test_the_geometric_operations_compose_in_the_papers_order():
    # scale, pre-rotation, anisotropic scale, post-rotation, then the fractional shift
    d = forced(scale=2.0, pre_rot=0.4, aniso=1.2, post_rot=-1.1, frac_shift=(0.02, 0.01))
    aniso = torch.diag(torch.tensor([1.2, 1 / 1.2], dtype=torch.float64))
    forward = rotation(-1.1) @ aniso @ rotation(0.4) * 2
    expected = resampled_ramp(forward, shift=(0.02 * S, 0.01 * S))
    out = apply_geometric(ramp_image(), d)
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)
    # The flip comes before the whole-pixel shift: a shift right of the flipped image.
    x = rgb()
    out = apply_geometric(x, forced(xflip=1, shift=(2 / S, 0)))
    torch.testing.assert_close(out[..., 2:], x.flip(3)[..., :-2], atol=1e-5, rtol=0)


# --- colour operations, each forced ------------------------------------------------------------


def luma(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)  # (B, 1, H, W): the grey level, ∝ x·v


def test_brightness_adds_and_contrast_scales_around_mid_grey():
    x = rgb()
    b = torch.tensor([0.1, -0.3, 0.0, 0.25])
    out = apply_colour(x, replace(Draws.identity(B), brightness=b))
    torch.testing.assert_close(out, x + b[:, None, None, None])
    out = apply_colour(x, forced(contrast=1.7))
    torch.testing.assert_close(out, x * 1.7)
    # brightness first, then contrast
    torch.testing.assert_close(
        apply_colour(x, forced(brightness=0.2, contrast=0.5)), (x + 0.2) * 0.5
    )


def test_luma_flip_negates_the_luma_and_keeps_the_chroma():
    x = rgb()
    out = apply_colour(x, forced(lumaflip=1))
    torch.testing.assert_close(luma(out), -luma(x))
    torch.testing.assert_close(out - luma(out), x - luma(x))


def test_hue_rotation_keeps_the_luma_and_a_third_of_a_turn_cycles_the_channels():
    x = rgb()
    out = apply_colour(x, forced(hue=1.3))
    torch.testing.assert_close(luma(out), luma(x))
    torch.testing.assert_close((out - luma(out)).norm(dim=1), (x - luma(x)).norm(dim=1))
    assert not torch.allclose(out, x, atol=0.01)
    out = apply_colour(x, forced(hue=2 * math.pi / 3))
    torch.testing.assert_close(out, x[:, [2, 0, 1]])  # (r, g, b) -> (b, r, g)


def test_saturation_scales_the_chroma_and_zero_gives_grey():
    x = rgb()
    out = apply_colour(x, forced(saturation=0.0))
    torch.testing.assert_close(out, luma(x).expand_as(x))
    out = apply_colour(x, forced(saturation=2.5))
    torch.testing.assert_close(out, luma(x) + 2.5 * (x - luma(x)))


def test_grey_images_get_brightness_contrast_and_luma_flip_only():
    grey = rgb()[:, :1]  # (B, 1, S, S)
    out = apply_colour(grey, forced(brightness=0.2, contrast=0.5, lumaflip=1))
    torch.testing.assert_close(out, -(grey + 0.2) * 0.5)
    torch.testing.assert_close(apply_colour(grey, forced(hue=1.0, saturation=0.0)), grey)


# --- the draws --------------------------------------------------------------------------------


def test_each_operation_is_drawn_with_its_probability_and_distribution():
    n, p = 20_000, 0.3
    d = draw(n, p, generator=torch.Generator().manual_seed(0))
    p_rot = 1 - math.sqrt(1 - p)
    applied = {  # the share of images each changes: flips and quarter turns have an identity draw
        "xflip": (d.xflip == 1, p / 2),
        "rot90": (d.rot90 != 0, p * 3 / 4),
        "shift": ((d.shift != 0).any(dim=1), p),
        "scale": (d.scale != 1, p),
        "pre_rot": (d.pre_rot != 0, p_rot),
        "aniso": (d.aniso != 1, p),
        "post_rot": (d.post_rot != 0, p_rot),
        "frac_shift": ((d.frac_shift != 0).any(dim=1), p),
        "brightness": (d.brightness != 0, p),
        "contrast": (d.contrast != 1, p),
        "lumaflip": (d.lumaflip == 1, p / 2),
        "hue": (d.hue != 0, p),
        "saturation": (d.saturation != 1, p),
    }
    for name, (mask, expected) in applied.items():
        tolerance = 5 * math.sqrt(expected * (1 - expected) / n)
        assert abs(mask.float().mean().item() - expected) < tolerance, name
    rotated = (d.pre_rot != 0) | (d.post_rot != 0)
    assert abs(rotated.float().mean().item() - p) < 0.016  # pre or post: p, as the paper says
    # A pair (x, y) is drawn for an image as one: both moved or neither.
    assert torch.equal((d.shift != 0).all(dim=1), (d.shift != 0).any(dim=1))
    # The distributions of the values drawn
    assert d.shift.abs().max() <= 0.125 and set(d.rot90.unique().tolist()) == {0, 1, 2, 3}
    assert d.hue.abs().max() <= math.pi and d.pre_rot.abs().max() <= math.pi
    for values, std in [
        (torch.log2(d.scale[d.scale != 1]), 0.2),
        (torch.log2(d.aniso[d.aniso != 1]), 0.2),
        (d.frac_shift[d.frac_shift != 0], 0.125),
        (d.brightness[d.brightness != 0], 0.2),
        (torch.log2(d.contrast[d.contrast != 1]), 0.5),
        (torch.log2(d.saturation[d.saturation != 1]), 1.0),
    ]:
        assert abs(values.mean().item()) < 0.1 * std
        assert values.std().item() == pytest.approx(std, rel=0.05)


# --- the controller ---------------------------------------------------------------------------

BATCH = 64
STEP = BATCH * 4 / (500 * 1000)  # the paper's adjustment: batch · interval / (speed_kimg · 1000)


def run_interval(tuner: AdaTuner, logits: torch.Tensor) -> list[float]:
    """p after each of ``tuner.interval`` steps that each observe ``logits``."""
    ps = []
    for _ in range(tuner.interval):
        tuner.observe(logits)
        ps.append(tuner.update(BATCH))
    return ps


def test_p_rises_when_d_is_overconfident_on_reals_and_falls_otherwise():
    tuner = AdaTuner(target=0.6)
    at_target = torch.tensor([2.0, 1.0, 0.5, 3.0, -1.0])  # E[sign] = 0.6: no move
    assert run_interval(tuner, at_target) == [0.0, 0.0, 0.0, 0.0] and tuner.r_t == 0.6
    assert run_interval(tuner, torch.ones(8)) == [0.0, 0.0, 0.0, STEP]  # r_t = 1 > 0.6
    assert tuner.r_t == 1.0
    # r_t is taken over the whole interval: 3 sure steps and one unsure (E[sign] = -0.25) average
    # (24 - 2) / 32 = 0.6875, above the target.
    for logits in [torch.ones(8)] * 3 + [torch.tensor([1.0] * 3 + [-1.0] * 5)]:
        tuner.observe(logits)
        p = tuner.update(BATCH)
    assert tuner.r_t == 22 / 32 and p == STEP + STEP
    assert run_interval(tuner, -torch.ones(8))[-1] == STEP  # r_t = -1 < 0.6: down
    assert run_interval(tuner, torch.zeros(8))[-1] == 0.0  # D cannot tell: r_t = 0, down


def test_p_is_clamped_to_0_and_1():
    tuner = AdaTuner(target=0.6, interval=1, speed_kimg=0.01)  # one step: 64 / 10 ≫ 1
    tuner.observe(-torch.ones(8))
    assert tuner.update(BATCH) == 0.0
    tuner.observe(torch.ones(8))
    assert tuner.update(BATCH) == 1.0
    tuner.observe(torch.ones(8))
    assert tuner.update(BATCH) == 1.0 and tuner.p == 1.0


def test_state_dict_round_trips_through_a_weights_only_checkpoint():
    g = torch.Generator().manual_seed(0)
    # D sure of the reals for 12 steps (p rises), then not (p falls)
    logits = [torch.randn(16, generator=g) + (1.5 if i < 12 else -0.5) for i in range(23)]
    whole, first = AdaTuner(target=0.6, speed_kimg=10), AdaTuner(target=0.6, speed_kimg=10)
    expected = []
    for i, x in enumerate(logits):
        whole.observe(x)
        expected.append(whole.update(BATCH))
        if i < 10:  # stops two steps into an interval, with signs pending
            first.observe(x)
            first.update(BATCH)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = AdaTuner(target=0.6, speed_kimg=10)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.p == first.p == expected[9] > 0
    got = []
    for x in logits[10:]:
        resumed.observe(x)
        got.append(resumed.update(BATCH))
    assert got == expected[10:] and resumed.r_t == whole.r_t
    assert max(expected) > expected[-1]  # it went up and came down


# --- under DDP: two gloo ranks ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tuner_rank(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
        # Rank 0 is sure of its reals, rank 1 is not (E[sign] = 1 and 0.25): together 0.625,
        # above the target, though rank 1 alone is below it.
        logits = torch.ones(8) if rank == 0 else torch.tensor([1.0] * 5 + [-1.0] * 3)
        tuner = AdaTuner(target=0.6)
        ps = run_interval(tuner, logits)
        dist.destroy_process_group()
        torch.save({"ps": ps, "r_t": tuner.r_t}, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def test_every_rank_holds_the_p_of_the_signs_of_all_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=tuner_rank, args=(r, port, str(tmp_path))) for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        if proc.is_alive():
            proc.kill()
    errors = "\n".join(f.read_text() for f in tmp_path.glob("rank*.err"))
    assert [proc.exitcode for proc in procs] == [0, 0], errors
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for result in results:
        assert result["r_t"] == (8 + 2) / 16
        assert result["ps"] == [0.0, 0.0, 0.0, STEP]


# --- the job field ----------------------------------------------------------------------------


def test_ada_target_is_off_by_default_and_checked():
    assert from_dict({}).train.ada_target == 0.0
    assert from_dict({"train": {"ada_target": 0.6}}).train.ada_target == 0.6
    for bad in (-0.1, 1.5):
        with pytest.raises(JobError, match="train.ada_target: expected a number"):
            from_dict({"train": {"ada_target": bad}}, source="jobs/x.yaml")
    with pytest.raises(JobError, match="set train.diffaugment: '' or train.ada_target: 0"):
        from_dict({"train": {"ada_target": 0.6, "diffaugment": "color"}}, source="jobs/x.yaml")
