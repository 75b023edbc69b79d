"""How a job maps onto a cluster's CPUs and GPUs (no Ray needed: the plan is plain arithmetic)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from distgan.data import EMBEDDED_DIR, read_manifest
from distgan.errors import ClusterError, JobError
from distgan.specs import DataSpec, JobSpec, ScaleSpec
from distgan.train.launch import MEMORY_CACHE_LIMIT, plan
from distgan.train.threads import threads_asked

MANIFEST = read_manifest(EMBEDDED_DIR)


def spec(**scale) -> JobSpec:
    return JobSpec(scale=ScaleSpec(**scale))


@pytest.mark.parametrize(
    "workers, cpus, expected",
    [(2, 2, 0.5), (1, 2, 1.0), (2, 8, 1.0), (3, 4, 1.0), (4, 3, 0.5)],
)
def test_cpu_workers_always_leave_a_cpu_for_ray_data(workers, cpus, expected):
    p = plan(spec(workers=workers), MANIFEST, cluster_cpus=cpus, cluster_gpus=0)
    assert p.cpus_per_worker == pytest.approx(expected)
    assert cpus - p.workers * p.cpus_per_worker >= 1.0


def test_too_many_cpu_workers_is_a_clear_error():
    with pytest.raises(ClusterError, match="scale.workers: 30 CPU workers"):
        plan(spec(workers=30), MANIFEST, cluster_cpus=2, cluster_gpus=0)


def test_explicit_cpus_that_do_not_fit_are_refused():
    with pytest.raises(ClusterError, match="scale.cpus_per_worker"):
        plan(spec(workers=2, cpus_per_worker=2), MANIFEST, cluster_cpus=2, cluster_gpus=0)


def test_explicit_cpus_that_leave_none_for_ray_data_are_refused():
    # 2 × 1 CPU on a 2-CPU cluster fits the workers but starves Ray Data's read tasks: such a
    # job used to wait at step 0 forever.
    with pytest.raises(ClusterError, match="leave 0 of the 2 CPUs .* Ray Data needs one"):
        plan(spec(workers=2, cpus_per_worker=1), MANIFEST, cluster_cpus=2, cluster_gpus=0)
    assert plan(spec(workers=2, cpus_per_worker=1), MANIFEST, 3, 0).cpus_per_worker == 1.0


def test_gpu_workers_need_a_gpu_each():
    p = plan(spec(workers=2, use_gpu=True), MANIFEST, cluster_cpus=16, cluster_gpus=2)
    assert p.use_gpu and p.cpus_per_worker == 1.0
    with pytest.raises(ClusterError, match="need 4 GPUs; the Ray cluster has 2"):
        plan(spec(workers=4, use_gpu=True), MANIFEST, cluster_cpus=16, cluster_gpus=2)


def test_small_data_is_cached_in_memory_and_large_data_streams():
    assert plan(spec(workers=2), MANIFEST, 2, 0).cache
    big = dataclasses.replace(MANIFEST, count=2 * MEMORY_CACHE_LIMIT // 784 + 10)
    assert not plan(spec(workers=2), big, 2, 0).cache
    assert not plan(JobSpec(data=DataSpec(cache="stream")), MANIFEST, 2, 0).cache


@pytest.mark.parametrize("value, threads", [(None, 0), ("", 0), ("1", 1), (" 3 ", 3)])
def test_omp_num_threads_sets_a_cpu_workers_threads(monkeypatch, value, threads):
    """OMP_NUM_THREADS, where the user set it, is each CPU worker's thread count (0: the
    worker takes its node's cores shared among the workers there; train/worker.py)."""
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads_asked() == threads


def test_a_submitted_jobs_driver_leaves_omp_num_threads_to_the_nodes(monkeypatch):
    """Ray's job supervisor sets OMP_NUM_THREADS=1 for the driver of a job that distgan submit
    sent (its own CPU reservation): not the user's word on the workers' threads."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = {"metadata": {"distgan_job": "jobs/quickstart.yaml"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert threads_asked() == 0


@pytest.mark.parametrize("value", ["0", "-1", "1.5"])
def test_a_bad_omp_num_threads_names_the_variable_and_the_fix(monkeypatch, value):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(JobError, match=r"^OMP_NUM_THREADS: .*; set it to "):
        threads_asked()


def test_a_bad_omp_num_threads_is_one_line_and_exit_2_before_pytorch_loads():
    """distgan's line alone: OpenMP, loaded with PyTorch, would add its own complaint."""
    env = {**os.environ, "OMP_NUM_THREADS": "two"}
    env.pop("RAY_JOB_CONFIG_JSON_ENV_VAR", None)
    done = subprocess.run(
        [sys.executable, "-m", "distgan.cli", "train", "jobs/quickstart.yaml", "--dry-run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == (
        "error: OMP_NUM_THREADS: 'two' is not a whole number of threads; set it to one "
        "(e.g. OMP_NUM_THREADS=1), or unset it"
    ), done.stderr
