"""Error rates from ratings.jsonl, with bootstrap intervals.

    rows = summarize(read_ratings(run))          # one Group per (step, protocol)
    print(summary_text(groups, "runs/00003-quickstart/ratings.jsonl"))

HYPE∞ is the share of wrong answers on real and generated images together: 50% is chance (the
rater cannot tell them apart, or the generator is perfect), 0% means every image was sorted
right. Beside it: the share of generated images judged real, and of real ones judged generated.
A rater's interval resamples their answers; the overall interval resamples raters, then each
resampled rater's answers, since one person's answers are not independent of each other.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from distgan.rate.deck import GENERATED, REAL

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def bootstrap_ci(
    wrong: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``wrong`` (N,) 0/1 at ``level``.

    ``groups`` (N,): who gave each answer; with two groups or more, each resample draws groups
    with replacement, then each drawn group's answers with replacement (a two-stage bootstrap).
    ``seed`` makes it reproducible.
    """
    wrong = np.asarray(wrong, dtype=float)
    if len(wrong) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    names = np.unique(groups) if groups is not None else ()
    if len(names) < 2:
        picks = rng.integers(0, len(wrong), size=(resamples, len(wrong)))  # (B, N)
        means = wrong[picks].mean(axis=1)  # (B,)
    else:
        per = [wrong[np.asarray(groups) == name] for name in names]
        means = np.empty(resamples)
        for b in range(resamples):
            drawn = [per[g] for g in rng.integers(0, len(per), size=len(per))]
            means[b] = np.concatenate(
                [x[rng.integers(0, len(x), size=len(x))] for x in drawn]
            ).mean()
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Rate:
    """A share of answers (0..1) with its interval, and how many answers it counts."""

    share: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Row:
    who: str
    answers: int
    error: Rate  # HYPE∞: wrong answers among all
    fake_as_real: Rate  # generated images answered "real"
    real_as_fake: Rate  # real images answered "generated"
    median_ms: float
    overall: bool = False  # all raters together


@dataclass(frozen=True)
class Group:
    """The answers to one deck: a checkpoint step and a protocol id."""

    step: int
    protocol: str
    deck_size: int
    rows: tuple[Row, ...]  # one per rater, by name, then all raters together
    repeats: int  # answers to an image the rater had already answered (the first one counts)


def summarize(records: list[dict], resamples: int = RESAMPLES, seed: int = SEED) -> list[Group]:
    """Groups of rows (per rater, then overall), one group per (step, protocol), by step."""
    keys = sorted({(r["step"], r["protocol"]) for r in records})
    groups = []
    for step, protocol in keys:
        seen, kept = set(), []
        for r in records:
            if (r["step"], r["protocol"]) == (step, protocol) and (
                r["rater"],
                r["image"],
            ) not in seen:
                seen.add((r["rater"], r["image"]))
                kept.append(r)
        raters = sorted({r["rater"] for r in kept})
        rows = [
            _row(name, [r for r in kept if r["rater"] == name], resamples, seed) for name in raters
        ]
        if len(raters) > 1:
            rows.append(_row(f"all ({len(raters)} raters)", kept, resamples, seed, by_rater=True))
        count = sum(r["step"] == step and r["protocol"] == protocol for r in records)
        groups.append(Group(step, protocol, _deck_size(protocol), tuple(rows), count - len(kept)))
    return groups


def _row(who: str, records: list[dict], resamples: int, seed: int, by_rater: bool = False) -> Row:
    truth = np.array([r["truth"] for r in records])
    wrong = np.array([r["truth"] != r["answer"] for r in records], dtype=float)
    raters = np.array([r["rater"] for r in records]) if by_rater else None

    def rate(mask: np.ndarray) -> Rate:
        if not mask.any():
            return Rate(float("nan"), float("nan"), float("nan"), 0)
        groups = raters[mask] if raters is not None else None
        low, high = bootstrap_ci(wrong[mask], groups, resamples=resamples, seed=seed)
        return Rate(float(wrong[mask].mean()), low, high, int(mask.sum()))

    everything = np.ones(len(records), dtype=bool)
    return Row(
        who=who,
        answers=len(records),
        error=rate(everything),
        fake_as_real=rate(truth == GENERATED),
        real_as_fake=rate(truth == REAL),
        median_ms=float(np.median([r["ms"] for r in records])),
        overall=by_rater,
    )


def _deck_size(protocol: str) -> int:
    """real=50/generated=50 in a protocol id -> 100 (0 when the id does not say)."""
    fields = dict(p.split("=", 1) for p in protocol.split("/") if "=" in p)
    try:
        return int(fields.get(REAL, 0)) + int(fields.get(GENERATED, 0))
    except ValueError:
        return 0


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide characters (most emoji, CJK) two, combining
    marks and variation selectors none."""
    return sum(
        0 if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf")
        else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
        for c in text
    )  # fmt: skip


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def summary_text(groups: list[Group], source: str) -> str:
    """The table ``distgan rate RUN --summary`` prints."""
    head = f"{'rater':<18}{'answers':>9}   {'HYPE∞ error':<22}{'fake judged real':<22}"
    head += f"{'real judged fake':<22}{'median time':>11}"
    lines = [f"{source}: chance is 50% (real and generated cannot be told apart)"]
    for g in groups:
        lines += ["", f"step {g.step} · {g.protocol}", head]
        for row in g.rows:
            of_deck = g.deck_size and not row.overall  # a rater: how far through the deck
            answered = f"{row.answers}/{g.deck_size}" if of_deck else str(row.answers)
            lines.append(
                f"{_pad(row.who, 18)}{answered:>9}   {_rate(row.error):<22}"
                f"{_rate(row.fake_as_real):<22}{_rate(row.real_as_fake):<22}"
                f"{row.median_ms / 1000:>10.1f}s"
            )
        if g.repeats:
            lines.append(f"({g.repeats} repeated answer(s) to the same image: the first counts)")
    lines += [
        "",
        f"[low–high]: {LEVEL:.0%} bootstrap interval, {RESAMPLES:,} resamples, seed {SEED}; "
        "the all-raters row resamples raters, then their answers.",
        "HYPE∞ error = wrong answers / all answers; 50% is chance, lower means people spot the "
        "generated images.",
    ]
    return "\n".join(lines)


def _rate(r: Rate) -> str:
    if not r.n:
        return "-"
    return f"{r.share:.1%} [{r.low:.1%}–{r.high:.1%}]"
