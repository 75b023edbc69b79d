"""What a run's models cost beside what they score: ``complexity.json`` in every run directory.

    record_model_cost(run_dir, spec, shape=(1, 28, 28), num_classes=0)   # before training
    model_complexity(spec, (1, 28, 28))  # {"g_params": 347073, "g_gflops": 0.00404, ...}
    cost = MeasuredCost(run_dir)        # rank 0 (RunOutputs), at each metrics line:
    cost.update(metrics_record)         # peak memory and throughput, rewritten when they move
    read_complexity(run_dir)            # the file, as a dict

Rank 0 counts the models built for the job (fresh ones, on CPU, before its first step) and
writes the file first, each time a worker group starts; then it fills in what only
training shows. Its fields:

- ``g_params``, ``d_params``: parameters of G and D (``sum(p.numel() for p in
  module.parameters())``; buffers such as BatchNorm's running statistics are not parameters).
- ``g_gflops``, ``d_gflops``: 1e9 FLOPs of one forward pass per image, in eval mode, counted by
  ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products, a
  multiply-add counted as 2 FLOPs (torch's convention); element-wise work (activations,
  normalisation) is not counted. ``flops`` says so in the file.
- ``peak_mem_mb``, ``peak_mem_kind``: rank 0's peak memory in MiB, ``cuda-allocated``
  (``torch.cuda.max_memory_allocated``) on a GPU, ``cpu-rss`` (the process's peak resident set,
  ``resource.getrusage``, which counts everything the process holds) on CPU.
- ``cpu_threads`` (on CPU): the PyTorch threads rank 0 computes with (``torch.get_num_threads``:
  OMP_NUM_THREADS where the user set it, else its node's cores shared among its workers), which
  the throughput below depends on.
- ``images_per_s``, ``sec_per_kimg``: real images shown to D per second, all workers together
  (the median over the log intervals so far: the first one's warm-up and an interval that held
  an evaluation do not skew it), and StyleGAN's seconds per thousand of them.
- ``skipped`` (a search's trial only): the ``tune.constraints`` budget its models broke; it
  never trained (``tune/costs.py``).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from distgan.models import models_for_job
from distgan.objectives import MEASURED_FIGURES
from distgan.storage import Location

COMPLEXITY = "complexity.json"
FLOPS_NOTE = (
    "torch.utils.flop_counter, one forward per image in eval mode: convolutions and matrix "
    "products, a multiply-add = 2 FLOPs"
)
MOVED = 0.05  # a measured figure is written again once it moved by this share


def model_complexity(spec, shape: tuple[int, int, int], num_classes: int = 0) -> dict:
    """Parameters and GFLOPs per image of G and D as the job (``spec``) builds them for data of
    ``shape`` (C, H, W) with ``num_classes`` classes (its manifest's)."""
    m = spec.model
    with torch.random.fork_rng(devices=[]):  # building draws weights: leave the caller's RNG
        G, D = models_for_job(m, shape, num_classes, classifier=spec.loss.ac_weight > 0)
    G.eval()
    D.eval()
    n = m.pack * max(1, m.mbstd_group)  # the smallest batch that D takes whole
    labels = (torch.arange(n) % G.num_classes,) if G.num_classes else ()
    # Autograd stays on: under no_grad a view of a parameter (stylegan2's constant input,
    # expanded to the batch) requires grad with no grad_fn, which FlopCounterMode's module
    # tracker cannot hook. Nothing runs backward.
    g_flops, fakes = _flops(G, torch.zeros(n, m.z_dim), *labels)  # (n, C, H, W)
    d_flops, _ = _flops(D, fakes.detach(), *labels)
    return {
        "g_params": sum(p.numel() for p in G.parameters()),
        "d_params": sum(p.numel() for p in D.parameters()),
        "g_gflops": g_flops / n / 1e9,
        "d_gflops": d_flops / n / 1e9,
        "flops": FLOPS_NOTE,
    }


def _flops(module: torch.nn.Module, *inputs: torch.Tensor) -> tuple[int, torch.Tensor]:
    with FlopCounterMode(display=False) as counter:
        out = module(*inputs)
    return counter.get_total_flops(), out


def read_complexity(run: Location) -> dict:
    """The run's complexity.json ({} when it has none: a run from before it existed)."""
    return json.loads(run.read_text(COMPLEXITY)) if run.is_file(COMPLEXITY) else {}


def write_complexity(run: Location, figures: dict) -> None:
    """Merges ``figures`` into the run's complexity.json (written whole: object stores cannot
    append)."""
    run.write_text(COMPLEXITY, json.dumps({**read_complexity(run), **figures}, indent=1) + "\n")


def record_model_cost(run: Location, spec, shape: tuple[int, int, int], num_classes: int = 0):
    """Counts the job's models into the run's complexity.json, keeping what training measured
    there before (a resumed run's)."""
    write_complexity(run, model_complexity(spec, shape, num_classes))


class MeasuredCost:
    """Rank 0's peak memory and throughput, merged into complexity.json from its metrics
    lines. The file is rewritten only when a figure is new or moved by more than ``MOVED``:
    once the run is up to speed that is seldom."""

    def __init__(self, run: Location):
        self.run = run
        self.speeds: list[float] = []  # images/s of each log interval
        self.written: dict[str, float | str] = {}

    def update(self, record: dict) -> None:
        """Takes one metrics line (``images_per_s``; ``gpu_mem_gb`` on a GPU)."""
        if record.get("images_per_s", 0) > 0:
            self.speeds.append(float(record["images_per_s"]))
        figures = _process_figures(record)
        if self.speeds:
            speed = statistics.median(self.speeds)
            figures.update(images_per_s=speed, sec_per_kimg=1000.0 / speed)
        measured = [k for k in MEASURED_FIGURES if k in figures]
        if not any(_moved(self.written.get(k), figures[k]) for k in measured):
            return
        write_complexity(self.run, figures)
        self.written = figures


def _process_figures(record: dict) -> dict:
    """Rank 0's peak memory, and on CPU the PyTorch threads it computes with."""
    if "gpu_mem_gb" in record:  # the loop's torch.cuda.max_memory_allocated, in GiB
        return {"peak_mem_mb": record["gpu_mem_gb"] * 1024, "peak_mem_kind": "cuda-allocated"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    mib = peak / 2**20 if sys.platform == "darwin" else peak / 1024
    return {"peak_mem_mb": mib, "peak_mem_kind": "cpu-rss", "cpu_threads": torch.get_num_threads()}


def _moved(before: float | None, now: float) -> bool:
    return before is None or abs(now - before) > MOVED * abs(before)
