"""A training state from a job: the one place where distgan assembles what a run trains.

    state = build_state(spec, shape, device, num_classes=K, class_counts=counts)  # one process
    state = build_state(spec, shape, device, ..., wrap=prepare_model, rank=rank)  # a DDP worker
    state = build_state(spec, shape, device, ..., checkpoint=ckpt, source=uri)    # resumed
    source = memory_batches(spec, images, labels, class_counts, device)           # real batches
    train/loop.py: run(state, source, spec, ...)

The state holds G and D (each through ``wrap``, e.g. Ray Train's ``prepare_model`` for DDP), their
Adams and AMP grad scalers (``step.Nets``), the rules of the game (``step.Game``: loss, penalties,
DiffAugment, precision, the classes and the class prior a conditional G draws its labels from), G's
EMA, ADA's tuner, and, from a checkpoint, every counter and RNG state. The Ray worker, a PBT trial,
the synthetic-mixture trainer and the tests all build here, so an option of the job is honoured by
every path or by none: a second assembly is how PBT trials once ignored ``train.class_balance`` and
the divergence guard's lowered rates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from distgan.ada_tuner import AdaTuner
from distgan.augment import parse_policy
from distgan.data.imbalance import class_prior, sample_weights
from distgan.data.reader import InMemoryBatches
from distgan.ema import make_ema
from distgan.losses import get_loss
from distgan.models import apply_speed_options, models_for_job, unwrap
from distgan.path_length import PathLengthPenalty
from distgan.schedule import set_rates
from distgan.specs import JobSpec
from distgan.step import Game, Nets
from distgan.train import checkpoint as ckpts

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# (model, is_discriminator) -> the model as the loop trains it (a DDP wrapper, or itself)
Wrap = Callable[[nn.Module, bool], nn.Module]


def _plain(model: nn.Module, is_discriminator: bool) -> nn.Module:
    return model


def label_prior(spec: JobSpec, class_counts: dict[int, int] | None) -> torch.Tensor | None:
    """The class distribution (K,) that real batches draw from under ``train.class_balance``
    (``data.imbalance.class_prior``); None for data without labels."""
    if not class_counts:
        return None
    prior = class_prior(class_counts, spec.train.class_balance)
    return torch.as_tensor(prior, dtype=torch.float32)


def game_for(spec: JobSpec, num_classes: int, prior: torch.Tensor | None) -> Game:
    """The rules of the game of ``spec``. A conditional G (``num_classes`` > 0) draws its fake
    labels from ``prior``, so that D sees reals and fakes of each class equally often."""
    s = spec.loss
    return Game(
        loss=get_loss(s.kind),
        gp_weight=s.gp_weight,
        clip=s.clip,
        r1_gamma=s.r1_gamma,
        r1_every=s.r1_every,
        augment=parse_policy(spec.train.diffaugment),
        num_classes=num_classes,
        ac_weight=s.ac_weight,
        pl_weight=s.pl_weight,
        pl_every=s.pl_every,
        label_prior=prior if num_classes else None,
        autocast_dtype=AUTOCAST[spec.train.precision],
    )


def build_state(
    spec: JobSpec,
    shape: tuple[int, int, int],
    device: torch.device,
    *,
    num_classes: int = 0,
    class_counts: dict[int, int] | None = None,
    wrap: Wrap = _plain,
    rank: int = 0,
    checkpoint: dict | None = None,
    source: str = "",
) -> ckpts.TrainState:
    """The training state of ``spec`` for images of ``shape`` (C, H, W) on ``device``.

    ``num_classes``: the data's classes (for ``model.conditional``); ``class_counts``: label ->
    images, for ``train.class_balance``. ``wrap(model, is_discriminator)`` is applied to G and
    D after the speed options (``train.channels_last``, ``train.compile``). With ``checkpoint``
    (read from ``source``), the state goes on from it: weights, optimizers, EMA, counters, and
    this ``rank``'s RNG when the world size is unchanged; the job's learning rates and betas
    (× the divergence guard's factor) then win over the checkpoint's, so that a resumed run or a
    PBT clone trains with the rates it was given. Without one, every rank starts from the same
    weights (``train.seed``) and draws its own latents (seed + 1 + rank).
    """
    t = spec.train
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    G, D = models_for_job(spec.model, shape, num_classes, classifier=spec.loss.ac_weight > 0)
    G, D = (apply_speed_options(m.to(device), t.channels_last, t.compile) for m in (G, D))
    G, D = wrap(G, False), wrap(D, True)
    o, fp16 = spec.optim, t.precision == "fp16"
    nets = Nets(
        G=G,
        D=D,
        opt_g=torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2)),
        opt_d=torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2)),
        scaler_g=torch.amp.GradScaler(device.type, enabled=fp16),
        scaler_d=torch.amp.GradScaler(device.type, enabled=fp16),
    )
    prior = label_prior(spec, class_counts)
    game = game_for(spec, unwrap(G).num_classes, None if prior is None else prior.to(device))
    ada = AdaTuner(t.ada_target) if t.ada_target > 0 else None
    pl = PathLengthPenalty().to(device) if spec.loss.pl_weight > 0 else None
    state = ckpts.TrainState(nets, game, make_ema(unwrap(G), t), ada, pl, shape)
    torch.manual_seed(t.seed + 1 + rank)  # different latents on each rank
    if checkpoint is not None:
        ckpts.restore(state, checkpoint, rank, source=source)
    set_rates(nets, o, state.lr_scale)
    return state


def memory_batches(
    spec: JobSpec,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    class_counts: dict[int, int] | None,
    device: torch.device,
    rank: int = 0,
    per_rank: int | None = None,
) -> InMemoryBatches:
    """Real batches of ``per_rank`` (default: the global ``train.batch_size``) from ``images``
    (N, C, H, W) uint8 held in memory, in an order drawn from (seed, epoch, rank): batches of
    (images, labels (N,)) for a conditional model. Under ``train.class_balance`` the rows are
    drawn by the class prior of ``class_counts``, for a conditional model or not."""
    t = spec.train
    weights = None
    if t.class_balance != "none":
        prior = label_prior(spec, class_counts)
        if labels is None or prior is None:
            raise ValueError("train.class_balance needs labelled data")
        weights = sample_weights(labels, prior.numpy())
    return InMemoryBatches(
        images,
        per_rank or t.batch_size,
        t.seed,
        rank,
        device,
        labels if spec.model.conditional else None,
        weights,
    )
