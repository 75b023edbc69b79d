"""Trains GANs on the synthetic mixtures of ``metrics/modes.py``, in one process, without Ray.

    G, history = train_synthetic(SOURCES["grid25"], "nonsaturating", steps=5000)
    # G with a linear output (no tanh squashing the outer modes), D judging pairs (PacGAN):
    options = ModelOptions(output="linear", pack=2)
    G, history = train_synthetic(SOURCES["grid25"], "nonsaturating", 5000, options=options)
    with torch.no_grad():
        score = score_modes(G(torch.randn(2500, 64)), SOURCES["grid25"])

The mode-coverage benchmark (``benchmarks/modes.py``) and its test use it; the scoring stays in
``metrics/``, which measures and never trains.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from distgan.ema import EMA
from distgan.losses import get_loss
from distgan.metrics.modes import SyntheticModes, score_modes
from distgan.models import ModelOptions, build_models
from distgan.schedule import RateSchedule
from distgan.step import Nets, train_step


def make_nets(
    arch: str,
    shape: tuple[int, int, int],
    loss_kind: str,
    z_dim: int,
    width: int,
    options: ModelOptions | None = None,
    lr: float = 1e-4,
) -> Nets:
    """G, D and Adam (lr 1e-4, betas (0.5, 0.9): the usual toy-problem setting) for
    ``loss_kind``; ``options`` of the models (None: the plain ones)."""
    G, D = build_models(arch, z_dim, width, shape, options)
    return Nets(
        G=G,
        D=D,
        opt_g=torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.9)),
        opt_d=torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9)),
        loss=get_loss(loss_kind),
    )


def n_critic(loss_kind: str) -> int:
    """D steps per G step: 5 for the Wasserstein critics (Gulrajani et al. 2017), else 1."""
    return 5 if loss_kind in ("wgan", "wgan-gp") else 1


def train_synthetic(
    source: SyntheticModes,
    loss_kind: str,
    steps: int,
    batch: int = 256,
    seed: int = 0,
    z_dim: int = 64,
    width: int = 128,
    log_every: int = 500,
    options: ModelOptions | None = None,
    lr: float = 1e-4,
    ema_decay: float = 0.0,
    seconds: float = 0.0,
    lr_decay: str = "none",
    r1_gamma: float = 0.0,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Trains the mlp GAN on ``source`` for ``steps`` G steps, on this process, without Ray.
    ``options``: the mlp's options, e.g. ``ModelOptions(output="linear", pack=2)``; ``batch``
    must then be a multiple of the pack. ``lr``: both Adams' learning rate. ``ema_decay`` > 0:
    the G returned (and scored in the history) is the EMA of G's weights with that decay
    (``ema.EMA``, warmed up). ``seconds`` > 0: stop after that much training time even before
    ``steps``. ``lr_decay`` (``optim.lr_decay``'s linear or cosine): the rate falls to 0 by
    ``steps`` or by ``seconds``, whichever comes first. ``r1_gamma`` > 0: D carries the lazy R1
    penalty (``loss.r1_gamma``), every 16th step with its weight × 16.

    Each G step follows ``n_critic(loss_kind)`` D steps, each on a fresh real batch of ``batch``.
    Returns (G in eval mode, history): one dict per ``log_every`` steps and one at the end, with
    "step", "seconds", the step's metrics, and "modes" / "high_quality" of 2,500 samples
    ("modes_literature": the modes with at least one high-quality sample).
    """
    torch.manual_seed(seed)  # G's and D's initial weights
    gen = torch.Generator().manual_seed(seed)  # real batches and latents
    nets = make_nets("mlp", (2, 1, 1), loss_kind, z_dim, width, options, lr)
    nets.r1_gamma = r1_gamma
    ema = EMA(nets.G, ema_decay) if ema_decay > 0 else None
    k = n_critic(loss_kind)
    history: list[dict[str, float]] = []

    def latents(b: int) -> torch.Tensor:
        return torch.randn(b, z_dim, generator=gen)

    # optim.lr_decay as the loop has it: towards the end of ``steps`` or of ``seconds``
    optim = SimpleNamespace(  # make_nets' Adam, falling to 0
        lr_g=lr, lr_d=lr, beta1=0.5, beta2=0.9, lr_decay=lr_decay, lr_final=0.0
    )
    rates = RateSchedule(optim, SimpleNamespace(steps=steps, max_minutes=seconds / 60))
    t0 = last = time.perf_counter()
    for step in range(1, steps + 1):
        rates.apply(nets, step - 1)
        reals = [source.sample(batch, gen) for _ in range(k)]  # k × (B, 2, 1, 1)
        metrics = train_step(nets, reals, latents, step=step - 1)
        if ema is not None:
            ema.update(nets.G, step)
        now = time.perf_counter()
        out_of_time = seconds > 0 and now - t0 >= seconds
        if step % 100 == 0:
            rates.update(step, now - t0, 100 / (now - last))
            last = now
        if step % log_every == 0 or step == steps or out_of_time:
            G = nets.G if ema is None else ema.model
            with torch.no_grad():
                x = G(torch.randn(2500, z_dim, generator=gen))
            score, loose = score_modes(x, source), score_modes(x, source, min_count=1)
            history.append(
                {"step": step, "seconds": time.perf_counter() - t0}
                | {name: float(v) for name, v in metrics.items()}
                | {"modes": score["modes"], "high_quality": score["high_quality"]}
                | {"modes_literature": loose["modes"]}
            )
        if out_of_time:
            break
    return (nets.G if ema is None else ema.model).eval(), history
