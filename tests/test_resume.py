"""What ``distgan train --resume`` refuses before it starts: a resume that would train nothing
(its time budget spent, or train.steps reached) and a search folder, each in one line naming the
fix, exit 2, nothing written. (Resumes that run are test_faults.py's and test_signals.py's.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_runs import train_run

from distgan.cli import main
from distgan.progress import duration
from distgan.train import checkpoint as ckpts


def files_of(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def timed_out(tmp_path_factory) -> Path:
    """A run on the embedded data's shape that its train.max_minutes (0.3 s) ended early."""
    root = tmp_path_factory.mktemp("runs")
    return train_run(
        root, data={"source": "embedded"}, train={"max_minutes": 0.005, "steps": 10_000}
    )


def test_a_resume_whose_time_is_spent_says_so_and_names_the_override(timed_out, capsys):
    ckpt = ckpts.load(ckpts.latest(timed_out))
    assert 0 < ckpt["step"] < 10_000  # ended by its time limit
    trained = ckpt["metrics"]["elapsed_s"]
    before = files_of(timed_out)
    assert main(["train", "--resume", str(timed_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"error: {timed_out}: train.max_minutes=0.005 is spent: the run has trained for "
        f"{duration(trained)} (the limit counts every part of the run); resume with --set "
        "train.max_minutes="
        f"{round(trained / 60 + 0.005, 2):g} (0.005 more minutes), or 0 for no limit"
    )
    assert files_of(timed_out) == before  # nothing written: no lease, no status, no report

    # The override it names lets the resume through every check (a dry run: no Ray).
    more = ["--set", "train.max_minutes=1"]
    assert main(["train", "--resume", str(timed_out), *more, "--dry-run"]) == 0
    assert "max_minutes: 1.0" in capsys.readouterr().out
    assert main(["train", "--resume", str(timed_out), "--dry-run"]) == 2  # a dry run checks it
    assert "is spent" in capsys.readouterr().err


def test_a_resume_at_train_steps_already_says_so(timed_out, capsys):
    step = ckpts.load(ckpts.latest(timed_out))["step"]
    argv = ["train", "--resume", str(timed_out), "--set", "train.max_minutes=0", "--dry-run"]
    assert main([*argv, "--set", f"train.steps={step}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"error: {timed_out}: train.steps is {step:,} and the run is at step {step:,} already; "
        f"resume with more, e.g. --set train.steps={2 * step}"
    )
    assert main([*argv, "--set", f"train.steps={step + 1}"]) == 0


def test_resuming_a_search_folder_points_to_tune_resume(tmp_path, capsys):
    search = tmp_path / "00000-x-tune"
    (search / "trials").mkdir(parents=True)
    job = "data: {source: embedded}\ntune: {space: {optim.lr_g: 'loguniform(1e-4, 1e-3)'}}\n"
    (search / "job.resolved.yaml").write_text(job)
    assert main(["train", "--resume", str(search)]) == 2
    assert capsys.readouterr().err == (
        f"error: {search}: a search (distgan tune's), not a run; continue it with: distgan tune "
        f"--resume {search}\n"
    )
