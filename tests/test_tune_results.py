"""PBT's bookkeeping without Ray: what exploits.jsonl records, the progress lines, the schedule in
best.yaml, best_samples/ of the best step, and `distgan sample` on a trial folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.cli import main
from distgan.config import dump_yaml, from_dict, load_job
from distgan.ema import EMA
from distgan.generate import load_generator, resolve_checkpoint
from distgan.images import grid, save_grid, to_uint8
from distgan.losses import get_loss
from distgan.models import build_models, generate
from distgan.step import Nets
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import RunOutputs
from distgan.tune.exploits import (
    EXPLOITS,
    exploit_record,
    format_schedule,
    progress_lines,
    read_exploits,
    schedule,
)

SPACE = {"optim.lr_g": "loguniform(1e-4, 1e-3)", "optim.beta1": "choice([0.0, 0.5, 0.9])"}


def pbt_job(tmp_path: Path, **optim) -> dict:
    return {
        "data": {"source": "embedded"},
        "model": {"arch": "mlp", "width": 8, "z_dim": 8},
        "optim": {"lr_g": 2e-4, "beta1": 0.5, **optim},
        "train": {"steps": 60, "batch_size": 32, "seed": 3},
        "eval": {"every": 20},
        "tune": {"space": SPACE, "num_samples": 2, "scheduler": "pbt"},
        "run": {"name": "pbt", "root": str(tmp_path / "runs")},
    }


def test_an_exploit_records_every_value_that_changed(tmp_path):
    donor = from_dict(pbt_job(tmp_path))
    clone = from_dict(pbt_job(tmp_path, lr_g=2.4e-4, beta1=0.9))
    record = exploit_record("b", "a", 40, donor, clone)
    assert record["changed"] == {"optim.lr_g": [2e-4, 2.4e-4], "optim.beta1": [0.5, 0.9]}
    assert record["values"] == {"optim.lr_g": 2.4e-4, "optim.beta1": 0.9}
    assert record["donor_values"] == {"optim.lr_g": 2e-4, "optim.beta1": 0.5}
    assert (record["trial"], record["donor"], record["step"]) == ("b", "a", 40)
    json.dumps(record)  # a line of exploits.jsonl

    # A value outside the searched keys counts too: the whole resolved job is compared.
    other = from_dict({**pbt_job(tmp_path), "loss": {"kind": "hinge"}})
    assert exploit_record("b", "a", 40, donor, other)["changed"] == {
        "loss.kind": ["nonsaturating", "hinge"]
    }


def test_progress_lines_show_the_values_a_figure_was_measured_with():
    keys = ["optim.lr_g"]
    clone_first = {"step": 60, "fid": 12.5, "exploited_from": "a"}
    lines = progress_lines("b", clone_first, "fid", keys, {"optim.lr_g": 2.4e-4})
    assert lines[0].startswith("exploit: trial b takes trial a's state")
    assert lines[0].endswith("goes on with optim.lr_g=0.00024")
    assert lines[1].split() == ["trial", "b", "step", "60", "fid", "12.5", "optim.lr_g=0.00024"]
    assert len(progress_lines("b", {"step": 20, "fid": 30.0}, "fid", keys, {})) == 1


def test_search_progress_takes_the_results_config_not_the_perturbed_one(capsys):
    from distgan.tune.trials import SearchProgress

    # PBT has just exploited trial b: Tune's trial config holds its next values already.
    trial = SimpleNamespace(trial_id="b", config={"optim.lr_g": 9e-4})
    result = {"step": 40, "fid": 30.0, "config": {"optim.lr_g": 2e-4}}
    SearchProgress("fid", ["optim.lr_g"]).on_trial_result(0, [], trial, result)
    assert capsys.readouterr().out.split()[-1] == "optim.lr_g=0.0002"


def test_the_schedule_follows_the_state_back_through_its_donors():
    exploits = [
        {"trial": "b", "donor": "a", "step": 20, "values": {"lr": 2}, "donor_values": {"lr": 1}},
        {"trial": "c", "donor": "b", "step": 40, "values": {"lr": 3}, "donor_values": {"lr": 2}},
        {"trial": "c", "donor": "a", "step": 60, "values": {"lr": 4}, "donor_values": {"lr": 1}},
    ]
    # c's state of step 50: trained by a to 20, by b (which took it) to 40, then by c.
    assert schedule(exploits, "c", {"lr": 3}, 50) == [
        (0, 20, "a", {"lr": 1}),
        (20, 40, "b", {"lr": 2}),
        (40, 50, "c", {"lr": 3}),
    ]
    # c's own report at step 40 came before its exploit there: b's state was not yet in it.
    assert schedule(exploits, "c", {"lr": 9}, 40) == [(0, 40, "c", {"lr": 9})]
    assert schedule([], "a", {"lr": 1}, 70) == [(0, 70, "a", {"lr": 1})]
    lines = format_schedule(schedule(exploits, "c", {"lr": 3}, 50))
    assert lines[1] == "steps 20-40  trial b  lr=2"
    old = [{"trial": "b", "donor": "a", "step": 20}]  # written before donor_values were
    assert format_schedule(schedule(old, "b", {"lr": 2}, 30))[0].endswith("(values not recorded)")


def checkpoint(spec, step: int, fid: float) -> dict:
    """A real snapshot of ``spec``'s models at ``step``, its G_ema drawn from seed ``step``."""
    torch.manual_seed(step)
    G, D = build_models(spec.model.arch, spec.model.z_dim, spec.model.width, (1, 28, 28))
    nets = Nets(G=G, D=D, opt_g=torch.optim.Adam(G.parameters()),
                opt_d=torch.optim.Adam(D.parameters()), loss=get_loss("nonsaturating"))  # fmt: skip
    state = ckpts.TrainState(nets, EMA(G, 0.9), (1, 28, 28), step=step)
    return ckpts.snapshot(state, dump_yaml(spec), [ckpts.rng_state()], {"fid": fid, "step": step})


def plain_grid(path: Path, value: int) -> None:
    save_grid(np.full((4, 1, 28, 28), value, np.uint8), path)


@pytest.fixture
def search(tmp_path) -> tuple[Path, object, list]:
    """A PBT search whose winner b took a's state at step 20 and was perturbed again at 50,
    after its best step (40): best/ holds its state of step 40 and the values it had then."""
    from distgan.tune.results import TrialRow

    search_dir = tmp_path / "runs" / "00000-pbt-tune"
    spec = from_dict(pbt_job(tmp_path))
    at_best = from_dict(pbt_job(tmp_path, lr_g=2.4e-4, beta1=0.9))
    trial = search_dir / "trials" / "b"
    outputs = RunOutputs(trial)
    (trial / "samples").mkdir(parents=True)
    for step in (20, 40, 60):
        plain_grid(trial / "samples" / f"step_{step:06d}.png", step)
    assert outputs.update_best(checkpoint(at_best, 40, 11.0), "fid", higher_is_better=False)
    records = [
        exploit_record("b", "a", 20, spec, at_best),
        exploit_record("b", "a", 50, spec, from_dict(pbt_job(tmp_path, lr_g=3e-4))),
    ]
    (search_dir / EXPLOITS).write_text("".join(json.dumps(r) + "\n" for r in records))
    last = {"optim.lr_g": 3e-4, "optim.beta1": 0.5}
    rows = [TrialRow("b", "done", last, 11.0, 40, 60), TrialRow("a", "done", {}, 15.0, 60, 60)]
    return search_dir, spec, rows


def test_best_yaml_is_a_job_of_the_best_steps_values_with_its_schedule(search):
    from distgan.tune.results import write_results

    search_dir, spec, rows = search
    path = write_results(rows, spec, search_dir)
    best = load_job(path)  # still a job distgan train accepts: the schedule is a comment
    assert (best.optim.lr_g, best.optim.beta1) == (2.4e-4, 0.9)  # those of step 40, not 60's
    assert best.tune.space == {}
    text = path.read_text()
    assert "# fid 11 at step 40, with optim.lr_g=0.00024, optim.beta1=0.9" in text
    schedule_lines = [line for line in text.splitlines() if line.startswith("#   steps")]
    assert schedule_lines == [
        "#   steps  0-20  trial a  optim.lr_g=0.0002  optim.beta1=0.5",
        "#   steps 20-40  trial b  optim.lr_g=0.00024  optim.beta1=0.9",
    ]
    assert len(read_exploits(search_dir)) == 2


def test_best_samples_are_the_best_steps_grid(search):
    from distgan.tune.results import write_results

    search_dir, spec, rows = search
    write_results(rows, spec, search_dir)
    (only,) = (search_dir / "best_samples").iterdir()
    assert only.name == "step_000040.png"
    assert only.read_bytes() == (search_dir / "trials/b/samples/step_000040.png").read_bytes()


def test_best_samples_without_a_grid_of_that_step_come_from_best(search):
    from distgan.tune.results import write_best_samples

    search_dir, _, _ = search
    trial = search_dir / "trials" / "b"
    (trial / "samples" / "step_000040.png").unlink()
    path = write_best_samples(trial, 40, search_dir / "best_samples")
    G, job, _, _ = load_generator(trial / "best")
    # The training loop's grid latents: 64 draws seeded train.seed.
    z = torch.randn(64, job.model.z_dim, generator=torch.Generator().manual_seed(job.train.seed))
    with torch.no_grad():
        expected = grid(to_uint8(G(z)))
    np.testing.assert_array_equal(np.asarray(Image.open(path))[:, :, None], expected)
    assert write_best_samples(trial, 30, search_dir / "best_samples") is None  # no grid, no best/


def test_sample_uses_best_when_a_trial_folder_has_no_other_checkpoint(search, tmp_path):
    search_dir, spec, _ = search
    trial = search_dir / "trials" / "b"
    assert resolve_checkpoint(trial) == trial / "best"
    out = tmp_path / "x.npy"
    assert main(["sample", str(trial), "--n", "5", "--out", str(out)]) == 0
    G, job, _, _ = load_generator(trial / "best")
    np.testing.assert_array_equal(np.load(out), to_uint8(generate(G, job.model.z_dim, 5, 0)))

    # A run directory with checkpoints of its own still gives its latest one.
    folder = trial / "checkpoints" / "step_0000060"
    folder.mkdir(parents=True)
    ckpts.save(checkpoint(spec, 60, math.nan), folder)
    assert resolve_checkpoint(trial) == trial / "checkpoints" / "step_0000060"
