"""ADA's augmentations (Karras et al. 2020, "Training GANs with Limited Data"): what D sees, each
image transformed with a probability p that ``distgan.ada_tuner.AdaTuner`` adjusts as D learns.

    x = augment(x, tuner.p)   # (B, C, H, W) in [-1, 1] -> (B, C, H, W); p = 0 returns x itself

Like DiffAugment (``distgan.augment``) it is applied to reals and fakes alike, in D's step and in
G's, and is differentiable with respect to x, so G learns through it; unlike DiffAugment, an
image is left as it is with probability 1 - p, so at small p D mostly sees the true data and G is
not pulled towards the augmented distribution. This is the paper's "bgc" pipeline, in its order;
each operation is applied to each image on its own with probability p, and where it is not, its
draw is the identity:

geometric, composed into one affine map per image, applied once:
  x-flip           mirrored left-right half of the time (so P = p / 2)
  90° rotations    k quarter turns, k uniform in {0, 1, 2, 3}, as ``torch.rot90(x, k, (2, 3))``
  integer shift    (x, y) uniform in ±0.125 of (W, H), rounded to whole pixels
  isotropic scale  s = 2^N(0, 0.2²) (lognormal, log-std 0.2·ln 2)
  pre-rotation     angle uniform in ±π, with probability 1 - sqrt(1 - p): pre or post, p
  anisotropic      x scaled by s = 2^N(0, 0.2²), y by 1 / s
  post-rotation    as the pre-rotation
  fractional shift (x, y) = N(0, 0.125²) × (W, H) pixels
colour, composed into one 4×4 matrix per image on (r, g, b, 1); v = (1, 1, 1)/√3, the luma axis:
  brightness       b ~ N(0, 0.2²) added to every channel
  contrast         every channel × 2^N(0, 0.5²), around 0, the mid-grey of [-1, 1] (as the paper)
  luma flip        half the time the luma (x·v) is negated: x - 2 v (x·v)
  hue rotation     a turn by U(-π, π) around v
  saturation       the chroma (x - v (x·v)) × 2^N(0, 1)

A grey image (C = 1) is taken as the colour (g, g, g): hue and saturation leave grey unchanged,
so only brightness, contrast and luma flip (g -> -g, about mid-grey 0) apply to it.

A simplification: the paper resamples through a wavelet filter (upsampling by 2, then
antialiasing) on a reflection-padded image; here ``F.grid_sample`` samples bilinearly with
reflection padding. Flips, quarter turns and whole-pixel shifts land on pixel centres and copy
pixels (up to float rounding); other maps blur slightly and may alias where they shrink.

The draws are a ``Draws`` of per-image parameters, so each operation can be forced on its own:
``apply(x, replace(Draws.identity(B), rot90=torch.ones(B)))`` is ``torch.rot90(x, 1, (2, 3))``.
Plain PyTorch with nothing of torch.distributed, so that the step can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

SHIFT_MAX = 0.125  # integer shift: at most this share of the side
SCALE_STD = 0.2  # log2 of the isotropic and the anisotropic scale
FRAC_STD = 0.125  # fractional shift, as a share of the side
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2
SATURATION_STD = 1.0  # log2


@dataclass(frozen=True)
class Draws:
    """One call's random parameters, each (B,) or (B, 2), already the identity for the images
    an operation was not drawn for."""

    xflip: Tensor  # 1: mirror left-right, 0: not
    rot90: Tensor  # quarter turns, 0..3
    shift: Tensor  # (B, 2) whole-pixel shift (x, y) as a share of (W, H), rounded when applied
    scale: Tensor  # isotropic scale
    pre_rot: Tensor  # radians
    aniso: Tensor  # x scaled by it, y by its inverse
    post_rot: Tensor  # radians
    frac_shift: Tensor  # (B, 2) shift (x, y) as a share of (W, H)
    brightness: Tensor  # added
    contrast: Tensor  # factor
    lumaflip: Tensor  # 1: negate the luma, 0: not
    hue: Tensor  # radians around the luma axis
    saturation: Tensor  # factor of the chroma

    @classmethod
    def identity(cls, batch: int, device: torch.device | str | None = None) -> Draws:
        """Draws that leave every image unchanged (a base for forcing one operation)."""
        zero = torch.zeros(batch, device=device)
        one = torch.ones(batch, device=device)
        pair = torch.zeros(batch, 2, device=device)
        return cls(zero, zero, pair, one, zero, one, zero, pair, zero, one, zero, zero, one)


def draw(
    batch: int,
    p: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Draws:
    """The random parameters of ``batch`` images, each operation drawn with probability ``p``
    (the rotations with 1 - sqrt(1 - p) each); every draw comes from ``generator`` if given."""

    def rand(*shape: int) -> Tensor:  # U[0, 1)
        return torch.rand(batch, *shape, device=device, generator=generator)

    def randn(*shape: int) -> Tensor:
        return torch.randn(batch, *shape, device=device, generator=generator)

    def gate(value: Tensor, identity: float, prob: float = p) -> Tensor:
        applies = rand(*[1] * (value.dim() - 1)) < prob  # one draw per image, even for a pair
        return torch.where(applies, value, identity)

    # The paper rotates twice, around the anisotropic scaling, each time with this probability,
    # so that an image is rotated at all with probability p.
    p_rot = 1 - math.sqrt(max(0.0, 1 - p))
    return Draws(
        xflip=gate(torch.floor(rand() * 2), 0.0),
        rot90=gate(torch.floor(rand() * 4), 0.0),
        shift=gate((rand(2) * 2 - 1) * SHIFT_MAX, 0.0),
        scale=gate(torch.exp2(randn() * SCALE_STD), 1.0),
        pre_rot=gate((rand() * 2 - 1) * math.pi, 0.0, p_rot),
        aniso=gate(torch.exp2(randn() * SCALE_STD), 1.0),
        post_rot=gate((rand() * 2 - 1) * math.pi, 0.0, p_rot),
        frac_shift=gate(randn(2) * FRAC_STD, 0.0),
        brightness=gate(randn() * BRIGHTNESS_STD, 0.0),
        contrast=gate(torch.exp2(randn() * CONTRAST_STD), 1.0),
        lumaflip=gate(torch.floor(rand() * 2), 0.0),
        hue=gate((rand() * 2 - 1) * math.pi, 0.0),
        saturation=gate(torch.exp2(randn() * SATURATION_STD), 1.0),
    )


# --- geometric ---------------------------------------------------------------------------------


def _affine2d(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """Per-image matrices (B, 3, 3) [[a, b, c], [d, e, f], [0, 0, 1]] from (B,) entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=1).reshape(-1, 3, 3)


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return _affine2d(one, zero, tx, zero, one, ty)


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    zero = torch.zeros_like(sx)
    return _affine2d(sx, zero, zero, zero, sy, zero)


def _rotate2d(theta: Tensor) -> Tensor:
    c, s, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    return _affine2d(c, -s, zero, s, c, zero)


def geometric_matrix(d: Draws, height: int, width: int) -> Tensor:
    """The (B, 2, 3) matrices for ``F.affine_grid`` (``align_corners=False``) that apply, in
    order, the geometric operations of ``d`` to (height, width) images."""
    one = torch.ones_like(d.scale)
    w, h = float(width), float(height)
    # grid_sample needs the inverse map, output pixel -> input pixel. It is built in pixels
    # around the image's centre, x right and y down: the inverse of "op 1, then op 2, ..." is
    # inv(op 1) @ inv(op 2) @ ...
    inverse = (
        _scale2d(1 - 2 * d.xflip, one)
        @ _rotate2d(d.rot90 * (math.pi / 2))  # inv of -k·90°, which is torch.rot90's k turns
        @ _translate2d(-torch.round(d.shift[:, 0] * w), -torch.round(d.shift[:, 1] * h))
        @ _scale2d(1 / d.scale, 1 / d.scale)
        @ _rotate2d(-d.pre_rot)
        @ _scale2d(1 / d.aniso, d.aniso)
        @ _rotate2d(-d.post_rot)
        @ _translate2d(-d.frac_shift[:, 0] * w, -d.frac_shift[:, 1] * h)
    )
    # In affine_grid's coordinates [-1, 1] spans the width and the height.
    to_unit = _scale2d(one * (2 / w), one * (2 / h))
    to_pixels = _scale2d(one * (w / 2), one * (h / 2))
    return (to_unit @ inverse @ to_pixels)[:, :2, :]


def apply_geometric(x: Tensor, d: Draws) -> Tensor:
    """``x`` (B, C, H, W) through the geometric operations of ``d``, resampled once."""
    B, C, H, W = x.shape
    theta = geometric_matrix(d, H, W).to(x.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# --- colour ------------------------------------------------------------------------------------


def _affine3d(linear: Tensor, offset: Tensor) -> Tensor:
    """Per-image matrices (B, 4, 4) acting on (r, g, b, 1) from (B, 3, 3) and (B, 3)."""
    out = torch.zeros(linear.shape[0], 4, 4, dtype=linear.dtype, device=linear.device)
    out[:, :3, :3] = linear
    out[:, :3, 3] = offset
    out[:, 3, 3] = 1
    return out


def colour_matrix(d: Draws) -> Tensor:
    """The (B, 4, 4) matrices that apply, in order, the colour operations of ``d`` to
    (r, g, b, 1)."""
    B, device = d.brightness.shape[0], d.brightness.device
    eye = torch.eye(3, device=device).expand(B, 3, 3)
    v = torch.full((3,), 3**-0.5, device=device)  # the luma axis
    vv = torch.outer(v, v)  # (3, 3): projection onto it
    # [v]×, the matrix of x -> v × x
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=device) * 3**-0.5
    no_offset = torch.zeros(B, 3, device=device)

    def per_image(t: Tensor) -> Tensor:  # (B,) -> (B, 1, 1)
        return t[:, None, None]

    brightness = _affine3d(eye, d.brightness[:, None].expand(B, 3))
    contrast = _affine3d(eye * per_image(d.contrast), no_offset)
    lumaflip = _affine3d(eye - 2 * vv * per_image(d.lumaflip), no_offset)
    cos, sin = per_image(torch.cos(d.hue)), per_image(torch.sin(d.hue))
    hue = _affine3d(cos * eye + sin * cross + (1 - cos) * vv, no_offset)  # Rodrigues
    saturation = _affine3d(vv + (eye - vv) * per_image(d.saturation), no_offset)
    return saturation @ hue @ lumaflip @ contrast @ brightness


def apply_colour(x: Tensor, d: Draws) -> Tensor:
    """``x`` (B, C, H, W), C = 3 (RGB) or 1 (grey), through the colour operations of ``d``."""
    B, C, H, W = x.shape
    m = colour_matrix(d).to(x.dtype)  # (B, 4, 4)
    linear, offset = m[:, :3, :3], m[:, :3, 3]  # (B, 3, 3), (B, 3)
    if C == 3:
        rgb = linear @ x.reshape(B, 3, H * W) + offset[:, :, None]  # (B, 3, H·W)
        return rgb.reshape(B, C, H, W)
    # Grey g is (g, g, g), which every operation maps to a grey: read it back as the mean.
    gain = linear.sum(dim=2).mean(dim=1)  # (B,)
    return x * gain[:, None, None, None] + offset.mean(dim=1)[:, None, None, None]


# --- the pipeline --------------------------------------------------------------------------------


def apply(x: Tensor, d: Draws) -> Tensor:
    """``x`` (B, C, H, W) through the geometric, then the colour operations of ``d``."""
    if x.shape[1] not in (1, 3):
        raise ValueError(f"ADA augments grey or RGB images (1 or 3 channels), not {x.shape[1]}")
    dtype = x.dtype
    # In float32 even under autocast: in bf16 the sampling grid would be off by a fraction of a
    # pixel, and a flip or a whole-pixel shift would blur.
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(torch.promote_types(dtype, torch.float32))
        return apply_colour(apply_geometric(x, d), d).to(dtype)


def augment(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``x`` (B, C, H, W) in [-1, 1], each image through each operation with probability ``p``
    (its own draws, from ``generator`` on x's device when given). ``p`` = 0 returns ``x``."""
    if p <= 0:
        return x
    return apply(x, draw(x.shape[0], p, x.device, generator))
