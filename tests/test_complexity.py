"""What a model costs: complexity.json's figures, the budgets and objectives of a search, and
the Pareto front. No Ray (a search over both, end to end, submitted to a two-node cluster:
test_split_cluster.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from distgan.cli import main
from distgan.config import from_dict, load_job
from distgan.errors import JobError
from distgan.models import models_for_job
from distgan.objectives import broken, dominates, pareto_front, parse_constraint
from distgan.report.front import front_sections
from distgan.report.run import run_sections
from distgan.storage import open_location
from distgan.train.complexity import (
    COMPLEXITY,
    MeasuredCost,
    model_complexity,
    read_complexity,
    record_model_cost,
)
from distgan.train.outputs import RunOutputs, write_resolved
from distgan.tune.front import FRONT, PARETO, write_front
from distgan.tune.results import RESULTS, TrialRow
from distgan.tune.search import check_search, searched_job

SHAPE = (1, 28, 28)


def spec_of(**sections):
    return from_dict({"data": {"source": "embedded"}, **sections})


# --- the figures of the models ---------------------------------------------------------------


@pytest.mark.parametrize(
    "model, num_classes",
    [
        ({"arch": "dcgan", "width": 16}, 0),
        ({"arch": "resnet", "width": 8, "spectral_norm": True}, 0),
        ({"arch": "dcgan", "width": 8, "conditional": True}, 10),
        ({"arch": "mlp", "width": 32, "pack": 2, "mbstd_group": 2}, 0),
    ],
)
def test_parameters_are_those_of_the_models_built_for_the_job(model, num_classes):
    spec = spec_of(model=model, train={"batch_size": 16}, scale={"workers": 1})
    figures = model_complexity(spec, SHAPE, num_classes)
    G, D = models_for_job(spec.model, SHAPE, num_classes)
    assert figures["g_params"] == sum(p.numel() for p in G.parameters())
    assert figures["d_params"] == sum(p.numel() for p in D.parameters())
    assert figures["g_gflops"] > 0 and figures["d_gflops"] > 0


def test_an_mlp_costs_two_flops_a_multiply_add_per_image():
    # An MLP's forward is its Linear layers: in × out multiply-adds each, per image.
    spec = spec_of(model={"arch": "mlp", "width": 32, "z_dim": 16})
    G, D = models_for_job(spec.model, SHAPE)

    def by_hand(module: nn.Module) -> float:
        return sum(2 * m.in_features * m.out_features for m in module.modules()
                   if isinstance(m, nn.Linear)) / 1e9  # fmt: skip

    figures = model_complexity(spec, SHAPE)
    assert figures["g_gflops"] == pytest.approx(by_hand(G))
    assert figures["d_gflops"] == pytest.approx(by_hand(D))
    assert "multiply-add = 2 FLOPs" in figures["flops"]


def test_a_dcgan_twice_as_wide_costs_about_four_times_the_flops():
    # Convolutions cost c_in × c_out: doubling every width about quadruples them (the first and
    # last layers, with one image channel, only double).
    narrow, wide = (
        model_complexity(spec_of(model={"arch": "dcgan", "width": w}), SHAPE) for w in (16, 32)
    )
    for net in ("g", "d"):
        ratio = wide[f"{net}_gflops"] / narrow[f"{net}_gflops"]
        assert 3.0 < ratio < 4.0, (net, ratio)


def test_counting_leaves_the_callers_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    model_complexity(spec_of(model={"arch": "dcgan", "width": 8}), SHAPE)
    assert torch.equal(torch.rand(3), expected)


# --- complexity.json as a run fills it in ----------------------------------------------------


def test_rank_0_fills_in_throughput_and_memory_and_rewrites_only_when_they_move(tmp_path):
    run = open_location(str(tmp_path), field="run")
    spec = spec_of(model={"arch": "dcgan", "width": 8})
    record_model_cost(run, spec, SHAPE)
    cost = MeasuredCost(run)
    gpu = {"gpu_mem_gb": 0.5}  # a GPU run's rank 0 logs its CUDA peak
    cost.update({"step": 10, "images_per_s": 100.0, **gpu})
    first = read_complexity(run)
    assert (first["images_per_s"], first["sec_per_kimg"]) == (100.0, 10.0)
    assert (first["peak_mem_mb"], first["peak_mem_kind"]) == (512.0, "cuda-allocated")
    assert first["g_params"] == model_complexity(spec, SHAPE)["g_params"]  # the count is kept
    # The median of [100, 102] and then [100, 102, 200] moves by 1-2%: the file stays as it was.
    cost.update({"step": 20, "images_per_s": 102.0, **gpu})
    cost.update({"step": 30, "images_per_s": 200.0, **gpu})
    assert read_complexity(run) == first
    # [100, 102, 200, 300, 400]: the median is 200 now, and memory grew.
    cost.update({"step": 40, "images_per_s": 300.0, **gpu})
    cost.update({"step": 50, "images_per_s": 400.0, "gpu_mem_gb": 1.0})
    last = read_complexity(run)
    assert (last["images_per_s"], last["sec_per_kimg"], last["peak_mem_mb"]) == (200.0, 5.0, 1024)
    # A restarted or resumed group's rank 0 counts the models again, keeping what was measured.
    record_model_cost(run, spec, SHAPE)
    assert read_complexity(run) == last


def test_on_cpu_the_peak_is_the_processs_resident_memory(tmp_path):
    outputs = RunOutputs(str(tmp_path))  # rank 0's writer updates complexity.json at each line
    outputs.write_metrics({"step": 5, "images_per_s": 250.0})
    cost = json.loads((tmp_path / COMPLEXITY).read_text())
    assert cost["peak_mem_kind"] == "cpu-rss"
    # This process holds torch at least: well over 50 MiB, well under the machine.
    assert 50 < cost["peak_mem_mb"] < 1e6
    assert (cost["images_per_s"], cost["sec_per_kimg"]) == (250.0, 4.0)


def test_the_report_and_distgan_runs_show_what_the_run_costs(tmp_path, capsys):
    run_dir = tmp_path / "00000-tiny"
    spec = spec_of(model={"arch": "dcgan", "width": 8}, run={"name": "tiny"})
    write_resolved(spec, run_dir)
    run = open_location(str(run_dir), field="run")
    record_model_cost(run, spec, SHAPE)
    RunOutputs(run).write_metrics({"step": 10, "images_per_s": 400.0, "d_loss": 1.0})
    figures = read_complexity(run)
    summary = run_sections(run, spec)[0].body
    assert f"G {figures['g_params']:,} parameters" in summary
    assert "2.5 s/kimg (400 images/s" in summary and "(cpu-rss)" in summary

    assert main(["runs", str(tmp_path)]) == 0
    head, line = capsys.readouterr().out.splitlines()
    assert "G PARAMS" in head and "G GFLOPS" in head and "SEC/KIMG" in head
    assert re.search(rf"{figures['g_params']:,}\s+{figures['g_gflops']:.3g}\s+2\.5\s", line)


# --- budgets and objectives in the job -------------------------------------------------------


@pytest.mark.parametrize(
    "text, name, op, bound",
    [
        ("g_params <= 2e6", "g_params", "<=", 2e6),
        ("g_gflops<0.5", "g_gflops", "<", 0.5),
        ("  d_params >= 1000 ", "d_params", ">=", 1000.0),
        ("d_gflops > .25", "d_gflops", ">", 0.25),
    ],
)
def test_a_constraint_is_a_figure_an_operator_and_a_number(text, name, op, bound):
    c = parse_constraint(text, "job.yaml: tune.constraints[0]")
    assert (c.name, c.op, c.bound) == (name, op, bound)


def test_broken_names_the_first_budget_a_model_breaks():
    budgets = [parse_constraint(t, "x") for t in ("g_params <= 300000", "g_gflops < 0.01")]
    assert broken(budgets, {"g_params": 300000, "g_gflops": 0.005}) is None  # <= holds at equality
    assert broken(budgets, {"g_params": 300000, "g_gflops": 0.01}) == (
        "g_gflops 0.01 breaks g_gflops < 0.01"
    )
    assert broken(budgets, {"g_params": 759681, "g_gflops": 0.02}) == (
        "g_params 7.597e+05 breaks g_params <= 300000"
    )


def write_job(tmp_path: Path, tune: str) -> Path:
    path = tmp_path / "search.yaml"
    space = "  space: {model.width: 'choice([8, 16])'}\n"
    path.write_text("eval:\n  every: 20\ntune:\n" + space + textwrap.indent(tune, "  "))
    return path


@pytest.mark.parametrize(
    "tune, words",
    [
        ("constraints: ['gparams <= 2e6']\n",
         ["tune.constraints[0]", "'gparams' is not a figure of complexity.json",
          "did you mean 'g_params'"]),
        ("constraints: ['sec_per_kimg < 10']\n",
         ["tune.constraints[0]", "measured while a trial trains", "g_params, d_params"]),
        ("constraints: ['g_params <= 2e6', 'g_params = 1']\n",
         ["tune.constraints[1]", "expected NAME OP NUMBER", "'g_params = 1'"]),
        ("constraints: 'g_params <= 2e6'\n", ["tune.constraints", "a list of strings"]),
        ("objectives: [fid]\n", ["tune.objectives", "expected two names, a metric"]),
        ("objectives: [fid, kid]\n", ["tune.objectives", "a cost figure (g_params"]),
        ("objectives: [fid, gflops]\n", ["tune.objectives", "did you mean 'g_gflops'"]),
        ("objectives: [fid, g_gflops]\nscheduler: pbt\n",
         ["tune.objectives", "pbt clones the best trial", "fifo or asha"]),
    ],
)  # fmt: skip
def test_a_bad_budget_or_objective_is_one_line_naming_file_and_field(tmp_path, tune, words):
    path = write_job(tmp_path, tune)
    with pytest.raises(JobError) as info:
        load_job(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in words:
        assert word in message, message


def test_two_objectives_sample_and_measure_their_metric(tmp_path):
    spec = load_job(write_job(tmp_path, "objectives: [g_gflops, kid]\n"))
    assert searched_job(spec).tune.metric == "kid" and searched_job(spec).eval.metric == "kid"
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "eval: {every: 20}\ntune: {space: {model.width: 'grid([8, 16])'}, objectives: [fid, "
        "g_params]}\n"
    )
    with pytest.raises(JobError, match="tune.space.model.width: Optuna.*use choice"):
        check_search(load_job(grid), str(grid))


# --- the front -------------------------------------------------------------------------------


def test_the_front_keeps_ties_and_drops_what_is_beaten_on_both():
    points = [
        (40.0, 0.20),  # 0: the best metric
        (55.0, 0.05),  # 1: the cheapest
        (55.0, 0.05),  # 2: 1's twin: equal points do not dominate each other
        (60.0, 0.05),  # 3: as cheap as 1, worse: dominated
        (40.0, 0.30),  # 4: as good as 0, dearer: dominated
        (50.0, 0.10),  # 5: between 0 and 1
        (70.0, 0.50),  # 6: worse on both
        (math.nan, 0.01),  # 7: never measured its metric
    ]
    assert pareto_front(points, ["min", "min"]) == [0, 1, 2, 5]
    # A metric that is better higher (precision) turns the trade around.
    flipped = [(-m, c) for m, c in points]
    assert pareto_front(flipped, ["max", "min"]) == [0, 1, 2, 5]
    assert dominates((1.0, 1.0), (1.0, 2.0), ["min", "min"])
    assert not dominates((1.0, 1.0), (1.0, 1.0), ["min", "min"])


def search_job(tmp_path: Path):
    return from_dict({
        "data": {"source": "embedded"},
        "model": {"arch": "mlp", "z_dim": 16},
        "eval": {"every": 20},
        "train": {"steps": 40},
        "tune": {"space": {"model.width": "choice([8, 16, 32, 64])"},
                 "objectives": ["fid", "g_gflops"], "constraints": ["g_params <= 200000"]},
        "run": {"name": "front", "root": str(tmp_path)},
    })  # fmt: skip


def trial_rows(tmp_path: Path) -> tuple:
    """The searched job, and hand-made rows of five trials (t5 skipped by its budget)."""
    spec = search_job(tmp_path)
    costs = {
        w: model_complexity(from_dict({"model": {"arch": "mlp", "z_dim": 16, "width": w}}), SHAPE)
        for w in (8, 16, 32, 64)
    }
    skipped = {**costs[64], "skipped": broken([parse_constraint("g_params <= 200000", "x")],
                                               costs[64])}  # fmt: skip
    return spec, [
        TrialRow("t3", "done", {"model.width": 32}, 90.0, 40, 40, costs[32]),
        TrialRow("t2", "done", {"model.width": 16}, 120.0, 20, 40, costs[16]),
        TrialRow("t4", "done", {"model.width": 16}, 150.0, 40, 40, costs[16]),  # t2 beats it
        TrialRow("t1", "done", {"model.width": 8}, 140.0, 40, 40, costs[8]),
        TrialRow("t5", "skipped", {"model.width": 64}, math.nan, 0, 0, skipped),
    ]


def test_pareto_csv_and_a_job_per_point_of_the_front(tmp_path):
    spec, rows = trial_rows(tmp_path)
    search = open_location(str(tmp_path / "search"), field="search")
    jobs = write_front(rows, searched_job(spec), search)

    front = list(csv.DictReader(io.StringIO(search.read_text(PARETO))))
    assert [r["trial_id"] for r in front] == ["t1", "t2", "t3"]  # cheapest first
    assert [float(r["best_fid"]) for r in front] == [140.0, 120.0, 90.0]
    assert [float(r["g_gflops"]) for r in front] == [rows[3].cost["g_gflops"],
                                                      rows[1].cost["g_gflops"],
                                                      rows[0].cost["g_gflops"]]  # fmt: skip
    assert jobs == [str(tmp_path / "search" / FRONT / f"{t}.yaml") for t in ("t1", "t2", "t3")]
    for trial, width in (("t1", 8), ("t2", 16), ("t3", 32)):
        job = load_job(tmp_path / "search" / FRONT / f"{trial}.yaml")
        assert job.model.width == width and job.tune.space == {} and job.tune.objectives == []
        assert job.run.name == f"front-{trial}"
    assert not search.is_file("best.yaml")

    results = {r["trial_id"]: r for r in csv.DictReader(io.StringIO(search.read_text(RESULTS)))}
    assert int(results["t3"]["g_params"]) == rows[0].cost["g_params"]
    assert float(results["t1"]["d_gflops"]) == rows[3].cost["d_gflops"]
    assert results["t5"]["status"] == "skipped"
    reason = results["t5"]["reason"]
    assert reason.startswith("g_params ") and reason.endswith("breaks g_params <= 200000")
    assert results["t3"]["reason"] == ""


def test_the_search_report_links_each_point_of_the_front_to_its_samples(tmp_path):
    spec, rows = trial_rows(tmp_path)
    search = open_location(str(tmp_path / "search"), field="search")
    trials = {}
    for row in rows:  # each trial's folder as a search leaves it
        trial = search.child("trials", row.trial_id)
        trial.write_text(COMPLEXITY, json.dumps(row.cost))
        if row.status == "skipped":
            trials[row.trial_id] = []
            continue
        outputs = RunOutputs(trial)
        outputs.write_metrics({"step": row.best_step, "fid": row.best})
        outputs.write_samples(row.best_step, torch.zeros(4, 1, 8, 8, dtype=torch.uint8).numpy())
        trials[row.trial_id] = [{"step": row.best_step, "fid": row.best}]
    sections = front_sections(search, searched_job(spec), trials)
    html = "".join(s.body for s in sections)
    targets = re.findall(r'<area shape="circle" coords="(\d+),(\d+),\d+" href="#([^"]+)"', html)
    assert sorted(t for _, _, t in targets) == ["front-t1", "front-t2", "front-t3"]
    for x, y, target in targets:  # inside the chart, and each target is on the page
        assert 0 < int(x) < 800 and 0 < int(y) < 450
        assert f'id="{target}"' in html
    assert "front-t4" not in html  # beaten on both: no link
    assert "1 trial(s) skipped by tune.constraints" in html and "t5: g_params" in html
