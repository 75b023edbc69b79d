"""The rules a JobSpec field's value must pass, shared by the job file and its search space.

    check_value("2e-4", float, {"gt": 0.0}, "optim.lr_g", "jobs/x.yaml")   # 0.0002
    check_value("fast", float, {"gt": 0.0}, "optim.lr_g", "jobs/x.yaml")
    # JobError: jobs/x.yaml: optim.lr_g: expected a positive number, got 'fast'

A field's rules are its dataclass metadata: ``min``, ``max``, ``gt``, ``choices`` and
``or_pattern`` (the form of values a string field takes besides its choices). This module knows
nothing of the JobSpec's sections, so ``config`` (the job) and ``search_space`` (its ``tune.space``)
both use it without importing each other.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from typing import Any

from distgan.errors import JobError


def close_hint(name: str, choices: list[str]) -> str:
    """\"did you mean 'x'?\" for the closest of ``choices``, else the list of them."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known keys: " + ", ".join(choices)


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def check_value(value: Any, kind: Any, rules: Any, dotted: str, source: str) -> Any:
    """``value`` checked against the field type ``kind`` and its ``rules``; returns it as that
    type (YAML's ``"2e-4"`` as a float). Raises JobError naming ``source`` and ``dotted``."""

    def fail(expected: str) -> JobError:
        return JobError(f"{source}: {dotted}: expected {expected}, got {value!r}")

    if kind == int | list[int]:  # scale.workers: a count, or a range [MIN, MAX]
        return _count_or_range(value, rules["min"], fail)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind in (int, float):
        number = value
        # YAML 1.1 reads 2e-4 as a string; accept any plain number written as one.
        if isinstance(number, str) and _NUMBER.match(number.strip()):
            number = float(number)
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
        ):
            raise fail(expected_number(kind, rules))
        if kind is int:
            if float(number) != int(number):
                raise fail("an integer")
            number = int(number)
        else:
            number = float(number)
        if "gt" in rules and not number > rules["gt"]:
            raise fail("a positive number" if rules["gt"] == 0 else f"a number above {rules['gt']}")
        if "min" in rules and number < rules["min"]:
            raise fail(f"a number of at least {rules['min']}")
        if "max" in rules and number > rules["max"]:
            raise fail(f"a number of at most {rules['max']}")
        return number
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise fail("a mapping of dotted keys to expressions such as 'loguniform(1e-5, 1e-3)'")
        return {str(k): v for k, v in value.items()}  # values: search_space.parse_space
    if typing.get_origin(kind) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail("a list of strings, e.g. [fid, g_gflops]")
        return list(value)
    if kind is str:
        if not isinstance(value, str):
            raise fail("a string")
        choices = rules.get("choices")
        # ``or_pattern``: a value of this form is accepted besides the choices (``or_hint``)
        if choices and value not in choices and not _matches(rules.get("or_pattern"), value):
            hint = close_hint(value, list(choices))
            also = f" ({rules['or_hint']})" if "or_hint" in rules else ""
            raise JobError(
                f"{source}: {dotted}: {value!r} is not one of {', '.join(choices)}{also}; {hint}"
            )
        return value
    raise TypeError(f"unsupported field type {kind!r} for {dotted}")  # a bug, not user input


def _count_or_range(value: Any, least: int, fail) -> int | list[int]:
    """An integer of at least ``least``, or a list ``[MIN, MAX]`` of two with
    ``least <= MIN <= MAX``; ``[N, N]`` is N."""

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= least

    if whole(value):
        return value
    if isinstance(value, list) and len(value) == 2 and all(map(whole, value)):
        lo, hi = value
        if lo <= hi:
            return [lo, hi] if lo < hi else lo
    raise fail(f"an integer of at least {least}, or [MIN, MAX] with {least} <= MIN <= MAX")


def _matches(pattern: str | None, value: str) -> bool:
    return pattern is not None and re.fullmatch(pattern, value) is not None


def expected_number(kind: type, rules: Any) -> str:
    noun = "an integer" if kind is int else "a number"
    if rules.get("gt") == 0:
        return f"a positive {'integer' if kind is int else 'number'}"
    if "gt" in rules:
        return f"{noun} above {rules['gt']}"
    if "min" in rules and "max" in rules:
        return f"{noun} from {rules['min']} to {rules['max']}"
    if "min" in rules:
        return f"{noun} of at least {rules['min']}"
    return noun
