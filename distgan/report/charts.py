"""Line charts over training steps, drawn by matplotlib into PNG data URIs for report.html.

    uri = chart([Line("d_loss", steps, values)], title="Losses", marks=[Mark(500, "rollback")])
    # "data:image/png;base64,..." for an <img src=...>

``matplotlib.figure.Figure`` is used directly (its Agg canvas), never pyplot: no global figure
state, so a report can be built in any thread of a training process.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

WIDTH, HEIGHT, DPI = 7.2, 2.7, 110  # inches, inches, dots per inch: 792×297 px


@dataclass(frozen=True)
class Line:
    """One series: ``y`` at training steps ``x`` (NaN leaves a gap)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    style: dict = field(default_factory=dict)  # matplotlib keywords, e.g. {"linestyle": "--"}


@dataclass(frozen=True)
class Mark:
    """A vertical line at step ``x`` (a rollback, a checkpoint), labelled once in the legend."""

    x: float
    label: str
    color: str = "tab:red"


@dataclass(frozen=True)
class Point:
    """A highlighted point (the best checkpoint, a PBT exploit)."""

    x: float
    y: float
    label: str
    marker: str = "*"
    color: str = "gold"
    size: float = 180
    text: str = ""  # written beside the point


def chart(
    lines: Sequence[Line],
    *,
    title: str,
    ylabel: str = "",
    marks: Sequence[Mark] = (),
    points: Sequence[Point] = (),
    log_y: bool = False,
    legend_outside: bool = False,
    size: tuple[float, float] = (WIDTH, HEIGHT),
) -> str:
    """A PNG data URI of ``lines`` against the step. ``log_y`` applies only when every value
    is positive (a gradient norm of 0 would otherwise vanish from the chart). ``size``: inches.
    """
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for line in lines:
        ax.plot(line.x, line.y, label=line.label, linewidth=1.4, **line.style)
    values = [v for line in lines for v in line.y if math.isfinite(v)]
    if log_y and values and min(values) > 0:
        ax.set_yscale("log")
    seen: set[str] = set()
    for mark in marks:
        label = mark.label if mark.label not in seen else None
        seen.add(mark.label)
        ax.axvline(mark.x, color=mark.color, linestyle=":", linewidth=1.2, label=label)
    for p in points:
        label = p.label if p.label not in seen else None
        seen.add(p.label)
        style = {"edgecolor": "black", "linewidth": 0.7, "zorder": 5}
        ax.scatter([p.x], [p.y], marker=p.marker, s=p.size, color=p.color, label=label, **style)
        if p.text:
            ax.annotate(p.text, (p.x, p.y), xytext=(6, -12), textcoords="offset points", fontsize=8)
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if lines or marks or points:
        if legend_outside:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        else:
            ax.legend(fontsize=8, loc="best")
    return png_uri(fig)


def png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return data_uri(buffer.getvalue(), "image/png")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
