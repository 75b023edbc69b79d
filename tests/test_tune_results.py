"""A search's bookkeeping without Ray: what an exploit records, the progress lines, results.csv,
the schedule in best.yaml, best_samples/ of the best step, written into a folder, a file:// URI
or an S3 bucket, and `distgan sample` on a trial folder."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.cli import main
from distgan.config import dump_yaml, from_dict, parse_job
from distgan.generators import load_generator, resolve_checkpoint
from distgan.images import grid, grid_png, to_uint8
from distgan.models import generate
from distgan.storage import Location, LogFile, open_location
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state
from distgan.train.outputs import RunOutputs
from distgan.tune.exploits import (
    exploit_record,
    format_schedule,
    progress_lines,
    read_exploits,
    record_exploit,
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


CPU = torch.device("cpu")


def checkpoint(spec, step: int, fid: float) -> dict:
    """A real snapshot of ``spec``'s models at ``step``, its G_ema drawn from seed ``step``."""
    state = build_state(replace(spec, train=replace(spec.train, seed=step)), (1, 28, 28), CPU)
    state.step = step
    return ckpts.snapshot(state, dump_yaml(spec), [ckpts.rng_state()], {"fid": fid, "step": step})


def plain_grid(value: int) -> bytes:
    return grid_png(np.full((4, 1, 28, 28), value, np.uint8))


# Where the search lives: a folder, its file:// URI, and a bucket of the S3 server (tests/s3.py),
# all through the same storage code.
STORAGES = ["path", "file-uri", "s3"]


@pytest.fixture
def search(request, tmp_path) -> tuple[Location, object, list]:
    """A PBT search whose winner b took a's state at step 20 and was perturbed again at 50,
    after its best step (40): best/ holds its state of step 40 and the values it had then."""
    from distgan.tune.results import TrialRow

    kind = getattr(request, "param", "path")
    if kind == "s3":
        s3 = request.getfixturevalue("s3_env")
        s3.create_bucket("searches")
        home = s3.uri("searches", tmp_path.name)
    else:
        home = f"file://{tmp_path}/runs" if kind == "file-uri" else str(tmp_path / "runs")
    search_dir = open_location(home, field="run.storage").child("00000-pbt-tune")
    spec = from_dict(pbt_job(tmp_path))
    at_best = from_dict(pbt_job(tmp_path, lr_g=2.4e-4, beta1=0.9))
    trial = search_dir.child("trials", "b")
    for step in (20, 40, 60):
        trial.write_bytes(f"samples/step_{step:06d}.png", plain_grid(step))
    with RunOutputs(trial) as outputs:
        assert outputs.update_best(checkpoint(at_best, 40, 11.0), "fid", higher_is_better=False)
    # Written in another order than they happened: they are read by step.
    record_exploit(
        search_dir, exploit_record("b", "a", 50, spec, from_dict(pbt_job(tmp_path, lr_g=3e-4)))
    )
    record_exploit(search_dir, exploit_record("b", "a", 20, spec, at_best))
    last = {"optim.lr_g": 3e-4, "optim.beta1": 0.5}
    rows = [TrialRow("b", "done", last, 11.0, 40, 60), TrialRow("a", "done", {}, 15.0, 60, 60)]
    return search_dir, spec, rows


def test_exploits_of_one_step_by_two_clones_are_both_kept(tmp_path):
    # PBT clones several trials at one perturbation, in processes on different nodes: each
    # record is a file of its own, so none overwrites another (object stores cannot append).
    search_dir = open_location(f"file://{tmp_path}/s", field="run.storage")
    spec = from_dict(pbt_job(tmp_path))
    for trial in ("c", "b"):
        record_exploit(search_dir, exploit_record(trial, "a", 40, spec, spec))
    record_exploit(search_dir, exploit_record("b", "c", 20, spec, spec))
    assert [(e["step"], e["trial"]) for e in read_exploits(search_dir)] == [
        (20, "b"), (40, "b"), (40, "c"),
    ]  # fmt: skip
    assert read_exploits(open_location(tmp_path / "none", field="run.storage")) == []


def test_a_log_file_in_storage_is_written_whole_at_each_flush(tmp_path):
    run = open_location(f"file://{tmp_path}/run", field="run.storage")
    log = LogFile(run, "progress.log")
    print("step 10", file=log)
    assert not run.exists("progress.log")  # nothing before the flush
    print("step 20", file=log, flush=True)
    assert run.read_text("progress.log") == "step 10\nstep 20\n"
    again = LogFile(run, "progress.log")  # a trial started again goes on after its lines
    print("step 30", file=again, flush=True)
    assert run.read_text("progress.log") == "step 10\nstep 20\nstep 30\n"


@pytest.mark.parametrize("search", STORAGES, indirect=True)
def test_best_yaml_is_a_job_of_the_best_steps_values_with_its_schedule(search):
    from distgan.tune.results import write_results

    search_dir, spec, rows = search
    written = write_results(rows, spec, search_dir)
    assert written == search_dir.child("best.yaml").uri
    text = search_dir.read_text("best.yaml")
    # Still a job distgan train accepts: the schedule is a comment.
    best = parse_job(text.encode(), written)
    assert (best.optim.lr_g, best.optim.beta1) == (2.4e-4, 0.9)  # those of step 40, not 60's
    assert best.tune.space == {}
    assert "# fid 11 at step 40, with optim.lr_g=0.00024, optim.beta1=0.9" in text
    schedule_lines = [line for line in text.splitlines() if line.startswith("#   steps")]
    assert schedule_lines == [
        "#   steps  0-20  trial a  optim.lr_g=0.0002  optim.beta1=0.5",
        "#   steps 20-40  trial b  optim.lr_g=0.00024  optim.beta1=0.9",
    ]
    assert len(read_exploits(search_dir)) == 2
    results = list(csv.DictReader(io.StringIO(search_dir.read_text("results.csv"))))
    assert [(r["trial_id"], r["best_fid"], r["best_step"]) for r in results] == [
        ("b", "11.0", "40"), ("a", "15.0", "60"),
    ]  # fmt: skip


@pytest.mark.parametrize("search", STORAGES, indirect=True)
def test_best_samples_are_the_best_steps_grid(search):
    from distgan.tune.results import write_results

    search_dir, spec, rows = search
    search_dir.write_bytes("best_samples/step_000060.png", b"an earlier search's")
    write_results(rows, spec, search_dir)
    assert search_dir.list("best_samples") == ["step_000040.png"]
    copied = search_dir.read_bytes("best_samples/step_000040.png")
    assert copied == search_dir.read_bytes("trials/b/samples/step_000040.png")


@pytest.mark.parametrize("search", STORAGES, indirect=True)
def test_best_samples_without_a_grid_of_that_step_come_from_best(search):
    from distgan.tune.results import write_best_samples

    search_dir, _, _ = search
    trial = search_dir.child("trials", "b")
    trial.fs.delete_file(trial.child("samples", "step_000040.png").path)
    out = search_dir.child("best_samples")
    written = write_best_samples(trial, 40, out)
    assert written == out.child("step_000040.png").uri
    G, job, _, _ = load_generator(trial.child("best").uri)
    # The training loop's grid latents: 64 draws seeded train.seed.
    z = torch.randn(64, job.model.z_dim, generator=torch.Generator().manual_seed(job.train.seed))
    with torch.no_grad():
        expected = grid(to_uint8(G(z)))
    image = Image.open(io.BytesIO(out.read_bytes("step_000040.png")))
    np.testing.assert_array_equal(np.asarray(image)[:, :, None], expected)
    assert write_best_samples(trial, 30, out) is None  # no grid, no best/
    assert out.list() == []


def test_sample_uses_best_when_a_trial_folder_has_no_other_checkpoint(search, tmp_path):
    search_dir, spec, _ = search
    trial = Path(search_dir.child("trials", "b").path)
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


def test_a_search_in_storage_is_resumed_by_its_uri(tmp_path, capsys):
    from distgan.submit import prepare

    spec = from_dict(pbt_job(tmp_path))
    search_dir = open_location(f"file://{tmp_path}/runs/00000-pbt-tune", field="run.storage")
    search_dir.write_text("job.resolved.yaml", dump_yaml(spec))
    search_dir.write_text("tune/tuner.pkl", "Tune's state")
    # Submitted, it runs `distgan tune --resume` on the cluster (a run's goes to train).
    job = prepare(None, [], resume=f"file://{search_dir.path}")
    assert job.entrypoint.startswith("python -m distgan.cli tune --resume file://")
    run = open_location(tmp_path / "runs" / "00001-pbt", field="run.storage")
    run.write_text("job.resolved.yaml", dump_yaml(spec))
    assert prepare(None, [], resume=run.uri).entrypoint.startswith("python -m distgan.cli train")

    # `distgan tune --resume URI` reads the search's own job there, and refuses another one
    # before Ray starts; a URI that holds no search is one line.
    argv = ["tune", "--resume", f"file://{search_dir.path}", "--set", "optim.lr_d=1e-3"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "differs from the search being resumed" in line
    assert main(["tune", "--resume", f"file://{tmp_path}/elsewhere"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not a distgan search directory (no job.resolved.yaml)" in line
