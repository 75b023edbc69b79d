"""A job's G and D trained in this process, without Ray, with distgan's own parts: the nets of
``train/worker.build_nets`` (every model, loss and regulariser option of the job), the step of
``step.train_step``, the in-memory batches of ``data/reader`` and the EMA of ``ema.py``. It is
a one-worker ``distgan train`` without the orchestration, for benchmarks that compare options.

    spec = from_dict({"model": {"arch": "dcgan", "spectral_norm": True}})
    G, info = train(spec, images, labels, steps=2000)        # or seconds=120
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from distgan.data.imbalance import sample_weights
from distgan.data.reader import InMemoryBatches
from distgan.ema import make_ema
from distgan.schedule import RateSchedule
from distgan.step import train_step
from distgan.train.worker import build_nets


def train(
    spec, images, labels=None, steps: int = 0, seconds: float = 0.0, device="cpu", prior=None
):
    """Trains for ``steps`` G steps or ``seconds`` of wall time (whichever is given) on
    ``images`` (N, C, H, W) uint8 and, for a conditional job, ``labels`` (N,) int64. With
    ``prior`` (K,), the class prior of ``train.class_balance`` (``data.imbalance``), the real
    batches are drawn by it and a conditional G's fake labels follow it, as in the worker.

    Returns (G_ema in eval mode, or G without EMA; {"steps", "seconds", "images_per_s"}).
    """
    if not (steps or seconds):
        raise ValueError("give steps or seconds")
    device = torch.device(device)
    t, o = spec.train, spec.optim
    torch.manual_seed(t.seed)
    images = torch.as_tensor(images)
    num_classes = int(labels.max()) + 1 if spec.model.conditional else 0
    nets = build_nets(spec, tuple(images.shape[1:]), device, lambda m, _: m, num_classes)
    y = torch.as_tensor(labels) if labels is not None else None
    weights = None
    if prior is not None:
        if num_classes:  # the fakes' labels follow the real batches' class prior (worker.py)
            nets.label_prior = torch.as_tensor(prior, dtype=torch.float32, device=device)
        if t.class_balance != "none":
            weights = sample_weights(y, prior)
    source = InMemoryBatches(
        images, t.batch_size, t.seed, 0, device, y if num_classes else None, weights
    )
    ema = make_ema(nets.G, t)
    z_dim = spec.model.z_dim
    k = spec.optim.n_critic

    def batches():
        epoch = 0
        while True:
            yield from source.epoch_batches(epoch)
            epoch += 1

    stream = batches()
    step = 0
    # optim.lr_decay as the loop has it: towards the end of ``steps`` or of ``seconds``
    rates = RateSchedule(o, SimpleNamespace(steps=steps or 10**12, max_minutes=seconds / 60))
    start = last = time.perf_counter()
    while True:
        rates.apply(nets, step)
        got = [next(stream) for _ in range(k)]  # one real batch per D step
        xs = [b[0] if num_classes else b for b in got]
        ys = [b[1] for b in got] if num_classes else None
        train_step(nets, xs, lambda n: torch.randn(n, z_dim, device=device), real_labels=ys,
                   step=step)  # fmt: skip
        step += 1
        if ema is not None:
            ema.update(nets.G, step)
        now = time.perf_counter()
        if (steps and step >= steps) or (seconds and now - start >= seconds):
            break
        if step % 100 == 0:
            rates.update(step, now - start, 100 / (now - last))
            last = now
    elapsed = time.perf_counter() - start
    G = ema.model if ema is not None else nets.G
    info = {"steps": step, "seconds": elapsed, "images_per_s": step * t.batch_size / elapsed}
    return G.eval(), info
