"""StyleGAN2's path length regularisation in the training step: lazy, on half the batch, added
to G's loss × weight × interval, its running mean kept in the checkpoint."""

from __future__ import annotations

import pytest
import torch

from distgan.config import from_dict
from distgan.errors import JobError
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
from distgan.train.loop import run
from distgan.train.outputs import RunOutputs, read_metrics

SHAPE = (1, 32, 32)
CPU = torch.device("cpu")


def job(**loss) -> dict:
    return {
        "model": {"arch": "stylegan2", "width": 8, "z_dim": 8},
        "loss": {"pl_weight": 2.0, "pl_every": 2, **loss},
        "train": {"steps": 4, "batch_size": 8, "log_every": 1, "checkpoint_every": 4,
                  "sample_every": 100},
    }  # fmt: skip


def reals(n: int = 8) -> list[torch.Tensor]:
    return [torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(3)) * 2 - 1]


def test_the_penalty_comes_every_pl_every_steps_and_moves_g(tmp_path):
    spec = from_dict(job())
    state = build_state(spec, SHAPE, CPU)
    images = torch.randint(0, 256, (16, *SHAPE), dtype=torch.uint8)

    reported = []
    source = memory_batches(spec, images, None, None, CPU)
    report = lambda m, c: reported.append(c)  # noqa: E731
    run(state, source, spec, device=CPU, report=report, outputs=RunOutputs(tmp_path), job_yaml="")
    with_pl = [m["step"] for m in read_metrics(tmp_path) if "pl" in m]
    assert with_pl == [1, 3]  # steps 0 and 2 of 4 (pl_every 2)
    mean = state.path_length.mean
    assert mean > 0 and reported[-1]["path_length"]["mean"] == mean
    resumed = build_state(spec, SHAPE, CPU, checkpoint=reported[-1], source="ckpt")
    assert resumed.path_length.mean == mean


def test_the_penalty_changes_gs_update_by_its_weight():
    from distgan.step import train_step

    def g_after(weight: float) -> torch.Tensor:
        spec = from_dict(job(pl_weight=weight))
        state = build_state(spec, SHAPE, CPU)
        torch.manual_seed(5)
        train_step(state.nets, state.game, reals(), lambda n: torch.randn(n, 8), step=0,
                   path_length=state.path_length)  # fmt: skip
        return torch.cat([p.detach().flatten() for p in state.nets.G.parameters()])

    assert not torch.equal(g_after(0.0), g_after(2.0))
    with pytest.raises(JobError, match="loss.pl_weight: path length regularisation needs"):
        from_dict({**job(), "model": {"arch": "dcgan"}})
    assert build_state(from_dict(job(pl_weight=0.0)), SHAPE, CPU).path_length is None
    assert (
        ckpts.snapshot(build_state(from_dict(job(pl_weight=0.0)), SHAPE, CPU), "", [], {})[
            "path_length"
        ]
        is None
    )
