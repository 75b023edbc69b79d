"""A user's own G and D (``model.arch: module:function``): found, recorded, rebuilt, refused.

The unit tests need no Ray: a job's record of its module (folder and sha256), the ways a module is
named (beside the job, a file path, a package on the Python path), a search's trials, the one-line
refusals of a module that is missing or has changed (``sample`` and ``train --resume`` through the
CLI, on a run directory written by the real checkpoint writer), and the README's example file,
which must also train. The builders that break the contract are in tests/bad_inputs/cases.yaml.
One Ray test trains the README's job through the CLI from another folder, samples it, and sees
``sample`` refuse once the module is edited.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.cli import main
from distgan.config import dump_yaml, load_job, load_resolved
from distgan.data import EMBEDDED_DIR, load_arrays, read_manifest
from distgan.errors import JobError
from distgan.models import generate, models_for_job
from distgan.submit import EXCLUDES, prepare
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state
from distgan.train.outputs import write_resolved
from distgan.tune.space import trial_spec
from distgan.upload import check_upload, shipped_files

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "jobs" / "mymodels.py"
SHAPE = (1, 28, 28)


def job_folder(tmp_path: Path, arch: str = "mymodels:tiny", extra: str = "") -> Path:
    """``tmp_path/jobs/``: the README's example module and a job naming ``arch``; returns the
    job file."""
    folder = tmp_path / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE, folder / "mymodels.py")
    job = folder / "own.yaml"
    job.write_text(
        f"model:\n  arch: {arch!r}\n  z_dim: 8\n  width: 4\n{extra}"
        f"train:\n  batch_size: 4\nrun:\n  root: {str(tmp_path / 'runs')!r}\n"
    )
    return job


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error(fn, *args) -> str:
    with pytest.raises(JobError) as info:
        fn(*args)
    return str(info.value)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory that is not the job's folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# --- the record --------------------------------------------------------------------------------


def test_a_job_records_the_folder_and_the_sha256_of_its_module(tmp_path, elsewhere):
    job = job_folder(tmp_path)
    spec = load_job(job)
    assert spec.model.arch_path == str(job.parent)
    assert spec.model.arch_sha256 == sha256(job.parent / "mymodels.py")
    # job.resolved.yaml holds the record, and a run rebuilt from it gets the same model.
    again = load_resolved(dump_yaml(spec), "job.resolved.yaml")
    assert again == spec
    G, D = models_for_job(again.model, SHAPE)
    assert type(G).__module__ == "mymodels" and G.num_classes == 0
    assert G(torch.randn(3, 8)).shape == (3, *SHAPE) and D(torch.randn(3, *SHAPE)).shape == (3,)
    # Imported from the bytes it hashed: nothing written beside the user's file.
    assert sorted(p.name for p in job.parent.iterdir()) == ["mymodels.py", "own.yaml"]


def test_a_file_path_is_relative_to_the_jobs_folder_and_may_import_its_neighbours(
    tmp_path, elsewhere
):
    nets = tmp_path / "jobs" / "nets"
    nets.mkdir(parents=True)
    (nets / "blocks.py").write_text("from torch import nn\nHIDDEN = 5\nLinear = nn.Linear\n")
    (nets / "gan.py").write_text(
        EXAMPLE.read_text() + "\n\nfrom blocks import HIDDEN\n\n\ndef five(z, w, shape, o):\n"
        "    return tiny(z, HIDDEN, shape, o)\n"
    )
    job = tmp_path / "jobs" / "own.yaml"
    job.write_text("model:\n  arch: nets/gan.py:five\n  z_dim: 8\n")
    spec = load_job(job)
    assert spec.model.arch_sha256 == sha256(nets / "gan.py")
    G, _ = models_for_job(spec.model, SHAPE)
    assert G.net[0].out_features == 2 * 5 * 7 * 7  # width 5, from the neighbour module


def test_a_package_on_the_python_path_is_imported_by_its_dotted_name(
    tmp_path, elsewhere, monkeypatch
):
    package = tmp_path / "site" / "mygans"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "small.py").write_text(EXAMPLE.read_text())
    (package / "models.py").write_text("from .small import tiny as build\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = load_job(job_folder(tmp_path, "mygans.models:build"))
    assert spec.model.arch_sha256 == sha256(package / "models.py")
    G, _ = models_for_job(spec.model, SHAPE)
    assert type(G).__module__ == "mygans.small"


def test_a_name_that_is_neither_registered_nor_a_reference_lists_both(tmp_path):
    for arch in ("dcgna", "mymodels:", "my models:tiny"):
        message = error(load_job, job_folder(tmp_path, arch))
        assert "model.arch: " in message
        assert "is not one of mlp, dcgan, resnet" in message
        assert "or a builder of your own as module:function, e.g. mymodels:tiny" in message


@pytest.mark.parametrize(
    "arch, says",
    [
        (
            "nosuch:tiny",
            "model.arch: nosuch:tiny: no module nosuch in {jobs} or on the Python path",
        ),
        ("nets/nosuch.py:tiny", "model.arch: nets/nosuch.py:tiny: no file {jobs}/nets/nosuch.py"),
        ("os:system", "model.arch: os:system: 'os' is a module of Python's standard library"),
    ],
)
def test_a_module_that_is_not_there_is_refused_when_the_job_loads(tmp_path, arch, says):
    job = job_folder(tmp_path, arch)
    message = error(load_job, job)
    assert message.startswith(f"{job}: {says.format(jobs=job.parent)}"), message


def test_a_pinned_sha256_refuses_another_file(tmp_path):
    job = job_folder(tmp_path, extra=f"  arch_sha256: {'ab' * 32}\n")
    message = error(load_job, job)
    assert message.startswith(f"{job}: model.arch_sha256: {job.parent / 'mymodels.py'} has sha256")
    assert "not the abababababab… the job pins" in message


def test_a_search_records_each_trials_own_module(tmp_path, elsewhere):
    space = "tune:\n  space:\n    model.arch: choice([dcgan, 'mymodels:tiny'])\n"
    job = job_folder(tmp_path, "dcgan", extra=space)
    base = load_job(job)
    assert (base.model.arch_path, base.model.arch_sha256) == (str(job.parent), "")
    trial = trial_spec(base, {"model.arch": "mymodels:tiny"}, "trial 1")
    assert trial.model.arch_sha256 == sha256(job.parent / "mymodels.py")
    back = trial_spec(trial, {"model.arch": "dcgan"}, "trial 2")
    assert back.model.arch_sha256 == ""
    # A choice whose module is missing fails when the job loads, not in a trial.
    missing = job_folder(tmp_path, "dcgan", extra=space.replace("mymodels:tiny", "gone:tiny"))
    assert "tune.space.model.arch: gone:tiny: no module gone" in error(load_job, missing)


def test_where_the_recorded_folder_is_gone_the_module_is_found_by_its_path_under_here(
    tmp_path, monkeypatch
):
    spec = load_job(job_folder(tmp_path / "laptop"))
    # The same files elsewhere (a cluster node's working_dir, a moved checkout).
    shutil.copytree(tmp_path / "laptop", tmp_path / "node")
    shutil.rmtree(tmp_path / "laptop")
    monkeypatch.chdir(tmp_path / "node")
    G, _ = models_for_job(spec.model, SHAPE)
    assert Path(type(G).__init__.__code__.co_filename) == tmp_path / "node" / "jobs" / "mymodels.py"


# --- rebuilt from a run --------------------------------------------------------------------------


def fake_run(tmp_path: Path) -> Path:
    """A run directory as `distgan train` leaves it (job.resolved.yaml and a checkpoint from the
    real writer) of the example model, trained on nothing."""
    spec = load_job(job_folder(tmp_path))
    run = tmp_path / "runs" / "00000-own"
    write_resolved(spec, run)
    state = build_state(spec, SHAPE, torch.device("cpu"))
    ckpt = ckpts.snapshot(state, dump_yaml(spec), [ckpts.rng_state()], {"step": 1.0})
    (run / "checkpoints" / "step_0000001").mkdir(parents=True)
    ckpts.save(ckpt, run / "checkpoints" / "step_0000001")
    return run


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert out == "" and line.startswith("error: ")
    return line.removeprefix("error: ")


def test_sample_and_resume_refuse_a_changed_module_in_one_line(tmp_path, elsewhere, capsys):
    run = fake_run(tmp_path)
    module = tmp_path / "jobs" / "mymodels.py"
    recorded = sha256(module)
    assert main(["sample", str(run), "--n", "4", "--out", "x.npy"]) == 0
    assert np.load("x.npy").shape == (4, *SHAPE)
    assert main(["train", "--resume", str(run), "--dry-run"]) == 0
    capsys.readouterr()

    module.write_text(module.read_text() + "# edited\n")
    now = sha256(module)
    assert main(["sample", str(run), "--n", "4", "--out", "y.npy"]) == 2
    line = one_error_line(capsys)
    state = run / "checkpoints" / "step_0000001" / "state.pt"
    assert line == (
        f"{state}: model.arch: mymodels:tiny: {module} has changed since the run recorded it "
        f"(sha256 {now[:12]}… now, {recorded[:12]}… in model.arch_sha256); put back the version "
        "the run was trained with, or train a new run"
    )
    assert main(["train", "--resume", str(run), "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"{run / 'job.resolved.yaml'}: model.arch: mymodels:tiny: {module} ")
    assert "has changed since the run recorded it" in line
    assert not Path("y.npy").exists()


def test_sample_refuses_a_missing_module_in_one_line(tmp_path, elsewhere, capsys):
    run = fake_run(tmp_path)
    recorded = sha256(tmp_path / "jobs" / "mymodels.py")
    (tmp_path / "jobs" / "mymodels.py").unlink()
    assert main(["sample", str(run), "--n", "4", "--out", "x.npy"]) == 2
    line = one_error_line(capsys)
    assert (
        f"model.arch: mymodels:tiny: its module mymodels.py is missing: not in {tmp_path}/jobs"
        in (line)
    )
    assert f"put the file the run was trained with (sha256 {recorded[:12]}…) back there" in line


# --- what travels with a submitted job ----------------------------------------------------------


def test_submit_ships_the_module_with_the_project_and_checks_the_model_first():
    job = prepare(str(REPO / "jobs" / "own_model.yaml"), [])
    assert job.runtime_env["working_dir"] == str(REPO)
    assert REPO / "jobs" / "mymodels.py" in shipped_files(REPO, EXCLUDES)
    assert job.entrypoint == "python -m distgan.cli train jobs/own_model.yaml"


def test_submit_refuses_a_module_that_would_not_travel(tmp_path):
    job = job_folder(tmp_path, "../outside/mymodels.py:tiny")
    (tmp_path / "outside").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "outside" / "mymodels.py")
    spec = load_job(job)
    check_upload(tmp_path, EXCLUDES, spec, str(job))  # the whole tmp_path travels: fine
    message = error(check_upload, job.parent, EXCLUDES, spec, str(job))
    assert message.startswith(
        f"{job}: model.arch: ../outside/mymodels.py:tiny: {tmp_path}/outside/mymodels.py does not "
        f"travel to the cluster (only {job.parent} does"
    )
    assert message.endswith("put the module beside the job file")


def test_submit_refuses_a_folder_over_rays_limit_naming_its_largest_files(tmp_path):
    job = job_folder(tmp_path)
    with open(tmp_path / "jobs" / "photos.bin", "wb") as f:
        f.truncate(600 << 20)  # sparse: 600 MiB to Ray's walker, nothing on disk
    message = error(check_upload, job.parent, EXCLUDES, load_job(job), str(job))
    assert message.startswith(
        f"{job}: {job.parent} travels to the cluster as the job's working_dir and holds 600.0 MiB "
        "(the largest: photos.bin (600.0 MiB), "
    )
    assert "over Ray's limit of 512.0 MiB for a job's files" in message
    assert message.endswith("or name them in a .rayignore file there")
    (tmp_path / "jobs" / ".rayignore").write_text("photos.bin\n")
    check_upload(job.parent, EXCLUDES, load_job(job), str(job))


# --- the README's example -------------------------------------------------------------------------


def test_the_readmes_example_is_the_repositorys_file():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert EXAMPLE.read_text() in blocks
    assert load_job(REPO / "jobs" / "own_model.yaml").model.arch == "mymodels:tiny"


def test_the_example_learns_the_datas_mean_image():
    """A hundred steps of the example job's models through distgan's own training state: the
    mean of G's images moves well towards the data's (a G that does not train stays put)."""
    from distgan.step import train_step

    spec = load_job(REPO / "jobs" / "own_model.yaml")
    images, _ = load_arrays(read_manifest(EMBEDDED_DIR))
    x = torch.as_tensor(images).float() / 127.5 - 1  # (N, 1, 28, 28) in [-1, 1]
    state = build_state(spec, SHAPE, torch.device("cpu"))
    z_dim = spec.model.z_dim

    def distance() -> float:
        fakes = generate(state.nets.G.eval(), z_dim, 256, seed=0)
        state.nets.G.train()
        return (fakes.mean(0) - x.mean(0)).abs().mean().item()

    before = distance()
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = x[torch.randint(len(x), (64,), generator=g)]
        train_step(state.nets, state.game, [batch], lambda b: torch.randn(b, z_dim))
    assert distance() < 0.7 * before


# --- on Ray ---------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
def test_an_own_model_trains_from_another_folder_and_samples_until_its_module_changes(
    ray_cluster, tmp_path, elsewhere, capsys
):
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name in ("own_model.yaml", "mymodels.py"):
        shutil.copy(REPO / "jobs" / name, folder / name)
    sets = [
        "train.steps=4", "train.max_minutes=0", "train.batch_size=16", "train.log_every=2",
        "train.checkpoint_every=2", "train.sample_every=4", f"run.root={tmp_path / 'runs'}",
    ]  # fmt: skip
    argv = ["train", str(folder / "own_model.yaml")]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0, capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    recorded = load_resolved((run / "job.resolved.yaml").read_text(), "job.resolved.yaml")
    assert (recorded.model.arch_path, recorded.model.arch_sha256) == (
        str(folder),
        sha256(folder / "mymodels.py"),
    )
    assert ckpts.load(ckpts.latest(run))["step"] == 4
    capsys.readouterr()

    assert main(["sample", str(run), "--n", "6", "--out", "x.npy"]) == 0
    x = np.load("x.npy")
    assert x.shape == (6, *SHAPE) and x.dtype == np.uint8

    (folder / "mymodels.py").write_text((folder / "mymodels.py").read_text() + "# edited\n")
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "6", "--out", "y.npy"]) == 2
    line = one_error_line(capsys)
    assert f"model.arch: mymodels:tiny: {folder / 'mymodels.py'} has changed since the run" in line
