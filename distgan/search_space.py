"""The grammar of a job's ``tune.space``: dotted JobSpec keys mapped to search expressions.

    tune:
      space:
        optim.lr_g: loguniform(1e-5, 1e-3)
        model.arch: choice([mlp, dcgan])
        model.width: grid([16, 32])

    domains = parse_space(spec, "jobs/x.yaml")      # {"optim.lr_g": Domain(...), ...}

The expressions are ``uniform(low, high)``, ``loguniform(low, high)``, ``randint(low, high)``
(both ends included), ``choice([a, b, ...])`` (sampled) and ``grid([a, b, ...])`` (every value,
each ``num_samples`` times). Every value a trial can get is checked against the field's own rules
when the job loads (``config.load_job`` calls ``parse_space``), so a bad space fails before
anything starts. Pure Python, beside ``config``: the search itself (``tune/``) builds on both.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from distgan.errors import JobError
from distgan.fields import check_value

KINDS = ("uniform", "loguniform", "randint", "choice", "grid")
# A trial's scale is the job's own, and run/tune describe the search itself.
FIXED_SECTIONS = {
    "scale": "every trial uses the job's own scale section",
    "run": "the search names its own run directories",
    "tune": "a search cannot search its own settings",
}
_EXPRESSION = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Domain:
    """One key's search domain: ``kind`` and its bounds (low, high) or its candidate values."""

    kind: str
    values: tuple


def tunable_fields(spec_cls: type) -> dict[str, tuple[Any, dict]]:
    """``{"optim.lr_g": (float, rules), ...}`` for every field a space may name."""
    out = {}
    for section in dataclasses.fields(spec_cls):
        if section.name in FIXED_SECTIONS:
            continue
        section_cls = typing.get_type_hints(spec_cls)[section.name]
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            out[f"{section.name}.{f.name}"] = (hints[f.name], dict(f.metadata))
    return out


def parse_space(spec, source: str) -> dict[str, Domain]:
    """Parses and checks ``spec.tune.space``; raises JobError naming ``tune.space.<key>``."""
    fields = tunable_fields(type(spec))
    domains = {}
    for key, text in spec.tune.space.items():
        where = f"{source}: tune.space.{key}"
        section = key.split(".")[0]
        if section in FIXED_SECTIONS:
            raise JobError(f"{where}: {section} cannot be searched ({FIXED_SECTIONS[section]})")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "use SECTION.FIELD, e.g. optim.lr_g"
            raise JobError(f"{where}: unknown key; {hint}")
        kind, rules = fields[key]
        domain = parse_domain(text, where)
        # Each value a trial can get (the candidates, or both bounds) must pass the field's rules.
        if domain.kind in ("uniform", "loguniform") and kind is not float:
            raise JobError(
                f"{where}: {domain.kind} gives real numbers; use randint or choice for this field"
            )
        if domain.kind == "randint" and kind not in (int, float):
            raise JobError(f"{where}: randint gives integers; use choice for this field")
        values = tuple(
            check_value(v, int if domain.kind == "randint" else kind, rules, f"tune.space.{key}",
                         source)
            for v in domain.values
        )  # fmt: skip
        if domain.kind in ("uniform", "loguniform", "randint"):
            low, high = values
            if low > high or (low == high and domain.kind != "randint"):
                raise JobError(
                    f"{where}: low {low:g} is not below high {high:g}; write {domain.kind}(low, "
                    "high) with low < high"
                )
            if domain.kind == "loguniform" and low <= 0:
                raise JobError(f"{where}: loguniform needs low > 0, got {low:g}; use uniform")
        domains[key] = Domain(domain.kind, values)
    return domains


def parse_domain(text: Any, where: str) -> Domain:
    """``"loguniform(1e-5, 1e-3)"`` -> ``Domain("loguniform", ("1e-5", "1e-3"))`` (raw values,
    checked against the field by ``parse_space``)."""
    example = "for example loguniform(1e-5, 1e-3) or choice([mlp, dcgan])"
    m = _EXPRESSION.match(text) if isinstance(text, str) else None
    if m is None:
        raise JobError(f"{where}: expected an expression, {example}; got {text!r}")
    kind, inner = m.group(1), m.group(2)
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "known: " + ", ".join(KINDS)
        raise JobError(f"{where}: unknown distribution {kind!r}; {hint}")
    try:
        args = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError:
        raise JobError(f"{where}: cannot read the arguments of {text!r}; {example}") from None
    if kind in ("choice", "grid"):
        if len(args) != 1 or not isinstance(args[0], list):
            raise JobError(f"{where}: {kind} takes one list, e.g. {kind}([32, 64]); got {text!r}")
        if not args[0]:
            raise JobError(f"{where}: {kind}([]) is empty; give at least one value")
        if any(isinstance(v, (list, dict)) for v in args[0]):
            raise JobError(f"{where}: {kind} values must be plain values; got {text!r}")
        return Domain(kind, tuple(args[0]))
    if len(args) != 2 or any(isinstance(v, (list, dict)) for v in args):
        raise JobError(f"{where}: {kind} takes two numbers, {kind}(low, high); got {text!r}")
    return Domain(kind, tuple(args))
