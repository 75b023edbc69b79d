"""A job's YAML file parsed into its JobSpec (``distgan.specs``: frozen, validated dataclasses).

    spec = load_job("jobs/quickstart.yaml", overrides=["optim.lr_g=1e-4"])
    spec.optim.lr_g  # 0.0001
    dump_yaml(spec)  # what a run keeps as job.resolved.yaml; load_resolved(text, source) reads it

This is the only module that parses YAML. Every error a user can make here raises ``JobError``
with the file, the dotted field and the fix: ``jobs/x.yaml: optim.lr_g: expected a positive
number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from distgan.errors import JobError
from distgan.fields import check_value, close_hint
from distgan.job_rules import check_cross_fields, check_run_name, run_name_from
from distgan.objectives import check_objectives
from distgan.search_space import parse_space
from distgan.specs import METRIC_NAMES, JobSpec
from distgan.user_models import record_arch

RESOLVED_JOB = "job.resolved.yaml"  # every run's (and search's) own copy of its job, resolved


# --- parsing ---------------------------------------------------------------------------------


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Reads a job file, applies ``a.b=c`` overrides, and returns the validated JobSpec."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise JobError(f"{path}: no such job file; the jobs that ship are in jobs/") from None
    except OSError as e:
        raise JobError(f"{path}: cannot read the job file ({e.strerror})") from None
    spec = parse_job(data, str(path), overrides, default_name=path.stem)
    return record_arch(spec, path.parent, str(path))  # a model of the user's: where, which file


def parse_job(
    data: bytes, path: str, overrides: list[str] | tuple[str, ...] = (), default_name: str = ""
) -> JobSpec:
    """A job file's bytes (read from ``path``, a file or a URI) with ``a.b=c`` overrides applied,
    validated; ``run.name`` defaults to ``default_name``."""
    text = _job_text(path, data)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise JobError(f"{path}:{where}: {problem}; fix the YAML syntax there") from None
    if raw is None:
        raise JobError(
            f"{path}: the job file is empty (nothing but blanks or comments); name at least the "
            "data section, e.g. 'data: {source: embedded}', or start from jobs/quickstart.yaml"
        )
    if not isinstance(raw, dict):
        raise JobError(
            f"{path}: expected a mapping of sections (data, model, ...), got a "
            f"{'list' if isinstance(raw, list) else 'single value'}; start from "
            "jobs/quickstart.yaml"
        )
    sources: dict[str, str] = {}
    for item in overrides:
        dotted, value = parse_override(item)
        raw = _set_dotted(raw, dotted, value, source=f"--set {item}")
        sources[dotted] = f"--set {item}"
        sources.setdefault(dotted.split(".")[0], f"--set {item}")
    spec = from_dict(raw, source=path, field_sources=sources)
    if not spec.run.name:
        name = run_name_from(default_name)
        spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, name=name))
    # Here, not in from_dict: load_resolved still reads a run named before this rule.
    check_run_name(spec.run.name, sources.get("run.name", path))
    return spec


def _job_text(path: str, data: bytes) -> str:
    """The file's text: UTF-8 (a byte-order mark allowed); anything else is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and b"\x00" in data[:2]):
        raise JobError(
            f"{path}: the job file is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 "
            f"-t UTF-8 {Path(path).name} > job.yaml)"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JobError(
            f"{path}: not a text job file (byte 0x{data[e.start]:02x} at offset {e.start} is not "
            "UTF-8); pass a YAML job such as jobs/quickstart.yaml, not an image or checkpoint"
        ) from None


def parse_override(item: str) -> tuple[str, Any]:
    """``'optim.lr_g=1e-4'`` -> ``('optim.lr_g', 1e-4)``; the value is read as YAML."""
    if "=" not in item:
        raise JobError(f"--set {item}: expected KEY=VALUE, for example --set optim.lr_g=1e-4")
    dotted, text = item.split("=", 1)
    dotted = dotted.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return dotted, value


def from_dict(
    raw: dict, source: str = "<job>", field_sources: dict[str, str] | None = None
) -> JobSpec:
    """Validates a plain dict (as YAML gives it) into a JobSpec."""
    spec = _build(JobSpec, raw, prefix="", source=source, field_sources=field_sources or {})
    check_cross_fields(spec, source, field_sources or {})
    if spec.tune.space:
        parse_space(spec, (field_sources or {}).get("tune", source))
    check_objectives(spec, (field_sources or {}).get("tune", source), METRIC_NAMES)
    return spec


def to_dict(spec: Any) -> dict:
    """The JobSpec as plain dicts, ready for YAML or for a Ray config."""
    return dataclasses.asdict(spec)


def dump_yaml(spec: JobSpec) -> str:
    return yaml.safe_dump(to_dict(spec), sort_keys=False)


def load_resolved(text: str, source: str) -> JobSpec:
    """Parses a resolved job (from a run directory or a checkpoint)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raise JobError(f"{source}: the resolved job is not valid YAML") from None
    if not isinstance(raw, dict):
        raise JobError(f"{source}: the resolved job is not a mapping")
    return from_dict(raw, source=source)


# --- validation ------------------------------------------------------------------------------


def _set_dotted(raw: dict, dotted: str, value: Any, source: str | None = None) -> dict:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise JobError(
            f"{source or dotted}: expected SECTION.FIELD (for example optim.lr_g), got {dotted!r}"
        )
    section, name = parts
    out = dict(raw)
    inner = out.get(section) or {}
    if not isinstance(inner, dict):
        inner = {}
    out[section] = {**inner, name: value}
    return out


def _build(cls: type, raw: Any, prefix: str, source: str, field_sources: dict[str, str]) -> Any:
    where = prefix.rstrip(".") or "the job"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobError(f"{source}: {where}: expected a mapping of fields, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}{key}"
            src = field_sources.get(dotted, source)
            raise JobError(f"{src}: {dotted}: unknown key; {close_hint(str(key), list(fields))}")
    values = {}
    for name, f in fields.items():
        dotted = f"{prefix}{name}"
        src = field_sources.get(dotted, source)
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, raw.get(name), f"{dotted}.", source, field_sources)
        elif name in raw:
            values[name] = check_value(raw[name], kind, f.metadata, dotted, src)
    return cls(**values)
