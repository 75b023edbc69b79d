"""``ratings.jsonl``: one line per answer a person gave, in the run's folder.

    {"rater": "ana", "image": "generated/17", "truth": "generated", "answer": "real",
     "ms": 2140, "time": "2025-05-04T10:21:07.153Z", "step": 40,
     "protocol": "hype-inf/seed=0/real=50/generated=50"}

``ms`` is the time from the image showing to the answer. A line is written before the page is
told the answer is saved, so closing the page or stopping the server loses nothing. Object
stores cannot append: there an answer rewrites the file (a few kB at the speed people answer);
a local file is appended to.
"""

from __future__ import annotations

import json
import threading
import time

from distgan.errors import CheckpointError
from distgan.rate.deck import GENERATED, REAL
from distgan.storage import Location

RATINGS = "ratings.jsonl"
FIELDS = ("rater", "image", "truth", "answer", "ms", "time", "step", "protocol")
MAX_RATER = 64  # characters of a rater's name


def check_rater(name: str) -> str | None:
    """Why ``name`` cannot name a rater (None when it can)."""
    if not name.strip():
        return "expected a name (or initials), got an empty one"
    if len(name) > MAX_RATER:
        return f"expected at most {MAX_RATER} characters, got {len(name)}"
    if not name.isprintable():
        return "expected printable characters only"
    return None


def rating_record(
    rater: str, image: str, truth: str, answer: str, ms: int, step: int, protocol: str
) -> dict:
    """One line of ratings.jsonl, stamped with the time in UTC."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return {
        "rater": rater,
        "image": image,
        "truth": truth,
        "answer": answer,
        "ms": int(ms),
        "time": stamp,
        "step": int(step),
        "protocol": protocol,
    }


def read_ratings(run: Location) -> list[dict]:
    """Every answer in ``run``'s ratings.jsonl, in the order given; [] when there is none.

    CheckpointError naming the line when one is not a rating (a file edited by hand)."""
    if not run.is_file(RATINGS):
        return []
    records = []
    for number, line in enumerate(run.read_text(RATINGS).splitlines(), start=1):
        if not line.strip():
            continue
        problem = None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problem = f"invalid JSON ({e.msg})"
        else:
            problem = _problem(record)
        if problem:
            raise CheckpointError(
                f"{run}/{RATINGS}: line {number}: {problem}; fix or delete that line"
            )
        records.append(record)
    return records


def _problem(record) -> str | None:
    if not isinstance(record, dict):
        return "expected a JSON object"
    missing = [k for k in FIELDS if k not in record]
    if missing:
        return f"field '{missing[0]}' is missing"
    for key in ("truth", "answer"):
        if record[key] not in (REAL, GENERATED):
            return f"'{key}' must be '{REAL}' or '{GENERATED}', got {record[key]!r}"
    if not isinstance(record["step"], int) or not isinstance(record["ms"], int):
        return "'step' and 'ms' must be integers"
    return None


class RatingsFile:
    """A run's ratings.jsonl, appended to one answer at a time (from any server thread)."""

    def __init__(self, run: Location):
        self.run = run
        self._lock = threading.Lock()

    def read(self) -> list[dict]:
        with self._lock:
            return read_ratings(self.run)

    def append(self, record: dict) -> None:
        """Writes ``record`` as one line; returns once the storage has it."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self.run.is_local:
                with self.run.fs.open_append_stream(self.run.child(RATINGS).path) as f:
                    f.write(line)
                return
            old = self.run.read_bytes(RATINGS) if self.run.is_file(RATINGS) else b""
            self.run.write_bytes(RATINGS, old + line)
