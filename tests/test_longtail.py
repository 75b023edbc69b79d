"""Imbalanced data (issue 13, item 1): long-tailed imports, class-balanced sampling with the
matching fake-label prior, and the per-class metrics. One process, no Ray.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from distgan.cli import main
from distgan.config import from_dict
from distgan.data import imbalance, load_arrays, read_manifest, write_shards
from distgan.data.imbalance import (
    ClassPrior,
    class_prior,
    long_tail_counts,
    long_tail_rows,
    rare_classes,
    sample_weights,
)
from distgan.data.manifest import ShardInfo
from distgan.data.reader import InMemoryBatches
from distgan.errors import DataError, JobError
from distgan.losses import get_loss
from distgan.metrics import FeatureSet, compute_metrics
from distgan.metrics.classes import class_kl, class_protocol, per_class_fid
from distgan.metrics.evaluate import figure_protocols, write_eval_json
from distgan.models import ModelOptions, build_models
from distgan.search_space import parse_space
from distgan.specs import CLASS_BALANCES
from distgan.step import Game, Nets, draw_labels, train_step

# --- the long-tail protocol ------------------------------------------------------------------


def test_long_tail_counts_follow_the_protocol_exactly():
    # Fashion-MNIST's 6,000 a class at ratio 100: class k keeps floor(6000 · 100^(-k/9)), the
    # values computed with 50-digit decimals.
    counts = long_tail_counts(dict.fromkeys(range(10), 6000), 100)
    assert counts == {
        0: 6000, 1: 3596, 2: 2156, 3: 1292, 4: 774, 5: 464, 6: 278, 7: 166, 8: 100, 9: 60
    }  # fmt: skip
    # Each class keeps its own share of its own count; classes sorted by label, not by count.
    assert long_tail_counts({7: 50, 2: 1000, 5: 400}, 10) == {2: 1000, 5: 126, 7: 5}
    assert long_tail_counts({0: 30, 1: 30}, 1) == {0: 30, 1: 30}  # ratio 1: nothing is cut
    assert long_tail_counts({3: 9}, 100) == {3: 9}  # one class is its own head
    for bad in (0.5, float("nan"), float("inf"), "100"):
        with pytest.raises(ValueError, match="ratio"):
            long_tail_counts({0: 10, 1: 10}, bad)


def test_long_tail_rows_are_reproducible_by_seed_and_other_seeds_pick_other_images():
    labels = np.repeat(np.arange(5), 200)  # (1000,)
    np.random.default_rng(0).shuffle(labels)
    a, again, other = (long_tail_rows(labels, 20, seed) for seed in (3, 3, 4))
    assert np.array_equal(a, again)
    assert not np.array_equal(a, other)
    want = long_tail_counts(dict.fromkeys(range(5), 200), 20)
    for rows in (a, other):
        assert np.all(np.diff(rows) > 0)  # sorted, no row twice
        got = np.bincount(labels[rows], minlength=5)
        assert dict(enumerate(got.tolist())) == want


@pytest.fixture
def labelled_npz(tmp_path):
    """An .npz of 400 images, 100 a class of 4, each image's pixels holding its index."""
    index = np.arange(400)
    images = np.stack([np.full((1, 8, 8), i % 256, np.uint8) for i in index])
    images[:, 0, 0, 0] = index // 256  # the index in two bytes: which image was kept
    labels = index % 4
    path = tmp_path / "src.npz"
    np.savez(path, images=images, labels=labels)
    return path


def _kept_ids(folder) -> np.ndarray:
    images, _ = load_arrays(read_manifest(folder))
    return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 0, 1]


def test_import_long_tail_writes_the_counts_and_the_protocol(labelled_npz, tmp_path, capsys):
    out = tmp_path / "lt"
    argv = ["data", "import", str(labelled_npz), "--long-tail", "10", "--seed", "7"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "long tail ×10: 100, 46, 21, 10 images a class" in capsys.readouterr().out
    m = read_manifest(out)
    assert m.label_counts == {0: 100, 1: 46, 2: 21, 3: 10} and m.count == 177
    assert m.long_tail == {
        "ratio": 10.0, "seed": 7, "source_counts": {"0": 100, "1": 100, "2": 100, "3": 100}
    }  # fmt: skip
    assert "long-tailed ×10 (seed 7)" in m.source
    # The same seed keeps the same images; another seed other images, in the same counts.
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(_kept_ids(out), _kept_ids(tmp_path / "again"))
    argv[-1] = "8"
    assert main([*argv, "--out", str(tmp_path / "other")]) == 0
    assert read_manifest(tmp_path / "other").label_counts == m.label_counts
    assert not np.array_equal(_kept_ids(out), _kept_ids(tmp_path / "other"))
    # Every kept image is one of its class: labels travel with their images.
    images, labels = load_arrays(m)
    ids = images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 0, 1]
    assert np.array_equal(ids % 4, labels)


def test_manifests_without_long_tail_stay_valid_and_a_bad_one_is_refused(tmp_path):
    write_shards(np.zeros((4, 1, 2, 2), np.uint8), np.arange(4), tmp_path / "d", source="t")
    text = (tmp_path / "d" / "manifest.json").read_text()
    assert "long_tail" not in text and read_manifest(tmp_path / "d").long_tail is None
    data = json.loads(text)
    data["long_tail"] = {"ratio": 0.5, "seed": 0, "source_counts": {"0": 1}}
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="field 'long_tail' must be null or"):
        read_manifest(tmp_path / "d")


# --- class priors and balanced sampling ------------------------------------------------------


def test_class_priors():
    counts = {0: 900, 1: 100, 3: 25}  # label 2 has no images
    assert np.allclose(class_prior(counts, "none"), np.array([900, 100, 0, 25]) / 1025)
    assert np.allclose(class_prior(counts, "balanced"), [1 / 3, 1 / 3, 0, 1 / 3])
    assert np.allclose(class_prior(counts, "sqrt"), np.array([30, 10, 0, 5]) / 45)
    assert CLASS_BALANCES == imbalance.CLASS_BALANCES
    assert rare_classes({0: 900, 1: 100, 2: 100, 3: 25, 4: 0}) == (2, 3)  # ties: larger label
    assert rare_classes(dict.fromkeys(range(10), 5)) == (6, 7, 8, 9)


def _class_shares(prior: np.ndarray, epochs: int = 8) -> np.ndarray:
    counts = np.array([900, 90, 10])
    labels = torch.from_numpy(np.repeat(np.arange(3), counts))
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    source = InMemoryBatches(
        images, 50, seed=0, rank=0, device=torch.device("cpu"), labels=labels,
        weights=sample_weights(labels, prior),
    )  # fmt: skip
    drawn = torch.cat([y for e in range(epochs) for _, y in source.epoch_batches(e)])
    assert len(drawn) == epochs * 1000  # an epoch is as many batches as without weights
    return np.bincount(drawn.numpy(), minlength=3) / len(drawn)


def test_balanced_sampling_draws_each_class_equally_often():
    prior = class_prior({0: 900, 1: 90, 2: 10}, "balanced")
    shares = _class_shares(prior)  # 8,000 draws: a share's standard error is about 0.005
    assert np.allclose(shares, 1 / 3, atol=0.02), shares


def test_sqrt_sampling_draws_classes_in_proportion_to_the_root_of_their_counts():
    prior = class_prior({0: 900, 1: 90, 2: 10}, "sqrt")
    shares = _class_shares(prior)
    want = np.sqrt([900, 90, 10]) / np.sqrt([900, 90, 10]).sum()  # 0.71, 0.22, 0.07
    assert np.allclose(shares, want, atol=0.02), shares
    assert np.allclose(
        _class_shares(class_prior({0: 900, 1: 90, 2: 10}, "none")), [0.9, 0.09, 0.01], atol=0.02
    )


def test_weighted_epochs_are_reproducible_and_resume_where_they_stopped():
    labels = torch.arange(200) % 4
    images = torch.arange(200, dtype=torch.uint8).view(200, 1, 1, 1)
    weights = sample_weights(labels, class_prior({0: 50, 1: 50, 2: 50, 3: 50}, "balanced"))
    make = lambda: InMemoryBatches(images, 20, 1, 0, torch.device("cpu"), None, weights)  # noqa: E731
    whole = list(make().epoch_batches(3))
    resumed = list(make().epoch_batches(3, skip=4))
    assert all(torch.equal(a, b) for a, b in zip(whole[4:], resumed, strict=True))


def test_a_worker_missing_a_class_draws_the_others_by_the_prior():
    labels = torch.tensor([0] * 30 + [1] * 10)  # class 2 of the prior is on another worker
    weights = sample_weights(labels, np.array([0.5, 0.25, 0.25]))
    assert torch.isclose(weights[:30].sum(), torch.tensor(2 / 3, dtype=torch.float64))
    assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64))


class Recorder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.labels: list[torch.Tensor] = []

    def forward(self, x, y=None):
        self.labels.append(y)
        return self.model(x, y)


def test_the_fake_labels_follow_the_label_prior():
    torch.manual_seed(0)
    G, D = build_models("dcgan", 8, 4, (1, 28, 28), ModelOptions(num_classes=3))
    G, D = Recorder(G), Recorder(D)
    prior = torch.tensor([0.7, 0.2, 0.1])
    nets = Nets(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()))
    game = Game(get_loss("nonsaturating"), num_classes=3, label_prior=prior)
    drawn = draw_labels(game, 20_000, torch.device("cpu"))
    assert np.allclose(np.bincount(drawn.numpy(), minlength=3) / 20_000, prior, atol=0.015)
    # the step draws what the prior says
    game = Game(get_loss("nonsaturating"), num_classes=3, label_prior=torch.tensor([0, 0, 1.0]))
    real = torch.rand(8, 1, 28, 28)
    train_step(nets, game, [real], lambda n: torch.randn(n, 8), real_labels=[torch.zeros(8).long()])
    (fake_labels,) = G.labels
    assert torch.equal(fake_labels, torch.full((8,), 2))
    assert torch.equal(D.labels[1], fake_labels)  # the G step judges the same labels


def test_class_balance_is_a_validated_searchable_field():
    assert from_dict({"train": {"class_balance": "sqrt"}}).train.class_balance == "sqrt"
    with pytest.raises(JobError, match="train.class_balance: 'even' is not one of none, balanced"):
        from_dict({"train": {"class_balance": "even"}})
    with pytest.raises(JobError, match="data.cache: stream .* use data.cache: memory"):
        from_dict({"train": {"class_balance": "balanced"}, "data": {"cache": "stream"}})
    space = {"train.class_balance": "choice([none, balanced, sqrt])"}
    spec = from_dict({"tune": {"space": space}})
    assert parse_space(spec, "job.yaml")["train.class_balance"].values == (
        "none", "balanced", "sqrt"
    )  # fmt: skip
    with pytest.raises(JobError, match="tune.space.train.class_balance"):
        from_dict({"tune": {"space": {"train.class_balance": "choice([none, even])"}}})


# --- the per-class metrics -------------------------------------------------------------------

K = 6  # classes; each a Gaussian cluster of its own in an 8-d feature space
CENTRES = np.random.default_rng(1).normal(0, 4, (K, 8))


def cluster_features(counts, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 8) and labels (N,): counts[k] samples around class k's centre."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), counts)
    return CENTRES[labels] + rng.normal(0, 1, (len(labels), 8)), labels


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(K)[labels]


TRAIN_COUNTS = {k: c for k, c in enumerate([1000, 500, 250, 120, 60, 30])}  # rare: 4, 5


@pytest.fixture
def real() -> FeatureSet:
    f, y = cluster_features([300] * K, seed=2)
    return FeatureSet(f, one_hot(y), labels=y, classes=ClassPrior.of(TRAIN_COUNTS, "none"))


def test_intra_fid_is_near_zero_for_the_same_class_and_large_for_mismatched_classes(real):
    f, y = cluster_features([300] * K, seed=3)  # fresh samples of the same classes
    same = compute_metrics(["intra_fid"], real, FeatureSet(f, labels=y))
    shifted = compute_metrics(["intra_fid"], real, FeatureSet(f, labels=(y + 1) % K))
    assert same["intra_fid"] < 0.5 and same["intra_fid_rare"] < 0.5, same
    assert shifted["intra_fid"] > 20 and shifted["intra_fid_rare"] > 20, shifted
    assert same["intra_fid_missing"] == 0
    identical = per_class_fid(real, FeatureSet(real.features, labels=real.labels))
    assert max(identical.values()) < 1e-6 and sorted(identical) == list(range(K))
    # An unconditional G's samples are classed by the classifier: the same figures here.
    classed = compute_metrics(["intra_fid"], real, FeatureSet(f, one_hot(y)))
    assert classed == same


def test_intra_fid_counts_the_classes_a_generator_never_draws(real):
    f, y = cluster_features([300, 300, 300, 300, 0, 0], seed=3)
    figures = compute_metrics(["intra_fid"], real, FeatureSet(f, one_hot(y)))
    assert figures["intra_fid_missing"] == 2 and math.isnan(figures["intra_fid_rare"])


def test_class_kl_is_zero_for_matching_histograms_and_positive_otherwise(real):
    prior = real.classes.prior
    counts = np.round(prior * 2000).astype(int)  # a histogram with the prior's shares
    f, y = cluster_features(counts, seed=4)
    match = compute_metrics(["class_kl"], real, FeatureSet(f, one_hot(y)))
    assert match["class_kl"] < 1e-4
    assert match["class_kl_rare_share"] == pytest.approx(prior[4] + prior[5], abs=1e-3)
    f, y = cluster_features([400] * K, seed=4)  # uniform against a long-tailed prior
    assert compute_metrics(["class_kl"], real, FeatureSet(f, one_hot(y)))["class_kl"] > 0.3
    # A conditional G is held to the labels it was given: drawing them exactly scores 0, and
    # drawing class 0 whatever it is asked for scores log K... of the asked-for histogram.
    asked = np.repeat(np.arange(K), 100)
    obeys = compute_metrics(["class_kl"], real, FeatureSet(f[:600], one_hot(asked), labels=asked))
    assert obeys["class_kl"] == 0
    ignores = FeatureSet(f[:600], one_hot(np.zeros(600, int)), labels=asked)
    assert compute_metrics(["class_kl"], real, ignores)["class_kl"] == pytest.approx(math.log(K))
    assert class_kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf


def test_rare_recall_drops_when_the_generator_omits_the_rare_classes(real):
    f, y = cluster_features([300] * K, seed=5)
    all_classes = compute_metrics(["rare_recall"], real, FeatureSet(f, one_hot(y)))
    keep = y != 5  # drops the rarest class
    one_dropped = compute_metrics(["rare_recall"], real, FeatureSet(f[keep], one_hot(y[keep])))
    keep = y < 4  # drops both rare classes
    none = compute_metrics(["rare_recall"], real, FeatureSet(f[keep], one_hot(y[keep])))
    assert all_classes["rare_recall"] > 0.8
    assert 0.35 < one_dropped["rare_recall"] < 0.65
    assert none["rare_recall"] == 0.0


def test_per_class_metrics_need_labelled_real_data():
    f, y = cluster_features([10] * K, seed=6)
    with pytest.raises(ValueError, match="intra_fid needs labelled real and training data"):
        compute_metrics(["intra_fid"], FeatureSet(f), FeatureSet(f, labels=y))


def test_eval_json_keeps_the_class_protocol_beside_the_per_class_figures(real, tmp_path):
    f, y = cluster_features([300] * K, seed=3)
    fake = FeatureSet(f, one_hot(y))
    figures = compute_metrics(["fid", "intra_fid", "rare_recall"], real, fake)
    own = figure_protocols(
        figures, ["intra_fid", "rare_recall"], {"seed": 0}, class_protocol(real, fake)
    )
    path = write_eval_json(tmp_path / "eval.json", "ckpt", 10, figures, {"seed": 0}, own)
    results = {r["metric"]: r["protocol"] for r in json.loads(Path(path).read_text())["results"]}
    assert results["fid"] == {"seed": 0}
    for name in ("intra_fid", "intra_fid_rare", "intra_fid_missing", "rare_recall"):
        proto = results[name]
        assert proto["seed"] == 0 and proto["rare_classes"] == [4, 5]
        assert proto["real_per_class"] == [300] * K and proto["fake_per_class"] == [300] * K
        assert proto["train_counts"] == list(TRAIN_COUNTS.values())
        assert "classifier" in proto["fake_classes"]


# --- the per-class metrics through `distgan eval` and in-training evaluation -----------------


def _conditional_run(tmp_path, balance: str):
    """A labelled 28×28 dataset (200 images, 4 classes, long-tailed 100/50/30/20), and a run
    directory of a conditional dcgan trained on it (a real checkpoint at step 10)."""
    from distgan.config import dump_yaml
    from distgan.train import checkpoint as ckpts
    from distgan.train.build import build_state

    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    images = np.random.default_rng(0).integers(0, 256, (200, 1, 28, 28), dtype=np.uint8)
    write_shards(images, labels, tmp_path / "data", source="test")
    job = {
        "data": {"source": str(tmp_path / "data")},
        "model": {"arch": "dcgan", "width": 8, "z_dim": 16, "conditional": True},
        "train": {"batch_size": 32, "class_balance": balance},
        "eval": {"every": 10, "metric": "intra_fid", "n_samples": 40, "n_real": 200},
        "run": {"name": "r", "root": str(tmp_path / "runs")},
    }
    spec = from_dict(job)
    state = build_state(spec, (1, 28, 28), torch.device("cpu"), num_classes=4)
    state.step = 10
    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000010").mkdir(parents=True)
    (run / "job.resolved.yaml").write_text(dump_yaml(spec))
    ckpt = ckpts.snapshot(state, dump_yaml(spec), [ckpts.rng_state()], {"step": 10.0})
    ckpts.save(ckpt, run / "checkpoints" / "step_0000010")
    return spec, state, run


def test_distgan_eval_writes_the_per_class_figures_beside_their_protocol(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _, _, run = _conditional_run(tmp_path, "balanced")
    argv = ["eval", str(run), "--metrics", "fid,intra_fid,class_kl,rare_recall"]
    assert main([*argv, "--n", "80", "--n-real", "200"]) == 0
    out = capsys.readouterr().out
    assert "classes: rare 2, 3" in out and "prior balanced" in out
    record = json.loads((run / "eval.json").read_text())
    results = {r["metric"]: r for r in record["results"]}
    assert set(results) >= {"fid", "intra_fid", "intra_fid_rare", "class_kl", "rare_recall"}
    proto = results["intra_fid"]["protocol"]
    assert proto["rare_classes"] == [2, 3] and proto["train_counts"] == [100, 50, 30, 20]
    assert proto["prior"] == [0.25] * 4 and proto["class_balance"] == "balanced"
    assert proto["real_per_class"] == [100, 50, 30, 20]
    assert proto["fake_per_class"] == [20] * 4  # the conditional G drew every class in turn
    assert "conditional" in proto["fake_classes"]
    assert "rare_classes" not in results["fid"]["protocol"]
    assert results["intra_fid"]["value"] > 0 and results["intra_fid_missing"]["value"] == 0


def test_in_training_evaluation_scores_a_per_class_metric(tmp_path, monkeypatch):
    from distgan.data import read_manifest as read
    from distgan.train.evaluation import InTrainingEvaluator, prepare_evaluation

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec, state, _ = _conditional_run(tmp_path, "sqrt")
    config = prepare_evaluation(spec, read(tmp_path / "data"), "job.yaml")
    assert config["classes"].rare == (2, 3) and len(config["real_labels"]) == 200
    assert np.allclose(
        config["classes"].prior, np.sqrt([100, 50, 30, 20]) / np.sqrt([100, 50, 30, 20]).sum()
    )
    figures = InTrainingEvaluator(spec, config, torch.device("cpu"))(state)
    assert set(figures) == {"intra_fid", "intra_fid_rare", "intra_fid_missing"}
    assert figures["intra_fid_missing"] == 0  # 40 samples: 10 of each class


class FakeShard:
    """What Ray Data hands a worker, enough for ``load_rows``: the rows in a table."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        image = pa.array([img.tobytes() for img in images], pa.binary())
        self.table = pa.table({"image": image, "label": labels.astype(np.int64)})

    def iter_batches(self, batch_size, batch_format):
        yield self.table


@pytest.mark.parametrize("conditional", [False, True])
def test_the_worker_draws_balanced_batches_of_a_long_tailed_shard(conditional):
    from distgan.train.worker import batch_source

    labels = np.repeat(np.arange(3), [160, 32, 8])
    images = labels.astype(np.uint8).reshape(-1, 1, 1, 1) * 100  # pixel = 100 × label
    job = {"train": {"class_balance": "balanced", "batch_size": 40}, "scale": {"workers": 1}}
    job["model"] = {"arch": "dcgan", "conditional": conditional}
    spec = from_dict(job)
    shards = [ShardInfo("shard-00000.parquet", len(labels), "")]  # read by Ray Data: FakeShard
    source = batch_source(
        spec,
        FakeShard(images, labels),
        None,
        shards,
        (1, 1, 1),
        False,
        0,
        1,
        torch.device("cpu"),
        {0: 160, 1: 32, 2: 8},
        len(labels),
    )
    assert isinstance(source, InMemoryBatches)  # balanced draws keep the shard in memory
    batches = [b for e in range(10) for b in source.epoch_batches(e)]
    x = torch.cat([b[0] if conditional else b for b in batches])
    classes = torch.round((x.flatten() + 1) * 127.5 / 100).long()  # back from [-1, 1]
    assert np.allclose(np.bincount(classes.numpy(), minlength=3) / len(classes), 1 / 3, atol=0.03)
    if conditional:  # the labels travel with their images
        assert torch.equal(torch.cat([b[1] for b in batches]), classes)
