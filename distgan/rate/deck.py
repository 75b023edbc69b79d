"""The images a person rates: half real, half generated, in a seeded random order.

    deck = build_deck(run, n=100, seed=0)
    deck.cards[0]    # Card(image="generated/17", truth="generated", png=b"\\x89PNG...")
    deck.protocol    # "hype-inf/seed=0/real=50/generated=50"

Real images are ``n/2`` rows of the run's dataset (``data.source``, or the embedded one), drawn
without replacement; generated ones are ``n/2`` samples of G_ema from the run's latest
checkpoint, latents from ``seed`` as ``distgan sample --seed`` draws them. An image's id says
which: ``real/<dataset row>`` or ``generated/<latent index>``. Every rater sees the same order,
so two raters' answers are answers to the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distgan.data import data_location, read_manifest, read_rows
from distgan.errors import DataError, JobError
from distgan.generators import load_generator
from distgan.images import png, to_uint8
from distgan.models import generate
from distgan.storage import Location, display

REAL, GENERATED = "real", "generated"
PROTOCOL = "hype-inf"  # HYPE∞: no time limit, error rate on real and generated together


@dataclass(frozen=True)
class Card:
    """One image to rate: its id, what it is, and its PNG bytes (native size)."""

    image: str  # real/<row> or generated/<latent index>
    truth: str  # REAL or GENERATED
    png: bytes


@dataclass(frozen=True)
class Deck:
    """The cards of a run's checkpoint, in the order every rater sees them."""

    run: Location
    checkpoint: str  # the checkpoint folder, for people to read
    step: int
    seed: int
    shape: tuple[int, int, int]  # (C, H, W)
    cards: tuple[Card, ...]

    @property
    def protocol(self) -> str:
        """Names the draw: the same id means the same images in the same order (at one step)."""
        return protocol_id(self.seed, len(self.cards) // 2)


def protocol_id(seed: int, half: int) -> str:
    return f"{PROTOCOL}/seed={seed}/real={half}/generated={half}"


def build_deck(run: Location, n: int, seed: int) -> Deck:
    """``n`` cards (n even: n/2 real, n/2 generated) from the run at ``run`` (its latest
    checkpoint), shuffled with ``seed``.

    JobError for an odd ``n`` or one larger than twice the dataset; DataError when the run's
    dataset cannot be read or its images are not the generator's size; CheckpointError when
    the run has no usable checkpoint.
    """
    if n < 2 or n % 2:
        raise JobError(
            f"--n {n}: expected an even number of images, at least 2 (half real, half "
            "generated); e.g. --n 100"
        )
    G, spec, folder, ckpt = load_generator(run.uri)
    source = data_location(spec.data.source)
    try:
        manifest = read_manifest(source)
    except DataError as e:
        raise DataError(f"data.source of {run}: {e}") from None
    shape = tuple(int(s) for s in ckpt["image_shape"])
    if tuple(manifest.shape) != shape:
        raise DataError(
            f"data.source of {run}: {display(manifest.root)} holds {_size(manifest.shape)} "
            f"images but the generator makes {_size(shape)}; the dataset changed since training, "
            "restore the one the run was trained on"
        )
    half = n // 2
    if half > manifest.count:
        raise JobError(
            f"--n {n}: the run's dataset ({display(manifest.root)}) holds {manifest.count:,} "
            f"images, so at most --n {2 * manifest.count} (half of them real)"
        )
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(manifest.count, size=half, replace=False))  # (half,)
    real = read_rows(manifest, rows)  # (half, C, H, W) uint8
    fake = to_uint8(generate(G, spec.model.z_dim, half, seed))  # (half, C, H, W) uint8
    cards = [_card(f"{REAL}/{r}", REAL, x) for r, x in zip(rows.tolist(), real)]
    cards += [_card(f"{GENERATED}/{i}", GENERATED, x) for i, x in enumerate(fake)]
    order = rng.permutation(n)  # the same generator, after the rows: one seed decides all
    return Deck(
        run=run,
        checkpoint=display(str(folder)),
        step=int(ckpt["step"]),
        seed=seed,
        shape=shape,
        cards=tuple(cards[i] for i in order),
    )


def _card(image: str, truth: str, x: np.ndarray) -> Card:
    return Card(image, truth, png(x.transpose(1, 2, 0)))  # (C, H, W) -> (H, W, C)


def _size(shape) -> str:
    c, h, w = shape
    return f"{c}×{h}×{w}"
