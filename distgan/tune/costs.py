"""What a model costs, in a search: each trial's complexity.json, its budgets, and the search
over quality and cost together.

    trainable = within_budget(trainer_trial(context), context)   # counts, then trains or skips
    search_alg = search_algorithm(spec, search, mode="min")      # Tune's searcher for the job
    callbacks = [SkippedTrials(search.uri)]                      # a line per skipped trial

Every trial first counts the models of its configuration into ``trials/<id>/complexity.json``
(``train/complexity.py``), in its own process before anything trains. A trial whose models break
one of ``tune.constraints`` writes why there (``skipped``) and ends at once: Tune goes on with
the next, and ``results.csv`` marks it skipped.

With ``tune.objectives: [fid, g_gflops]`` the searcher is Optuna's (``OptunaSearch``, TPE over
both objectives, through Ray Tune). Tune itself sees the metric alone, the one every evaluation
reports; when a trial completes, its cost figure is read from its complexity.json and handed to
Optuna with the metric of its last report. The front is drawn from results.csv (``front.py``).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import ray.tune
from ray.tune.search import Searcher

from distgan.config import from_dict
from distgan.objectives import broken, cost_mode, parse_constraints, split_objectives
from distgan.specs import JobSpec
from distgan.storage import Location
from distgan.train.complexity import model_complexity, read_complexity, write_complexity
from distgan.tune.space import sampled_values, trial_spec
from distgan.tune.trials import SearchContext, trial_run_dir


def within_budget(trainable, context: SearchContext):
    """``trainable`` (a Tune function trainable) behind each trial's complexity.json and the
    job's ``tune.constraints``: a trial that breaks one is never trained."""

    @functools.wraps(trainable)  # Tune names the trials' folders after the function
    def counted_trial(config: dict[str, Any]) -> None:
        trial_id = ray.tune.get_context().get_trial_id()
        base = from_dict(context.job, source=context.job_source)
        spec = trial_spec(
            base, sampled_values(config, base), f"{context.job_source} (trial {trial_id})"
        )
        m = context.manifest
        figures = model_complexity(spec, m.shape, m.num_classes)
        reason = broken(parse_constraints(base, context.job_source), figures)
        if reason is not None:
            figures["skipped"] = reason
        write_complexity(trial_run_dir(context.search_dir, trial_id), figures)
        if reason is None:
            trainable(config)

    return counted_trial


class SkippedTrials(ray.tune.Callback):
    """The driver's line for a trial skipped by ``tune.constraints``, with the reason."""

    def __init__(self, search_dir: str):
        self.search_dir = search_dir

    def on_trial_complete(self, iteration, trials, trial, **info):
        cost = read_complexity(trial_run_dir(self.search_dir, trial.trial_id))
        if "skipped" in cost:
            line = f"trial {trial.trial_id} skipped: {cost['skipped']} (tune.constraints)"
            print(line, file=sys.stdout, flush=True)


class CostObjectives(Searcher):
    """A multi-objective ``searcher`` over [metric, cost figure] (in the job's order) that Tune
    drives as a search of ``metric`` alone: the trials report the metric, and each one's cost
    figure joins its last report, from its complexity.json, when it completes."""

    def __init__(self, searcher: Searcher, metric: str, mode: str, cost: str, search_dir: str):
        super().__init__(metric=metric, mode=mode)
        self.searcher = searcher
        self.cost = cost
        self.search_dir = search_dir

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Tune hands over the space with its single metric; the searcher keeps its two.
        return self.searcher.set_search_properties(None, None, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict | None:
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        # A trial that never measured the metric (skipped, failed) is told as having no result.
        cost = read_complexity(trial_run_dir(self.search_dir, trial_id)).get(self.cost)
        measured = result is not None and self.metric in result and cost is not None
        self.searcher.on_trial_complete(
            trial_id, result={**result, self.cost: cost} if measured else None, error=error
        )

    # Tune saves (and on --resume restores) the wrapped searcher itself, and a wrapper's own
    # fields through these, as it does ConcurrencyLimiter's.
    def get_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)


def search_algorithm(spec: JobSpec, search: Location, mode: str):
    """Tune's searcher: random and grid sampling (``BasicVariantGenerator``) for one objective;
    Optuna's over ``tune.objectives`` (``mode``: the metric's direction)."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    t = spec.tune
    if not t.objectives:
        return BasicVariantGenerator(max_concurrent=t.max_concurrent_trials, random_state=t.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Optuna logs a line for each trial
    metric, cost = split_objectives(t.objectives)
    modes = [mode if name == metric else cost_mode(name) for name in t.objectives]
    optuna_search = OptunaSearch(metric=list(t.objectives), mode=modes, seed=t.seed)
    searcher = CostObjectives(optuna_search, metric, mode, cost, search.uri)
    if t.max_concurrent_trials:
        return ConcurrencyLimiter(searcher, t.max_concurrent_trials)
    return searcher
