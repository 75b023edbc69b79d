"""Evaluation by people: HYPE∞ (Zhou et al., 2019), the share of images a person gets wrong when
told to sort real images from generated ones, with no time limit.

    deck = build_deck(existing_run_dir("runs/00003-quickstart"), n=100, seed=0)
    server = RatingServer(RatingSession(deck, RatingsFile(deck.run)), "127.0.0.1", 8765)
    server.serve_forever()          # a page at http://127.0.0.1:8765/, one image at a time
    print(summary_text(summarize(read_ratings(deck.run)), "ratings.jsonl"))  # error rates

``deck.py`` draws the images (half real from the run's dataset, half from G_ema, in a seeded
order), ``ratings.py`` keeps the answers in the run's ``ratings.jsonl`` (one line per answer,
written before the page is told it is saved), ``summary.py`` turns them into error rates,
``server.py`` and ``page.py`` are the local web page.
"""

from distgan.rate.deck import GENERATED, REAL, Card, Deck, build_deck
from distgan.rate.ratings import RATINGS, RatingsFile, read_ratings
from distgan.rate.server import RatingServer, RatingSession
from distgan.rate.summary import bootstrap_ci, summarize, summary_text

__all__ = [
    "GENERATED",
    "RATINGS",
    "REAL",
    "Card",
    "Deck",
    "RatingServer",
    "RatingSession",
    "RatingsFile",
    "bootstrap_ci",
    "build_deck",
    "read_ratings",
    "summarize",
    "summary_text",
]
