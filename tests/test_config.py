"""The JobSpec: job files written under tmp_path, loaded with ``load_job`` and through the CLI.

Every error test checks the message a user reads: the file (or the ``--set`` item), the dotted
field and the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from distgan.cli import main
from distgan.config import dump_yaml, load_job, load_resolved
from distgan.errors import JobError
from distgan.specs import JobSpec, OptimSpec, RunSpec
from distgan.train.outputs import write_resolved

REPO = Path(__file__).resolve().parents[1]
SHIPPED_JOBS = sorted((REPO / "jobs").glob("*.yaml"))


def write_job(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def job_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(JobError) as info:
        load_job(path, list(overrides))
    return str(info.value)


# --- loading -------------------------------------------------------------------------------


def test_one_section_gives_the_defaults_and_the_stem_as_name(tmp_path):
    spec = load_job(write_job(tmp_path, "data: {source: embedded}\n", name="tiny_run.yaml"))
    assert spec == JobSpec(run=RunSpec(name="tiny_run"))
    assert spec.model.arch == "dcgan"
    assert spec.model.z_dim == 100
    assert spec.loss.kind == "nonsaturating"
    assert spec.optim.lr_g == 2e-4 and spec.optim.lr_d == 2e-4
    assert spec.optim.beta1 == 0.5 and spec.optim.n_critic == 1
    assert spec.train.steps == 2000 and spec.train.batch_size == 64
    assert spec.scale.workers == 2
    assert spec.run.root == "runs"


def test_partial_section_keeps_the_other_defaults(tmp_path):
    spec = load_job(write_job(tmp_path, "optim:\n  lr_d: 0.001\nrun:\n  name: mine\n"))
    assert spec.optim == OptimSpec(lr_d=0.001)
    assert spec.run.name == "mine"


def test_the_jobs_folder_ships_jobs():
    assert {p.stem for p in SHIPPED_JOBS} >= {"quickstart", "seed_mlp_gan", "fashion_dcgan"}


@pytest.mark.parametrize("path", SHIPPED_JOBS, ids=lambda p: p.name)
def test_every_shipped_job_loads_with_its_values(path):
    spec = load_job(path)
    assert spec.run.name == path.stem
    loaded = dataclasses.asdict(spec)
    for section, fields in yaml.safe_load(path.read_text()).items():
        for name, value in fields.items():
            assert loaded[section][name] == pytest.approx(value), f"{section}.{name}"


def test_exponent_written_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 (PyYAML) reads 2e-4 as the string '2e-4'; the JobSpec takes it as a number.
    assert yaml.safe_load("x: 2e-4")["x"] == "2e-4"
    spec = load_job(write_job(tmp_path, "optim:\n  lr_g: 2e-4\n  lr_d: 5E-3\n"))
    assert spec.optim.lr_g == 0.0002 and isinstance(spec.optim.lr_g, float)
    assert spec.optim.lr_d == 0.005


def test_whole_float_is_accepted_for_an_integer_field(tmp_path):
    spec = load_job(write_job(tmp_path, "train:\n  steps: 10.0\n"))
    assert spec.train.steps == 10 and isinstance(spec.train.steps, int)


def test_missing_job_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = job_error(path)
    assert message.startswith(f"{path}: ")
    assert "no such job file" in message


def test_file_that_is_not_a_mapping(tmp_path):
    path = write_job(tmp_path, "- optim\n- model\n")
    message = job_error(path)
    assert message.startswith(f"{path}: ")
    assert "mapping" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write_job(tmp_path, "model:\n  arch: mlp\noptim:\n  lr_g: 1e-4\n   lr_d: 2\n")
    message = job_error(path)
    assert message.startswith(f"{path}: line 5, ")
    assert "fix the YAML syntax" in message


# --- unknown keys --------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest(tmp_path):
    path = write_job(tmp_path, "optim:\n  lr_gg: 1\n")
    message = job_error(path)
    assert message.startswith(f"{path}: optim.lr_gg: unknown key")
    assert "did you mean 'lr_g'?" in message


def test_unknown_section_suggests_the_closest(tmp_path):
    path = write_job(tmp_path, "optimizer:\n  lr_g: 1\n")
    message = job_error(path)
    assert message.startswith(f"{path}: optimizer: unknown key")
    assert "did you mean 'optim'?" in message


def test_unknown_section_with_nothing_close_lists_the_sections(tmp_path):
    message = job_error(write_job(tmp_path, "zzz: {}\n"))
    assert "known keys: data, model, loss, optim, train, scale, eval, guard, tune, run" in message


def test_section_that_is_not_a_mapping(tmp_path):
    path = write_job(tmp_path, "optim: 3\n")
    message = job_error(path)
    assert message.startswith(f"{path}: optim: expected a mapping")


# --- types and ranges ----------------------------------------------------------------------


def test_wrong_type_names_file_field_and_expectation(tmp_path):
    path = write_job(tmp_path, "optim:\n  lr_g: fast\n")
    assert job_error(path) == f"{path}: optim.lr_g: expected a positive number, got 'fast'"


@pytest.mark.parametrize(
    "text, field, expected",
    [
        ("train:\n  steps: -5\n", "train.steps", "expected a number of at least 1, got -5"),
        ("train:\n  steps: 0\n", "train.steps", "expected a number of at least 1, got 0"),
        ("train:\n  steps: 2.5\n", "train.steps", "expected an integer, got 2.5"),
        ("optim:\n  beta1: 1.5\n", "optim.beta1", "expected a number of at most 0.999999"),
        ("optim:\n  lr_d: 0\n", "optim.lr_d", "expected a positive number, got 0"),
        ("loss:\n  clip: -0.1\n", "loss.clip", "expected a positive number"),
        ("model:\n  z_dim: 0\n", "model.z_dim", "expected a number of at least 1"),
        ("run:\n  name: 12\n", "run.name", "expected a string, got 12"),
    ],
    ids=[
        "steps-negative",
        "steps-zero",
        "steps-fraction",
        "beta1",
        "lr_d-zero",
        "clip",
        "z_dim",
        "name",
    ],
)
def test_out_of_range_values(tmp_path, text, field, expected):
    path = write_job(tmp_path, text)
    message = job_error(path)
    assert message.startswith(f"{path}: {field}: ")
    assert expected in message


def test_bad_choice_suggests_the_closest(tmp_path):
    path = write_job(tmp_path, "loss:\n  kind: hindge\n")
    message = job_error(path)
    assert message.startswith(f"{path}: loss.kind: 'hindge' is not one of ")
    assert "did you mean 'hinge'?" in message


@pytest.mark.parametrize(
    "text, field",
    [
        ("train:\n  steps: true\n", "train.steps"),
        ("optim:\n  lr_g: yes\n", "optim.lr_g"),
        ("loss:\n  gp_weight: false\n", "loss.gp_weight"),
    ],
    ids=["int", "float-yes", "float-false"],
)
def test_booleans_are_not_numbers(tmp_path, text, field):
    path = write_job(tmp_path, text)
    assert job_error(path).startswith(f"{path}: {field}: expected ")


@pytest.mark.parametrize("value", ["'false'", "0", "1"])
def test_only_booleans_are_booleans(tmp_path, value):
    path = write_job(tmp_path, f"train:\n  ema: {value}\n")
    assert job_error(path).startswith(f"{path}: train.ema: expected true or false")


@pytest.mark.parametrize(
    "text, field",
    [
        ("train:\n  steps: .inf\n", "train.steps"),
        ("train:\n  steps: .nan\n", "train.steps"),
        ("optim:\n  lr_g: .inf\n", "optim.lr_g"),
        ("loss:\n  gp_weight: .nan\n", "loss.gp_weight"),
    ],
    ids=["int-inf", "int-nan", "float-inf", "float-nan"],
)
def test_non_finite_numbers_are_rejected(tmp_path, text, field):
    path = write_job(tmp_path, text)
    assert job_error(path).startswith(f"{path}: {field}: expected ")


# --- cross-field checks --------------------------------------------------------------------


def test_batch_must_split_evenly_across_workers(tmp_path):
    path = write_job(tmp_path, "train:\n  batch_size: 10\nscale:\n  workers: 4\n")
    message = job_error(path)
    assert message.startswith(f"{path}: train.batch_size: 10 does not split evenly")
    assert "use a multiple of 4" in message


def test_cross_field_error_from_an_override_names_the_override(tmp_path):
    path = write_job(tmp_path, "scale:\n  workers: 4\n")
    message = job_error(path, ("train.batch_size=10",))
    assert message.startswith("--set train.batch_size=10: train.batch_size: ")


def test_fp16_needs_a_gpu(tmp_path):
    path = write_job(tmp_path, "train:\n  precision: fp16\n")
    assert job_error(path).startswith(f"{path}: train.precision: fp16 needs a GPU")
    spec = load_job(path, ["scale.use_gpu=true"])
    assert spec.train.precision == "fp16" and spec.scale.use_gpu is True


# --- --set overrides -----------------------------------------------------------------------


def test_overrides_are_typed_through_yaml_and_win_over_the_file(tmp_path):
    path = write_job(tmp_path, "train:\n  steps: 500\n  ema: true\n")
    spec = load_job(
        path, ["train.steps=10", "train.ema=false", "optim.lr_g=1e-4", "model.arch=mlp"]
    )
    assert spec.train.steps == 10 and isinstance(spec.train.steps, int)
    assert spec.train.ema is False
    assert spec.optim.lr_g == 0.0001
    assert spec.model.arch == "mlp"


def test_later_override_of_the_same_key_wins(tmp_path):
    spec = load_job(
        write_job(tmp_path, "data: {source: embedded}\n"), ["train.steps=3", "train.steps=4"]
    )
    assert spec.train.steps == 4


def test_bad_override_message_starts_with_the_override(tmp_path):
    message = job_error(write_job(tmp_path, "data: {source: embedded}\n"), ("optim.lr_g=fast",))
    assert message.startswith("--set optim.lr_g=fast: optim.lr_g: expected ")


def test_unknown_override_key_suggests_the_closest(tmp_path):
    message = job_error(write_job(tmp_path, "data: {source: embedded}\n"), ("optim.lr_gg=1",))
    assert message.startswith("--set optim.lr_gg=1: optim.lr_gg: unknown key")
    assert "did you mean 'lr_g'?" in message


def test_unknown_override_section_names_the_override(tmp_path):
    message = job_error(write_job(tmp_path, "data: {source: embedded}\n"), ("optimm.lr_g=1",))
    assert message.startswith("--set optimm.lr_g=1: optimm: unknown key")
    assert "did you mean 'optim'?" in message


def test_override_without_equals_explains_key_value(tmp_path):
    message = job_error(write_job(tmp_path, "data: {source: embedded}\n"), ("foo",))
    assert message.startswith("--set foo: expected KEY=VALUE")


def test_override_without_section_explains_section_field(tmp_path):
    message = job_error(write_job(tmp_path, "data: {source: embedded}\n"), ("steps=3",))
    assert message.startswith("--set steps=3: expected SECTION.FIELD")


# --- resolved jobs -------------------------------------------------------------------------


def test_resolved_yaml_round_trips_to_an_equal_spec(tmp_path):
    path = write_job(tmp_path, "model:\n  arch: mlp\nrun:\n  name: '007'\n")
    spec = load_job(
        path, ["optim.lr_g=1e-5", "loss.kind=wgan-gp", "train.ema=false", "data.source=d/x"]
    )
    assert load_resolved(dump_yaml(spec), "inline") == spec
    write_resolved(spec, tmp_path)
    written = tmp_path / "job.resolved.yaml"
    again = load_resolved(written.read_text(), str(written))
    assert again == spec
    assert again.run.name == "007" and again.optim.lr_g == 1e-5


def test_resolved_job_is_validated_too(tmp_path):
    with pytest.raises(JobError, match=r"^ckpt: optim.lr_g: expected a positive number"):
        load_resolved("optim:\n  lr_g: -1\n", "ckpt")


def test_spec_is_frozen(tmp_path):
    spec = load_job(write_job(tmp_path, "data: {source: embedded}\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.optim.lr_g = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.optim = OptimSpec()


# --- the CLI -------------------------------------------------------------------------------


def test_cli_dry_run_prints_the_resolved_job(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path, "model:\n  arch: mlp\n", name="dry.yaml")
    code = main(
        ["train", str(path), "--dry-run", "--set", "train.steps=7", "--set", "optim.lr_g=1e-4"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    printed = yaml.safe_load(out)
    assert printed["train"]["steps"] == 7
    assert printed["optim"]["lr_g"] == 0.0001
    assert printed["model"]["arch"] == "mlp"
    assert printed["run"]["name"] == "dry"
    assert not (tmp_path / "runs").exists()


def test_cli_bad_job_prints_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path, "optim:\n  lr_gg: 1\n", name="broken_job.yaml")
    assert main(["train", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "broken_job.yaml" in lines[0] and "lr_g" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_cli_bad_override_prints_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path, "data: {source: embedded}\n")
    assert main(["train", str(path), "--dry-run", "--set", "optim.lr_g=fast"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: --set optim.lr_g=fast: ")


def test_cli_unknown_flag_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path, "data: {source: embedded}\n")
    with pytest.raises(SystemExit) as info:
        main(["train", str(path), "--bogus"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "--bogus" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_cli_without_a_verb_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("distgan: ")


# --- run.name: one folder name -------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/b", "../up", "..", ".", "/abs", "a\\b", "my run", "x\ty"])
def test_run_name_must_be_one_folder_name(tmp_path, name):
    path = write_job(tmp_path, yaml.safe_dump({"run": {"name": name}}))
    message = job_error(path)
    assert message.startswith(f"{path}: run.name: {name!r} is not a single folder name")
    assert "letters, digits, '.', '_' and '-'" in message and "\n" not in message


def test_run_name_from_an_override_names_the_override(tmp_path):
    path = write_job(tmp_path, "run: {name: fine}\n")
    message = job_error(path, ("run.name=a/b",))
    assert message.startswith("--set run.name=a/b: run.name: 'a/b' ")
    assert message.endswith("e.g. run.name: a-b")


def test_safe_run_names_load_and_a_stem_is_made_one(tmp_path):
    for name in ("run-1.a_B", "x..y", ".hidden"):
        assert load_job(write_job(tmp_path, f"run: {{name: '{name}'}}\n")).run.name == name
    path = write_job(tmp_path, "data: {source: embedded}\n", name="my job (copy).yaml")
    assert load_job(path).run.name == "my-job-copy"


def test_a_resolved_run_of_an_older_name_still_loads(tmp_path):
    text = dump_yaml(dataclasses.replace(JobSpec(), run=RunSpec(name="old run")))
    assert load_resolved(text, "job.resolved.yaml").run.name == "old run"


def test_cli_train_refuses_a_run_name_with_a_slash_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path, "data: {source: embedded}\nrun: {name: a/b}\n")
    assert main(["train", str(path), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        f"error: {path}: run.name: 'a/b' is not a single folder name; use letters, digits, "
        "'.', '_' and '-' only (no '/', no spaces), e.g. run.name: a-b"
    ]
    assert not (tmp_path / "runs").exists()
