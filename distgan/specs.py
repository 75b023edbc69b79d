"""The job's schema: the sections and fields of a job's YAML file, as frozen dataclasses with
their defaults, one-line help and validation rules (``distgan.config`` parses a file into them).

    spec = JobSpec()                     # every default
    spec.optim.lr_g                      # 0.0002
    dataclasses.fields(OptimSpec)[0].metadata["help"]

A field is ``_f(default, help, min=..., max=..., gt=..., choices=...)``; ``distgan.fields``
checks a value against its rules. Cross-field rules live in ``distgan.job_rules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distgan.user_models import REFERENCE, REFERENCE_HINT

ARCHS = ("mlp", "dcgan", "resnet", "stylegan2")
OUTPUTS = ("tanh", "linear")
LOSS_KINDS = ("minimax", "nonsaturating", "wgan", "wgan-gp", "hinge", "lsgan")
PRECISIONS = ("fp32", "bf16", "fp16")
CACHE_MODES = ("auto", "memory", "stream")
LR_DECAYS = ("none", "linear", "cosine")  # optim.lr_decay (distgan.schedule)
CLASS_BALANCES = ("none", "balanced", "sqrt")  # distgan.data.imbalance's (kept in sync by a test)
EXPORT_FORMATS = ("pt2", "onnx", "safetensors")  # distgan export --format (distgan.export)
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement groups
# The metrics of distgan.metrics (kept in sync by a test; specs imports nothing below it).
METRIC_NAMES = ("fid", "kid", "precision", "recall", "classifier_score", "class_coverage",
                "intra_fid", "class_kl", "rare_recall")  # fmt: skip


def _f(default: Any, help: str, **rules: Any) -> Any:
    """A field with a default, a one-line help and validation rules (min, max, gt, choices)."""
    return field(default=default, metadata={"help": help, **rules})


@dataclass(frozen=True)
class DataSpec:
    source: str = _f(
        "embedded",
        "'embedded', a folder or URI (s3://bucket/data) of Parquet shards with manifest.json, "
        "or with data.resolution set, a folder or URI of JPEG/PNG/WebP images",
    )
    resolution: int = _f(
        0,
        "image folders: the square side images are centre-cropped and resized to, as they are "
        "read (class subfolders become labels); 0 = data.source holds Parquet shards",
        min=0,
    )
    channels: int = _f(3, "image folders: 3 = RGB, 1 = gray", min=1, max=3)
    cache: str = _f(
        "auto",
        "memory: each worker keeps its shard in memory; stream: re-read every epoch",
        choices=CACHE_MODES,
    )


@dataclass(frozen=True)
class ModelSpec:
    arch: str = _f(
        "dcgan",
        "architecture of G and D, or a builder of your own: module:function (a module beside the "
        "job file or on the Python path) or path/to/file.py:function",
        choices=ARCHS,
        or_pattern=REFERENCE,
        or_hint=REFERENCE_HINT,
    )
    arch_path: str = _f(
        "",
        "with model.arch module:function: the folder its module is looked up in first, then the "
        "Python path; '' = the job file's folder (recorded when the job loads)",
    )
    arch_sha256: str = _f(
        "",
        "with model.arch module:function: the sha256 of its module file, recorded when the job "
        "loads (or given, to pin it); a run rebuilt later (sample, eval, resume) refuses another",
    )
    z_dim: int = _f(100, "size of the latent vector z", min=1)
    width: int = _f(
        0,
        "base width (dcgan, resnet, stylegan2: channels; mlp: first hidden layer); 0 = default",
        min=0,
    )
    spectral_norm: bool = _f(
        False, "spectral normalisation of D's layers (SNGAN uses it with resnet)"
    )
    mbstd_group: int = _f(
        0, "D's minibatch standard deviation over groups of this size; 0 = off", min=0
    )
    pack: int = _f(1, "PacGAN: D judges this many samples together; 1 = off", min=1)
    output: str = _f("tanh", "G's last activation; linear: mlp on 2-D mixtures", choices=OUTPUTS)
    conditional: bool = _f(
        False,
        "class-conditional G and D (dcgan, resnet, stylegan2); the classes are the data's labels",
    )


@dataclass(frozen=True)
class LossSpec:
    kind: str = _f("nonsaturating", "the adversarial loss", choices=LOSS_KINDS)
    gp_weight: float = _f(10.0, "gradient penalty weight λ (wgan-gp)", min=0.0)
    clip: float = _f(0.01, "weight clipping bound of D (wgan)", gt=0.0)
    r1_gamma: float = _f(0.0, "R1 penalty weight γ on real images, any loss; 0 = off", min=0.0)
    r1_every: int = _f(16, "R1 every this many D steps, its weight × this (lazy, StyleGAN2)", min=1)
    pl_weight: float = _f(
        0.0, "StyleGAN2's path length regularisation of G (stylegan2; the paper's 2); 0 = off",
        min=0.0,
    )  # fmt: skip
    pl_every: int = _f(4, "path length every this many G steps, its weight × this (lazy)", min=1)
    ac_weight: float = _f(
        0.0,
        "AC-GAN (conditional models): D also learns to name the reals' classes and G to make its "
        "fakes named as asked, each cross-entropy × this weight; 0 = off",
        min=0.0,
    )


@dataclass(frozen=True)
class OptimSpec:
    lr_g: float = _f(2e-4, "Adam learning rate of G", gt=0.0)
    lr_d: float = _f(2e-4, "Adam learning rate of D", gt=0.0)
    beta1: float = _f(0.5, "Adam β1", min=0.0, max=0.999999)
    beta2: float = _f(0.999, "Adam β2", min=0.0, max=0.999999)
    n_critic: int = _f(1, "D steps per G step", min=1)
    lr_decay: str = _f(
        "none",
        "learning rates falling to lr_final × their value by the run's end (train.steps, or "
        "train.max_minutes when it comes first): none, linear or cosine",
        choices=LR_DECAYS,
    )
    lr_final: float = _f(
        0.0, "with lr_decay: the rates' share at the end of the run", min=0.0, max=1.0
    )


@dataclass(frozen=True)
class TrainSpec:
    steps: int = _f(2000, "G steps to train", min=1)
    batch_size: int = _f(64, "global batch (split evenly across workers)", min=1)
    max_minutes: float = _f(0.0, "stop after this many minutes of training; 0 = no limit", min=0.0)
    log_every: int = _f(50, "steps between metric lines", min=1)
    checkpoint_every: int = _f(500, "steps between checkpoints", min=1)
    sample_every: int = _f(250, "steps between sample grids", min=1)
    keep_checkpoints: int = _f(3, "checkpoints kept on disk (the latest is always kept)", min=1)
    ema: bool = _f(True, "keep an exponential moving average of G")
    ema_decay: float = _f(0.999, "EMA decay per G step", min=0.0, max=0.999999)
    ema_kimg: float = _f(
        0.0, "EMA half-life in thousands of images (replaces ema_decay); 0 = ema_decay", min=0.0
    )
    ema_rampup: float = _f(
        0.05, "with ema_kimg: half-life at most this × the images seen; 0 = off", min=0.0
    )
    diffaugment: str = _f(
        "", "DiffAugment policy for everything D sees, e.g. 'color,translation,cutout'; '' = off"
    )
    ada_target: float = _f(
        0.0,
        "ADA: augment what D sees with a p tuned to keep E[sign(D(real))] at this; 0 = off; "
        "0.6 is the paper's",
        min=0.0,
        max=1.0,
    )
    channels_last: bool = _f(False, "channels-last memory format for G and D (conv models)")
    compile: bool = _f(False, "torch.compile G and D (not with wgan-gp or R1: no double backward)")
    precision: str = _f("fp32", "autocast precision", choices=PRECISIONS)
    class_balance: str = _f(
        "none",
        "classes of the real batches (and a conditional G's fake labels): none = the data's "
        "frequencies, balanced = each class equally often, sqrt = ∝ √count; needs labels",
        choices=CLASS_BALANCES,
    )
    seed: int = _f(0, "seed of weights, latents and data order", min=0)
    deterministic: bool = _f(
        False,
        "deterministic kernels (torch.use_deterministic_algorithms); the data order follows from "
        "(seed, epoch, rank) either way, so a resume on CPU is exact without it",
    )


@dataclass(frozen=True)
class GuardSpec:
    """The divergence guard (train/guard.py): non-finite steps are skipped, rolled back, stopped."""

    max_bad_steps: int = _f(
        20,
        "non-finite steps in a row (each skipped) before a rollback to the last checkpoint",
        min=1,
    )
    lr_factor: float = _f(
        0.5, "learning rates are multiplied by this at each rollback", gt=0.0, max=1.0
    )
    max_rollbacks: int = _f(3, "rollbacks allowed; the next divergence stops the run", min=0)
    d_win_loss: float = _f(
        0.01,
        "D's mean loss over a log interval below which D is flagged as winning; 0 = off",
        min=0.0,
    )
    inject_nan: str = _f(
        "", "testing aid: steps 'A-B' whose latents are NaN on rank 0, each once; empty = never"
    )


@dataclass(frozen=True)
class ScaleSpec:
    workers: int | list[int] = _f(
        2,
        "Ray Train workers (DDP ranks); [MIN, MAX]: as many as the cluster has between the two "
        "(elastic), the global batch and learning rates unchanged",
        min=1,
    )
    use_gpu: bool = _f(False, "one GPU a worker, NCCL")
    cpus_per_worker: float = _f(
        0.0, "CPUs reserved a worker; 0 = leave one CPU for Ray Data", min=0.0
    )
    max_failures: int = _f(
        3,
        "worker-group restarts from the last checkpoint in storage after a worker or its node "
        "is lost (preemptions Ray sees coming are counted apart, with the same limit)",
        min=0,
    )
    placement: str = _f(
        "PACK", "PACK: fewest nodes; SPREAD: one worker a node where possible", choices=PLACEMENTS
    )
    wait_minutes: float = _f(
        15.0,
        "minutes to wait for the nodes the job lacks: at the start (a cluster with an "
        "autoscaler) and after a node is lost; then the job ends with the resume command; "
        "0 = fail at once",
        min=0.0,
    )

    @property
    def min_workers(self) -> int:
        return self.workers[0] if isinstance(self.workers, list) else self.workers

    @property
    def max_workers(self) -> int:
        return self.workers[1] if isinstance(self.workers, list) else self.workers

    @property
    def elastic(self) -> bool:
        """Whether Ray picks the worker count (scale.workers: [MIN, MAX] with MIN < MAX)."""
        return self.min_workers < self.max_workers


@dataclass(frozen=True)
class EvalSpec:
    every: int = _f(
        0, "steps between in-training evaluations (each with a checkpoint); 0 = off", min=0
    )
    metric: str = _f("fid", "metric that ranks checkpoints and picks best/", choices=METRIC_NAMES)
    n_samples: int = _f(5000, "generated samples per evaluation (split across workers)", min=2)
    n_real: int = _f(10000, "real images in the reference statistics", min=2)
    real: str = _f("", "dataset of the reference statistics; empty = data.source")
    features: str = _f("auto", "feature network: auto, fashion-mnist, or a .pt / TorchScript file")
    seed: int = _f(0, "seed of the evaluation latents and of the real subset", min=0)


SCHEDULERS = ("fifo", "asha", "pbt")
TUNE_MODES = ("auto", "min", "max")


@dataclass(frozen=True)
class TuneSpec:
    """A search (``distgan tune``); ``distgan train`` ignores it and trains the base values."""

    space: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "dotted key -> 'loguniform(1e-5, 1e-3)', 'choice([mlp, dcgan])', ..."},
    )
    num_samples: int = _f(4, "trials (each grid point is repeated this many times)", min=1)
    metric: str = _f("fid", "the objective, measured every eval.every steps", choices=METRIC_NAMES)
    mode: str = _f("auto", "min or max; auto = the metric's own direction", choices=TUNE_MODES)
    scheduler: str = _f("fifo", "fifo, asha (early stopping) or pbt", choices=SCHEDULERS)
    max_concurrent_trials: int = _f(1, "trials running at once; 0 = as many as fit", min=0)
    seed: int = _f(0, "seed of the sampled values (the same seed draws the same trials)", min=0)
    grace_period: int = _f(0, "asha: steps before a trial can be stopped; 0 = eval.every", min=0)
    reduction_factor: int = _f(2, "asha: 1/reduction_factor of the trials go on at a rung", min=2)
    perturbation_interval: int = _f(0, "pbt: steps between exploits; 0 = 2 × eval.every", min=0)
    quantile_fraction: float = _f(0.25, "pbt: bottom fraction cloned from the top", gt=0.0, max=0.5)
    resample_probability: float = _f(
        0.25, "pbt: chance to resample instead of ×0.8 or ×1.2", min=0.0, max=1.0
    )
    synch: bool = _f(
        False, "pbt: every trial waits at each perturbation, so exploits do not depend on speed"
    )
    objectives: list[str] = field(
        default_factory=list,
        metadata={"help": "a metric and a cost figure of complexity.json searched together for "
                  "their trade, e.g. [fid, g_gflops] (Optuna; the metric replaces tune.metric); "
                  "[] = tune.metric alone"},
    )  # fmt: skip
    constraints: list[str] = field(
        default_factory=list,
        metadata={"help": "budgets on the models, e.g. ['g_params <= 2e6', 'g_gflops <= 0.5']: "
                  "a trial that breaks one is skipped, never trained"},
    )  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    name: str = _f(
        "",
        "run name: letters, digits, '.', '_' and '-'; empty = the job file's stem (other "
        "characters as '-')",
    )
    root: str = _f("runs", "folder that holds run directories")
    storage: str = _f(
        "",
        "where run directories live: a path or a pyarrow URI (s3://bucket/runs, gs://..., with "
        "?endpoint_override=HOST:PORT&scheme=http for S3-compatible stores); every file of the "
        "run is written there as it goes; empty = run.root (one machine only)",
    )


@dataclass(frozen=True)
class JobSpec:
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    scale: ScaleSpec = field(default_factory=ScaleSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    guard: GuardSpec = field(default_factory=GuardSpec)
    tune: TuneSpec = field(default_factory=TuneSpec)
    run: RunSpec = field(default_factory=RunSpec)
