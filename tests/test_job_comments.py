"""The commands in the jobs' header comments work from the root of a fresh clone: they are make
targets (no `distgan` on PATH yet, no path outside the repository), each job they name is there,
and a job whose data is not in the clone names the target that imports it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))
MAKEFILE = (REPO / "Makefile").read_text()


def header_commands(job: Path) -> list[str]:
    """The command lines of a job's header comment: ``#   command``, before the first key."""
    commands = []
    for line in job.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            commands.append(line[4:].split("  #")[0].strip())
    return commands


def make_recipe(target: str) -> str:
    """The recipe lines of ``target`` in the Makefile ('' when it has no such target)."""
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n|.*\\\n)*)", MAKEFILE, re.M)
    return match.group(1) if match else ""


@pytest.mark.parametrize("job", JOBS, ids=[j.name for j in JOBS])
def test_header_commands_work_from_a_fresh_clone(job):
    commands = header_commands(job)
    assert commands, f"{job.name}: no command in its header comment"
    assert "../" not in job.read_text().split("\ndata:")[0], "a path outside the repository"
    for command in commands:
        make, target, *assignments = shlex.split(command)
        assert make == "make" and make_recipe(target), f"{job.name}: {command!r}"
        for assignment in assignments:
            name, path = assignment.split("=", 1)
            assert f"$({name})" in make_recipe(target), f"{job.name}: {command!r}"
            assert path.startswith("runs/<id>") or (REPO / path).is_file(), path

    source = yaml.safe_load(job.read_text())["data"]["source"]
    if source != "embedded" and not (REPO / source).exists():
        imports = [make_recipe(shlex.split(c)[1]) for c in commands]
        assert any(f"--out {source}" in recipe for recipe in imports), (
            f"{job.name}: data.source {source} is not in the clone and no command imports it"
        )


def test_every_data_folder_the_docs_name_is_one_make_or_the_benchmarks_split_imports():
    docs = [REPO / "README.md", REPO / "BENCHMARKS.md", *JOBS]
    named = {m for doc in docs for m in re.findall(r"\bdata/fashion-mnist[\w-]*", doc.read_text())}
    imported = set(re.findall(r"--out (data/[\w-]+)", make_recipe("fashion-mnist")))
    assert imported == {"data/fashion-mnist", "data/fashion-mnist-test"}
    # make judge-b imports the half of the training images the second judge is fitted on
    judge_b = set(re.findall(r"--out (data/[\w-]+)", make_recipe("judge-b")))
    assert judge_b == {"data/fashion-mnist-30k"}
    # benchmarks/splits.py holds out a validation split of the training images (BENCHMARKS.md)
    splits = (REPO / "benchmarks" / "splits.py").read_text()
    made = {"data/fashion-mnist-train50k", "data/fashion-mnist-val10k"}
    assert all(f'"{name.split("/")[1]}"' in splits for name in made)
    long_tails = {m for m in named if re.fullmatch(r"data/fashion-mnist-train50k-lt\d*", m)}
    assert named and named <= imported | judge_b | made | long_tails, named - imported - made
