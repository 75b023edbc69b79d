"""optim.lr_decay: the decay's shape, the expected end of a time-limited run, and the rates the
training loop really uses (from metrics.jsonl of a run trained in this process; no Ray). The
two-rank agreement on the end is in test_ddp.py."""

from __future__ import annotations

import math

import pytest
from tiny_runs import train_run

from distgan.config import JobError, from_dict
from distgan.schedule import Horizon, decay_factor
from distgan.train.outputs import read_metrics


def optim(decay: str, final: float = 0.0):
    return from_dict({"optim": {"lr_decay": decay, "lr_final": final}}).optim


@pytest.mark.parametrize(
    "decay, final, halfway",
    [("none", 0.0, 1.0), ("linear", 0.0, 0.5), ("linear", 0.2, 0.6), ("cosine", 0.1, 0.55)],
)
def test_the_decay_starts_at_the_rates_and_ends_at_lr_final(decay, final, halfway):
    o = optim(decay, final)
    assert decay_factor(o.lr_decay, o.lr_final, 0.0) == 1.0
    assert math.isclose(decay_factor(o.lr_decay, o.lr_final, 0.5), halfway)
    assert math.isclose(
        decay_factor(o.lr_decay, o.lr_final, 1.0), 1.0 if decay == "none" else final
    )
    assert math.isclose(
        decay_factor(o.lr_decay, o.lr_final, 1.7), decay_factor(o.lr_decay, o.lr_final, 1.0)
    )  # past the end: stays


def test_cosine_falls_slowly_at_first_and_linear_evenly():
    c, lin = optim("cosine"), optim("linear")
    assert decay_factor(c.lr_decay, c.lr_final, 0.1) > decay_factor(lin.lr_decay, lin.lr_final, 0.1)
    assert decay_factor(c.lr_decay, c.lr_final, 0.9) < decay_factor(lin.lr_decay, lin.lr_final, 0.9)


def test_the_end_is_the_steps_or_the_step_the_time_limit_is_expected_at():
    steps_only = Horizon(from_dict({"train": {"steps": 500}}).train)
    steps_only.update(step=100, seconds=10.0, steps_per_s=1.0)  # no limit: nothing to estimate
    assert steps_only.end == 500 and steps_only.progress(250) == 0.5
    timed = Horizon(from_dict({"train": {"steps": 100_000, "max_minutes": 1.0}}).train)
    timed.update(step=100, seconds=10.0, steps_per_s=20.0)
    assert timed.end == 100 + 50 * 20  # 50 s left at 20 steps/s
    timed.update(step=1000, seconds=70.0, steps_per_s=20.0)  # time is up: the end is now
    assert timed.end == 1000
    fast = Horizon(from_dict({"train": {"steps": 300, "max_minutes": 1.0}}).train)
    fast.update(step=100, seconds=1.0, steps_per_s=100.0)
    assert fast.end == 300  # the steps come first
    resumed = Horizon(from_dict({"train": {"steps": 10**6, "max_minutes": 2.0}}).train, 600, 60.0)
    assert resumed.end == 1200  # a resumed run: its speed so far, over the whole limit


def test_the_loop_trains_with_the_decayed_rates(tmp_path):
    run_dir = train_run(
        tmp_path, optim={"lr_g": 1e-3, "lr_d": 2e-3, "lr_decay": "linear", "lr_final": 0.1}
    )
    lines = [m for m in read_metrics(run_dir) if "lr_g" in m]
    assert [m["step"] for m in lines][-1] == 40
    for m in lines:
        # the rate of step s (1-based) is set before it, at progress (s - 1) / 40, and the
        # guard's rollback (NaN latents at steps 13-15) halved the rates since
        factor = 1 - 0.9 * (m["step"] - 1) / 40
        assert math.isclose(m["lr_g"], 1e-3 * m["lr_scale"] * factor, rel_tol=1e-9), m
        assert math.isclose(m["lr_d"], 2e-3 * m["lr_scale"] * factor, rel_tol=1e-9), m
    assert lines[-1]["lr_g"] < 0.15e-3
    flat = train_run(tmp_path, name="flat", optim={"lr_g": 1e-3})
    assert {m["lr_g"] / m["lr_scale"] for m in read_metrics(flat) if "lr_g" in m} == {1e-3}


def test_a_wrong_decay_is_refused_with_the_field_and_the_choices():
    with pytest.raises(JobError, match=r"optim\.lr_decay.*linear"):
        from_dict({"optim": {"lr_decay": "step"}})
    with pytest.raises(JobError, match=r"optim\.lr_final"):
        from_dict({"optim": {"lr_final": 2}})
