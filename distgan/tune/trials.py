"""What one trial of a search runs, in the trial's own Ray process.

    trainable = trainer_trial(context)   # fifo, asha: a TorchTrainer with the job's scale
    trainable = pbt_trial(context)       # pbt: the loop in this process, Tune checkpoints

Every trial trains the base job with its sampled values (``tune/space.py: trial_spec``) into
``<search>/trials/<trial_id>/``, a run directory like ``distgan train``'s (job.resolved.yaml,
metrics.jsonl, samples/, best/, and a fifo/asha trial's checkpoints/ and progress.log) in the
search's storage, from whichever node the trial runs on, and reports to Tune only the evaluations
(the reports that carry ``tune.metric``; Tune rejects a result without it).

Two shapes, because of Ray 2.60 (DESIGN.md, "Tune"):
- ``trainer_trial`` runs a TorchTrainer (DDP over ``scale.workers``) whose reports reach Tune
  through a Train callback. ASHA stops it well, but Tune sees no checkpoint of it, so PBT could
  never exploit one.
- ``pbt_trial`` trains in the trial's process (world size 1, the global batch) and hands Tune the
  whole adversarial state with every evaluation. When PBT clones a trial, the clone restarts with
  the donor's checkpoint and its own perturbed config: it restores G, D, G_ema, both optimizers
  and the step, then sets its own learning rates on the optimizers.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.tune
import torch
from ray.tune.integration.ray_train import TuneReportCallback

from distgan.config import dump_yaml, from_dict, load_resolved
from distgan.data import ShardManifest
from distgan.specs import JobSpec
from distgan.storage import Location, LogFile, open_location
from distgan.train.launch import Plan
from distgan.train.outputs import write_resolved
from distgan.tune.exploits import exploit_record, progress_lines, record_exploit

TRIALS = "trials"  # inside the search directory: one run directory per trial
ORIGIN = "origin.json"  # inside each PBT checkpoint: which trial wrote it
PROGRESS_LOG = "progress.log"  # inside a fifo/asha trial's run directory: launch's lines


@dataclass(frozen=True)
class SearchContext:
    """What every trial needs from the driver (pickled into the trainable)."""

    job: dict  # the base JobSpec as a dict, eval.metric set to tune.metric
    job_source: str
    search_dir: str  # the search's URI, or its absolute path
    manifest: ShardManifest
    plan: Plan  # a trial's workers and CPUs, with the evaluation config


def trial_run_dir(search_dir: Location | str, trial_id: str) -> Location:
    """``<search>/trials/<trial_id>``, in the search's storage."""
    if not isinstance(search_dir, Location):
        search_dir = open_location(search_dir, field="run.storage")
    return search_dir.child(TRIALS, trial_id)


def _start_trial(context: SearchContext, config: dict[str, Any]) -> tuple[JobSpec, Location, str]:
    """The trial's JobSpec, its run directory (with job.resolved.yaml) and its id."""
    from distgan.tune.space import sampled_values, trial_spec

    trial_id = ray.tune.get_context().get_trial_id()
    base = from_dict(context.job, source=context.job_source)
    spec = trial_spec(
        base, sampled_values(config, base), f"{context.job_source} (trial {trial_id})"
    )
    run_dir = trial_run_dir(context.search_dir, trial_id)
    write_resolved(spec, run_dir)
    return spec, run_dir, trial_id


class EvaluationReports(TuneReportCallback):
    """Forwards to Tune the Train reports that carry the objective (rank 0's metrics)."""

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context, metrics, checkpoint):
        if self.metric in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


def trainer_trial(context: SearchContext):
    """A Tune function trainable that runs one TorchTrainer with the job's scale."""

    def train_trial(config: dict[str, Any]) -> None:
        from distgan.train.launch import launch

        spec, run_dir, _ = _start_trial(context, config)
        # The progress lines go to the trial's folder (written whole at each line: a few dozen
        # lines); the search prints one line per evaluation.
        log = LogFile(run_dir, PROGRESS_LOG)
        try:
            launch(
                spec,
                run_dir,
                context.manifest,
                context.plan,
                context.job_source,
                out=log,
                callbacks=(EvaluationReports(spec.tune.metric),),
            )
        finally:
            log.flush()

    return train_trial


def pbt_setup(
    context: SearchContext,
    spec: JobSpec,
    trial_id: str,
    device: torch.device,
    ckpt: dict | None = None,
    source: str = "",
    origin: str | None = None,
):
    """A PBT trial's training state and in-memory batches, built by ``train/build.py`` as every
    run's are (from ``ckpt``, read from ``source`` and written by trial ``origin``, when Tune
    hands one over), and the exploit record when that checkpoint is a donor's: (state, batches,
    exploit or None)."""
    from distgan.data import load_arrays
    from distgan.train.build import build_state, memory_batches

    m = context.manifest
    # The trial's own rates (× the guard's factor) win over a donor's checkpoint.
    state = build_state(
        spec, m.shape, device, num_classes=m.num_classes, class_counts=m.label_counts,
        checkpoint=ckpt, source=source,
    )  # fmt: skip
    exploit = None
    if origin is not None and origin != trial_id:
        donor = load_resolved(ckpt["job"], source=f"{source} (donor's job)")
        exploit = exploit_record(trial_id, origin, state.step, donor, spec)
        donor_lrs = [ckpt[k]["param_groups"][0]["lr"] for k in ("opt_g", "opt_d")]
        exploit.update(donor_lr_g=donor_lrs[0], donor_lr_d=donor_lrs[1])
        # the rates the clone's optimizers now hold, as evidence
        exploit["lr_g"] = state.nets.opt_g.param_groups[0]["lr"]
        exploit["lr_d"] = state.nets.opt_d.param_groups[0]["lr"]
        record_exploit(context.search_dir, exploit)
    images, labels = load_arrays(m)  # (N, C, H, W) uint8, (N,) int64
    labels = None if labels is None else torch.from_numpy(labels)
    batches = memory_batches(spec, torch.from_numpy(images), labels, m.label_counts, device)
    return state, batches, exploit


def pbt_trial(context: SearchContext):
    """A Tune function trainable that trains in its own process and reports Tune checkpoints."""

    def train_pbt_trial(config: dict[str, Any]) -> None:
        from distgan.train import checkpoint as ckpts
        from distgan.train.evaluation import InTrainingEvaluator
        from distgan.train.loop import run
        from distgan.train.outputs import RunOutputs

        spec, run_dir, trial_id = _start_trial(context, config)
        p = context.plan
        device = torch.device("cuda" if p.use_gpu else "cpu")
        torch.set_num_threads(p.threads or max(1, round(p.workers * p.cpus_per_worker)))

        ckpt, origin = None, None
        restored = ray.tune.get_checkpoint()  # our own (resume) or a donor's (PBT exploit)
        if restored is not None:
            with restored.as_directory() as folder:
                ckpt = ckpts.load(folder, device)
                origin = json.loads((Path(folder) / ORIGIN).read_text())["trial_id"]
        source = str(restored.path) if restored else ""
        state, batches, exploit = pbt_setup(context, spec, trial_id, device, ckpt, source, origin)
        evaluate = InTrainingEvaluator(spec, p.evaluation, device)
        extra = {"exploited_from": exploit["donor"]} if exploit else {}

        def report(metrics: dict[str, float], snapshot: dict | None) -> None:
            if spec.tune.metric not in metrics or snapshot is None:
                return  # Tune takes evaluations only; each one comes with the whole state
            with tempfile.TemporaryDirectory(prefix="distgan-pbt-") as folder:
                ckpts.save(snapshot, folder)
                (Path(folder) / ORIGIN).write_text(json.dumps({"trial_id": trial_id}))
                checkpoint = ray.tune.Checkpoint.from_directory(folder)
                ray.tune.report({**metrics, **extra}, checkpoint=checkpoint)
            extra.clear()

        with RunOutputs(run_dir) as outputs:  # its TensorBoard staging folder goes at the end
            run(
                state, batches, spec, device=device, report=report, outputs=outputs,
                job_yaml=dump_yaml(spec), evaluate=evaluate,
            )  # fmt: skip

    return train_pbt_trial


class SearchProgress(ray.tune.Callback):
    """The driver's lines: one per evaluation of a trial, one per PBT clone, one per trial end."""

    def __init__(self, metric: str, keys: list[str]):
        self.metric = metric
        self.keys = keys

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # PBT decides before the callbacks run: at an exploit, trial.config already holds the
        # values for what comes next, while the result's own config (Tune fills it in from
        # the trainable) holds those it was measured with.
        config = result.get("config") or trial.config
        for line in progress_lines(trial.trial_id, result, self.metric, self.keys, config):
            print(line, file=sys.stdout, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        print(f"trial {trial.trial_id} done", file=sys.stdout, flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"trial {trial.trial_id} failed: see {trial.path}", file=sys.stdout, flush=True)
