"""What a search weighs besides quality: the names of a model's cost figures, the grammar of
``tune.objectives`` and ``tune.constraints``, and the Pareto front of a set of trials.

    tune:
      objectives: [fid, g_gflops]             # a metric and a cost figure, searched together
      constraints: ["g_params <= 2e6"]        # a trial whose model is bigger is never trained

    check_objectives(spec, "jobs/x.yaml")     # config.from_dict calls it
    broken(parse_constraints(spec, src), {"g_params": 3.1e6})
    # "g_params 3.1e+06 breaks g_params <= 2e6"
    pareto_front([(41.0, 0.2), (55.0, 0.05), (60.0, 0.2)], ["min", "min"])   # [0, 1]

Pure Python beside ``config`` (which imports nothing below it): ``train/complexity.py`` measures
the figures named here and writes them into each run's ``complexity.json``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass

from distgan.errors import JobError
from distgan.fields import close_hint

# Known from the models built for the job, before any training: what a constraint may name.
MODEL_FIGURES = ("g_params", "d_params", "g_gflops", "d_gflops")
# Measured by rank 0 as the run goes.
MEASURED_FIGURES = ("peak_mem_mb", "sec_per_kimg", "images_per_s")
COST_FIGURES = MODEL_FIGURES + MEASURED_FIGURES
HIGHER_IS_BETTER = ("images_per_s",)  # every other cost figure is better lower

_OPERATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_CONSTRAINT = re.compile(
    r"^\s*([A-Za-z_]\w*)\s*(<=|>=|<|>)\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Constraint:
    """``name op bound``, e.g. ``g_params <= 2e6``, as written in the job (``text``)."""

    name: str
    op: str
    bound: float
    text: str

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.bound)


def parse_constraint(text: object, where: str) -> Constraint:
    """``"g_params <= 2e6"`` -> Constraint; JobError (``where``: file and field) otherwise."""
    m = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if m is None:
        raise JobError(
            f"{where}: expected NAME OP NUMBER with OP one of <=, <, >=, >, e.g. "
            f"'g_params <= 2e6'; got {text!r}"
        )
    name, op, bound = m.groups()
    if name in MEASURED_FIGURES:
        raise JobError(
            f"{where}: {name} is measured while a trial trains, so it cannot keep a trial from "
            f"starting; constrain {', '.join(MODEL_FIGURES)} (complexity.json)"
        )
    if name not in MODEL_FIGURES:
        raise JobError(
            f"{where}: {name!r} is not a figure of complexity.json; "
            f"{close_hint(name, list(MODEL_FIGURES))} (a constraint takes "
            f"{', '.join(MODEL_FIGURES)})"
        )
    return Constraint(name, op, float(bound), text.strip())


def parse_constraints(spec, source: str) -> list[Constraint]:
    return [
        parse_constraint(text, f"{source}: tune.constraints[{i}]")
        for i, text in enumerate(spec.tune.constraints)
    ]


def broken(constraints: Sequence[Constraint], figures: dict[str, float]) -> str | None:
    """Why ``figures`` (a trial's complexity) break the first constraint they break, or None."""
    for c in constraints:
        if not c.holds(figures[c.name]):
            return f"{c.name} {figures[c.name]:.4g} breaks {c.text}"
    return None


def check_objectives(spec, source: str, metrics: Sequence[str]) -> None:
    """Checks ``tune.objectives`` and ``tune.constraints`` (``metrics``: the names a search may
    measure); raises JobError naming ``source`` and the field."""
    objectives = spec.tune.objectives
    if objectives:
        where = f"{source}: tune.objectives"
        for name in objectives:
            if name not in (*metrics, *COST_FIGURES):
                raise JobError(
                    f"{where}: unknown name {name!r}; {close_hint(name, [*metrics, *COST_FIGURES])}"
                )
        quality = [n for n in objectives if n in metrics]
        cost = [n for n in objectives if n in COST_FIGURES]
        if len(objectives) != 2 or len(quality) != 1 or len(cost) != 1:
            raise JobError(
                f"{where}: expected two names, a metric ({', '.join(metrics)}) and a cost "
                f"figure ({', '.join(COST_FIGURES)}), e.g. [fid, g_gflops]; got {objectives}"
            )
        if spec.tune.scheduler == "pbt":
            raise JobError(
                f"{where}: pbt clones the best trial, and two objectives have no single best; "
                "use tune.scheduler: fifo or asha (asha stops trials on the metric alone)"
            )
    parse_constraints(spec, source)


def split_objectives(objectives: Sequence[str]) -> tuple[str, str]:
    """(the metric, the cost figure) of a checked ``tune.objectives``."""
    cost = next(n for n in objectives if n in COST_FIGURES)
    return next(n for n in objectives if n != cost), cost


def cost_mode(figure: str) -> str:
    return "max" if figure in HIGHER_IS_BETTER else "min"


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether ``a`` is no worse than ``b`` in every objective and better in one."""
    signs = [1.0 if m == "min" else -1.0 for m in modes]
    worse = any(s * x > s * y for s, x, y in zip(signs, a, b))
    better = any(s * x < s * y for s, x, y in zip(signs, a, b))
    return better and not worse


def pareto_front(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """The indices of the points no other point dominates, in their order. A point with a NaN
    (a trial that never measured its metric) is never on the front; equal points all are."""
    finite = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    return [
        i
        for i in finite
        if not any(dominates(points[j], points[i], modes) for j in finite if j != i)
    ]
