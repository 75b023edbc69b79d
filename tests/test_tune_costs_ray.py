"""A search over quality and cost on a real Ray cluster, through ``distgan tune``: Optuna samples
the widths of an MLP, the widest breaks the job's budget and is never trained, and the two
trained trials make the front (the wider scores better, the narrower costs less)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from distgan.cli import main
from distgan.config import load_job
from distgan.objectives import COST_FIGURES, MODEL_FIGURES, dominates
from distgan.train.complexity import COMPLEXITY
from distgan.tune.front import FRONT, PARETO
from distgan.tune.trials import TRIALS

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray-a")]  # conftest.py

BUDGET = 300_000  # G's parameters: an MLP G of width 64 has 243,920, of width 256 1,464,848


def test_a_search_over_fid_and_gflops_skips_what_breaks_the_budget_and_writes_the_front(
    ray_cluster, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # eval's reference statistics
    job = {
        "data": {"source": "embedded"},
        "model": {"arch": "mlp", "z_dim": 16},
        "optim": {"lr_g": 2e-3, "lr_d": 2e-3},
        "train": {"steps": 40, "batch_size": 32, "log_every": 10, "checkpoint_every": 1000,
                  "sample_every": 40, "ema": False},
        "eval": {"every": 40, "n_samples": 128, "n_real": 500},
        "scale": {"workers": 1},
        # Optuna's first trials are random draws: with seed 1 they are widths 64, 8 and 256.
        # Training is deterministic on CPU, so the figures below come out the same every time.
        "tune": {"space": {"model.width": "choice([8, 64, 256])"}, "num_samples": 3, "seed": 1,
                 "objectives": ["fid", "g_gflops"], "constraints": [f"g_params <= {BUDGET}"]},
        "run": {"name": "costs", "root": str(tmp_path / "runs")},
    }  # fmt: skip
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    (search,) = (tmp_path / "runs").glob("*-tune")
    with open(search / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["model.width"]) for r in rows) == [8, 64, 256]

    # The trial over budget was counted, never trained: its folder holds its complexity.json
    # alone, results.csv says why, and so does the search's line for it.
    (skipped,) = [r for r in rows if r["status"] == "skipped"]
    assert int(skipped["model.width"]) == 256 and int(skipped["g_params"]) > BUDGET
    assert skipped["reason"] == f"g_params 1.465e+06 breaks g_params <= {BUDGET}"
    assert [p.name for p in (search / TRIALS / skipped["trial_id"]).iterdir()] == [COMPLEXITY]
    assert f"trial {skipped['trial_id']} skipped: g_params 1.465e+06 breaks" in out
    trained = [r for r in rows if r["status"] == "done"]
    assert len(trained) == 2
    for r in trained:  # nothing over budget trained, and every figure of each was measured
        assert int(r["g_params"]) <= BUDGET and r["reason"] == ""
        cost = json.loads((search / TRIALS / r["trial_id"] / COMPLEXITY).read_text())
        assert all(cost[k] > 0 for k in COST_FIGURES) and cost["peak_mem_kind"] == "cpu-rss"
        assert all(float(r[k]) == cost[k] for k in MODEL_FIGURES)

    # pareto.csv: at least two trials, none beaten on both objectives by any trial of
    # results.csv, and every measured trial it leaves out is beaten by one of them.
    def point(row: dict) -> tuple[float, float]:
        return float(row["best_fid"]), float(row["g_gflops"])

    with open(search / PARETO) as f:
        front = list(csv.DictReader(f))
    measured = [r for r in rows if not math.isnan(float(r["best_fid"]))]
    assert len(front) >= 2
    for p in front:
        assert not any(dominates(point(r), point(p), ["min", "min"]) for r in measured), p
    on_front = {p["trial_id"] for p in front}
    for r in measured:
        if r["trial_id"] not in on_front:
            assert any(dominates(point(p), point(r), ["min", "min"]) for p in front), r
    # A job per point of the front in place of best.yaml, each with that trial's width.
    assert not (search / "best.yaml").exists()
    assert sorted(p.name for p in (search / FRONT).iterdir()) == sorted(
        f"{t}.yaml" for t in on_front
    )
    widths = {r["trial_id"]: int(r["model.width"]) for r in rows}
    for trial in on_front:
        job_file = load_job(search / FRONT / f"{trial}.yaml")
        assert job_file.model.width == widths[trial] and job_file.tune.objectives == []
    assert f"front: {len(front)} trial(s)" in out
