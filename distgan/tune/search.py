"""A search: the job's ``tune`` section -> Ray Tune ``Tuner`` -> a ResultGrid.

    check_search(spec, "jobs/tune_quickstart.yaml")       # before anything starts
    with ray_session():
        grid = run_search(spec, search, "jobs/tune_quickstart.yaml", resume=False)

The search directory (a ``storage.Location``: under ``run.storage`` when the job sets it, else
``run.root``) holds ``job.resolved.yaml`` (the job searched, written first), Tune's experiment
state in ``tune/`` (what ``--resume`` restores; PBT's checkpoints too), ``trials/<id>/``, one run
directory per trial, and PBT's ``exploits/``. ``tune/results.py`` adds the table, ``results.csv``
and ``best.yaml`` (``tune/front.py``: ``pareto.csv`` and ``front/``, with ``tune.objectives``).
Tune and every trial write there through the storage's file system, so a
search whose trials run on nodes that share no disk keeps all of it in one place, and PBT's clones
read their donors' checkpoints from it.

How ``scale`` applies: with ``fifo`` and ``asha`` each trial is a TorchTrainer with the job's
``scale.workers`` DDP workers, sized so that ``tune.max_concurrent_trials`` trials fit on the
cluster side by side (each keeping room for Ray Data). With ``pbt`` each trial is one process that
trains the global batch alone, holding ``scale.workers × cpus_per_worker`` CPUs (or one GPU).
"""

from __future__ import annotations

import dataclasses
import math

from distgan.config import to_dict
from distgan.errors import ClusterError, JobError
from distgan.objectives import split_objectives
from distgan.search_space import parse_space
from distgan.specs import JobSpec
from distgan.storage import Location
from distgan.tune.space import to_ray

EXPERIMENT = "tune"  # Tune's experiment folder inside the search directory
TRIAL_DRIVER_CPUS = 0.01  # what a fifo/asha trial's own process holds (Tune refuses 0)
DATA_CPUS = 1.0  # what plan() leaves free for Ray Data's read tasks


def check_search(spec: JobSpec, source: str) -> None:
    """The checks of a search that need the whole job; raises JobError naming the field."""
    t = spec.tune
    if not t.space:
        raise JobError(
            f"{source}: tune.space: empty; add the keys to search, e.g. "
            "tune: {space: {optim.lr_g: 'loguniform(1e-5, 1e-3)'}}"
        )
    if not spec.eval.every:
        raise JobError(
            f"{source}: eval.every: 0, so trials never measure tune.metric; set eval.every "
            f"(e.g. {max(1, spec.train.steps // 5)})"
        )
    if spec.scale.elastic:
        # Trials are sized to share the cluster, and Ray Train's elastic count takes whatever a
        # node holds; trials on different counts would also not be compared like for like.
        raise JobError(
            f"{source}: scale.workers: {spec.scale.workers} is a range, and a search's trials "
            "each hold a fixed share of the cluster; set a count, e.g. --set "
            f"scale.workers={spec.scale.min_workers}"
        )
    domains = parse_space(spec, source)
    grid = [k for k, d in domains.items() if d.kind == "grid"]
    if t.objectives and grid:
        raise JobError(
            f"{source}: tune.space.{grid[0]}: Optuna, which searches tune.objectives, samples "
            "and cannot take a grid; use choice"
        )
    if t.scheduler == "pbt":
        mutable = [k for k in domains if k.startswith("optim.")]
        if not mutable:
            raise JobError(
                f"{source}: tune.space: pbt perturbs optim.* keys and none is searched; add "
                "e.g. optim.lr_g: loguniform(1e-5, 1e-3)"
            )
        grid = [k for k in mutable if domains[k].kind == "grid"]
        if grid:
            raise JobError(
                f"{source}: tune.space.{grid[0]}: pbt cannot perturb a grid; use choice or "
                "loguniform"
            )
        if t.max_concurrent_trials == 1 or t.num_samples < 2:
            field = "max_concurrent_trials" if t.max_concurrent_trials == 1 else "num_samples"
            raise JobError(
                f"{source}: tune.{field}: pbt clones trials that run side by side; set "
                "tune.num_samples >= 2 and tune.max_concurrent_trials to 0 or >= 2"
            )


def search_mode(spec: JobSpec) -> str:
    """``min`` or ``max``: the job's ``tune.mode``, or the metric's own direction."""
    if spec.tune.mode != "auto":
        return spec.tune.mode
    from distgan.metrics import get_metric

    return "max" if get_metric(spec.tune.metric).higher_is_better else "min"


def searched_job(spec: JobSpec) -> JobSpec:
    """The base job of the trials: their evaluations measure ``tune.metric`` (the metric of
    ``tune.objectives`` when the job has them)."""
    if spec.tune.objectives:
        metric, _ = split_objectives(spec.tune.objectives)
        spec = dataclasses.replace(spec, tune=dataclasses.replace(spec.tune, metric=metric))
    return dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, metric=spec.tune.metric))


def build_scheduler(spec: JobSpec):
    """Tune's trial scheduler for ``tune.scheduler``; time is counted in training steps."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    t = spec.tune
    if t.scheduler == "asha":
        return ASHAScheduler(
            time_attr="step",
            max_t=spec.train.steps,
            grace_period=t.grace_period or spec.eval.every,
            reduction_factor=t.reduction_factor,
            # A trial that reaches train.steps ends by itself: stopping it at its last report
            # would kill its TorchTrainer abruptly and leave its placement group to Ray's
            # cleaner, which can lag far behind the next trial.
            stop_last_trials=False,
        )
    if t.scheduler == "pbt":
        domains = parse_space(spec, "<job>")
        return PopulationBasedTraining(
            time_attr="step",
            perturbation_interval=t.perturbation_interval or 2 * spec.eval.every,
            quantile_fraction=t.quantile_fraction,
            resample_probability=t.resample_probability,
            synch=t.synch,
            hyperparam_mutations={
                k: to_ray(d) for k, d in domains.items() if k.startswith("optim.")
            },
        )
    return FIFOScheduler()


def trial_plan(spec: JobSpec, source: str):
    """Data, model and evaluation checks (``preflight``), then one trial's share of the cluster.

    Needs a Ray connection. Returns (manifest, plan).
    """
    from distgan.train.cluster import cluster_resources
    from distgan.train.launch import plan, preflight

    manifest, p = preflight(spec, source)
    cpus, gpus = cluster_resources()
    side_by_side = spec.tune.max_concurrent_trials or 1
    if spec.tune.scheduler == "pbt":
        # One process a trial, holding what the job's scale would hold.
        per_trial = spec.scale.workers * (spec.scale.cpus_per_worker or 0.5)
        p = dataclasses.replace(p, cpus_per_worker=per_trial / spec.scale.workers)
        if per_trial > cpus:
            raise ClusterError(
                f"{source}: scale: a pbt trial holds {per_trial:g} CPUs, more than the "
                f"{cpus:g} of the Ray cluster; lower scale.cpus_per_worker or scale.workers"
            )
        return manifest, p
    try:
        # Each trial's driver holds TRIAL_DRIVER_CPUS besides its workers, and plan() keeps
        # DATA_CPUS of the budget free for Ray Data's read tasks (one CPU each: with 0.99 free
        # they never start, and the trial waits forever).
        budget = cpus / side_by_side - TRIAL_DRIVER_CPUS
        share = plan(spec, manifest, budget, gpus / side_by_side)
    except ClusterError as e:
        raise ClusterError(
            f"{source}: tune.max_concurrent_trials: {side_by_side} trials side by side do not "
            f"fit: {e}"
        ) from None
    held = TRIAL_DRIVER_CPUS + DATA_CPUS + share.workers * share.cpus_per_worker
    if held > cpus / side_by_side + 1e-6:
        raise ClusterError(
            f"{source}: scale.cpus_per_worker: a trial holds {held:g} CPUs (workers, Ray Data, "
            f"its driver); {side_by_side} side by side exceed the {cpus:g} CPUs of the cluster. "
            "Lower scale.cpus_per_worker or tune.max_concurrent_trials"
        )
    return manifest, dataclasses.replace(share, evaluation=p.evaluation, threads=p.threads)


def tune_storage(search: Location) -> tuple[str, object | None]:
    """Tune's ``storage_path`` and ``storage_filesystem`` for the search directory (no file
    system for a local one: Tune's default)."""
    return search.path, None if search.is_local else search.fs


def run_search(spec: JobSpec, search: Location, source: str, resume: bool):
    """Runs (or, with ``resume``, continues) the search into the directory ``search``.

    Returns (the ResultGrid, whether it was interrupted with trials left to run).

    ``spec`` is the job as written (with its ``tune`` section). Needs a Ray connection.
    """
    from ray import tune

    from distgan.tune.costs import SkippedTrials, search_algorithm, within_budget
    from distgan.tune.trials import SearchContext, SearchProgress, pbt_trial, trainer_trial

    base = searched_job(spec)
    manifest, p = trial_plan(base, source)
    context = SearchContext(to_dict(base), source, search.uri, manifest, p)
    t = base.tune
    if t.scheduler == "pbt":
        resources = {"GPU": 1, "CPU": 1} if p.use_gpu else {"CPU": p.workers * p.cpus_per_worker}
        trainable = tune.with_resources(within_budget(pbt_trial(context), context), resources)
    else:
        # The trial's driver only waits on its TorchTrainer, whose workers hold their own CPUs.
        # Ray Data's tasks run outside every placement group, on the CPU that plan() leaves free.
        trainable = tune.with_resources(
            within_budget(trainer_trial(context), context), {"CPU": TRIAL_DRIVER_CPUS}
        )
    param_space = {k: to_ray(d) for k, d in parse_space(base, source).items()}
    storage_path, fs = tune_storage(search)
    experiment = search.child(EXPERIMENT)
    if resume:
        if not tune.Tuner.can_restore(experiment.path, storage_filesystem=fs):
            raise JobError(
                f"{search}: no search state to resume in {experiment}; start a new search "
                "with distgan tune JOB"
            )
        tuner = tune.Tuner.restore(
            experiment.path, trainable, resume_unfinished=True, resume_errored=True,
            param_space=param_space, storage_filesystem=fs,
        )  # fmt: skip
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=t.metric,
                mode=search_mode(base),
                num_samples=t.num_samples,
                search_alg=search_algorithm(base, search, search_mode(base)),
                scheduler=build_scheduler(base),
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=storage_path,
                storage_filesystem=fs,
                callbacks=[SkippedTrials(search.uri), SearchProgress(t.metric, list(t.space))],
                verbose=0,
            ),
        )
    grid = tuner.fit()
    # On Ctrl-C Tune saves its state and returns as if done: the saved state (what --resume
    # reads) tells whether trials are left unfinished or were never started.
    saved = tune.ExperimentAnalysis(experiment.path, storage_filesystem=fs).trials
    expected = t.num_samples * math.prod(
        len(d.values) for d in parse_space(base, source).values() if d.kind == "grid"
    )
    unfinished = any(trial.status not in ("TERMINATED", "ERROR") for trial in saved)
    return grid, unfinished or len(saved) < expected
