"""Progress of the long steps a person waits for: a bar on a terminal, plain lines in a log.

    for path in track(files, "decoding images", unit="images"):
        ...
    with Progress("fake features", total=len(x), unit="images") as bar:
        for batch in x.split(500):
            ...
            bar.update(len(batch))

On a terminal (stderr is a TTY) this is a tqdm bar. Otherwise (a log file, CI, a Ray worker's
captured output) it prints a plain line every ``PLAIN_EVERY_S`` seconds and, when it printed any,
a last one at the end: a step that ends sooner prints nothing, so short commands keep their
output. Progress goes to stderr, so that stdout keeps the results.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")
PLAIN_EVERY_S = 10.0  # seconds between two plain lines when stderr is not a terminal


def duration(seconds: float) -> str:
    """``4:05`` or ``1:02:03`` (hours:minutes:seconds) for a number of seconds."""
    s = max(0, int(round(seconds)))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Counts ``total`` units of work; ``update(n)`` after each piece, ``close()`` at the end
    (or use it as a context manager: an exception closes it without the last line).
    ``desc`` None shows nothing (for code that runs in workers as well as in commands)."""

    def __init__(
        self, desc: str | None, total: int, unit: str = "it", stream: IO[str] | None = None
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.printed = False
        self.bar = None
        self.quiet = desc is None
        if not self.quiet and _is_tty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True
            )

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if not self.quiet and now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            self._line(now)

    def close(self, ok: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif ok and self.printed:
            self._line(time.monotonic(), last=True)

    def _line(self, now: float, last: bool = False) -> None:
        elapsed = now - self.started
        line = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}"
        if last:
            line += f" in {duration(elapsed)}"
        elif self.total > 0:
            line += f" ({100 * self.done / self.total:.0f}%), {duration(elapsed)}"
            if 0 < self.done < self.total:
                left = elapsed * (self.total - self.done) / self.done
                line += f", about {duration(left)} left"
        print(line, file=self.stream, flush=True)
        self.printed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(ok=kind is None)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Yields ``items``, counting one unit each (``total``: their number, if they have no len)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
