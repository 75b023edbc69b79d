"""One builder: every path that trains gets its state from ``train/build.py``.

A PBT trial once assembled its own state: it drew its real batches by the data's frequencies
whatever ``train.class_balance`` said, left a conditional G's labels uniform, and dropped the
divergence guard's lowered rates from its checkpoint. These tests build a PBT trial's state the
way the trial does (``tune/trials.pbt_setup``) and check each of those; and they read the
package's source for any other place that builds G's or D's optimizers or drives the step.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.config import dump_yaml, from_dict
from distgan.data import read_manifest, write_shards
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state
from distgan.train.launch import Plan
from distgan.tune.trials import SearchContext, pbt_setup

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
COUNTS = [160, 32, 8]  # a long-tailed 3-class set


@pytest.fixture(scope="module")
def long_tailed(tmp_path_factory):
    root = tmp_path_factory.mktemp("longtail")
    labels = np.repeat(np.arange(3), COUNTS)
    images = (labels.astype(np.uint8) * 100).reshape(-1, 1, 1, 1).repeat(28, 2).repeat(28, 3)
    write_shards(images, labels, root / "data", source="test")
    return root


def job(root: Path, **train) -> dict:
    return {
        "data": {"source": str(root / "data")},
        "model": {"arch": "dcgan", "width": 4, "z_dim": 8, "conditional": True},
        "train": {"batch_size": 40, **train},
        "tune": {"scheduler": "pbt"},
        "run": {"name": "s", "root": str(root / "runs")},
    }


def context(root: Path, spec) -> SearchContext:
    plan = Plan(workers=1, cpus_per_worker=1.0, use_gpu=False, cache=True)
    manifest = read_manifest(root / "data")
    return SearchContext(job={}, job_source="job.yaml", search_dir=str(root / "search"),
                         manifest=manifest, plan=plan)  # fmt: skip


def class_shares(batches, epochs: int = 20) -> np.ndarray:
    """The classes' shares of ``epochs`` epochs of batches (4,000 rows)."""
    labels = torch.cat([y for e in range(epochs) for _, y in batches.epoch_batches(e)])
    return np.bincount(labels.numpy(), minlength=3) / len(labels)


def test_a_pbt_trial_draws_its_batches_and_fake_labels_by_the_class_balance(long_tailed):
    spec = from_dict(job(long_tailed, class_balance="balanced"))
    state, batches, exploit = pbt_setup(context(long_tailed, spec), spec, "t1", CPU)
    assert exploit is None
    assert np.allclose(class_shares(batches), 1 / 3, atol=0.03)  # the data holds 80% class 0
    torch.testing.assert_close(state.game.label_prior, torch.full((3,), 1 / 3))
    # Without a balance the batches follow the data, as a run's do.
    spec = from_dict(job(long_tailed))
    state, batches, _ = pbt_setup(context(long_tailed, spec), spec, "t1", CPU)
    assert class_shares(batches)[0] > 0.7
    torch.testing.assert_close(state.game.label_prior, torch.tensor(COUNTS) / sum(COUNTS))


def test_a_pbt_clone_keeps_the_guards_lowered_rates_and_its_own(long_tailed):
    donor = from_dict(job(long_tailed, seed=3))
    state = build_state(donor, (1, 28, 28), CPU, num_classes=3)
    state.step, state.lr_scale = 30, 0.25  # the guard halved the rates twice
    ckpt = ckpts.snapshot(state, dump_yaml(donor), [ckpts.rng_state()], {"step": 30.0})
    clone = from_dict({**job(long_tailed), "optim": {"lr_g": 4e-4, "lr_d": 8e-4}})
    ctx = context(long_tailed, clone)
    state, _, exploit = pbt_setup(ctx, clone, "t2", CPU, ckpt, "donor/step_30", origin="t1")
    assert state.step == 30 and state.lr_scale == 0.25
    assert state.nets.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert state.nets.opt_d.param_groups[0]["lr"] == pytest.approx(2e-4)
    assert exploit["donor"] == "t1" and exploit["lr_g"] == pytest.approx(1e-4)


def test_a_resumed_state_takes_the_jobs_rates_times_the_guards_factor():
    spec = from_dict({"model": {"arch": "mlp", "width": 8, "z_dim": 4}})
    state = build_state(spec, (1, 4, 4), CPU)
    state.step, state.lr_scale = 7, 0.5
    ckpt = ckpts.snapshot(state, dump_yaml(spec), [ckpts.rng_state()], {"step": 7.0})
    faster = from_dict({"model": {"arch": "mlp", "width": 8, "z_dim": 4},
                        "optim": {"lr_g": 1e-3, "lr_d": 3e-3, "beta2": 0.9}})  # fmt: skip
    resumed = build_state(faster, (1, 4, 4), CPU, checkpoint=ckpt, source="ckpt")
    groups = resumed.nets.opt_g.param_groups[0], resumed.nets.opt_d.param_groups[0]
    assert [g["lr"] for g in groups] == pytest.approx([5e-4, 1.5e-3])
    assert all(g["betas"] == (0.5, 0.9) for g in groups)
    for a, b in zip(resumed.nets.G.parameters(), state.nets.G.parameters()):
        assert torch.equal(a, b)


def _calls(path: Path) -> set[str]:
    """Dotted names of everything ``path`` calls, and the distgan names it imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distgan"):
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_g_and_d_optimizers_are_built_in_one_module():
    builders = {
        str(p.relative_to(REPO))
        for p in (REPO / "distgan").rglob("*.py")
        if not p.is_relative_to(REPO / "distgan" / "metrics")  # its classifiers' own training
        and any(c.startswith("torch.optim.") for c in _calls(p))
    }
    assert builders == {"distgan/train/build.py"}


def test_no_benchmark_assembles_or_steps_distgans_training_state():
    forbidden = {"distgan.step.", "distgan.train.build.", "distgan.train.loop."}
    offenders = {
        p.name: sorted(c for c in _calls(p) if any(c.startswith(f) for f in forbidden))
        for p in (REPO / "benchmarks").glob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
