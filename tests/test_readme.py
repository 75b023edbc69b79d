"""The distgan commands of README.md and cluster/README.md, taken from their code blocks
(tests/readme_commands.py): every one parses and every job file it names loads with its
overrides; those that need neither a cluster, a bucket nor a trained run run here for real.

Run for real here: README.md's mistake example (its exact error line), and its imbalanced-data
example on Fashion-MNIST (the import, then the training job through every check a run makes
before Ray: ``--dry-run``). cluster/README.md's submit, stop and jobs commands run on a
two-node cluster in test_cluster.py. The others (object storage, a trained run, a job id) are
parsed and their jobs loaded, not run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from readme_commands import commands

from distgan.cli import build_parser, main
from distgan.config import load_job
from distgan.data import read_manifest

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "cluster" / "README.md"]
ALL = [c for readme in READMES for c in commands(readme, REPO)]
IMAGE_ROOT = "/home/ray/distgan/"  # the checkout's place in cluster/Dockerfile's image
FASHION = REPO.parent / "shared" / "datasets" / "fashion-mnist"


def test_the_readmes_commands_are_found():
    # A broken extraction would pass the test below with nothing in it.
    texts = [c.text for c in ALL]
    assert len(ALL) >= 35, texts
    assert "distgan train jobs/quickstart.yaml --set optim.lr_gg=1e-4" in texts
    assert ".venv/bin/distgan stop distgan-quickstart-20261126-021702-51c0" in texts
    assert {c.doc for c in ALL} == {"README.md", "cluster/README.md"}


@pytest.mark.parametrize("command", ALL, ids=[f"{c.doc}:{c.text[:60]}" for c in ALL])
def test_every_readme_command_parses_and_its_job_loads(command, capsys):
    argv = command.parse_argv()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{command.doc}: {command.text!r}: {capsys.readouterr().err.strip()}")
    job = getattr(args, "job", None)
    if command.synopsis or args.verb not in ("train", "tune", "submit") or not job:
        return
    if command.output[:1] and command.output[0].startswith("error: "):
        return  # a mistake shown with its error line: the test below runs it
    path = REPO / job.removeprefix(IMAGE_ROOT)
    assert path.is_file(), f"{command.doc}: {command.text!r}: no job file {job}"
    load_job(path, args.overrides)  # a JobError here is a README example that cannot run


@pytest.mark.parametrize("command", [c for c in ALL if c.prompted and c.doc == "README.md"])
def test_a_readme_command_shown_with_its_output_prints_it(command, capsys):
    assert main(command.argv()) == 2  # the mistake example: one line, exit 2
    assert capsys.readouterr().err.splitlines() == command.output


@pytest.mark.skipif(not FASHION.is_dir(), reason="no Fashion-MNIST IDX files beside the checkout")
def test_the_imbalanced_data_example_runs_as_written(tmp_path, monkeypatch, capsys):
    first = next(i for i, c in enumerate(ALL) if "--long-tail" in c.words)
    imported, trained, evaluated = ALL[first : first + 3]  # README.md, "Imbalanced data"
    # The IDX files in a folder named fashion-mnist (as Debian's are), jobs/ beside them.
    here = tmp_path / "fashion-mnist"
    here.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (here / name).symlink_to(FASHION / name)
    (here / "jobs").symlink_to(REPO / "jobs")
    monkeypatch.chdir(here)

    assert main(imported.argv()) == 0
    manifest = read_manifest(here / "data" / "fm-lt")
    counts = [manifest.label_counts[k] for k in manifest.labels]
    assert counts[0] == 6000 and counts[-1] == 60  # "6,000 T-shirts ... 60 ankle boots"
    assert (manifest.class_names[0], manifest.class_names[9]) == ("T-shirt/top", "Ankle boot")
    capsys.readouterr()
    assert main([*trained.argv(), "--dry-run"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "source: data/fm-lt" in printed and "class_balance: balanced" in printed
    assert evaluated.argv()[:2] == ["eval", "runs/00007-fashion_dcgan"]  # a run of that job
