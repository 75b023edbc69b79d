"""A job's search space turned into Ray Tune's, and a trial's values back into a job.

    domains = parse_space(spec, "jobs/x.yaml")      # distgan.search_space: the grammar
    param_space = {k: to_ray(d) for k, d in domains.items()}   # Ray Tune's search space
    trial = trial_spec(spec, {"optim.lr_g": 3e-4}, "trial 1a2b")  # the job with those values

No Ray here, except in ``to_ray``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distgan.config import from_dict, to_dict
from distgan.search_space import Domain
from distgan.user_models import record_arch


def to_ray(domain: Domain):
    """The Ray Tune search-space object of a parsed domain."""
    from ray import tune

    low_high = domain.values
    if domain.kind == "uniform":
        return tune.uniform(*low_high)
    if domain.kind == "loguniform":
        return tune.loguniform(*low_high)
    if domain.kind == "randint":
        return tune.randint(low_high[0], low_high[1] + 1)  # Ray's high is excluded
    if domain.kind == "choice":
        return tune.choice(list(domain.values))
    return tune.grid_search(list(domain.values))


def trial_spec(spec, values: dict[str, Any], source: str):
    """``spec`` with ``values`` (dotted key -> value) filled in, validated again as a whole."""
    raw = to_dict(spec)
    for key, value in values.items():
        section, name = key.split(".")
        raw[section][name] = value
    if raw["model"]["arch"] == spec.model.arch:
        return from_dict(raw, source=source)
    # Another architecture than the base job's: a module of the user's is recorded for the trial
    # (found from the job's folder, model.arch_path), as a job file's is when it loads.
    raw["model"]["arch_sha256"] = ""
    return record_arch(from_dict(raw, source=source), Path(spec.model.arch_path), source)


def sampled_values(config: dict[str, Any], spec) -> dict[str, Any]:
    """The values of a trial's config that the space defines (Tune may add its own keys)."""
    return {k: config[k] for k in spec.tune.space if k in config}
