"""Elastic workers without Ray: ``scale.workers: [MIN, MAX]`` parsed, the rules that must hold for
every count Ray Train may pick, and the plan that sizes the workers beside Ray Data's CPU.
(Training on a real Ray head, and resuming on another count: test_elastic_ray.py.)"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from distgan.config import load_job
from distgan.data import EMBEDDED_DIR, read_manifest
from distgan.errors import ClusterError, JobError
from distgan.specs import JobSpec, ScaleSpec, TrainSpec
from distgan.train.cluster import wanted_bundles
from distgan.train.launch import plan
from distgan.tune.search import check_search

MANIFEST = read_manifest(EMBEDDED_DIR)


def job(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> JobSpec:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return load_job(path, list(overrides))


def job_error(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(JobError) as info:
        job(tmp_path, text, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_workers_take_a_count_or_a_range(tmp_path):
    s = job(tmp_path, "train: {batch_size: 12}\nscale: {workers: [1, 4]}\n").scale
    assert (s.workers, s.min_workers, s.max_workers, s.elastic) == ([1, 4], 1, 4, True)
    s = job(tmp_path, "train: {batch_size: 12}\n", ("scale.workers=[2, 3]",)).scale
    assert (s.min_workers, s.max_workers, s.elastic) == (2, 3, True)
    s = job(tmp_path, "scale: {workers: [2, 2]}\n").scale  # one count is no range
    assert (s.workers, s.elastic) == (2, False)
    s = job(tmp_path, "scale: {workers: 4}\n").scale
    assert (s.min_workers, s.max_workers, s.elastic) == (4, 4, False)


@pytest.mark.parametrize("value", ["[0, 2]", "[3, 1]", "[1, 2, 3]", "[1.5, 2]", "[]", "many"])
def test_a_bad_range_is_one_line_naming_scale_workers(tmp_path, value):
    message = job_error(tmp_path, f"scale: {{workers: {value}}}\n")
    assert message.startswith(f"{tmp_path / 'job.yaml'}: scale.workers: expected an integer of ")
    assert "[MIN, MAX] with 1 <= MIN <= MAX" in message


def test_the_global_batch_must_split_for_every_count_in_the_range(tmp_path):
    # 64 splits across 1, 2 and 4 workers but not 3: Ray Train may pick 3.
    message = job_error(tmp_path, "train: {batch_size: 64}\nscale: {workers: [1, 4]}\n")
    assert "train.batch_size: 64 does not split evenly across 3 workers" in message
    assert "use a multiple of 12 (e.g. 72) or narrow scale.workers" in message
    job(tmp_path, "train: {batch_size: 64}\nscale: {workers: [1, 2]}\n")
    message = job_error(tmp_path, "train: {batch_size: 12}\n", ("scale.workers=[4, 5]",))
    assert "12 does not split evenly across 5 workers" in message and "multiple of 20" in message


def test_pack_and_eval_samples_are_checked_for_every_count(tmp_path):
    # 24 images over 3 workers is 8 a worker: packs of 3 do not divide it.
    message = job_error(
        tmp_path, "train: {batch_size: 24}\nmodel: {pack: 3}\nscale: {workers: [2, 4]}\n"
    )
    assert "model.pack: 3 does not divide the per-worker batch of 8 with 3 workers" in message
    message = job_error(
        tmp_path, "train: {batch_size: 12}\neval: {every: 10}\nscale: {workers: [1, 4]}\n"
    )
    assert "eval.n_samples: 5000 does not split evenly across 3 workers" in message
    # Without in-training evaluations nothing is generated across the workers.
    job(tmp_path, "train: {batch_size: 12}\nscale: {workers: [1, 4]}\n")


def elastic(workers: list[int], cpus: float = 0.0, gpu: bool = False) -> JobSpec:
    return JobSpec(
        train=TrainSpec(batch_size=12),
        scale=ScaleSpec(workers=workers, cpus_per_worker=cpus, use_gpu=gpu),
    )


def test_ray_gets_as_many_workers_as_fit_beside_ray_datas_cpu():
    # Ray Train's elastic policy counts a node's whole CPUs: given MAX 4 at 0.5 CPU on 2 CPUs it
    # would take all of them, and Ray Data's read tasks would never start.
    p = plan(elastic([1, 4], cpus=0.5), MANIFEST, cluster_cpus=2, cluster_gpus=0)
    assert (p.elastic_min, p.workers, p.num_workers, p.counts) == (1, 2, (1, 2), "1-2")
    assert 2 - p.workers * p.cpus_per_worker >= 1.0
    # cpus_per_worker 0: a share that fits MAX beside that CPU.
    p = plan(elastic([1, 4]), MANIFEST, cluster_cpus=2, cluster_gpus=0)
    assert (p.cpus_per_worker, p.num_workers) == (0.25, (1, 4))
    p = plan(elastic([2, 8]), MANIFEST, cluster_cpus=5, cluster_gpus=0)
    assert (p.cpus_per_worker, p.num_workers) == (0.5, (2, 8))
    p = plan(elastic([1, 4], gpu=True), MANIFEST, cluster_cpus=16, cluster_gpus=3)
    assert p.num_workers == (1, 3)
    fixed = plan(JobSpec(scale=ScaleSpec(workers=2)), MANIFEST, 2, 0)
    assert (fixed.num_workers, fixed.counts) == (2, "2")


def test_an_elastic_job_needs_room_for_its_minimum():
    with pytest.raises(ClusterError, match="scale.cpus_per_worker: 3 workers × 0.5 CPUs"):
        plan(elastic([3, 4], cpus=0.5), MANIFEST, cluster_cpus=2, cluster_gpus=0)
    with pytest.raises(ClusterError, match="2 workers with one GPU each need 2 GPUs"):
        plan(elastic([2, 4], gpu=True), MANIFEST, cluster_cpus=16, cluster_gpus=1)
    # An autoscaler is asked for the minimum, and Ray Data's CPU.
    assert wanted_bundles(elastic([2, 6], cpus=1)) == [{"CPU": 1.0}] * 3


def test_a_search_refuses_a_range_in_one_line(tmp_path):
    spec = job(
        tmp_path,
        "train: {batch_size: 12}\neval: {every: 10, n_samples: 1200}\n"
        "scale: {workers: [1, 4]}\ntune: {space: {optim.lr_g: 'loguniform(1e-5, 1e-3)'}}\n",
    )
    with pytest.raises(JobError, match=r"scale.workers: \[1, 4\] is a range.*scale.workers=1$"):
        check_search(spec, "job.yaml")


def test_the_watch_says_once_a_wait_that_it_waits_and_ends_it_after_wait_minutes(monkeypatch):
    from distgan.train import failures

    alive = iter([False, False, False, True, False, False, None])
    monkeypatch.setattr(failures, "worker_group_alive", lambda: next(alive))
    now = [0.0]
    spec = JobSpec(
        train=TrainSpec(batch_size=12), scale=ScaleSpec(workers=[2, 4], wait_minutes=0.5)
    )
    out = io.StringIO()
    watch = failures.CapacityWatch(spec, 0.5, out, clock=lambda: now[0])
    for t in (10, 16, 25, 28, 40):  # a group alive at 28 s: a new wait counts from there
        now[0] = t
        watch.check()
    line = (
        "distgan: no worker group is running: Ray Train waits for room for at least 2 workers "
        "(1 CPUs); the run ends if the cluster has none within 30 s (scale.wait_minutes: 0.5)"
    )
    assert out.getvalue().splitlines() == [line]
    now[0] = 59
    with pytest.raises(failures.NoWorkerGroup) as info:
        watch.check()
    assert out.getvalue().splitlines() == [line, line]
    lost = failures.classify(info.value)
    assert (lost.reason, lost.not_placed) == (failures.NOT_PLACED, True)
    # Where Ray's State API cannot answer, the run waits as Ray has it.
    now[0] = 100
    watch.check()
