"""DDP correctness of the adversarial step: two real gloo processes on 127.0.0.1.

Each rank builds the same G and D (seed 0), wraps them as the Ray Train worker does (G and D
each in their own ``DistributedDataParallel``, D with ``broadcast_buffers=False``), then draws
its own real batches and latents (seed 100 + rank) and runs ``train_step``. Without gradient
sync the ranks would end with different weights; with it, every parameter must be identical.
A control runs the same procedure on unwrapped modules and must find the ranks apart.

The two processes run every scenario once (a module fixture); each rank gathers the flattened
weights of both ranks with ``dist.all_gather`` and writes them under tmp_path, where the tests
in this process read and compare them.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from distgan.config import from_dict
from distgan.losses import get_loss
from distgan.models import ModelOptions, build_models
from distgan.schedule import Horizon
from distgan.step import Game, Nets, train_step
from distgan.train.stopping import TIME_UP, StopCheck

WORLD = 2
JOIN_TIMEOUT_S = 120
Z_DIM = 16
SHAPE = (1, 28, 28)
BATCH = 4  # per rank
CLASSES = 3

# The options of issue 12 together: SNGAN's resnet with spectral norm, class-conditional (labels
# per rank), R1 on this step, DiffAugment on everything D sees, minibatch std and packing.
ISSUE_12 = {
    "options": ModelOptions(spectral_norm=True, mbstd_group=2, pack=2, num_classes=CLASSES),
    "settings": {"r1_gamma": 1.0, "r1_every": 1, "augment": ("color", "translation", "cutout")},
}
# AC-GAN: a conditional dcgan whose D also classifies (its class head), with R1's second D forward
# (which does not use the class head) on this step and minibatch std.
ACGAN = {
    "options": ModelOptions(mbstd_group=2, num_classes=CLASSES, classifier=True),
    "settings": {"ac_weight": 1.0, "r1_gamma": 1.0, "r1_every": 1},
}
# name -> (arch, width, loss, n_critic, wrap in DDP)
SCENARIOS = {
    "dcgan-wgan-gp": ("dcgan", 8, "wgan-gp", 1, True),
    "mlp-wgan-gp": ("mlp", 32, "wgan-gp", 1, True),
    "dcgan-nonsaturating-ncritic2": ("dcgan", 8, "nonsaturating", 2, True),
    "mlp-nonsaturating-ncritic2": ("mlp", 32, "nonsaturating", 2, True),
    "control-dcgan-wgan-gp-no-ddp": ("dcgan", 8, "wgan-gp", 1, False),
    "control-mlp-nonsaturating-no-ddp": ("mlp", 32, "nonsaturating", 2, False),
    "resnet-sn-r1-diffaugment-conditional": ("resnet", 4, "nonsaturating", 1, True),
    "control-resnet-sn-r1-diffaugment-conditional-no-ddp": ("resnet", 4, "nonsaturating", 1, False),
    "dcgan-acgan-r1": ("dcgan", 8, "nonsaturating", 1, True),
}
EXTRAS = {name: ISSUE_12 for name in SCENARIOS if "conditional" in name} | {"dcgan-acgan-r1": ACGAN}
SYNCED = [name for name, s in SCENARIOS.items() if s[4]]
# (The issue-12 control is checked on its own: Adam's first step moves each number by ±lr, and
# its small spectrally normalised head moves alike on both ranks more often than not.)
CONTROLS = [name for name, s in SCENARIOS.items() if not s[4] and name not in EXTRAS]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in tensors])


def gather(vector: torch.Tensor) -> torch.Tensor:
    """(WORLD, N): ``vector`` of every rank."""
    out = [torch.empty_like(vector) for _ in range(WORLD)]
    dist.all_gather(out, vector)
    return torch.stack(out)


def run_scenario(
    rank: int,
    arch: str,
    width: int,
    kind: str,
    n_critic: int,
    ddp: bool,
    options: ModelOptions | None = None,
    settings: dict | None = None,
) -> dict:
    torch.manual_seed(0)  # the same initial weights on both ranks
    G, D = build_models(arch, Z_DIM, width, SHAPE, options)
    classes = options.num_classes if options else 0
    initial = {"G": flat(G.parameters()), "D": flat(D.parameters())}
    if ddp:
        G = DistributedDataParallel(G)
        D = DistributedDataParallel(D, broadcast_buffers=False)
    nets = Nets(
        G,
        D,
        torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999)),
        torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999)),
    )
    game = Game(get_loss(kind), num_classes=classes, **(settings or {}))
    torch.manual_seed(100 + rank)  # each rank its own data, latents and GP interpolation
    reals = [torch.rand(BATCH, *SHAPE) * 2 - 1 for _ in range(n_critic)]
    labels = [torch.randint(classes, (BATCH,)) for _ in reals] if classes else None
    metrics = train_step(nets, game, reals, lambda n: torch.randn(n, Z_DIM), real_labels=labels)
    plain_g, plain_d = getattr(G, "module", G), getattr(D, "module", D)
    result = {
        "initial": {k: gather(v) for k, v in initial.items()},
        "G": gather(flat(plain_g.parameters())),
        "D": gather(flat(plain_d.parameters())),
        "D_buffers": gather(flat([torch.zeros(1), *plain_d.buffers()])),
        "reals": gather(flat(reals)),
        "names": {
            "G": [(n, p.numel()) for n, p in plain_g.named_parameters()],
            "D": [(n, p.numel()) for n, p in plain_d.named_parameters()],
        },
        "finite": all(torch.isfinite(v).all().item() for v in metrics.values()),
        "metrics": sorted(metrics),
    }
    # DDP broadcasts rank 0's buffers (G's BatchNorm statistics) at the start of each forward of
    # G; the step's own forward then updates them from the rank's latents. Another forward that
    # does not update them (eval mode) shows the broadcast.
    plain_g.eval()
    G(torch.randn(2, Z_DIM), *([torch.zeros(2, dtype=torch.long)] if classes else []))
    result["G_buffers"] = gather(flat([torch.zeros(1), *plain_g.buffers()]))
    return result


def expected_end(rank: int) -> torch.Tensor:
    """optim.lr_decay's expected last step under a time limit, when the ranks measured
    different speeds (10 and 30 steps/s): 100 steps in 10 s of a 60 s limit."""
    train = from_dict({"train": {"steps": 10_000, "max_minutes": 1.0}}).train
    horizon = Horizon(train)
    horizon.update(step=100, seconds=10.0, steps_per_s=10.0 + 20.0 * rank)
    return torch.tensor([horizon.end, horizon.progress(100)], dtype=torch.float64)


def time_limit_stop(rank: int, slow_from: float = math.inf) -> torch.Tensor:
    """Where StopCheck ends a run with a 30 s limit when the ranks' clocks disagree: rank 0's
    steps take 10 ms, rank 1's 12 ms, and rank 1's clock started 0.5 s later (another machine);
    from ``slow_from`` seconds on, every step takes 5 times as long (a loaded machine).
    Returns (the stop step, the probes made, the step each rank's own clock passed the limit)."""
    per_step, offset = (0.010, 0.0) if rank == 0 else (0.012, -0.5)
    now = [offset]
    stops = StopCheck(30.0, 0.0, 0, clock=lambda: now[0])
    probes, own, step = 0, None, 0
    while True:
        step += 1
        now[0] += per_step * (5 if now[0] >= slow_from else 1)
        if own is None and stops.elapsed() >= 30.0:
            own = step
        probing = step >= stops.next_probe
        reason = stops.after_step(step)
        probes += probing
        if reason is not None:
            own = math.inf if own is None else own  # this rank's clock had not passed it yet
            return torch.tensor([step, probes, own, reason == TIME_UP], dtype=torch.float64)


def clock_start(rank: int) -> torch.Tensor:
    """When each rank's StopCheck started its clock (CLOCK_MONOTONIC, one machine's), rank 0
    coming to it 0.5 s after rank 1 (as rank 0 writes its outputs and measures the models'
    cost before the loop)."""
    if rank == 0:
        time.sleep(0.5)
    return torch.tensor([StopCheck(30.0, 0.0, 0).started], dtype=torch.float64)


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
        results = {
            name: run_scenario(rank, *spec, **EXTRAS.get(name, {}))
            for name, spec in SCENARIOS.items()
        }
        results["horizon"] = expected_end(rank)
        results["time_limit"] = time_limit_stop(rank)
        results["time_limit_slowed_4s_before"] = time_limit_stop(rank, slow_from=26.0)
        results["time_limit_slowed_2s_before"] = time_limit_stop(rank, slow_from=28.0)
        results["clock_start"] = clock_start(rank)
        dist.barrier()
        dist.destroy_process_group()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    """The results of every scenario, as written by rank 0 and rank 1."""
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    errors = "\n".join(f.read_text() for f in sorted(out.glob("rank*.err")))
    assert not hung, f"ranks {hung} did not finish in {JOIN_TIMEOUT_S} s\n{errors}"
    codes = [p.exitcode for p in procs]
    assert codes == [0] * WORLD, f"exit codes {codes}\n{errors}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_a_decaying_learning_rate_is_the_same_on_both_ranks_under_a_time_limit(ddp_results):
    # 100 + 50 s × the mean speed (20 steps/s) over the ranks, though each measured its own
    ends = [r["horizon"] for r in ddp_results]
    assert torch.equal(ends[0], ends[1])
    assert ends[0][0].item() == 100 + 50 * 20.0


def differing(result: dict, net: str) -> list[str]:
    """Names of ``net``'s parameters whose values differ between the two ranks."""
    names, sizes = zip(*result["names"][net])
    parts = [torch.split(result[net][r], list(sizes)) for r in range(WORLD)]
    return [n for n, a, b in zip(names, *parts) if not torch.equal(a, b)]


def test_both_ranks_report_the_same_gathered_values(ddp_results):
    for name in SCENARIOS:
        for key in ("G", "D", "G_buffers", "D_buffers"):
            assert torch.equal(ddp_results[0][name][key], ddp_results[1][name][key]), (name, key)


@pytest.mark.parametrize("name", SYNCED)
def test_ddp_step_leaves_identical_weights_on_both_ranks(ddp_results, name):
    result = ddp_results[0][name]
    # The ranks did see different data, so only gradient sync can make them agree.
    reals = result["reals"]
    assert not torch.equal(reals[0], reals[1])
    assert result["finite"]
    assert differing(result, "G") == []
    assert differing(result, "D") == []
    assert torch.equal(result["G_buffers"][0], result["G_buffers"][1])
    assert torch.equal(result["D_buffers"][0], result["D_buffers"][1])
    # ... and the step did change the weights of both players.
    for net in ("G", "D"):
        assert torch.equal(result["initial"][net][0], result["initial"][net][1])
        assert unchanged(result, net) == expected_unchanged(name, result, net)


def unchanged(result: dict, net: str) -> list[str]:
    """Names of ``net``'s parameters that the step left as they were (on rank 0)."""
    names, sizes = zip(*result["names"][net])
    before = torch.split(result["initial"][net][0], list(sizes))
    after = torch.split(result[net][0], list(sizes))
    return [n for n, a, b in zip(names, before, after) if torch.equal(a, b)]


def expected_unchanged(name: str, result: dict, net: str) -> list[str]:
    # With a Wasserstein loss, f - r, the gradient of D's output bias is mean(1) - mean(1) = 0
    # (and the penalty does not depend on it), so Adam leaves that one tensor as it was.
    if net == "D" and SCENARIOS[name][2] in ("wgan", "wgan-gp"):
        return [result["names"]["D"][-1][0]]
    return []


@pytest.mark.parametrize(
    "case", ["time_limit", "time_limit_slowed_4s_before", "time_limit_slowed_2s_before"]
)
def test_the_ranks_stop_at_one_step_within_a_step_of_the_time_limit(ddp_results, case):
    """train.max_minutes on two ranks whose clocks and speeds differ: both stop at the same
    step, no later than a step after the first rank's clock passed the limit, after a few dozen
    collectives rather than one a step (about 3,000 steps); and so when the steps become 5 times
    slower 4 or 2 s before the limit (probes planned from the mean speed, half the time left
    apart, ended 0.5 and 2.4 s late)."""
    (step0, probes0, own0, time0), (step1, probes1, own1, _) = (
        r[case].tolist() for r in ddp_results
    )
    assert step0 == step1 and probes0 == probes1 and time0 == 1
    assert min(own0, own1) <= step0 <= min(own0, own1) + 1
    assert probes0 < 80, probes0


def test_the_ranks_start_the_time_limits_clock_together(ddp_results):
    """Rank 0 came 0.5 s late; had rank 1's clock started without it, rank 1 would stop the run
    with rank 0's elapsed_s (metrics.jsonl) 0.5 s short of train.max_minutes."""
    started0, started1 = (r["clock_start"].item() for r in ddp_results)
    assert abs(started0 - started1) < 0.1, started1 - started0


@pytest.mark.parametrize("name", CONTROLS)
def test_without_ddp_the_ranks_drift_apart(ddp_results, name):
    result = ddp_results[0][name]
    assert torch.equal(result["initial"]["G"][0], result["initial"]["G"][1])
    assert torch.equal(result["initial"]["D"][0], result["initial"]["D"][1])
    # Every tensor that the step moved got a rank-specific gradient, so the ranks disagree on it.
    for net in ("G", "D"):
        moved = [n for n, _ in result["names"][net] if n not in unchanged(result, net)]
        assert moved and sorted(differing(result, net)) == sorted(moved), net
        assert unchanged(result, net) == expected_unchanged(name, result, net)


def test_the_issue_12_scenario_runs_every_option(ddp_results):
    result = ddp_results[0]["resnet-sn-r1-diffaugment-conditional"]
    assert "r1" in result["metrics"]  # R1 was part of this step's D loss
    d_names = [n for n, _ in result["names"]["D"]]
    assert "embed.parametrizations.weight.original" in d_names  # projection, spectral norm
    assert any(".gain." in n for n, _ in result["names"]["G"])  # conditional BatchNorm

    # Without DDP the same step leaves the ranks apart in both players.
    control = ddp_results[0]["control-resnet-sn-r1-diffaugment-conditional-no-ddp"]
    assert len(differing(control, "G")) > 10 and len(differing(control, "D")) > 10


def test_the_acgan_scenario_trains_the_class_head_on_both_ranks(ddp_results):
    result = ddp_results[0]["dcgan-acgan-r1"]
    assert {"d_ac", "g_ac", "r1"} <= set(result["metrics"])  # both class losses and R1
    names = [n for n, _ in result["names"]["D"]]
    assert "classify.weight" in names
    # The class head moved (its loss reached D), identically on both ranks (the synced test).
    sizes = [size for _, size in result["names"]["D"]]
    start = sum(sizes[: names.index("classify.weight")])
    head = slice(start, start + sizes[names.index("classify.weight")])
    assert not torch.equal(result["D"][0][head], result["initial"]["D"][0][head])
