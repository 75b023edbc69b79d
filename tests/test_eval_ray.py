"""In-training evaluation on a real Ray run, best-checkpoint retention, and `distgan eval` of
checkpoints (`distgan eval` of a run directory: test_train_ray.py)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from distgan.cli import main
from distgan.train import checkpoint as ckpts
from distgan.train.outputs import read_best, read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray-a")]  # conftest.py


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_best_checkpoint_survives_a_run_that_gets_worse(
    ray_cluster, tmp_path, cache_home, capsys, monkeypatch
):
    # The one worker computes with the threads OMP_NUM_THREADS says (without it, it would take
    # both cores of a 2-core machine: test_train_ray.py).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = {
        "data": {"source": "embedded"},
        "model": {"arch": "dcgan", "width": 16, "z_dim": 32},
        "train": {"steps": 200, "batch_size": 64, "log_every": 100, "checkpoint_every": 1000,
                  "sample_every": 1000, "keep_checkpoints": 1},
        "eval": {"every": 100, "metric": "fid", "n_samples": 256, "n_real": 1000},
        "scale": {"workers": 1},  # DDP is test_train_ray.py's; the best model is this one's
        "run": {"name": "evaljob", "root": str(tmp_path / "runs")},
    }  # fmt: skip
    path = tmp_path / "evaljob.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fid " in out  # the progress line shows the figure
    assert "1 CPU worker · 10,000 images 1×28×28 · 1 thread a worker (OMP_NUM_THREADS)" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert list(cache_home.glob("distgan/reference/*.npz")), "reference statistics are cached"

    # Resumed with absurd learning rates, G is wrecked: its FID must rise well above the best.
    args = ["train", "--resume", str(run_dir), "--set", "train.steps=300"]
    args += ["--set", "optim.lr_g=0.5", "--set", "optim.lr_d=0.5"]
    assert main(args) == 0
    assert "resuming from" in capsys.readouterr().out

    fids = {m["step"]: m["fid"] for m in read_metrics(run_dir) if "fid" in m}
    assert sorted(fids) == [100, 200, 300]
    finite = {s: v for s, v in fids.items() if math.isfinite(v)}
    best_step = min(finite, key=finite.get)
    assert best_step <= 200 and (not math.isfinite(fids[300]) or fids[300] > 2 * finite[best_step])

    assert json.loads((run_dir / "complexity.json").read_text())["cpu_threads"] == 1
    best = read_best(run_dir)
    assert best == {"metric": "fid", "value": finite[best_step], "step": best_step}
    best_ckpt = ckpts.load(run_dir / "best")
    assert best_ckpt["step"] == best_step and best_ckpt["metrics"]["fid"] == finite[best_step]
    # Ray keeps the best checkpoint by eval.metric (keep_checkpoints: 1) besides the latest.
    kept = {int(f.name.split("_")[1]) for f in ckpts.checkpoints(run_dir)}
    assert kept == {best_step, 300}

    # distgan eval ranks the two checkpoints the same way, with the protocol beside each figure.
    scores = {}
    for name, folder in (("best", run_dir / "best"), ("last", ckpts.latest(run_dir))):
        out = tmp_path / f"{name}.json"
        argv = ["eval", str(folder), "--metrics", "fid,kid,precision,recall", "--n", "500"]
        assert main(argv + ["--n-real", "1000", "--out", str(out)]) == 0
        record = json.loads(out.read_text())
        scores[name] = {r["metric"]: r["value"] for r in record["results"]}
        proto = record["results"][0]["protocol"]
        assert proto["real_count"] == 1000 and proto["fake_count"] == 500
        assert proto["features"] and len(proto["features_sha256"]) == 64
    assert "fid" in capsys.readouterr().out
    assert scores["best"]["fid"] < scores["last"]["fid"] or not math.isfinite(scores["last"]["fid"])
