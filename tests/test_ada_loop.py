"""ADA in training: what D sees goes through ``distgan.ada`` with the tuner's p, the tuner follows
D's signs on the reals, and p is in metrics.jsonl, the checkpoint and a resumed state."""

from __future__ import annotations

import pytest
import torch

from distgan.config import from_dict
from distgan.losses import get_loss
from distgan.models import build_models
from distgan.step import Game, Nets, d_step
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
from distgan.train.loop import run
from distgan.train.outputs import RunOutputs, read_metrics

SHAPE = (1, 8, 8)
CPU = torch.device("cpu")


def test_d_sees_the_augmented_images_and_the_tuner_gets_the_reals_logits():
    torch.manual_seed(0)
    G, D = build_models("mlp", 4, 8, SHAPE)
    nets = Nets(G, D, torch.optim.SGD(G.parameters(), 0.0), torch.optim.SGD(D.parameters(), 0.0))
    game = Game(get_loss("nonsaturating"))
    real, z = torch.rand(16, *SHAPE) * 2 - 1, torch.randn(16, 4)
    seen = []
    torch.manual_seed(1)
    _, plain = d_step(nets, game, real, z, ada_p=0.0, observe=seen.append)
    torch.manual_seed(1)
    _, augmented = d_step(nets, game, real, z, ada_p=1.0)
    assert len(seen) == 1 and torch.equal(seen[0], D(real).detach())  # the reals, unaugmented p=0
    assert plain["d_real"] != augmented["d_real"]  # p = 1: every real image was transformed


def job(root, **train) -> dict:
    return {
        "model": {"arch": "mlp", "width": 16, "z_dim": 4},
        "optim": {"lr_d": 5e-3},
        "train": {"steps": 24, "batch_size": 16, "log_every": 4, "checkpoint_every": 12,
                  "sample_every": 100, "ada_target": 0.05, **train},
        "run": {"name": "ada", "root": str(root)},
    }  # fmt: skip


def test_p_rises_while_d_is_sure_of_the_reals_and_a_resume_goes_on_with_it(tmp_path):
    spec = from_dict(job(tmp_path))
    state = build_state(spec, SHAPE, CPU)
    images = torch.randint(0, 256, (64, *SHAPE), dtype=torch.uint8)
    reported = []
    source = memory_batches(spec, images, None, None, CPU)
    report = lambda m, ckpt: reported.append(ckpt)  # noqa: E731
    run(state, source, spec, device=CPU, report=report, outputs=RunOutputs(tmp_path), job_yaml="")
    lines = read_metrics(tmp_path)
    p = [m["ada_p"] for m in lines]
    # A D far above the 0.05 target raises p by batch × interval / 500k each 4 steps.
    assert p == sorted(p) and p[-1] > 0 and all(m["ada_rt"] > 0.05 for m in lines)
    assert p[-1] == state.ada.p == pytest.approx(6 * 16 * 4 / 500_000)
    ckpt = reported[-1]
    assert ckpt["ada"]["p"] == p[-1]
    resumed = build_state(spec, SHAPE, CPU, checkpoint=ckpt, source="ckpt")
    assert resumed.ada.p == p[-1] and resumed.step == 24
    # Without ADA, nothing of it is kept or logged.
    plain = build_state(from_dict(job(tmp_path, ada_target=0.0)), SHAPE, CPU)
    assert plain.ada is None
    assert ckpts.snapshot(plain, "", [], {})["ada"] is None
