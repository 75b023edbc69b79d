"""What the driver asks the Ray cluster before a run starts: its nodes and its autoscaler.

    check_shared_storage(spec, "jobs/x.yaml", node_count())   # a multi-node cluster needs storage
    p = plan_with_autoscaler(spec, manifest, "jobs/x.yaml", out)   # waits for new nodes, or fails

On a cluster of several machines the head and the workers have different disks, so a run kept
in a local ``runs/`` folder would be split across them and lost with its worker nodes: such a
job is refused before anything starts, with one line naming ``run.storage``. A cluster with an
autoscaler is asked for the resources the job lacks (``ray.autoscaler.sdk.request_resources``)
and given ``scale.wait_minutes`` to provide them; a cluster without one is refused at once.
"""

from __future__ import annotations

import json
import re
import time

from distgan.data import ShardManifest
from distgan.errors import ClusterError
from distgan.specs import JobSpec

STORAGE_EXAMPLE = "--set run.storage=s3://BUCKET/runs (or a path every node mounts)"
_READONLY_NODE_TYPE = re.compile(r"node_[0-9a-f]+")  # what a cluster without autoscaler reports


def node_count() -> int:
    """Alive nodes of the connected Ray cluster."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_shared_storage(spec: JobSpec, job_source: str, nodes: int) -> None:
    """ClusterError when a cluster of several nodes would keep the run on one node's disk."""
    if nodes > 1 and not spec.run.storage:
        raise ClusterError(
            f"{job_source}: run.storage: empty, but this Ray cluster has {nodes} nodes that do "
            f"not share a disk, so the run's files would be scattered and lost; set it, e.g. "
            f"{STORAGE_EXAMPLE}"
        )


def has_autoscaler() -> bool:
    """Whether the cluster runs an autoscaler that can add nodes (not just the read-only
    monitor that every ``ray start`` head has)."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2():  # only enabled with a cluster config (KubeRay, cloud launcher)
            return True
    except Exception:  # noqa: BLE001 - an older or absent v2 API means no v2 autoscaler
        pass
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get("__autoscaling_status")
    if not raw:
        return False
    report = json.loads(raw).get("autoscaler_report") or {}
    types = set()
    for key in ("active_nodes", "idle_nodes", "pending_launches"):
        types |= set(report.get(key) or {})
    return any(not _READONLY_NODE_TYPE.fullmatch(t) for t in types)


def wanted_bundles(spec: JobSpec) -> list[dict[str, float]]:
    """The resources the job's workers need, one bundle a worker (an elastic job's MIN), plus a
    CPU for Ray Data."""
    s = spec.scale
    if s.use_gpu:
        return [{"CPU": s.cpus_per_worker or 1.0, "GPU": 1.0}] * s.min_workers
    return [{"CPU": s.cpus_per_worker or 1.0}] * s.min_workers + [{"CPU": 1.0}]


def plan_with_autoscaler(spec: JobSpec, manifest: ShardManifest, job_source: str, out, plan):
    """``plan(spec, manifest, cpus, gpus)`` on the cluster as it is; when it lacks resources
    and has an autoscaler, asks for them and waits up to ``scale.wait_minutes``."""
    from ray.autoscaler.sdk import request_resources

    try:
        return plan(spec, manifest, *cluster_resources())
    except ClusterError as first:
        if spec.scale.wait_minutes <= 0 or not has_autoscaler():
            raise ClusterError(f"{job_source}: {first}") from None
        error = first
    bundles = wanted_bundles(spec)
    request_resources(bundles=bundles)
    need = _describe(bundles)
    deadline = time.monotonic() + 60 * spec.scale.wait_minutes
    print(
        f"distgan: waiting up to {spec.scale.wait_minutes:g} min for the autoscaler to add {need}",
        file=out,
        flush=True,
    )
    last_note = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(5)
        try:
            return plan(spec, manifest, *cluster_resources())
        except ClusterError as e:
            error = e
        if time.monotonic() - last_note >= 60:
            cpus, gpus = cluster_resources()
            print(
                f"distgan: still waiting for {need} (the cluster has {cpus:g} CPUs, {gpus:g} GPUs)",
                file=out,
                flush=True,
            )
            last_note = time.monotonic()
    raise ClusterError(
        f"{job_source}: scale.wait_minutes: the autoscaler did not add {need} within "
        f"{spec.scale.wait_minutes:g} min ({error}); raise scale.wait_minutes or check the "
        "cluster's node types and quotas"
    )


def cluster_resources() -> tuple[float, float]:
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))


def _describe(bundles: list[dict[str, float]]) -> str:
    totals: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            totals[k] = totals.get(k, 0) + v
    return " and ".join(f"{v:g} {k}s" for k, v in sorted(totals.items(), reverse=True))
