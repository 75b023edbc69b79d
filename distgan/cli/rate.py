"""``distgan rate RUN [--port N] [--host H] [--n N] [--seed S] [--rater NAME]`` and
``distgan rate RUN --summary``.

    distgan rate runs/00003-quickstart                 # open http://127.0.0.1:8765/ and answer
    distgan rate runs/00003-quickstart --summary       # HYPE∞ error rates with 95% intervals

The first serves a page on this machine (127.0.0.1 unless --host says otherwise) that shows a
person the run's images one at a time, half real and half from G_ema of the latest checkpoint,
and asks "real or generated?"; every answer goes into RUN/ratings.jsonl as it is given. The
second reads that file back: the share of wrong answers per rater and overall (HYPE∞, Zhou et
al. 2019), 50% being chance.
"""

from __future__ import annotations

import argparse

from distgan.errors import CheckpointError, JobError

DEFAULT_PORT = 8765


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "rate",
        help="people judge real vs generated images (HYPE∞); --summary scores them",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", metavar="RUN", help="a run folder (path or URI)")
    p.add_argument("--summary", action="store_true", help="print the error rates of the answers")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--n", type=int, default=100, help="images per rater, half real (default 100)")
    p.add_argument("--seed", type=int, default=0, help="which images, in which order (default 0)")
    p.add_argument("--rater", help="the rater's name (default: the page asks for one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from distgan.rate import (
        RATINGS,
        RatingServer,
        RatingSession,
        RatingsFile,
        build_deck,
        read_ratings,
    )
    from distgan.rate.ratings import check_rater
    from distgan.storage import display, join
    from distgan.train.outputs import existing_run_dir

    location = existing_run_dir(args.source)
    if args.summary:
        return _summary(location)
    if not 0 <= args.port <= 65535:
        raise JobError(f"--port {args.port}: expected a port from 0 to 65535 (0: any free one)")
    if args.rater is not None and (problem := check_rater(args.rater)):
        raise JobError(f"--rater {args.rater!r}: {problem}")
    deck = build_deck(location, args.n, args.seed)
    server = RatingServer(
        RatingSession(deck, RatingsFile(location), args.rater), args.host, args.port
    )
    ratings = display(join(location.uri, RATINGS))
    n = len(deck.cards)
    print(f"rating {location} at step {deck.step}: {n} images, half real, half generated")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: --host {args.host}: other machines that reach this address can open the page")
    print(f"open {server.url} in a browser; answers go to {ratings}; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        given = sum(r["step"] == deck.step for r in read_ratings(location))
        print(f"stopped; {given} answer(s) for step {deck.step} in {ratings}")
    finally:
        server.close()
    return 0


def _summary(location) -> int:
    from distgan.rate import RATINGS, read_ratings, summarize, summary_text
    from distgan.storage import display, join

    records = read_ratings(location)
    if not records:
        raise CheckpointError(
            f"{location}: no answers yet ({RATINGS} is missing or empty); rate first with "
            f"`distgan rate {location}`"
        )
    print(summary_text(summarize(records), display(join(location.uri, RATINGS))))
    return 0
