"""``distgan explore`` (issue 13): slerp, SeFa's directions and traversals, the same latents across
classes, nearest training images and the memorisation check, and the command end to end on a
tiny conditional run. One process, no Ray.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import train_run
from torch import nn

from distgan.cli import main
from distgan.data import write_shards
from distgan.explore.latent import latent_layer, sefa_directions, slerp
from distgan.explore.neighbours import PERCENTILE, memorisation, nearest, neighbour_pictures
from distgan.explore.pictures import (
    ALPHA,
    CLASS_SWEEP_LATENTS,
    TRAVERSAL_ROWS,
    class_sweep,
    draw,
    interpolations,
    sefa,
)
from distgan.models import ModelOptions, build_models
from distgan.models.layers import ConditionalBatchNorm2d

Z_DIM = 8
SHAPE = (1, 28, 28)
CLASSES = 4


def generator(arch: str = "dcgan", num_classes: int = 0) -> nn.Module:
    torch.manual_seed(0)
    G, _ = build_models(arch, Z_DIM, 4, SHAPE, ModelOptions(num_classes=num_classes))
    return G.eval()


# --- slerp -----------------------------------------------------------------------------------


def test_slerp_starts_and_ends_at_the_pair_and_keeps_the_norm_at_a_constant_angular_speed():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    b = b * a.norm() / b.norm()  # the same norm: every point of the arc keeps it
    t = torch.linspace(0, 1, 7)
    path = slerp(a, b, t)
    assert path.shape == (7, 16)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(7), rtol=1e-5)
    omega = torch.arccos(torch.dot(a, b) / (a.norm() * b.norm()))
    angles = torch.arccos((path @ a / (path.norm(dim=1) * a.norm())).clamp(-1, 1))
    assert torch.allclose(angles, t * omega, atol=1e-3)  # the angle from a grows linearly
    linear = (1 - t[3]) * a + t[3] * b
    assert linear.norm() < path[3].norm() - 1e-3  # where lerp would cut inside the sphere


def test_slerp_between_different_norms_and_nearly_parallel_latents():
    a = torch.tensor([1.0, 0.0])
    path = slerp(a, torch.tensor([0.0, 3.0]), torch.tensor([0.5]))
    # Quarter circle: at t=1/2 both weights are sin(π/4)/sin(π/2).
    assert torch.allclose(path[0], torch.tensor([math.sqrt(0.5), 3 * math.sqrt(0.5)]), atol=1e-6)
    same = slerp(a, 2 * a, torch.tensor([0.0, 0.5, 1.0]))  # angle 0: linear, no division by 0
    assert torch.allclose(same[:, 0], torch.tensor([1.0, 1.5, 2.0])) and torch.isfinite(same).all()


# --- SeFa ------------------------------------------------------------------------------------


def test_sefa_directions_are_the_top_eigenvectors_of_wtw_largest_first():
    g = torch.Generator().manual_seed(0)
    V, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))  # orthonormal
    U, _ = torch.linalg.qr(torch.randn(20, 6, generator=g, dtype=torch.float64))
    s = torch.tensor([0.5, 3.0, 1.0, 2.0, 0.1, 4.0], dtype=torch.float64)
    W = U @ torch.diag(s) @ V.T  # (20, 6): WᵀW = V diag(s²) Vᵀ, eigenvectors V's columns
    directions, values = sefa_directions(W, k=3)
    assert directions.shape == (3, 6)
    assert torch.allclose(values, torch.tensor([16.0, 9.0, 4.0], dtype=torch.float64))
    for direction, column in zip(directions, [5, 1, 3], strict=True):
        assert torch.allclose(direction.abs(), V[:, column].abs(), atol=1e-10)
        assert abs(abs(float(direction @ V[:, column])) - 1) < 1e-10  # ± that eigenvector
    assert torch.allclose(directions.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_sefa_directions_agree_with_numpy_eigh_on_a_random_weight():
    W = torch.randn(50, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    directions, values = sefa_directions(W, k=10)
    np_values, np_vectors = np.linalg.eigh((W.T @ W).numpy())
    assert np.allclose(values.numpy(), np_values[::-1])
    assert (np.diff(values.numpy()) <= 0).all()  # sorted, largest first
    for i, direction in enumerate(directions.numpy()):
        expected = np_vectors[:, ::-1][:, i]
        assert np.allclose(direction, expected) or np.allclose(direction, -expected)
        # The sign is fixed: the largest-magnitude entry is positive, whatever eigh returned.
        assert direction[np.abs(direction).argmax()] > 0


class _ConvOnZ(nn.Module):
    """An original-DCGAN-style G: z (B, d) seen as (B, d, 1, 1) by a first ConvTranspose2d."""

    num_classes = 0

    def __init__(self):
        super().__init__()
        self.other = nn.Linear(3, 3)  # never meets z
        self.up = nn.ConvTranspose2d(Z_DIM, 5, 4)

    def forward(self, z):
        return self.up(z.view(-1, Z_DIM, 1, 1))


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: generator("dcgan"), "project.0"),
        (lambda: generator("dcgan", CLASSES), "project.0"),
        (lambda: generator("resnet"), "project"),
        (lambda: generator("resnet", CLASSES), "project"),
        (lambda: generator("mlp"), "net.0"),
        (_ConvOnZ, "up"),
    ],
)
def test_latent_layer_is_the_layer_z_meets_first_in_each_architecture(make, name):
    G = make()
    found, W = latent_layer(G, Z_DIM)
    layer = dict(G.named_modules())[name]
    assert found == name and W.shape[1] == Z_DIM
    if isinstance(layer, nn.ConvTranspose2d):  # (d, C, kh, kw) -> (C·kh·kw, d)
        assert torch.equal(W, layer.weight.detach().double().flatten(1).T)
    else:
        assert torch.equal(W, layer.weight.detach().double())


def test_sefa_traversal_grids_move_each_row_along_one_direction():
    G = generator("dcgan")
    pictures, summary = sefa(G, Z_DIM, k=3, steps=5, seed=0)
    assert [p.file for p in pictures] == ["sefa_00.png", "sefa_01.png", "sefa_02.png"]
    assert summary["layer"] == "project.0" and len(summary["eigenvalues"]) == 3
    assert summary["eigenvalues"] == sorted(summary["eigenvalues"], reverse=True)
    _, W = latent_layer(G, Z_DIM)
    directions, _ = sefa_directions(W, 3)
    base = torch.randn(TRAVERSAL_ROWS, Z_DIM, generator=torch.Generator().manual_seed(0))
    for i, picture in enumerate(pictures):
        assert picture.images.shape == (TRAVERSAL_ROWS * 5, *SHAPE) and picture.columns == 5
        assert picture.params["alphas"] == [-ALPHA, -ALPHA / 2, 0.0, ALPHA / 2, ALPHA]
        grid = picture.images.reshape(TRAVERSAL_ROWS, 5, *SHAPE)
        assert np.array_equal(grid[:, 2], draw(G, base, None))  # α = 0: the latents themselves
        end = base + ALPHA * directions[i].float()
        assert np.array_equal(grid[:, 4], draw(G, end, None))
        png = Image.open(io.BytesIO(picture.png))
        assert png.size == (5 * 30 + 2, TRAVERSAL_ROWS * 30 + 2)


def test_interpolation_grid_runs_from_each_pair_to_its_partner():
    G = generator("dcgan")
    picture = interpolations(G, Z_DIM, pairs=3, steps=6, seed=4)
    assert picture.images.shape == (18, *SHAPE) and picture.entry()["rows"] == 3
    ends = torch.randn(6, Z_DIM, generator=torch.Generator().manual_seed(4)).view(3, 2, Z_DIM)
    grid = picture.images.reshape(3, 6, *SHAPE)
    assert np.array_equal(grid[:, 0], draw(G, ends[:, 0], None))
    assert np.array_equal(grid[:, -1], draw(G, ends[:, 1], None))


# --- the same latents across classes ---------------------------------------------------------


def test_class_sweep_has_one_row_per_class_with_the_same_latents_in_each_column():
    G = generator("dcgan", CLASSES)
    with torch.no_grad():  # what training does: each class its own gain and bias
        for norm in (m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)):
            norm.gain.weight.normal_(1.0, 0.5)
            norm.bias.weight.normal_(0.0, 0.5)
    names = ["a", "b", "c", "d"]
    picture = class_sweep(G, Z_DIM, seed=2, names=names)
    assert picture.columns == CLASS_SWEEP_LATENTS and picture.row_names == names
    grid = picture.images.reshape(CLASSES, CLASS_SWEEP_LATENTS, *SHAPE)
    z = torch.randn(CLASS_SWEEP_LATENTS, Z_DIM, generator=torch.Generator().manual_seed(2))
    for k in range(CLASSES):
        assert np.array_equal(grid[k], draw(G, z, torch.full((CLASS_SWEEP_LATENTS,), k)))
    for a in range(CLASSES):  # the picture depends on the class
        for b in range(a + 1, CLASSES):
            assert not np.array_equal(grid[a], grid[b])


# --- nearest training images and memorisation ------------------------------------------------


def test_nearest_is_exact_and_a_copied_training_image_counts_as_memorised():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 6))
    query = np.stack([train[17], train[5] + 0.01, rng.normal(size=6) + 10])
    distances, index = nearest(query, train, k=3)
    brute = np.linalg.norm(query[:, None] - train[None], axis=2)
    assert np.allclose(distances, np.sort(brute, axis=1)[:, :3])
    assert np.array_equal(index, np.argsort(brute, axis=1)[:, :3])
    assert index[0, 0] == 17 and distances[0, 0] == 0 and index[1, 0] == 5

    test_nearest = nearest(rng.normal(size=(200, 6)), train, 1)[0][:, 0]
    check = memorisation(distances[:, 0], test_nearest)
    assert check["threshold"] == pytest.approx(np.percentile(test_nearest, PERCENTILE))
    assert check["memorised"] == 2 and check["memorised_share"] == pytest.approx(2 / 3)
    assert check["expected_share"] == 0.05 and "5th percentile" in check["definition"]
    # Real images of the test distribution score about the expected share.
    fresh = nearest(rng.normal(size=(2000, 6)), train, 1)[0][:, 0]
    assert abs(memorisation(fresh, test_nearest)["memorised_share"] - 0.05) < 0.04


def test_neighbour_grids_pair_each_sample_with_its_nearest_training_images():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (50, *SHAPE), dtype=np.uint8)
    fakes = rng.integers(0, 256, (20, *SHAPE), dtype=np.uint8)
    fakes[11] = train[7]  # a copy
    features = lambda x: x.reshape(len(x), -1).astype(np.float64)  # noqa: E731
    pictures, summary = neighbour_pictures(
        fakes, features(fakes), train, features(train), features(train[:10] // 2)
    )
    typical, closest = pictures
    assert typical.file == "neighbours.png" and typical.columns == 7  # sample, gap, 5 nearest
    assert typical.images.shape == (8 * 7, *SHAPE)
    assert closest.params["samples"][0] == 11 and closest.row_names[0] == "0.00"
    row = closest.images.reshape(8, 7, *SHAPE)[0]
    assert np.array_equal(row[0], fakes[11]) and np.array_equal(row[2], train[7])
    assert not row[1].any()  # the gap
    assert summary["memorisation"]["memorised"] >= 1


# --- the command -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A conditional dcgan trained 10 steps on labelled shards, with a test split beside them at
    ``<data.source>-test`` (found without --real-test)."""
    root = tmp_path_factory.mktemp("explore")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128, *SHAPE), dtype=np.uint8)
    labels = np.arange(128) % CLASSES
    write_shards(images, labels, root / "data", source="test", class_names=dict(
        enumerate(["zero", "one", "two", "three"])))  # fmt: skip
    write_shards(images[:40], labels[:40], root / "data-test", source="test split")
    run = train_run(
        root, images=torch.from_numpy(images), labels=torch.from_numpy(labels),
        model={"conditional": True}, train={"steps": 10},
    )  # fmt: skip
    return run


def test_explore_writes_every_picture_and_an_index_into_the_run(
    conditional_run, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the reference features' cache
    argv = ["explore", str(conditional_run), "--pairs", "2", "--k", "3", "--steps", "5",
            "--n", "30", "--n-train", "100", "--n-test", "40"]  # fmt: skip
    assert main(argv) == 0
    out = conditional_run / "explore"
    index = json.loads((out / "index.json").read_text())
    files = [p["file"] for p in index["pictures"]]
    assert files == ["interpolation.png", "sefa_00.png", "sefa_01.png", "sefa_02.png",
                     "classes.png", "neighbours.png", "closest.png"]  # fmt: skip
    for entry in index["pictures"]:
        with Image.open(out / entry["file"]) as png:
            assert png.size[1] == entry["rows"] * 30 + 2 and entry["shows"]
    by_file = {p["file"]: p for p in index["pictures"]}
    assert by_file["interpolation.png"]["rows"] == 2 and by_file["interpolation.png"]["steps"] == 5
    assert by_file["classes.png"]["classes"] == ["zero", "one", "two", "three"]
    assert by_file["classes.png"]["rows"] == CLASSES
    sefa_index = index["sefa"]
    assert sefa_index["layer"] == "project.0" and len(sefa_index["eigenvalues"]) == 3
    assert by_file["sefa_01.png"]["eigenvalue"] == sefa_index["eigenvalues"][1]
    neighbours = index["neighbours"]
    assert neighbours["features"] == "fashion-mnist" and neighbours["training_images"] == 100
    check = neighbours["memorisation"]
    assert check["test_images"] == 40 and check["generated"] == 30 and "definition" in check
    assert index["step"] == 10 and index["seed"] == 0
    assert f"written: {out}" in capsys.readouterr().out


def test_explore_into_out_through_a_uri_and_without_a_test_split(
    conditional_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (conditional_run.parent / "data-test").rename(conditional_run.parent / "elsewhere")
    try:
        argv = ["explore", f"file://{conditional_run}", "--out", f"file://{tmp_path}/x",
                "--k", "1", "--n", "10", "--n-train", "50"]  # fmt: skip
        assert main(argv) == 0
    finally:
        (conditional_run.parent / "elsewhere").rename(conditional_run.parent / "data-test")
    index = json.loads((tmp_path / "x" / "index.json").read_text())
    assert "--real-test" in index["neighbours"]["memorisation"]["skipped"]
    assert (tmp_path / "x" / "closest.png").is_file()
