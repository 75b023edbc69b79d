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

from collections.abc import Iterator

import torch

from distgan.config import from_dict
from distgan.metrics.modes import SyntheticModes, score_modes
from distgan.models import ModelOptions
from distgan.specs import JobSpec
from distgan.train.build import build_state
from distgan.train.checkpoint import TrainState
from distgan.train.loop import run, sampling_generator

SHAPE = (2, 1, 1)  # a 2-D point as a 2×1×1 "image"
EPOCH_BATCHES = 1000  # a mixture has no epochs; the loop's epoch counter counts these


def n_critic(loss_kind: str) -> int:
    """D steps per G step: 5 for the Wasserstein critics (Gulrajani et al. 2017), else 1."""
    return 5 if loss_kind in ("wgan", "wgan-gp") else 1


def synthetic_job(
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
) -> JobSpec:
    """The job of ``train_synthetic``'s arguments: the mlp GAN, Adam (lr, betas (0.5, 0.9): the
    usual toy-problem setting), metrics and an evaluation every ``log_every`` steps."""
    o = options or ModelOptions()
    return from_dict(
        {
            "model": {"arch": "mlp", "z_dim": z_dim, "width": width, "output": o.output,
                      "pack": o.pack, "mbstd_group": o.mbstd_group,
                      "spectral_norm": o.spectral_norm},
            "loss": {"kind": loss_kind, "r1_gamma": r1_gamma},
            "optim": {"lr_g": lr, "lr_d": lr, "beta1": 0.5, "beta2": 0.9,
                      "n_critic": n_critic(loss_kind), "lr_decay": lr_decay, "lr_final": 0.0},
            "train": {"steps": steps, "batch_size": batch, "max_minutes": seconds / 60,
                      "log_every": log_every, "checkpoint_every": log_every,
                      "sample_every": log_every, "ema": ema_decay > 0,
                      "ema_decay": ema_decay or 0.999, "seed": seed},
            "eval": {"every": log_every},
        },
        source="train_synthetic",
    )  # fmt: skip


class MixtureBatches:
    """Fresh draws from a mixture (B, 2, 1, 1), EPOCH_BATCHES to an "epoch" (the loop's
    ``BatchSource``), from one seeded generator."""

    def __init__(self, source: SyntheticModes, batch: int, seed: int):
        self.source, self.batch = source, batch
        self.gen = torch.Generator().manual_seed(seed)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
        for _ in range(skip, EPOCH_BATCHES):
            yield self.source.sample(self.batch, self.gen)


class ModeCoverage:
    """The loop's evaluator: modes covered by 2,500 samples of G (G_ema with EMA)."""

    metric = "modes"
    higher_is_better = True

    def __init__(self, source: SyntheticModes, z_dim: int, seed: int):
        self.source, self.z_dim = source, z_dim
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, state: TrainState) -> dict[str, float]:
        with sampling_generator(state) as G:
            x = G(torch.randn(2500, self.z_dim, generator=self.gen))
        score, loose = score_modes(x, self.source), score_modes(x, self.source, min_count=1)
        return {
            "modes": score["modes"],
            "high_quality": score["high_quality"],
            "modes_literature": loose["modes"],  # modes with at least one high-quality sample
        }


def train_synthetic(
    source: SyntheticModes, loss_kind: str, steps: int, **job
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Trains the mlp GAN on ``source`` for ``steps`` G steps, in this process, through
    ``train/build.py`` and ``train/loop.py`` as every run does. ``job``: ``synthetic_job``'s
    other arguments: ``options`` of the mlp (e.g. ``ModelOptions(output="linear", pack=2)``;
    ``batch`` must then be a multiple of the pack), ``lr``, ``ema_decay`` > 0 (the G returned
    and scored is the EMA of G's weights, warmed up), ``seconds`` > 0 (a time limit),
    ``lr_decay`` (to 0 by ``steps`` or ``seconds``), ``r1_gamma`` (lazy R1, every 16th D step
    with its weight × 16), ``seed``, ``z_dim``, ``width``, ``batch``, ``log_every``.

    Each G step follows ``n_critic(loss_kind)`` D steps, each on a fresh real batch. Returns
    (G in eval mode, history): one dict per ``log_every`` steps and one at the end, with
    "step", "seconds", the interval's mean step metrics, and "modes" / "high_quality" of 2,500
    samples ("modes_literature": the modes with at least one high-quality sample).
    """
    spec = synthetic_job(loss_kind, max(steps, 1), **job)
    state = build_state(spec, SHAPE, torch.device("cpu"))
    history: list[dict[str, float]] = []

    def report(metrics: dict[str, float], snapshot: dict | None) -> None:
        history.append({**metrics, "seconds": metrics["elapsed_s"]})

    if steps > 0:
        t = spec.train
        run(
            state,
            MixtureBatches(source, t.batch_size, t.seed),
            spec,
            device=torch.device("cpu"),
            report=report,
            outputs=None,
            job_yaml="",
            evaluate=ModeCoverage(source, spec.model.z_dim, t.seed),
        )
    return (state.nets.G if state.ema is None else state.ema.model).eval(), history
