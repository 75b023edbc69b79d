"""The HTML of report.html: one self-contained page (inline CSS, images as data URIs).

The page's Content-Security-Policy allows nothing but inline styles and ``data:`` images, so
a browser fetches nothing from anywhere when it opens a report, and anything that would be
fetched is refused (and shows in the browser's console).
"""

from __future__ import annotations

import html
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from distgan.images import GRID_PAD
from distgan.report.charts import data_uri

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
# CSS pixels: the narrowest a sample grid is shown (one of 28×28 images, 242 px, at 3×); always
# at a whole multiple of its size, so that every pixel is a square block.
GRID_MIN_WIDTH = 512

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b;
       margin: 0; background: #f6f7f9; }
header { background: #1d2733; color: #f3f5f7; padding: 18px 28px 14px; }
header h1 { margin: 0 0 4px; font-size: 21px; font-weight: 600; }
header p { margin: 0; color: #b9c3cf; }
nav { padding: 6px 28px; background: #e9edf2; border-bottom: 1px solid #d5dbe2; }
nav a { margin-right: 16px; color: #2b5c9a; text-decoration: none; }
main { max-width: 1180px; padding: 8px 28px 40px; }
section { background: #fff; border: 1px solid #dde2e8; border-radius: 6px; margin: 16px 0;
          padding: 10px 18px 14px; }
h2 { font-size: 16px; margin: 6px 0 10px; }
p.note { color: #5b6673; margin: 4px 0 10px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border-bottom: 1px solid #e4e8ed; padding: 4px 12px 4px 0; text-align: left;
         vertical-align: top; }
th { color: #5b6673; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fff6d6; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr));
          gap: 6px 18px; }
img.chart { width: 100%; display: block; margin: 4px 0 6px; }
.grids { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; }
figure img { image-rendering: pixelated; border: 1px solid #d5dbe2; }
.labelled { display: flex; align-items: flex-start; }
.rows { padding-right: 6px; text-align: right; white-space: nowrap; font-size: 12px;
        color: #3b4450; }
figcaption { color: #5b6673; font-size: 12px; }
pre { background: #f3f5f8; padding: 10px 12px; overflow-x: auto; font-size: 12.5px;
      border-radius: 4px; }
"""


@dataclass(frozen=True)
class Section:
    """A titled block of the page; ``key`` is its anchor, ``body`` HTML."""

    key: str
    title: str
    body: str


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A figure as a person reads it: 4 significant digits, thousands separators for counts."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"


def table(head: Sequence[str], rows: Sequence[Sequence[object]], best_row: int = -1) -> str:
    """Rows of values (numbers right-aligned); ``best_row`` is highlighted."""
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for i, row in enumerate(rows):
        out.append('<tr class="best">' if i == best_row else "<tr>")
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            out.append(
                f'<td class="num">{esc(fmt(cell))}</td>' if numeric else f"<td>{esc(cell)}</td>"
            )
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def facts(pairs: Sequence[tuple[str, object]]) -> str:
    """A two-column table of name and value."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def chart_img(uri: str, alt: str) -> str:
    return f'<img class="chart" src="{uri}" alt="{esc(alt)}">'


def charts(images: Sequence[str]) -> str:
    """Chart images (``chart_img``) side by side, two a row on a wide screen."""
    return f'<div class="charts">{"".join(images)}</div>'


def grid_figure(png: bytes, caption: str, row_names: Sequence[str] = ()) -> str:
    """A sample grid (the PNG of ``images.grid``) at the smallest whole multiple of its size
    that is GRID_MIN_WIDTH wide, each pixel a square block; ``row_names`` name its rows from the
    top, in a column at its left (a conditional run's grid has one row per class)."""
    width, height = Image.open(io.BytesIO(png)).size
    scale = math.ceil(GRID_MIN_WIDTH / width)
    alt = esc(caption)
    shown = (
        f'<img src="{data_uri(png, "image/png")}" alt="{alt}" width="{scale * width}" '
        f'height="{scale * height}">'
    )
    if row_names:  # each name beside its row: rows of (height - pad) / n pixels, pad included
        pitch = scale * (height - GRID_PAD) / len(row_names)
        line = pitch - scale * GRID_PAD
        names = "".join(
            f'<div style="height:{pitch:g}px;line-height:{line:g}px">{esc(n)}</div>'
            for n in row_names
        )
        top = scale * GRID_PAD + 1  # the grid's own padding, and the image's 1 px border
        rows = f'<div class="rows" style="padding-top:{top}px">{names}</div>'
        shown = f'<div class="labelled">{rows}{shown}</div>'
    return f"<figure>{shown}<figcaption>{alt}</figcaption></figure>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document."""
    nav = "".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.key}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)} · written {esc(stamp)}</p>"
        f"</header><nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
