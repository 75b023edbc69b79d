"""Class-conditional models (issue 12): conditional BatchNorm in G, the projection head in D,
labels from the shards through the reader, the step and the loop into sample grids, checkpoints
and ``distgan sample --class``; and the new job fields' rules. One process, no Ray.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from distgan import errors
from distgan.cli import main
from distgan.config import dump_yaml, from_dict, load_job
from distgan.data import write_shards
from distgan.data.reader import InMemoryBatches, StreamingBatches, load_rows
from distgan.generators import load_generator
from distgan.images import to_uint8
from distgan.models import ModelOptions, build_models, generate
from distgan.models.layers import ConditionalBatchNorm2d
from distgan.search_space import parse_space
from distgan.step import train_step
from distgan.train import checkpoint as ckpts
from distgan.train.build import build_state, memory_batches
from distgan.train.loop import grid_inputs, run
from distgan.train.outputs import RunOutputs

Z_DIM = 8
SHAPE = (1, 28, 28)
CLASSES = 4


def conditional(arch: str, **options) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build_models(arch, Z_DIM, 4, SHAPE, ModelOptions(num_classes=CLASSES, **options))


# --- conditional BatchNorm and the projection head -------------------------------------------


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conditional_batchnorm_makes_g_depend_on_the_class(arch):
    G, _ = conditional(arch)
    norms = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert norms and G.num_classes == CLASSES
    z = torch.randn(4, Z_DIM)
    G.eval()  # BatchNorm from running statistics: each sample on its own
    # At initialisation every class has gain 1 and bias 0: a plain BatchNorm.
    assert torch.allclose(G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.ones(4).long()))
    with torch.no_grad():
        for norm in norms:  # what training would do: a gain and a bias of each class's own
            norm.gain.weight.normal_(1.0, 0.5)
            norm.bias.weight.normal_(0.0, 0.5)
    by_class = [G(z, torch.full((4,), k)) for k in range(CLASSES)]
    for a in range(CLASSES):
        for b in range(a + 1, CLASSES):
            assert not torch.allclose(by_class[a], by_class[b], atol=1e-4), (a, b)
    # One class's sample does not depend on the labels of the rest of the batch.
    mixed = G(z, torch.tensor([2, 0, 1, 3]))
    assert torch.allclose(mixed[0], by_class[2][0], atol=1e-5)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_projection_head_adds_the_class_embedding_times_the_features(arch):
    _, D = conditional(arch)
    x = torch.rand(3, *SHAPE) * 2 - 1
    features = []
    D.head.register_forward_hook(lambda m, args, out: features.append((args[0], out)))
    for k in range(CLASSES):
        y = torch.full((3,), k)
        logits = D(x, y)
        h, head = features[-1]
        expected = head.squeeze(1) + (D.embed.weight[k] * h).sum(1)
        assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(D(x, torch.zeros(3).long()), D(x, torch.ones(3).long()))


def test_packed_projection_sums_the_embeddings_of_a_packs_labels():
    _, D = conditional("dcgan", pack=2)
    x = torch.rand(4, *SHAPE) * 2 - 1
    swapped = D(x, torch.tensor([1, 0, 3, 2]))
    assert torch.allclose(D(x, torch.tensor([0, 1, 2, 3])), swapped)  # a pack's labels as a set
    assert not torch.allclose(D(x, torch.tensor([0, 0, 2, 3])), swapped)


def test_unconditional_models_have_no_class_layers():
    G, D = build_models("dcgan", Z_DIM, 4, SHAPE)
    assert G.num_classes == 0 and D.embed is None
    assert not [m for m in G.modules() if isinstance(m, (ConditionalBatchNorm2d, nn.Embedding))]
    with pytest.raises(ValueError, match="mlp has no conditional version"):
        build_models("mlp", Z_DIM, 4, SHAPE, ModelOptions(num_classes=3))


class Recorder(nn.Module):
    """Calls ``model`` and records the labels it was given."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.labels: list[torch.Tensor | None] = []

    def forward(self, x, y=None):
        self.labels.append(y)
        return self.model(x, y)


def test_step_gives_d_the_real_labels_and_g_and_d_the_same_drawn_labels():
    from distgan.losses import get_loss
    from distgan.step import Game, Nets

    G, D = conditional("dcgan")
    G, D = Recorder(G), Recorder(D)
    nets = Nets(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()))
    game = Game(get_loss("nonsaturating"), num_classes=CLASSES)
    real_labels = torch.tensor([3, 3, 1, 0])
    torch.manual_seed(1)
    train_step(
        nets,
        game,
        [torch.rand(4, *SHAPE)],
        lambda n: torch.randn(n, Z_DIM),
        real_labels=[real_labels],
    )
    (drawn,) = G.labels  # one G forward: its output is reused by the G step
    assert drawn.shape == (4,) and drawn.dtype == torch.long
    assert drawn.min() >= 0 and drawn.max() < CLASSES
    d_step_labels, g_step_labels = D.labels
    assert torch.equal(d_step_labels, torch.cat([real_labels, drawn]))
    assert torch.equal(g_step_labels, drawn)


# --- AC-GAN: D's class head and the class losses --------------------------------------------


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_acgan_head_gives_class_logits_beside_the_projection_logit(arch):
    _, D = conditional(arch, classifier=True)
    x, y = torch.rand(6, *SHAPE), torch.randint(CLASSES, (6,))
    logits, classes = D(x, y, classes=True)
    assert logits.shape == (6,) and classes.shape == (6, CLASSES)
    assert torch.equal(logits, D(x, y))  # the head adds logits; it leaves D's judgement alone
    with pytest.raises(ValueError, match="needs a conditional model"):
        build_models(arch, Z_DIM, 4, SHAPE, ModelOptions(classifier=True))
    with pytest.raises(ValueError, match="D packs 2"):
        conditional(arch, classifier=True, pack=2)


def acgan_nets(ac_weight: float):
    from distgan.losses import get_loss
    from distgan.step import Game, Nets

    G, D = conditional("dcgan", classifier=True)
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.0)  # noqa: E731  (weights stay put)
    game = Game(get_loss("nonsaturating"), num_classes=CLASSES, ac_weight=ac_weight)
    return Nets(G, D, opt(G), opt(D)), game


def test_acgan_d_loss_adds_the_weighted_cross_entropy_of_the_reals_only():
    from distgan.step import d_step

    nets, game = acgan_nets(0.5)
    torch.manual_seed(2)
    real, z = torch.rand(4, *SHAPE) * 2 - 1, torch.randn(4, Z_DIM)
    y_real, y_fake = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 3, 0, 1])
    _, metrics = d_step(nets, game, real, z, real_labels=y_real, fake_labels=y_fake)

    # By hand: the class head's only gradient is 0.5 × that of its cross-entropy on the reals
    # (the adversarial logit does not read it, and the fakes' classes are not D's to learn).
    D = nets.D
    _, classes = D(real, y_real, classes=True)
    expected = nn.functional.cross_entropy(classes, y_real)
    assert metrics["d_ac"] == pytest.approx(expected.item(), rel=1e-6)
    (want,) = torch.autograd.grad(0.5 * expected, D.classify.weight)
    torch.testing.assert_close(D.classify.weight.grad, want)


def test_acgan_g_loss_adds_the_weighted_cross_entropy_of_the_asked_classes():
    from distgan.step import g_step

    nets, game = acgan_nets(2.0)
    torch.manual_seed(3)
    z, y = torch.randn(4, Z_DIM), torch.tensor([1, 0, 3, 2])
    metrics = g_step(nets, game, nets.G(z, y), labels=y)
    logits, classes = nets.D(nets.G(z, y), y, classes=True)
    adversarial = nn.functional.softplus(-logits).mean()  # the non-saturating G loss
    ac = nn.functional.cross_entropy(classes, y)
    assert metrics["g_loss"] == pytest.approx(adversarial.item(), rel=1e-6)
    assert metrics["g_ac"] == pytest.approx(ac.item(), rel=1e-6)
    want = torch.autograd.grad(adversarial + 2.0 * ac, list(nets.G.parameters()))
    for p, w in zip(nets.G.parameters(), want):
        torch.testing.assert_close(p.grad, w)


# --- labels through the reader ---------------------------------------------------------------


class FakeShard:
    """What Ray Data hands a worker, enough for the reader: the rows in tables, in order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        item = images[0].size
        offsets = pa.py_buffer(np.arange(len(images) + 1, dtype=np.int32) * item)
        column = pa.Array.from_buffers(
            pa.binary(), len(images), [None, offsets, pa.py_buffer(images.tobytes())]
        )
        self.table = pa.table({"image": column, "label": labels.astype(np.int64)})

    def iter_batches(self, batch_size, batch_format):
        assert batch_format == "pyarrow"
        for start in range(0, self.table.num_rows, 7):  # blocks of any size
            yield self.table.slice(start, 7)


def labelled_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is 10 × their label: a batch shows whether labels kept up."""
    labels = np.arange(n) % CLASSES
    images = np.repeat(labels * 10, 28 * 28).reshape(n, *SHAPE).astype(np.uint8)
    return images, labels


def pixel_label(x: torch.Tensor) -> torch.Tensor:
    """The label an image of ``labelled_images`` encodes, from its [-1, 1] pixels."""
    return ((x[:, 0, 0, 0] + 1) * 127.5 / 10).round().long()


def test_load_rows_and_in_memory_batches_keep_labels_with_their_images():
    shard = FakeShard(*labelled_images(40))
    images, labels = load_rows(shard, SHAPE, range(0, 40))
    assert images.shape == (40, *SHAPE) and labels is None  # without labels: as before
    images, labels = load_rows(shard, SHAPE, range(0, 40), with_labels=True)
    assert labels.dtype == torch.long and labels.tolist() == [i % CLASSES for i in range(40)]
    source = InMemoryBatches(images, 8, seed=0, rank=0, device=torch.device("cpu"), labels=labels)
    batches = list(source.epoch_batches(0))
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape == (8, *SHAPE) and torch.equal(pixel_label(x), y)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(labels.tolist())
    # A rank keeps its own rows of the dataset, across the blocks they come in.
    images, labels = load_rows(shard, SHAPE, range(13, 26), with_labels=True)
    assert labels.tolist() == [i % CLASSES for i in range(13, 26)]


def streamed(tmp_path, n: int, **kwargs) -> StreamingBatches:
    """A source streaming ``labelled_images(n)`` (in shards of 10) as one rank of one."""
    manifest = write_shards(*labelled_images(n), tmp_path / "data", shard_size=10, source="t")
    return StreamingBatches(manifest.location(), manifest.shards, SHAPE, 8, 0, 0, 1,
                            torch.device("cpu"), **kwargs)  # fmt: skip


def test_streaming_batches_yield_labels(tmp_path):
    source = streamed(tmp_path, 24, with_labels=True)
    batches = list(source.epoch_batches(0, skip=1))
    assert len(batches) == 2
    for x, y in batches:
        assert torch.equal(pixel_label(x), y)
    source.close()
    plain = streamed(tmp_path, 24)
    assert all(isinstance(x, torch.Tensor) for x in plain.epoch_batches(0))
    plain.close()


class CountingBatches(StreamingBatches):
    """Counts the epochs its reading thread starts."""

    epochs = 0

    def batches(self, epoch, skip=0):
        self.epochs += 1
        return super().batches(epoch, skip)


def test_streaming_reads_the_next_epoch_while_this_one_trains(tmp_path):
    manifest = write_shards(*labelled_images(24), tmp_path / "data", shard_size=10, source="t")
    source = CountingBatches(manifest.location(), manifest.shards, SHAPE, 8, 0, 0, 1,
                             torch.device("cpu"), ahead=8)  # fmt: skip
    first = source.epoch_batches(0)
    assert next(first).shape == (8, *SHAPE)
    deadline = time.monotonic() + 10
    while source.epochs < 3 and time.monotonic() < deadline:  # 3 batches an epoch, 8 ahead
        time.sleep(0.01)
    assert source.epochs >= 3, "the thread did not read ahead into later epochs"
    assert len(list(first)) == 2  # this epoch's rest, then its end
    assert len(list(source.epoch_batches(1))) == 3
    source.close()
    assert not source._thread.is_alive()


def test_a_streaming_error_reaches_the_step(tmp_path):
    source = streamed(tmp_path, 24)
    shard = tmp_path / "data" / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # damaged after the checks before Ray
    with pytest.raises(errors.DataError, match="shard-00001.parquet: sha256 is .* manifest says"):
        list(source.epoch_batches(0))
    source.close()


# --- the loop, checkpoints and sampling ------------------------------------------------------


def test_grid_has_one_row_per_class_of_eight_columns():
    z = torch.randn(64, Z_DIM)
    same, labels, columns = grid_inputs(z, 0)
    assert same is z and labels is None and columns is None
    grid_z, labels, columns = grid_inputs(z, 4)
    assert columns == 8 and labels.tolist() == [k for k in range(4) for _ in range(8)]
    assert torch.equal(grid_z[:8], z[:8]) and torch.equal(grid_z[8:16], z[:8])  # a column, a z
    assert grid_inputs(z, 25)[1].max() == 9  # the first 10 classes


CONDITIONAL_JOB = {
    "model": {"arch": "dcgan", "width": 4, "z_dim": Z_DIM, "conditional": True},
    "loss": {"kind": "hinge", "r1_gamma": 1.0, "r1_every": 2, "ac_weight": 1.0},
    "train": {
        "steps": 3,
        "batch_size": 8,
        "log_every": 1,
        "sample_every": 1,
        "checkpoint_every": 3,
        "diffaugment": "color,translation",
        "ema_kimg": 0.1,
    },
    "scale": {"workers": 1},
}


def conditional_job(**model) -> dict:
    return {**CONDITIONAL_JOB, "model": {**CONDITIONAL_JOB["model"], **model}}


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A conditional dcgan (with SN, R1, AC-GAN, DiffAugment, EMA half-life) trained 3 steps by
    the real loop on labelled images, written as a run directory with its checkpoint."""
    run_dir = tmp_path_factory.mktemp("conditional_run")
    spec = from_dict(conditional_job(spectral_norm=True))
    images, labels = labelled_images(32)
    counts = dict(zip(*np.unique(labels, return_counts=True)))
    state = build_state(spec, SHAPE, torch.device("cpu"), num_classes=CLASSES, class_counts=counts)
    source = memory_batches(
        spec, torch.from_numpy(images), torch.from_numpy(labels), counts, torch.device("cpu")
    )
    reported = []
    result = run(
        state,
        source,
        spec,
        device=torch.device("cpu"),
        report=lambda m, ckpt: reported.append(ckpt),
        outputs=RunOutputs(run_dir),
        job_yaml=dump_yaml(spec),
    )
    folder = run_dir / "checkpoints" / ckpts.checkpoint_dir_name(3)
    folder.mkdir(parents=True)
    ckpts.save(reported[-1], folder)
    return run_dir, result, reported[-1], state


def test_the_loop_trains_a_conditional_model_with_every_option(conditional_run):
    run_dir, result, ckpt, state = conditional_run
    assert result["step"] == 3 and np.isfinite(result["d_loss"]) and result["skipped"] == 0
    assert state.game.num_classes == CLASSES and state.game.augment == ("color", "translation")
    assert state.game.r1_gamma == 1.0 and "r1" in result  # steps 0 and 2 of 3 carry R1
    assert state.game.ac_weight == 1.0 and {"d_ac", "g_ac"} <= set(result)
    assert ckpt["num_classes"] == CLASSES
    assert "classify.parametrizations.weight.original" in ckpt["D"]  # AC-GAN's head, with SN
    # A resumed run rebuilds D with the head and takes the checkpoint's weights.
    spec = from_dict(conditional_job(spectral_norm=True))
    ckpts.check_compatible(ckpt, spec, SHAPE, "ckpt", num_classes=CLASSES)
    fresh = build_state(spec, SHAPE, torch.device("cpu"), num_classes=CLASSES, checkpoint=ckpt)
    assert torch.equal(fresh.nets.D.classify.parametrizations.weight.original,
                       ckpt["D"]["classify.parametrizations.weight.original"])  # fmt: skip
    # The sample grid: one row per class (4), 8 columns of 28 pixels with 2 between.
    grid = Image.open(run_dir / "samples" / "step_000003.png")
    assert grid.size == (8 * 30 + 2, 4 * 30 + 2)


def test_load_generator_rebuilds_the_conditional_g(conditional_run):
    run_dir, _, ckpt, _ = conditional_run
    G, spec, _, _ = load_generator(run_dir)
    assert spec.model.conditional and G.num_classes == CLASSES
    x = generate(G, Z_DIM, 8, seed=0)  # every class in turn
    assert x.shape == (8, *SHAPE)


def test_sample_draws_the_class_asked_for(conditional_run, tmp_path, capsys):
    run_dir, *_ = conditional_run
    out = tmp_path / "x.npy"
    assert main(["sample", str(run_dir), "--n", "5", "--class", "2", "--out", str(out)]) == 0
    assert "5 samples of class 2" in capsys.readouterr().out
    G, _, _, _ = load_generator(run_dir)
    expected = to_uint8(generate(G, Z_DIM, 5, 0, labels=torch.full((5,), 2)))
    assert np.array_equal(np.load(out), expected)
    other = to_uint8(generate(G, Z_DIM, 5, 0, labels=torch.full((5,), 3)))
    assert not np.array_equal(np.load(out), other)


def test_sample_takes_a_class_by_the_name_the_data_gives_it(conditional_run, tmp_path, capsys):
    """The run's data is the embedded Fashion-MNIST, whose class 2 is "Pullover"."""
    run_dir, *_ = conditional_run
    by_number, by_name = tmp_path / "n.npy", tmp_path / "name.npy"
    assert main(["sample", str(run_dir), "--n", "5", "--class", "2", "--out", str(by_number)]) == 0
    argv = ["sample", str(run_dir), "--n", "5", "--class", "pullover", "--out", str(by_name)]
    assert main(argv) == 0
    assert "5 samples of class 2" in capsys.readouterr().out
    assert np.array_equal(np.load(by_name), np.load(by_number))
    assert main([*argv[:5], "Sandal", "--out", str(tmp_path / "x.npy")]) == 2  # class 5 of 10
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--class Sandal: no class of that name" in line
    assert "its classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress" in line


def test_resuming_a_conditional_run_on_other_classes_is_refused(conditional_run):
    _, _, ckpt, _ = conditional_run
    spec = from_dict(conditional_job(spectral_norm=True))
    ckpts.check_compatible(ckpt, spec, SHAPE, "ckpt", num_classes=CLASSES)
    with pytest.raises(
        errors.CheckpointError, match="trained on 4 classes, but data.source now holds 10"
    ):
        ckpts.check_compatible(ckpt, spec, SHAPE, "ckpt", num_classes=10)


# --- the job fields --------------------------------------------------------------------------

BAD_VALUES = [
    ("model.spectral_norm", "yes", "expected true or false"),
    ("model.mbstd_group", -1, "expected a number of at least 0"),
    ("model.pack", 0, "expected a number of at least 1"),
    ("model.output", "sigmoid", "'sigmoid' is not one of tanh, linear"),
    ("model.conditional", 1, "expected true or false"),
    ("loss.r1_gamma", -1, "expected a number of at least 0.0"),
    ("loss.r1_every", 0, "expected a number of at least 1"),
    ("loss.ac_weight", -1, "expected a number of at least 0.0"),
    ("train.ema_kimg", -0.5, "expected a number of at least 0.0"),
    ("train.ema_rampup", "soon", "expected a number of at least 0.0"),
    ("train.diffaugment", 3, "expected a string"),
    ("train.diffaugment", "color,flip", "unknown augmentation 'flip'"),
    ("train.channels_last", "on", "expected true or false"),
    ("train.compile", 2, "expected true or false"),
]


@pytest.mark.parametrize("dotted, value, message", BAD_VALUES, ids=lambda v: str(v))
def test_each_new_field_is_validated(tmp_path, dotted, value, message):
    section, name = dotted.split(".")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({section: {name: value}}))
    with pytest.raises(errors.JobError) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}: {dotted}: ") and message in str(info.value)


CROSS_RULES = [
    ({"model": {"pack": 3}, "train": {"batch_size": 32}}, "model.pack",
     "model.pack: 3 does not divide the per-worker batch of 16"),
    ({"model": {"mbstd_group": 3, "pack": 2}, "train": {"batch_size": 32}}, "model.mbstd_group",
     "does not divide the 8 inputs D sees per worker"),
    ({"model": {"output": "linear"}}, "model.output", "served by arch mlp only"),
    ({"model": {"arch": "mlp", "conditional": True}}, "model.conditional",
     "mlp has no conditional version"),
    ({"loss": {"r1_gamma": 1.0}, "train": {"compile": True}}, "train.compile",
     "cannot be differentiated twice"),
    ({"loss": {"kind": "wgan-gp"}, "train": {"compile": True}}, "train.compile", "wgan-gp"),
    ({"loss": {"ac_weight": 1.0}}, "loss.ac_weight", "set model.conditional: true"),
    ({"loss": {"ac_weight": 1.0}, "model": {"conditional": True, "pack": 2}}, "loss.ac_weight",
     "model.pack: 2 makes D judge 2 images at once"),
]  # fmt: skip


@pytest.mark.parametrize("job, dotted, message", CROSS_RULES, ids=lambda v: str(v)[:30])
def test_rules_between_fields(job, dotted, message):
    with pytest.raises(errors.JobError) as info:
        from_dict(job, source="jobs/x.yaml")
    assert str(info.value).startswith(f"jobs/x.yaml: {dotted}: ") and message in str(info.value)


def test_new_fields_defaults_keep_the_old_behaviour():
    spec = from_dict({})
    m, t = spec.model, spec.train
    assert (m.spectral_norm, m.mbstd_group, m.pack, m.output, m.conditional) == (
        False, 0, 1, "tanh", False
    )  # fmt: skip
    assert (spec.loss.r1_gamma, t.ema_kimg, t.diffaugment, t.channels_last, t.compile) == (
        0.0, 0.0, "", False, False
    )  # fmt: skip
    assert spec.loss.ac_weight == 0.0
    ok = {"model": {"arch": "resnet", "pack": 2, "mbstd_group": 4}, "train": {"batch_size": 16}}
    assert from_dict({**ok, "scale": {"workers": 2}}).model.pack == 2


def test_a_search_space_over_the_new_fields_parses():
    spec = from_dict(
        {
            "tune": {
                "space": {
                    "loss.r1_gamma": "loguniform(0.1, 10)",
                    "loss.ac_weight": "choice([0, 0.1, 1.0])",
                    "model.spectral_norm": "choice([true, false])",
                    "train.diffaugment": "grid(['', 'color,translation'])",
                    "model.arch": "choice([dcgan, resnet])",
                }
            }
        }
    )
    domains = parse_space(spec, "jobs/x.yaml")
    assert domains["loss.r1_gamma"].values == (0.1, 10.0)
    assert domains["loss.ac_weight"].values == (0.0, 0.1, 1.0)
    assert domains["model.arch"].values == ("dcgan", "resnet")
    with pytest.raises(errors.JobError, match="tune.space.model.output: 'sigmoid' is not one of"):
        from_dict({"tune": {"space": {"model.output": "choice([tanh, sigmoid])"}}})


# --- the job against its data, before Ray ----------------------------------------------------


def test_dry_run_refuses_a_conditional_job_on_unlabelled_data(tmp_path, capsys):
    images, labels = labelled_images(16)
    write_shards(images, None, tmp_path / "plain", source="test")
    write_shards(images, labels, tmp_path / "labelled", source="test")
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {"data": {"source": str(tmp_path / "plain")}, "model": {"conditional": True}}
        )
    )
    assert main(["train", str(job), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert f"{job}: model.conditional: the data at" in err and "has no labels" in err
    assert "model.conditional: false" in err
    assert main(["train", str(job), "--dry-run", "--set", f"data.source={tmp_path}/labelled"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["conditional"] is True
