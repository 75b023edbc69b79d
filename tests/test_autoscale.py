"""Waiting for an autoscaler (train/cluster.py), without one: Ray's request_resources and the
cluster's resources are stood in for, so the wait's decisions can be watched step by step.

Ray's real autoscaler, with a node provider of the project's own that starts nodes on 127.0.0.1
(tests/autoscaling.py), runs a job end to end in test_autoscaler_ray.py; ``has_autoscaler`` is
checked on a plain head in ``test_a_plain_head_has_no_autoscaler``.
"""

from __future__ import annotations

import io

import pytest

from distgan.config import from_dict
from distgan.data import EMBEDDED_DIR, read_manifest
from distgan.errors import ClusterError
from distgan.train import cluster
from distgan.train.launch import plan


@pytest.fixture
def autoscaler(monkeypatch):
    """A cluster with an autoscaler that adds a 4-CPU node after ``delay`` polls."""
    state = {"asked": [], "polls": 0, "delay": 2, "cpus": 1.0}

    def resources():
        state["polls"] += 1
        if state["asked"] and state["polls"] > state["delay"]:
            state["cpus"] = 5.0
        return state["cpus"], 0.0

    monkeypatch.setattr(cluster, "has_autoscaler", lambda: True)
    monkeypatch.setattr(cluster, "cluster_resources", resources)
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    import ray.autoscaler.sdk

    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: state["asked"]
                        .append(bundles))  # fmt: skip
    return state


def job(**scale):
    return from_dict({"scale": {"workers": 2, **scale}, "run": {"name": "q"}})


def test_the_missing_cpus_are_asked_for_and_waited_on(autoscaler):
    out = io.StringIO()
    p = cluster.plan_with_autoscaler(job(), read_manifest(EMBEDDED_DIR), "job.yaml", out, plan)
    assert p.workers == 2 and p.cpus_per_worker == 1.0
    assert autoscaler["asked"] == [[{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]]  # 2 + Ray Data
    assert "waiting up to 15 min for the autoscaler to add 3 CPUs" in out.getvalue()


def test_an_autoscaler_that_adds_nothing_fails_after_wait_minutes(autoscaler, monkeypatch):
    autoscaler["delay"] = 10**9
    clock = iter(range(0, 10**6, 30))  # 30 s a poll
    monkeypatch.setattr(cluster.time, "monotonic", lambda: next(clock))
    with pytest.raises(ClusterError) as err:
        cluster.plan_with_autoscaler(
            job(wait_minutes=2), read_manifest(EMBEDDED_DIR), "job.yaml", io.StringIO(), plan
        )
    assert str(err.value).startswith("job.yaml: scale.wait_minutes: the autoscaler did not add 3")
    assert "raise scale.wait_minutes" in str(err.value)


def test_without_an_autoscaler_or_with_wait_minutes_0_it_fails_at_once(autoscaler, monkeypatch):
    for spec, has in ((job(), False), (job(wait_minutes=0), True)):
        monkeypatch.setattr(cluster, "has_autoscaler", lambda has=has: has)
        with pytest.raises(ClusterError, match=r"^job.yaml: scale.workers: 2 CPU workers need"):
            cluster.plan_with_autoscaler(
                spec, read_manifest(EMBEDDED_DIR), "job.yaml", io.StringIO(), plan
            )
    assert autoscaler["asked"] == []


def test_gpu_bundles_hold_one_gpu_a_worker():
    assert cluster.wanted_bundles(job(use_gpu=True)) == [{"CPU": 1.0, "GPU": 1.0}] * 2


@pytest.mark.ray
@pytest.mark.xdist_group("ray-a")  # conftest.py
def test_a_plain_head_has_no_autoscaler(ray_cluster):
    import ray

    ray.init(address=ray_cluster, log_to_driver=False, logging_level="warning")
    try:
        assert cluster.has_autoscaler() is False
    finally:
        ray.shutdown()
