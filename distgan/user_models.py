"""A user's own G and D: ``model.arch: "module:function"``, found, recorded and imported.

    model.arch: mymodels:tiny          # mymodels.py beside the job file, or on the Python path
    model.arch: nets/gan.py:build      # a file, relative to the job file's folder

The function is a builder with the registry's signature, ``(z_dim, width, shape, options) ->
(G, D)`` (``distgan.models.registry``). When a job file loads, ``record_arch`` finds the module
(no code runs) and writes the record into the JobSpec: ``model.arch_path``, the folder the module
is looked up in first (the job file's), and ``model.arch_sha256``, the sha256 of its file. So
job.resolved.yaml and every checkpoint (which holds the resolved job) carry it, and the workers
get it with the job. ``load_builder`` imports the module only when a model is built, from the
very bytes whose sha256 matches the record: ``sample``, ``eval``, ``train --resume``... rebuild
the model a run was trained with, or refuse in one line when its file is gone or has changed.

Where the recorded folder is not there (a worker node that unpacked the job's files elsewhere, a
laptop reading a cluster's run), the module is looked for under the current folder by the tail
of that path (``.../_ray_pkg_1a2b/jobs`` -> ``./jobs``), then in the current folder; only a file
with the recorded sha256 is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from distgan.errors import JobError
from distgan.search_space import parse_space

_NAME = r"[A-Za-z_]\w*"
# module:function, a dotted module name or a path to a .py file before the colon
REFERENCE = rf"(?:{_NAME}(?:\.{_NAME})*|[^:]+\.py):{_NAME}"
REFERENCE_HINT = "or a builder of your own as module:function, e.g. mymodels:tiny"
_MARK = "__distgan_sha256__"  # on the modules this module imported: the sha256 of their bytes


def is_reference(arch: str) -> bool:
    """Whether ``arch`` names a user's builder (``module:function``), not a registered one."""
    return re.fullmatch(REFERENCE, arch) is not None


@dataclass(frozen=True)
class Found:
    """Where a reference's module is: its file, the folder that goes on ``sys.path`` for it
    (its imports of files beside it work from there) and the name it is imported as."""

    file: Path
    root: Path
    module: str


def locate(arch: str, folder: Path) -> Found | None:
    """The module of ``arch`` in ``folder`` (a path is relative to it), else on the Python path;
    None when it is nowhere. Runs no code: packages are walked by their folders."""
    module = arch.rsplit(":", 1)[0]
    if module.endswith(".py"):
        file = Path(os.path.normpath((folder / module).absolute()))  # ../nets/gan.py as written
        _check_name(arch, file.stem)
        return Found(file, file.parent, file.stem) if file.is_file() else None
    parts = module.split(".")
    _check_name(arch, parts[0])
    finder = importlib.machinery.PathFinder
    spec = finder.find_spec(parts[0], [str(folder), *sys.path])
    if spec is None:
        return None
    top = spec.submodule_search_locations  # a package: its folder, else the module's file
    root = Path(list(top)[0]).parent if top else Path(spec.origin).parent
    for i in range(1, len(parts)):
        spec = finder.find_spec(
            ".".join(parts[: i + 1]), list(spec.submodule_search_locations or [])
        )
        if spec is None:
            return None
    if not (spec.origin or "").endswith(".py"):
        raise JobError(
            f"model.arch: {arch}: {module} is not a Python source file "
            f"({spec.origin or 'a folder'}); name a .py module"
        )
    return Found(Path(spec.origin).absolute(), root.absolute(), module)


def _check_name(arch: str, top: str) -> None:
    if top in sys.stdlib_module_names:
        raise JobError(
            f"model.arch: {arch}: {top!r} is a module of Python's standard library, not a model "
            "builder; give your module another name (e.g. mymodels.py)"
        )


def sha256_of(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def own_archs(spec) -> list[str]:
    """The references a job names: ``model.arch`` and the values ``tune.space`` tries for it."""
    archs = [spec.model.arch]
    if "model.arch" in spec.tune.space:
        archs += [str(v) for v in parse_space(spec, "<job>")["model.arch"].values]
    return [a for a in dict.fromkeys(archs) if is_reference(a)]


def record_arch(spec, job_dir: Path, source: str):
    """``spec`` (a JobSpec loaded from ``source``, in ``job_dir``) with its own model recorded:
    ``model.arch_path`` (the job's ``arch_path`` relative to ``job_dir``, by default ``job_dir``
    itself, absolute) and ``model.arch_sha256`` of ``model.arch``'s module file. A sha256 the job
    gives pins the file: another one is refused. A job that names no module is returned as it is.
    Raises JobError naming ``source`` when a module the job names is not found."""
    archs = own_archs(spec)
    if not archs:
        return spec
    m = spec.model
    folder = Path(os.path.normpath((job_dir / m.arch_path).absolute()))
    digest = ""
    for arch in archs:
        field = "model.arch" if arch == m.arch else "tune.space.model.arch"
        try:
            found = find_module(arch, str(folder))
        except JobError as e:
            raise JobError(f"{source}: {e}") from None
        if found is None:
            module = arch.rsplit(":", 1)[0]
            where = (
                f"no file {folder / module}" if module.endswith(".py")
                else f"no module {module} in {folder} or on the Python path"
            )  # fmt: skip
            raise JobError(
                f"{source}: {field}: {arch}: {where}; put it beside the job file, or name the "
                f"file as path/to/file.py:{arch.rsplit(':', 1)[1]} (relative to the job's folder)"
            )
        if arch == m.arch:
            digest = sha256_of(found.file)
            if m.arch_sha256 and m.arch_sha256 != digest:
                raise JobError(
                    f"{source}: model.arch_sha256: {found.file} has sha256 {digest[:12]}…, not "
                    f"the {m.arch_sha256[:12]}… the job pins; put back the pinned version, or "
                    "remove model.arch_sha256 to take the file as it is"
                )
    model = dataclasses.replace(m, arch_path=str(folder), arch_sha256=digest)
    return dataclasses.replace(spec, model=model)


def keep_record(spec, recorded):
    """``spec`` with the own-model record of ``recorded`` (a run's job) when both name the same
    architecture: a resumed run checks its module against what the run was trained with."""
    if spec.model.arch != recorded.model.arch:
        return spec
    model = dataclasses.replace(
        spec.model, arch_path=recorded.model.arch_path, arch_sha256=recorded.model.arch_sha256
    )
    return dataclasses.replace(spec, model=model)


def _folders(arch_path: str) -> list[Path]:
    """Where to look for a module: the recorded folder; where that is not there, the current
    folder joined with each tail of its path (longest first), then the current folder itself."""
    here, recorded = Path.cwd(), Path(arch_path)
    if not arch_path:
        return [here]
    if recorded.is_dir():
        return [recorded]
    tails = [here.joinpath(*recorded.parts[i:]) for i in range(1, len(recorded.parts))]
    return list(dict.fromkeys([*tails, here]))


def find_module(arch: str, arch_path: str) -> Found | None:
    """The first place ``arch``'s module is found from ``arch_path`` (``_folders``)."""
    for folder in _folders(arch_path):
        found = locate(arch, folder)
        if found is not None:
            return found
    return None


def load_builder(model):
    """The builder function that ``model.arch`` names (``model``: a JobSpec's model section),
    imported from a file whose sha256 is ``model.arch_sha256`` (any file when that is empty).
    Returns (the function, its module's file). Raises JobError ("model.arch: ...", for the
    caller to lead with the file it read the job from) when the module is missing or changed,
    fails to import, or lacks the function."""
    arch, function = model.arch, model.arch.rsplit(":", 1)[1]
    seen: list[tuple[Path, str]] = []
    for folder in _folders(model.arch_path):
        found = locate(arch, folder)
        if found is None or any(found.file == file for file, _ in seen):
            continue
        data = found.file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if model.arch_sha256 and digest != model.arch_sha256:
            seen.append((found.file, digest))
            continue
        builder = getattr(_import(arch, found, data, digest), function, None)
        if not callable(builder):
            raise JobError(
                f"model.arch: {arch}: {found.file} has no function {function}; define "
                f"{function}(z_dim, width, shape, options) there, returning (G, D)"
            )
        return builder, found.file
    recorded = model.arch_sha256[:12]
    if seen:
        file, digest = seen[0]
        raise JobError(
            f"model.arch: {arch}: {file} has changed since the run recorded it (sha256 "
            f"{digest[:12]}… now, {recorded}… in model.arch_sha256); put back the version the run "
            "was trained with, or train a new run"
        )
    module = arch.rsplit(":", 1)[0]
    name = module if module.endswith(".py") else module.replace(".", "/") + ".py"
    pin = f" (sha256 {recorded}…)" if recorded else ""
    if model.arch_path and Path(model.arch_path).is_dir():
        where = f"not in {model.arch_path} (model.arch_path) nor on the Python path"
        fix = f"put the file the run was trained with{pin} back there"
    else:
        where = (
            f"{model.arch_path or 'model.arch_path'} is not there, nor is it under the current "
            f"folder ({Path.cwd()}) or on the Python path"
        )
        fix = (
            f"run from a folder that holds it (a copy of the job's folder), the file{pin} as it was"
        )
    raise JobError(f"model.arch: {arch}: its module {name} is missing: {where}; {fix}")


def _import(arch: str, found: Found, data: bytes, digest: str):
    """The module of ``found``, run from ``data`` (the bytes that were hashed, not whatever
    __pycache__ holds); its folder is first on ``sys.path`` meanwhile, so that it can import
    files beside it. A module imported earlier from the same file and bytes is reused."""
    current = sys.modules.get(found.module)
    same_file = getattr(current, "__file__", None) == str(found.file)
    if same_file and getattr(current, _MARK, None) == digest:
        return current
    if current is not None and not hasattr(current, _MARK):
        raise JobError(
            f"model.arch: {arch}: the name {found.module} is taken by "
            f"{getattr(current, '__file__', None) or 'a built-in module'}; rename {found.file.name}"
        )
    # On the path while it runs (not after: a later job's module of the same name is not found
    # in this one's folder).
    added = str(found.root) not in sys.path
    if added:
        sys.path.insert(0, str(found.root))
    parent, _, child = found.module.rpartition(".")
    try:
        package = importlib.import_module(parent) if parent else None
        module = importlib.util.module_from_spec(
            importlib.util.spec_from_file_location(found.module, found.file)
        )
        setattr(module, _MARK, digest)
        sys.modules[found.module] = module
        exec(compile(data, str(found.file), "exec"), module.__dict__)
    except Exception as e:
        sys.modules.pop(found.module, None)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise JobError(
            f"model.arch: {arch}: importing {found.file} raised {type(e).__name__}: {first}; fix "
            "the module"
        ) from None
    finally:
        if added:
            sys.path.remove(str(found.root))
    if package is not None:
        setattr(package, child, module)
    return module
