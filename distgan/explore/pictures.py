"""The pictures of ``distgan explore``: each a PNG grid and an entry for ``index.json``.

    G, spec, folder, ckpt = load_generator("runs/00003-quickstart")
    picture = interpolations(G, spec.model.z_dim, pairs=6, steps=9, seed=0)
    picture.file, picture.shows, picture.params, picture.png   # "interpolation.png", ...

Each function draws from G in eval mode with latents seeded by ``seed``; ``draw_grid`` returns
the uint8 images too, so tests read what a picture holds. A conditional G draws pair i, and
traversal row i, as class i mod K.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from distgan.explore.latent import latent_layer, sefa_directions, slerp
from distgan.images import grid_png, to_uint8

ALPHA = 3.0  # SeFa traversals run from -ALPHA to +ALPHA along each unit direction
TRAVERSAL_ROWS = 4  # latents per SeFa traversal grid
CLASS_SWEEP_LATENTS = 8  # latents (columns) of the same-latent-across-classes grid


@dataclass
class Picture:
    """One PNG of the exploration: its file name, what it shows, its parameters, its images."""

    file: str
    shows: str
    params: dict
    images: np.ndarray = field(repr=False)  # (N, C, H, W) uint8, row after row
    columns: int
    row_names: list[str] | None = None

    @property
    def png(self) -> bytes:
        return grid_png(self.images, self.columns, self.row_names)

    def entry(self) -> dict:
        rows = len(self.images) // self.columns
        return {"file": self.file, "shows": self.shows, "rows": rows, "columns": self.columns,
                **self.params}  # fmt: skip


@torch.no_grad()
def draw(G: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
    """G's images (N, C, H, W) uint8 of latents ``z`` (N, d) and, for a conditional G, labels."""
    G.eval()
    return to_uint8(G(z) if labels is None else G(z, labels))


def _row_labels(G, rows: int, per_row: int) -> torch.Tensor | None:
    """Class i mod K for every image of row i (None for an unconditional G)."""
    k = getattr(G, "num_classes", 0)
    return (torch.arange(rows) % k).repeat_interleave(per_row) if k else None


def _latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def interpolations(G, z_dim: int, pairs: int, steps: int, seed: int) -> Picture:
    """Slerp between ``pairs`` pairs of latents: one row per pair, ``steps`` columns from the
    first latent of the pair to the second."""
    ends = _latents(2 * pairs, z_dim, seed).view(pairs, 2, z_dim)
    t = torch.linspace(0, 1, steps)
    z = torch.cat([slerp(a, b, t) for a, b in ends])  # (pairs·steps, d)
    images = draw(G, z, _row_labels(G, pairs, steps))
    params = {"pairs": pairs, "steps": steps, "seed": seed, "method": "slerp"}
    if G.num_classes:
        params["classes"] = "row i: class i mod num_classes"
    shows = "spherical interpolation between two latents per row, from left to right"
    return Picture("interpolation.png", shows, params, images, steps)


def sefa(G, z_dim: int, k: int, steps: int, seed: int) -> tuple[list[Picture], dict]:
    """SeFa traversals of the top ``k`` directions: per direction a grid of TRAVERSAL_ROWS
    latents (rows) moved by α from -ALPHA to ALPHA (``steps`` columns); and a summary for
    index.json (the layer factorised, every direction's eigenvalue)."""
    layer, W = latent_layer(G, z_dim)
    directions, eigenvalues = sefa_directions(W, k)
    alphas = torch.linspace(-ALPHA, ALPHA, steps)
    base = _latents(TRAVERSAL_ROWS, z_dim, seed)  # (R, d)
    labels = _row_labels(G, TRAVERSAL_ROWS, steps)
    pictures = []
    for i, (n, value) in enumerate(zip(directions.float(), eigenvalues.tolist(), strict=True)):
        z = (base[:, None, :] + alphas[None, :, None] * n).reshape(-1, z_dim)  # (R·S, d)
        params = {
            "direction": i,
            "eigenvalue": value,
            "alphas": [round(a, 4) for a in alphas.tolist()],
            "seed": seed,
        }
        shows = f"SeFa direction {i} (eigenvalue {value:.4g}): each row one latent + α·direction"
        pictures.append(Picture(f"sefa_{i:02d}.png", shows, params, draw(G, z, labels), steps))
    total = float(torch.linalg.eigvalsh(W.T @ W).sum())
    summary = {
        "layer": layer,
        "weight_shape": list(W.shape),
        "method": "eigenvectors of WᵀW (torch.linalg.eigh), largest eigenvalue first, unit norm",
        "eigenvalues": eigenvalues.tolist(),
        "share_of_trace": [v / total for v in eigenvalues.tolist()] if total > 0 else None,
    }
    return pictures, summary


def class_sweep(G, z_dim: int, seed: int, names: list[str]) -> Picture:
    """The same CLASS_SWEEP_LATENTS latents (columns) drawn as every class (rows, named)."""
    k = G.num_classes
    z = _latents(CLASS_SWEEP_LATENTS, z_dim, seed).repeat(k, 1)  # row c: the same latents
    labels = torch.arange(k).repeat_interleave(CLASS_SWEEP_LATENTS)
    params = {"latents": CLASS_SWEEP_LATENTS, "classes": names, "seed": seed}
    shows = "each column one latent drawn as every class; each row one class (named at left)"
    return Picture("classes.png", shows, params, draw(G, z, labels), CLASS_SWEEP_LATENTS, names)


def neighbour_grid(
    file: str,
    shows: str,
    fakes: np.ndarray,
    train: np.ndarray,
    rows: np.ndarray,
    distances: np.ndarray,
    index: np.ndarray,
) -> Picture:
    """For each generated sample ``rows`` (R,): the sample, a blank cell that sets it apart, then
    its nearest training images (``index``/``distances`` (N, k) from ``neighbours.nearest``),
    the distance to the nearest at the left."""
    k = index.shape[1]
    blank = np.zeros_like(fakes[:1])
    images = np.concatenate(
        [np.concatenate([fakes[r : r + 1], blank, train[index[r]]]) for r in rows]
    )
    names = [f"{distances[r, 0]:.2f}" for r in rows]
    params = {"samples": [int(r) for r in rows], "neighbours": k,
              "nearest_distances": [float(distances[r, 0]) for r in rows]}  # fmt: skip
    return Picture(file, shows, params, images, 2 + k, names)
