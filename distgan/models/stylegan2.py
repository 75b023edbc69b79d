"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"):
config F's architecture at small widths, for square images of 32, 64, 128 or 256 pixels.

    G, D = build_models("stylegan2", z_dim=128, width=0, shape=(3, 32, 32))
    x = G(z)                        # (B, 3, 32, 32) in [-1, 1]; noise and style mixing in training
    w = G.mapping(z)                # (B, w_dim), w_dim = z_dim
    ws = G.styles(z)                # (B, G.num_ws, w_dim): one w per layer, mixed in training
    x = G.synthesis(ws, noise="const")   # noise "random" (training), "const" (eval) or "none"
    x, ws = G(z, return_ws=True)    # both, through a DDP wrapper too
    logits = D(x)                   # (B,)
    x = G(z, y); logits, classes = D(x, y, classes=True)   # conditional, with AC-GAN's head
    # path length regularisation: distgan.path_length.PathLengthPenalty

G: z, normalised by its second moment (beside a normalised embedding of the label when
   conditional, as in StyleGAN2-ADA) -> mapping MLP (4 layers, lr × 0.01, leaky ReLU) -> w.
   Synthesis from a learned 4×4 constant; per resolution [upsample 2×] modulated 3×3 conv,
   + per-pixel noise × a learned per-channel strength, + bias, leaky ReLU ×√2 (two layers,
   one at 4×4), and a toRGB (modulated 1×1, not demodulated); the image is the sum of the toRGB
   outputs upsampled to the top (the "skip" G), through tanh: StyleGAN2's output is linear, but
   every distgan G gives images in [-1, 1].
D: fromRGB 1×1 -> residual blocks ([conv 3×3, conv 3×3 down 2×] + [down 2×, conv 1×1]) × 1/√2
   -> at 4×4: minibatch std, conv 3×3, linear, linear to one logit (+ the projection <embed(y),
   h> / √c when conditional; AC-GAN's class head on h when asked).
Resampling uses StyleGAN2's [1, 3, 3, 1] FIR filter. Every conv and linear layer has the
equalised learning rate: weights drawn N(0, 1) and scaled by 1/√fan_in at run time.

Channels: ``width`` w (default 64) up to 32×32, halved at each doubling beyond, never below 16
(config F: 512 up to 64×64). Options (``ModelOptions``): classes, AC-GAN's head and the minibatch
std group (``model.mbstd_group``; StyleGAN2's D always has the layer: groups of 4 when 0).
Spectral norm (the equalised learning rate keeps the scale instead) and packing are refused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distgan.models.layers import MinibatchStd, projection
from distgan.models.registry import ModelOptions, register_model

Tensor = torch.Tensor

SIDES = (32, 64, 128, 256)
MAPPING_LAYERS = 4  # config F has 8; StyleGAN2-ADA uses 2 for small data
MAPPING_LR = 0.01  # the mapping's learning-rate multiplier
MBSTD_GROUP = 4
DEFAULT_WIDTH = 64


def _channels(res: int, width: int) -> int:
    """Channels at ``res``×``res``: width up to 32×32, halved at each doubling, at least 16."""
    return max(min(width, width * 32 // res), min(width, 16))


def _lrelu(x: Tensor) -> Tensor:
    # ×√2 keeps the activations' scale through leaky ReLU (StyleGAN2's bias_act "lrelu" gain).
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()  # (B, F): mean x² = 1


def fir_kernel() -> Tensor:
    """StyleGAN2's resampling filter: [1, 3, 3, 1] ⊗ [1, 3, 3, 1], summing to 1. (4, 4)"""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(f, f) / 64


def upsample2d(x: Tensor, fir: Tensor) -> Tensor:
    """(B, C, s, s) -> (B, C, 2s, 2s): zeros between the pixels, then the FIR filter × 4."""
    c = x.shape[1]
    return F.conv_transpose2d(x, (4 * fir).expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


class EqualLinear(nn.Module):
    """A linear layer with the equalised learning rate: its weight is drawn N(0, 1/lr_mul²) and
    multiplied by lr_mul/√fan_in at every call, its bias by lr_mul; so Adam's steps, which do
    not depend on a parameter's scale, move every layer's output alike (× lr_mul)."""

    def __init__(
        self, c_in: int, c_out: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), bias_init / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(c_in)
        self.bias_gain = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        return F.linear(x, self.weight * self.weight_gain, bias)


class EqualConv2d(nn.Module):
    """A k×k convolution ('same' padding) with the equalised learning rate (gain 1/√(c_in·k²));
    ``down``: 2× downsampling as in StyleGAN2 (the FIR filter, then the conv with stride 2)."""

    def __init__(self, c_in: int, c_out: int, k: int, bias: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain = 1 / math.sqrt(c_in * k * k)
        self.down = down
        if down:
            self.register_buffer("fir", fir_kernel(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        if not self.down:
            return F.conv2d(x, w, self.bias, padding=w.shape[-1] // 2)
        # Pad so that filter + stride-2 conv give s/2 (k=3: s+4 -> s+1 -> s/2).
        p = w.shape[-1] + 1
        x = F.pad(x, [(p + 1) // 2, p // 2] * 2)
        c = x.shape[1]
        x = F.conv2d(x, self.fir.expand(c, 1, 4, 4), groups=c)
        return F.conv2d(x, w, self.bias, stride=2)


def modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, eps: float = 1e-8
) -> Tensor:
    """StyleGAN2's modulated convolution, one grouped conv for the batch (samples as groups).

    x (B, Cin, H, W); weight (Cout, Cin, k, k), its equalised-lr gain applied; styles (B, Cin).
    Per sample w' = w·s (input channel i scaled by s_i); demodulated, w'' = w' / √(Σ w'² + eps)
    over each output's inputs and taps, so unit-variance inputs give unit-variance outputs.
    Returns (B, Cout, H, W).
    """
    B, c_in, H, W = x.shape
    c_out, _, k, _ = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # (B, Cout, Cin, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + eps).rsqrt()
    x = x.reshape(1, B * c_in, H, W)
    w = w.reshape(B * c_out, c_in, k, k)
    out = F.conv2d(x, w, padding=k // 2, groups=B)  # (1, B·Cout, H, W): sample b is group b
    return out.reshape(B, c_out, H, W)


class SynthesisLayer(nn.Module):
    """[upsample 2×] -> modulated 3×3 conv -> + noise × strength -> + bias -> leaky ReLU ×√2."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, res: int, up: bool):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # the styles start near 1
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.weight_gain = 1 / math.sqrt(c_in * 9)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros(c_out))  # per channel, as in StyleGAN
        # The noise image of "const" mode: saved with the weights, so a seed samples alike later.
        self.register_buffer("noise_const", torch.randn(res, res))
        self.up = up
        if up:
            self.register_buffer("fir", fir_kernel(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise: str) -> Tensor:
        if self.up:
            # Config F fuses this into a transposed modulated conv and filters after; the FIR
            # upsampling first lets the modulated conv be the same as every other layer's.
            x = upsample2d(x, self.fir)  # (B, c_in, res, res)
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w))  # (B, c_out, ...)
        strength = self.noise_strength[None, :, None, None]
        if noise == "random":
            x = x + torch.randn_like(x[:, :1]) * strength  # one noise image a sample
        elif noise == "const":
            x = x + self.noise_const * strength
        return _lrelu(x + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1×1 conv to the image's channels, not demodulated, + bias."""

    def __init__(self, c_in: int, c_img: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_img, c_in, 1, 1))
        self.weight_gain = 1 / math.sqrt(c_in)
        self.bias = nn.Parameter(torch.zeros(c_img))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=False)
        return x + self.bias[None, :, None, None]


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_classes: int):
        super().__init__()
        # A lookup's fan-in is 1, so nn.Embedding's N(0, 1) weights are already equalised.
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        dims = [z_dim * (2 if num_classes else 1)] + [w_dim] * MAPPING_LAYERS
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=MAPPING_LR) for a, b in zip(dims, dims[1:])
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        x = normalize_2nd_moment(z)  # (B, z_dim)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(y))], dim=1)  # (B, 2·z_dim)
        for layer in self.layers:
            x = _lrelu(layer(x))
        return x  # (B, w_dim)


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> images (B, C, H, W) in [-1, 1]. Conv layer j reads ws[:, j];
    the toRGB of a resolution reads the w of the next resolution's first layer, as in StyleGAN2,
    so num_ws = 2·log2(side) − 2."""

    def __init__(self, w_dim: int, width: int, shape: tuple[int, int, int]):
        super().__init__()
        c_img, side = shape[0], shape[1]
        ch = {2**i: _channels(2**i, width) for i in range(2, side.bit_length())}
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.convs = nn.ModuleList([SynthesisLayer(ch[4], ch[4], w_dim, 4, up=False)])
        self.to_rgbs = nn.ModuleList([ToRGB(ch[4], c_img, w_dim)])
        for res in list(ch)[1:]:
            self.convs.append(SynthesisLayer(ch[res // 2], ch[res], w_dim, res, up=True))
            self.convs.append(SynthesisLayer(ch[res], ch[res], w_dim, res, up=False))
            self.to_rgbs.append(ToRGB(ch[res], c_img, w_dim))
        self.num_ws = len(self.convs) + 1
        self.register_buffer("fir", fir_kernel(), persistent=False)

    def forward(self, ws: Tensor, noise: str | None = None) -> Tensor:
        """``noise``: "random" (a fresh draw), "const" (the saved noise images, repeatable) or
        "none"; None: "random" in training, "const" in eval."""
        noise = noise or ("random" if self.training else "const")
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)  # (B, c, 4, 4)
        x = self.convs[0](x, ws[:, 0], noise)
        img = self.to_rgbs[0](x, ws[:, 1])  # (B, C, 4, 4)
        for i, to_rgb in enumerate(self.to_rgbs[1:]):
            x = self.convs[2 * i + 1](x, ws[:, 2 * i + 1], noise)  # (B, c, 2s, 2s)
            x = self.convs[2 * i + 2](x, ws[:, 2 * i + 2], noise)
            img = upsample2d(img, self.fir) + to_rgb(x, ws[:, 2 * i + 3])  # (B, C, 2s, 2s)
        return torch.tanh(img)


def mix_styles(w1: Tensor, w2: Tensor, cutoff: Tensor | int, num_ws: int) -> Tensor:
    """Style mixing: ws (B, num_ws, w_dim) that take w1 (B, w_dim) in the layers before
    ``cutoff`` and w2 from it on; cutoff = num_ws gives w1 throughout."""
    later = (torch.arange(num_ws, device=w1.device) >= cutoff)[None, :, None]  # (1, num_ws, 1)
    return torch.where(later, w2[:, None], w1[:, None])


class StyleGAN2Generator(nn.Module):
    def __init__(self, z_dim: int, width: int, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.w_dim = z_dim
        self.style_mixing = 0.9  # the probability of mixing two latents' styles in training
        self.mapping = MappingNetwork(z_dim, self.w_dim, num_classes)
        self.synthesis = SynthesisNetwork(self.w_dim, width, shape)
        self.num_ws = self.synthesis.num_ws

    def styles(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """ws (B, num_ws, w_dim) of latents z (B, z_dim). In training, with probability
        ``style_mixing``, a second latent's w takes over from a random layer in 1..num_ws−1."""
        w = self.mapping(z, y)  # (B, w_dim)
        if not (self.training and self.style_mixing > 0):
            return w[:, None].expand(-1, self.num_ws, -1)
        # Drawn on the device and always mapped: no host sync, the same graph every step.
        cutoff = torch.randint(1, self.num_ws, (), device=z.device)
        mixing = torch.rand((), device=z.device) < self.style_mixing
        cutoff = torch.where(mixing, cutoff, self.num_ws)
        return mix_styles(w, self.mapping(torch.randn_like(z), y), cutoff, self.num_ws)

    def forward(
        self, z: Tensor, y: Tensor | None = None, return_ws: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [-1, 1] of latents z (B, z_dim), labels y (B,) when
        conditional; with ``return_ws`` also the ws (B, num_ws, w_dim) they came from."""
        ws = self.styles(z, y)
        img = self.synthesis(ws)
        return (img, ws) if return_ws else img


class DBlock(nn.Module):
    """StyleGAN2's residual D block, (B, c_in, s, s) -> (B, c_out, s/2, s/2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3)
        self.conv1 = EqualConv2d(c_in, c_out, 3, down=True)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        h = _lrelu(self.conv1(_lrelu(self.conv0(x))))
        return (self.skip(x) + h) * math.sqrt(0.5)  # the sum of two unit-variance branches


class StyleGAN2Discriminator(nn.Module):
    def __init__(self, width: int, shape: tuple[int, int, int], options: ModelOptions):
        super().__init__()
        c_img, side = shape[0], shape[1]
        self.from_rgb = EqualConv2d(c_img, _channels(side, width), 1)
        sides = [2**i for i in range(side.bit_length() - 1, 2, -1)]  # side, side/2, ..., 8
        self.blocks = nn.ModuleList(
            DBlock(_channels(s, width), _channels(s // 2, width)) for s in sides
        )
        c = _channels(4, width)
        self.mbstd = MinibatchStd(options.mbstd_group or MBSTD_GROUP)
        self.conv = EqualConv2d(c + 1, c, 3)
        self.fc = EqualLinear(c * 16, c)
        self.out = EqualLinear(c, 1)
        k = options.num_classes
        self.embed = nn.Embedding(k, c) if k else None
        self.classify = EqualLinear(c, k) if options.classifier else None

    def forward(
        self, x: Tensor, y: Tensor | None = None, classes: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B,); with ``classes`` (AC-GAN's head) also class logits (B, K)."""
        h = _lrelu(self.from_rgb(x))  # (B, c, H, W)
        for block in self.blocks:
            h = block(h)  # resolution ÷ 2 each, down to 4×4
        h = self.mbstd(h)  # (B, c+1, 4, 4)
        h = _lrelu(self.fc(_lrelu(self.conv(h)).flatten(1)))  # (B, c)
        logits = self.out(h).squeeze(1)  # (B,)
        if self.embed is not None:
            # ÷ √c: the scale of one equalised output unit (StyleGAN2-ADA's cmap projection).
            logits = logits + projection(h, self.embed, y) / math.sqrt(h.shape[1])
        return (logits, self.classify(h)) if classes else logits


@register_model("stylegan2")
def build(
    z_dim: int, width: int, shape: tuple[int, int, int], options: ModelOptions
) -> tuple[nn.Module, nn.Module]:
    c, h, w = shape
    if h != w or h not in SIDES or c < 1:
        raise ValueError(
            f"stylegan2 serves square images of 32, 64, 128 or 256 pixels a side, not {c}×{h}×{w}"
        )
    if options.spectral_norm:
        raise ValueError(
            "stylegan2 keeps its layers' scale with the equalised learning rate, not spectral "
            "norm; set model.spectral_norm: false"
        )
    if options.pack != 1:
        raise ValueError(
            f"stylegan2's D judges one image at a time, not packs of {options.pack}; set "
            "model.pack: 1"
        )
    if options.output != "tanh":
        raise ValueError(f"stylegan2's G ends in tanh; output {options.output!r} is served by mlp")
    if options.classifier and not options.num_classes:
        raise ValueError("AC-GAN's classifier head needs a conditional model (model.conditional)")
    width = width or DEFAULT_WIDTH
    G = StyleGAN2Generator(z_dim, width, shape, options.num_classes)
    D = StyleGAN2Discriminator(width, shape, options)
    return G, D
