"""The adversarial step: ``n_critic`` discriminator updates, then one generator update.

    fake, d_metrics = d_step(nets, game, real, z, keep_graph=True)
    g_metrics = g_step(nets, game, fake)
    # class-conditional: real labels for D on the reals, drawn labels for G and D on the fakes
    fake, d_metrics = d_step(nets, game, real, z, keep_graph=True, real_labels=y,
                             fake_labels=y_fake)
    g_metrics = g_step(nets, game, fake, labels=y_fake)

Plain functions of the players (``Nets``: G, D, their optimizers), the rules of the game
(``Game``: the loss and its settings, from the job) and a batch. They know nothing of Ray or
torch.distributed, so the same step runs in a Ray Train worker or in a notebook; G and D may be
DDP wrappers, which sync gradients inside ``backward``. ``train/build.py`` makes both from a
job.

Why the generator's output of the last D step is reused by the G step: G's weights do not change
during a D step, so G(z) is the same tensor a fresh forward would give; reusing it saves one G
forward per step, as the classic DCGAN loop does. During the D step that output is detached, so
no gradient of G is computed; during the G step D's weights have ``requires_grad=False`` and D
is called unwrapped, so no gradient of D is computed or synced.

Everything D judges goes through DiffAugment first when ``game.augment`` names a policy (reals
and fakes in the D step, fakes in the G step). R1 (``game.r1_gamma``) is lazy as in StyleGAN2:
computed every ``r1_every``-th D step with its weight multiplied by that interval. A packed D
(``model.pack`` = m) gives one logit per m samples: the D step splits its logits in halves.

AC-GAN (``game.ac_weight`` > 0, a conditional D with a class head): D also learns to name the
class of the real images, and G to make its fakes named as the class they were drawn for; each
cross-entropy is added to its player's loss with that weight (Odena et al. 2017). D is not
trained to classify fakes, whose classes are what G is learning to make.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from distgan.ada import augment as ada_augment
from distgan.augment import diff_augment
from distgan.losses import Loss, gradient_penalty, r1_penalty
from distgan.models import unwrap

Tensor = torch.Tensor


@dataclass
class Nets:
    """The two players and what updates them: G and D (plain, or each in its own DDP wrapper),
    their optimizers and their AMP grad scalers. Everything here changes as the run trains."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler_g: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler(enabled=False)
    )
    scaler_d: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler(enabled=False)
    )


@dataclass(frozen=True, eq=False)
class Game:
    """The rules of the game, set by the job and fixed for a run: the loss, its penalties, what
    D sees (DiffAugment), the classes a conditional G is asked for and the precision."""

    loss: Loss
    gp_weight: float = 10.0
    clip: float = 0.01
    r1_gamma: float = 0.0  # R1 weight γ; 0 = off
    r1_every: int = 16  # R1 on every r1_every-th D step, its weight × r1_every
    pl_weight: float = 0.0  # path length regularisation of G (StyleGAN2); 0 = off
    pl_every: int = 4  # on every pl_every-th G step, its weight × pl_every
    augment: tuple[str, ...] = ()  # DiffAugment policy (distgan.augment); () = off
    num_classes: int = 0  # > 0: G and D are class-conditional
    ac_weight: float = 0.0  # AC-GAN's classification loss weight (D has a class head); 0 = off
    # A conditional G's fake labels are drawn from this (num_classes,) distribution (the class
    # prior of the real batches, train.class_balance); None: uniformly.
    label_prior: torch.Tensor | None = None
    autocast_dtype: torch.dtype | None = None  # bf16 / fp16 autocast, None for fp32

    def autocast(self, x: Tensor):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(x.device.type, dtype=self.autocast_dtype)


def judge(
    D: nn.Module,
    game: Game,
    x: Tensor,
    labels: Tensor | None,
    classes: bool = False,
    ada_p: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """D's logits (B / pack,) for ``x`` (B, C, H, W), through DiffAugment or ADA's augmentations
    with probability ``ada_p``, with labels when conditional, and the class logits (B, K) of
    AC-GAN's head when ``classes`` (else None)."""
    if game.augment:
        x = diff_augment(x, game.augment)
    if ada_p > 0:
        x = ada_augment(x, ada_p)
    if labels is None:
        return D(x), None
    return D(x, labels, classes=True) if classes else (D(x, labels), None)


def set_requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def grad_norm(model: nn.Module) -> Tensor:
    """The L2 norm of all gradients of ``model`` (0 if none)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _poison_if_not_finite(loss: Tensor) -> Tensor:
    """``loss``, or NaN where it is not finite. A non-finite loss on one rank then gives NaN
    gradients, which DDP averages onto every rank: all ranks skip the same update with no
    extra collective. (×1.0 leaves a finite loss and its gradients bit-identical.)"""
    return loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))


def _step_if_finite(model: nn.Module, opt, scaler, norm: Tensor | None) -> Tensor:
    """Applies the update unless a gradient is not finite; returns 1.0 if it was skipped, else 0.

    Under fp16 the grad scaler skips overflowing updates itself (and lowers its scale).
    """
    if scaler.is_enabled():
        scaler.step(opt)
        scaler.update()
        return torch.zeros(())
    norm = grad_norm(model) if norm is None else norm
    if not bool(torch.isfinite(norm)):  # one host sync a step, as GradScaler does
        opt.zero_grad(set_to_none=True)
        return torch.ones(())
    opt.step()
    return torch.zeros(())


def d_step(
    nets: Nets,
    game: Game,
    real: Tensor,
    z: Tensor,
    keep_graph: bool = False,
    measure: bool = False,
    real_labels: Tensor | None = None,
    fake_labels: Tensor | None = None,
    r1: bool = False,
    ada_p: float = 0.0,
    observe: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One D update on a real batch (B, C, H, W) and G(z), z (B, z_dim); for a conditional G and
    D, ``real_labels`` (B,) of the reals and ``fake_labels`` (B,) given to G and to D. D sees
    everything through ADA's augmentations with probability ``ada_p``; ``observe`` is handed D's
    logits on the reals (ADA's tuner counts their signs).

    Returns G(z) (with its graph to G when ``keep_graph``, for the G step) and detached metrics:
    d_loss, d_real and d_fake (D's mean output, through σ for the logistic losses), gp, r1 (when
    ``r1``: this step carries the lazy R1 penalty), d_ac (AC-GAN's cross-entropy on the reals,
    when ``game.ac_weight``), and d_grad_norm when ``measure``.
    """
    with game.autocast(real), nullcontext() if keep_graph else torch.no_grad():
        fake = nets.G(z) if fake_labels is None else nets.G(z, fake_labels)  # (B, C, H, W)
    labels = None if real_labels is None else torch.cat([real_labels, fake_labels])  # (2B,)
    ac = bool(game.ac_weight) and labels is not None
    with game.autocast(real):
        x = torch.cat([real, fake.detach()])
        logits, classes = judge(nets.D, game, x, labels, ac, ada_p)
        r, f = logits.float().chunk(2)  # (B/m,) each
        d_loss = game.loss.d(r, f).mean()
    if observe is not None:
        observe(r.detach())
    metrics = {"d_loss": d_loss.detach()}
    if ac:
        d_ac = F.cross_entropy(classes[: real.shape[0]].float(), real_labels)
        d_loss = d_loss + game.ac_weight * d_ac
        metrics["d_ac"] = d_ac.detach()

    def critic(x: Tensor) -> Tensor:  # D as the penalties see it, with the reals' labels
        return judge(nets.D, game, x, real_labels, ada_p=ada_p)[0]

    # The penalties' double backward stays in fp32: autocast gains little there and fp16
    # second-order gradients underflow.
    if game.loss.gradient_penalty:
        gp = gradient_penalty(critic, real.float(), fake.detach().float()).mean()
        d_loss = d_loss + game.gp_weight * gp
        metrics["gp"] = gp.detach()
    if r1:
        penalty = r1_penalty(critic, real.float()).mean()
        d_loss = d_loss + (game.r1_gamma / 2) * game.r1_every * penalty
        metrics["r1"] = penalty.detach()
    nets.opt_d.zero_grad(set_to_none=True)
    nets.scaler_d.scale(_poison_if_not_finite(d_loss)).backward()
    norm = None
    if measure:
        nets.scaler_d.unscale_(nets.opt_d)
        norm = metrics["d_grad_norm"] = grad_norm(nets.D)
    metrics["d_skipped"] = _step_if_finite(nets.D, nets.opt_d, nets.scaler_d, norm)
    if game.loss.clip_weights:
        with torch.no_grad():
            for p in nets.D.parameters():
                p.clamp_(-game.clip, game.clip)
    with torch.no_grad():
        out = torch.sigmoid if game.loss.probability else (lambda t: t)
        metrics["d_real"] = out(r.detach()).mean()
        metrics["d_fake"] = out(f.detach()).mean()
    return fake, metrics


def g_step(
    nets: Nets,
    game: Game,
    fake: Tensor,
    measure: bool = False,
    labels: Tensor | None = None,
    ada_p: float = 0.0,
    path_length: Callable[[], Tensor] | None = None,
) -> dict[str, Tensor]:
    """One G update through D on ``fake`` = G(z) (G(z, labels) when conditional) with its graph.
    ``path_length()``, when given, returns per-sample path length penalties (with their graph to
    G), added × ``game.pl_weight`` × ``game.pl_every`` (lazy, as StyleGAN2). Returns g_loss,
    g_ac (AC-GAN's cross-entropy on the fakes, when ``game.ac_weight``), pl (the mean penalty,
    when given) and g_grad_norm when ``measure``."""
    D = unwrap(nets.D)  # no DDP: D's gradients are neither computed nor synced here
    set_requires_grad(D, False)
    ac = bool(game.ac_weight) and labels is not None
    try:
        with game.autocast(fake):
            logits, classes = judge(D, game, fake, labels, ac, ada_p)
            g_loss = game.loss.g(logits.float()).mean()
        metrics = {"g_loss": g_loss.detach()}
        if ac:
            g_ac = F.cross_entropy(classes.float(), labels)
            g_loss = g_loss + game.ac_weight * g_ac
            metrics["g_ac"] = g_ac.detach()
        if path_length is not None:  # in fp32: a double backward, as R1's
            pl = path_length().mean()
            g_loss = g_loss + game.pl_weight * game.pl_every * pl
            metrics["pl"] = pl.detach()
        nets.opt_g.zero_grad(set_to_none=True)
        nets.scaler_g.scale(_poison_if_not_finite(g_loss)).backward()
        norm = None
        if measure:
            nets.scaler_g.unscale_(nets.opt_g)
            norm = metrics["g_grad_norm"] = grad_norm(nets.G)
        metrics["g_skipped"] = _step_if_finite(nets.G, nets.opt_g, nets.scaler_g, norm)
    finally:
        set_requires_grad(D, True)
    return metrics


def draw_labels(game: Game, n: int, device: torch.device) -> Tensor:
    """``n`` fake labels (n,) for a conditional G: from ``game.label_prior``, else uniform."""
    if game.label_prior is None:
        return torch.randint(game.num_classes, (n,), device=device)
    return torch.multinomial(game.label_prior.to(device), n, replacement=True)


def train_step(
    nets: Nets,
    game: Game,
    reals: list[Tensor],
    sample_z,
    measure: bool = False,
    real_labels: list[Tensor] | None = None,
    step: int = 0,
    ada_p: float = 0.0,
    observe: Callable[[Tensor], None] | None = None,
    path_length: nn.Module | None = None,
) -> dict[str, Tensor]:
    """``len(reals)`` D steps (one a real batch) then one G step; ``sample_z(B)`` draws latents.

    ``real_labels``: the labels (B,) of each real batch, for a conditional G and D (the fakes'
    labels are drawn from ``game.label_prior``, or uniformly without one; the same for G and D).
    ``step``: G steps done before this one, which places the lazy R1 penalty on every
    ``game.r1_every``-th D step of the run, and path length regularisation (``path_length``, a
    ``path_length.PathLengthPenalty``, with ``game.pl_weight``) on every ``game.pl_every``-th
    G step, on half the batch. ``ada_p``, ``observe``: ADA (``d_step``).

    Returns the metrics of the last D step and of the G step, and ``skipped``: the number of
    updates (D and G) skipped because a loss or gradient was not finite. When any was skipped,
    the buffers of G and D (BatchNorm statistics, which a NaN batch would poison) are put back
    as they were before the step.
    """
    buffers = [*nets.G.buffers(), *nets.D.buffers()]
    saved = [b.detach().clone() for b in buffers]  # small: BatchNorm statistics
    metrics: dict[str, Tensor] = {}
    skipped = torch.zeros(())
    fake_labels = None
    for i, real in enumerate(reals):
        last = i == len(reals) - 1
        B = real.shape[0]
        if game.num_classes:
            fake_labels = draw_labels(game, B, real.device)
        r1 = game.r1_gamma > 0 and (step * len(reals) + i) % game.r1_every == 0
        fake, metrics = d_step(
            nets,
            game,
            real,
            sample_z(B),
            keep_graph=last,
            measure=measure,
            real_labels=None if real_labels is None else real_labels[i],
            fake_labels=fake_labels,
            r1=r1,
            ada_p=ada_p,
            observe=observe,
        )
        skipped = skipped + metrics.pop("d_skipped")
    penalty = None
    if path_length is not None and game.pl_weight > 0 and step % game.pl_every == 0:
        half = max(1, fake.shape[0] // 2)
        y = None if fake_labels is None else fake_labels[:half]
        penalty = lambda: path_length(nets.G, sample_z(half), y)  # noqa: E731
    g_metrics = g_step(
        nets, game, fake, measure=measure, labels=fake_labels, ada_p=ada_p, path_length=penalty
    )
    skipped = skipped + g_metrics.pop("g_skipped")
    metrics.update(g_metrics)
    if skipped:
        with torch.no_grad():
            for b, old in zip(buffers, saved):
                b.copy_(old)
    metrics["skipped"] = skipped.to(metrics["g_loss"].device)
    return metrics
