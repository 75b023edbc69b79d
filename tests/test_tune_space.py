"""The ``tune`` section of a job: search expressions, their checks, and what a trial gets. No Ray.

Every error test checks the line a user reads: the file, ``tune.space.<key>`` and the fix.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from distgan.cli import main
from distgan.config import dump_yaml, load_job, load_resolved
from distgan.errors import JobError
from distgan.search_space import Domain, parse_space
from distgan.specs import TuneSpec
from distgan.tune.search import build_scheduler, check_search, search_mode
from distgan.tune.space import trial_spec

REPO = Path(__file__).resolve().parents[1]


def job(tmp_path: Path, space: str, extra: str = "", name: str = "search.yaml") -> Path:
    lines = "".join(f"    {line}\n" for line in textwrap.dedent(space).strip().splitlines())
    path = tmp_path / name
    path.write_text(f"eval:\n  every: 20\n{extra}tune:\n  space:\n{lines}")
    return path


def error(path: Path) -> str:
    with pytest.raises(JobError) as info:
        load_job(path)
    return str(info.value)


def test_every_kind_parses_into_checked_values(tmp_path):
    path = job(
        tmp_path,
        """
        optim.lr_g: loguniform(1e-5, 1e-3)
        optim.beta1: uniform(0.0, 0.9)
        model.arch: choice([mlp, dcgan])
        model.width: grid([16, 32])
        optim.n_critic: randint(1, 3)
        loss.kind: choice([nonsaturating, hinge, lsgan])
        optim.lr_decay: choice([none, cosine])
        """,
    )
    spec = load_job(path)
    domains = parse_space(spec, str(path))
    assert domains == {
        "optim.lr_g": Domain("loguniform", (1e-5, 1e-3)),  # YAML's "1e-5" string read as a number
        "optim.beta1": Domain("uniform", (0.0, 0.9)),
        "model.arch": Domain("choice", ("mlp", "dcgan")),
        "model.width": Domain("grid", (16, 32)),
        "optim.n_critic": Domain("randint", (1, 3)),
        "loss.kind": Domain("choice", ("nonsaturating", "hinge", "lsgan")),
        "optim.lr_decay": Domain("choice", ("none", "cosine")),
    }
    # The base values are untouched: `distgan train` on this job trains them.
    assert spec.optim.lr_g == 2e-4 and spec.model.arch == "dcgan"


BAD_SPACES = [
    ("optim.lr_gg: loguniform(1e-5, 1e-3)",
     "tune.space.optim.lr_gg: unknown key; did you mean 'optim.lr_g'?"),
    ("optim.lr_g: loguniform(1e-3, 1e-5)",
     "tune.space.optim.lr_g: low 0.001 is not below high 1e-05"),
    ("optim.n_critic: randint(3, 1)", "tune.space.optim.n_critic: low 3 is not below high 1"),
    ("model.arch: choice([])", "tune.space.model.arch: choice([]) is empty"),
    ("model.width: grid([])", "tune.space.model.width: grid([]) is empty"),
    ("model.arch: choice([mlp, biggan])",
     "tune.space.model.arch: 'biggan' is not one of mlp, dcgan, resnet"),
    ("optim.lr_g: uniform(-1e-3, 1e-3)",
     "tune.space.optim.lr_g: expected a positive number, got '-1e-3'"),
    ("optim.beta1: loguniform(0, 0.9)", "tune.space.optim.beta1: loguniform needs low > 0"),
    ("model.width: uniform(16, 64)",
     "tune.space.model.width: uniform gives real numbers; use randint or choice"),
    ("optim.lr_g: lognormal(1, 2)",
     "tune.space.optim.lr_g: unknown distribution 'lognormal'; did you mean 'loguniform'?"),
    ("optim.lr_g: 0.001",
     "tune.space.optim.lr_g: expected an expression, for example loguniform"),
    ("optim.lr_g: choice(1e-4, 2e-4)",
     "tune.space.optim.lr_g: choice takes one list, e.g. choice([32, 64])"),
    ("optim.lr_g: uniform(1e-4)",
     "tune.space.optim.lr_g: uniform takes two numbers, uniform(low, high)"),
    ("scale.workers: choice([1, 2])",
     "tune.space.scale.workers: scale cannot be searched (every trial uses the job's own scale"),
    ("train.ema: choice([maybe, false])",
     "tune.space.train.ema: expected true or false, got 'maybe'"),
]  # fmt: skip


@pytest.mark.parametrize("line, expected", BAD_SPACES)
def test_a_bad_space_is_rejected_when_the_job_loads(tmp_path, line, expected):
    path = job(tmp_path, line)
    message = error(path)
    assert message.startswith(f"{path}: {expected}")
    assert "\n" not in message


def test_the_cli_rejects_a_bad_space_with_one_line_and_exit_2(tmp_path, capsys):
    path = job(
        tmp_path, "optim.lr_g: loguniform(1e-3, 1e-5)", extra=f"run:\n  root: {tmp_path}/runs\n"
    )
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: tune.space.optim.lr_g: low 0.001 is not below high 1e-05; " \
        "write loguniform(low, high) with low < high\n"  # fmt: skip
    assert not (tmp_path / "runs").exists()  # nothing started


def test_search_level_checks_name_the_field(tmp_path):
    no_eval = tmp_path / "no_eval.yaml"
    no_eval.write_text("tune:\n  space:\n    optim.lr_g: loguniform(1e-5, 1e-3)\n")
    with pytest.raises(JobError, match=r"no_eval.yaml: eval.every: 0, so trials never measure"):
        check_search(load_job(no_eval), str(no_eval))

    pbt_arch = job(tmp_path, "model.arch: choice([mlp, dcgan])", "", "pbt.yaml")
    spec = load_job(pbt_arch, ["tune.scheduler=pbt", "tune.max_concurrent_trials=0"])
    with pytest.raises(JobError, match=r"tune.space: pbt perturbs optim.\* keys and none"):
        check_search(spec, str(pbt_arch))

    pbt_lr = job(tmp_path, "optim.lr_g: loguniform(1e-5, 1e-3)", "", "pbt_lr.yaml")
    spec = load_job(pbt_lr, ["tune.scheduler=pbt"])  # max_concurrent_trials stays 1
    with pytest.raises(JobError, match=r"tune.max_concurrent_trials: pbt clones trials that run"):
        check_search(spec, str(pbt_lr))

    empty = tmp_path / "empty.yaml"
    empty.write_text("eval:\n  every: 10\n")
    with pytest.raises(JobError, match=r"empty.yaml: tune.space: empty"):
        check_search(load_job(empty), str(empty))


def test_a_trial_gets_the_job_with_its_values_and_the_schedulers_count_steps(tmp_path):
    path = job(tmp_path, "optim.lr_g: loguniform(1e-5, 1e-3)\nmodel.arch: choice([mlp, dcgan])",
               extra="train:\n  steps: 300\n")  # fmt: skip
    spec = load_job(path, ["tune.scheduler=asha", "tune.grace_period=40"])
    trial = trial_spec(spec, {"optim.lr_g": 3e-4, "model.arch": "mlp"}, "trial x")
    assert trial.optim.lr_g == 3e-4 and trial.model.arch == "mlp"
    assert trial.optim.lr_d == spec.optim.lr_d and trial.train == spec.train
    assert search_mode(spec) == "min"  # FID: lower is better
    asha = build_scheduler(spec)
    assert (asha._time_attr, asha._max_t) == ("step", 300)
    assert [b._rungs for b in asha._brackets][0][-1][0] == 40  # the first rung: grace_period

    pbt = load_job(path, ["tune.scheduler=pbt", "tune.max_concurrent_trials=0"])
    scheduler = build_scheduler(pbt)
    assert scheduler._perturbation_interval == 40  # 2 × eval.every
    assert list(scheduler._hyperparam_mutations) == ["optim.lr_g"]  # arch is never perturbed


def test_old_jobs_and_resolved_files_without_tune_still_load(tmp_path):
    spec = load_job(REPO / "jobs" / "quickstart.yaml")
    assert spec.tune == TuneSpec()
    text = dump_yaml(spec).split("tune:")[0] + "run:\n  name: old\n  root: runs\n"
    assert load_resolved(text, "old/job.resolved.yaml").tune == TuneSpec()
    searched = job(tmp_path, "optim.lr_g: loguniform(1e-5, 1e-3)")
    again = load_resolved(dump_yaml(load_job(searched)), "x/job.resolved.yaml")
    assert again.tune.space == {"optim.lr_g": "loguniform(1e-5, 1e-3)"}


@pytest.mark.parametrize("name", ["tune_quickstart.yaml", "tune_fashion_pbt.yaml"])
def test_shipped_search_jobs_pass_every_check(name):
    path = REPO / "jobs" / name
    spec = load_job(path)
    check_search(spec, str(path))
    assert spec.tune.space
