"""Runs and data in a real S3-compatible server (moto, 127.0.0.1): imports into a bucket, and the
mistakes a user makes with object storage, each one line and exit 2 with nothing written.

No Ray here: every check these cases hit comes before Ray (``--dry-run`` makes them all).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, ray_port_base

from distgan.cli import main


def _one_line(capsys) -> str:
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in printed.err, printed.err
    return lines[0]


def test_import_into_a_bucket_verify_and_list(s3_env, tmp_path, capsys):
    s3 = s3_env
    s3.create_bucket("imports")
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(30) % 3)
    out = s3.uri("imports", "x")
    assert main(["data", "import", str(tmp_path / "x.npz"), "--out", out]) == 0
    assert sorted(s3.keys("imports", "x/")) == ["x/manifest.json", "x/shard-00000.parquet"]
    assert json.loads(s3.read("imports", "x/manifest.json"))["count"] == 30
    capsys.readouterr()
    assert main(["data", "verify", out]) == 0
    assert capsys.readouterr().out.startswith("OK s3://imports/x")
    # The job accepts the bucket as its data, and a dry run checks it there.
    argv = ["train", str(REPO / "jobs" / "quickstart.yaml"), "--dry-run"]
    assert main([*argv, "--set", f"data.source={out}", "--set", "model.arch=mlp"]) == 0


def _dry_run(capsys, tmp_path, *overrides: str) -> tuple[int, str]:
    argv = ["train", str(REPO / "jobs" / "quickstart.yaml"), "--dry-run"]
    for item in (f"run.root={tmp_path / 'runs'}", *overrides):
        argv += ["--set", item]
    code = main(argv)
    return code, _one_line(capsys)


@pytest.mark.parametrize(
    "field, where, expect",
    [
        ("run.storage", "missing-bucket", "the bucket 'nope' does not exist; create it first"),
        ("data.source", "missing-bucket", "the bucket 'nope' does not exist"),
        ("data.source", "no-manifest", "has no manifest.json; create one with `distgan data"),
        ("run.storage", "unknown-scheme", "pyarrow cannot open a 'ftp' location"),
        ("data.source", "unreachable", "the storage endpoint does not answer; check endpoint_"),
    ],
)
def test_object_storage_mistakes_are_one_line(s3_env, tmp_path, capsys, field, where, expect):
    s3 = s3_env
    s3.create_bucket("data")
    s3.write("data", "empty-prefix/readme.txt", b"no shards here")
    location = {
        "missing-bucket": s3.uri("nope", "runs"),
        "no-manifest": s3.uri("data", "empty-prefix"),
        "unknown-scheme": "ftp://host/runs",
        # Nothing listens there (conftest.ray_port_base: +999 stays closed).
        "unreachable": f"s3://data/x?endpoint_override=127.0.0.1:{ray_port_base() + 999}"
        "&scheme=http",
    }[where]
    code, line = _dry_run(capsys, tmp_path, f"{field}={location}")
    assert code == 2
    assert line.startswith(f"error: {REPO / 'jobs' / 'quickstart.yaml'}: {field}: "), line
    assert expect in line, line
    assert not (tmp_path / "runs").exists()


def test_refused_credentials_are_one_line(monkeypatch, tmp_path, capsys):
    """A server that checks credentials (moto with authentication on after its first requests,
    which make the bucket): the dummy keys are refused."""
    from s3 import S3_ENV, start_s3_server

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    # moto authenticates every request after the first two: the start-up check's, the bucket's.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "2")
    server = start_s3_server(ray_port_base() + 996, tmp_path / "moto.log")
    try:
        server.create_bucket("runs")
        code, line = _dry_run(capsys, tmp_path, f"run.storage={server.uri('runs', 'r')}")
    finally:
        server.stop()
    assert code == 2
    assert "run.storage: s3://runs/r: the storage refused the credentials" in line
    assert "AWS_ACCESS_KEY_ID" in line and "testing" not in line
    # Where credentials go on a cluster: its nodes, never the job (submit --env is refused).
    assert "instance role" in line and "Kubernetes secret" in line and "`ray start`" in line
    assert "--env" not in line


def test_an_existing_run_in_a_bucket_is_never_touched_by_a_bad_resume(s3_env, tmp_path, capsys):
    s3 = s3_env
    s3.create_bucket("kept")
    s3.write("kept", "r/00000-q/job.resolved.yaml", b"data: {source: embedded}\n")
    before = {k: s3.read("kept", k) for k in s3.keys("kept", "r/")}
    assert main(["train", "--resume", s3.uri("kept", "r/00000-q")]) == 2
    line = _one_line(capsys)
    assert "no checkpoint to resume from" in line and line.startswith("error: s3://kept/r/")
    assert {k: s3.read("kept", k) for k in s3.keys("kept", "r/")} == before


def test_a_feature_network_in_a_bucket_is_fitted_there_and_found_by_auto(s3_env, tmp_path):
    """``eval fit-features URI`` writes features.pt (and its sidecar) beside the dataset in the
    bucket; ``eval.features: auto`` on that dataset picks it, and its ``origin`` is the URI that
    every node loads it from (the in-training evaluation hands that to the workers)."""
    from distgan.config import from_dict
    from distgan.data import read_manifest
    from distgan.metrics.features import load_feature_extractor
    from distgan.train.evaluation import prepare_evaluation

    s3 = s3_env
    s3.create_bucket("feats")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(60) % 3)
    data = s3.uri("feats", "x")
    assert main(["data", "import", str(tmp_path / "x.npz"), "--out", data]) == 0
    assert main(["eval", "fit-features", data, "--epochs", "1"]) == 0
    assert {"x/features.pt", "x/features.json"} <= set(s3.keys("feats", "x/"))
    sidecar = json.loads(s3.read("feats", "x/features.json"))
    weights = data.replace("/x?", "/x/features.pt?")
    assert sidecar["num_classes"] == 3 and sidecar["command"].endswith(f"--out {weights}")

    extractor = load_feature_extractor("auto", data)
    assert extractor.origin == weights
    assert extractor.num_classes == 3  # this dataset's network, not the shipped 10-class one
    assert extractor.sha256 == sidecar["sha256"]
    # By its URI too (eval.features: URI), and as the workers get it from the evaluation config.
    assert load_feature_extractor(weights).sha256 == extractor.sha256
    spec = from_dict({"data": {"source": data}, "eval": {"every": 10, "n_real": 30}})
    config = prepare_evaluation(spec, read_manifest(data), "job.yaml")
    assert config["features_path"] == weights
    assert config["real_features"].shape == (30, extractor.dim)
