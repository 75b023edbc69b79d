"""What travels to a cluster with a submitted job: the files of its ``working_dir``.

    check_upload(base, EXCLUDES, spec, "jobs/x.yaml")   # submit.prepare, before anything is sent

Ray zips the folder, less the job's ``excludes`` and what the ``.gitignore`` and ``.rayignore``
files in it name, and refuses a package of its gRPC message limit or more (512 MiB in Ray 2.60),
but only once the client has zipped it all. distgan walks the same files with Ray's own walker
first, and refuses a folder over the limit in one line that names its largest files. The module
of every model of the user's that the job names (``model.arch: module:function``) must be among
those files: the cluster's driver and workers import it from there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distgan.errors import JobError
from distgan.specs import JobSpec
from distgan.user_models import find_module, own_archs


def shipped_files(base: Path, excludes: list[str]) -> dict[Path, int]:
    """Every file Ray would upload from ``base`` -> its size in bytes."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    files: dict[Path, int] = {}

    def add(path: Path) -> None:
        if path.is_file():
            files[path.absolute()] = path.stat().st_size

    # Ray's walker says at INFO each .gitignore it honours; distgan's CLI shows its own lines.
    quiet = logging.getLogger(__name__)
    quiet.setLevel(logging.WARNING)
    _dir_travel(base, [_get_excludes(base, excludes)], add, include_gitignore=True, logger=quiet)
    return files


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def check_upload(base: Path, excludes: list[str], spec: JobSpec, job_file: str) -> None:
    """JobError unless the folder ``base`` fits in one Ray package and holds the module of each
    own model ``spec`` names."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    files = shipped_files(base.absolute(), excludes)
    for arch in own_archs(spec):
        found = find_module(arch, spec.model.arch_path)
        if found is not None and found.file not in files:
            raise JobError(
                f"{job_file}: model.arch: {arch}: {found.file} does not travel to the cluster "
                f"(only {base} does, less {', '.join(excludes)} and what .gitignore and "
                ".rayignore files name); put the module beside the job file"
            )
    total = sum(files.values())
    if total >= GCS_STORAGE_MAX_SIZE:
        largest = sorted(files, key=files.get, reverse=True)[:3]
        named = ", ".join(f"{p.relative_to(base.absolute())} ({_mib(files[p])})" for p in largest)
        raise JobError(
            f"{job_file}: {base} travels to the cluster as the job's working_dir and holds "
            f"{_mib(total)} (the largest: {named}), over Ray's limit of "
            f"{_mib(GCS_STORAGE_MAX_SIZE)} for a job's files; move large files out of it or name "
            "them in a .rayignore file there"
        )
