"""The rules that tie a JobSpec's fields together, checked once every field is valid on its own.

    check_cross_fields(spec, "jobs/x.yaml", field_sources)   # config.from_dict calls it

A batch must split evenly across the workers and into PacGAN's packs, fp16 needs a GPU, a
conditional model needs an architecture that has one, streaming cannot draw classes by weight,
and so on. Each rule raises JobError naming where the field was set, the field and the fix.
"""

from __future__ import annotations

import math
import re

from distgan.errors import JobError
from distgan.fields import close_hint
from distgan.user_models import is_reference

CONDITIONAL_ARCHS = ("dcgan", "resnet", "stylegan2")
STYLEGAN2_MBSTD_GROUP = 4  # its D's group when model.mbstd_group is 0 (kept in sync by a test)
AUGMENTATIONS = ("color", "translation", "cutout")  # distgan.augment's (kept in sync by a test)
RUN_NAME_CHARS = r"A-Za-z0-9._-"  # run.name ends a folder's name (runs/00003-NAME) and a URI


def check_cross_fields(spec, source: str, field_sources: dict[str, str]) -> None:
    """Raises JobError (the file or --set that gave the field, the field, the fix) when fields
    valid one by one do not fit together."""

    def src(dotted: str) -> str:
        return field_sources.get(dotted, source)

    _check_split(spec, "train.batch_size", spec.train.batch_size, src)
    if spec.eval.every:  # in-training evaluations only: each rank generates its share
        _check_split(spec, "eval.n_samples", spec.eval.n_samples, src)
    if spec.train.precision == "fp16" and not spec.scale.use_gpu:
        raise JobError(
            f"{src('train.precision')}: train.precision: fp16 needs a GPU (scale.use_gpu: true); "
            "use bf16 or fp32 on CPU"
        )
    if spec.guard.inject_nan and not re.fullmatch(r"\d+-\d+", spec.guard.inject_nan):
        raise JobError(
            f"{src('guard.inject_nan')}: guard.inject_nan: expected steps as 'A-B' (e.g. '13-15'), "
            f"got {spec.guard.inject_nan!r}; leave it empty outside tests"
        )
    _check_model_options(spec, src)
    if spec.train.class_balance != "none" and spec.data.cache == "stream":
        raise JobError(
            f"{src('data.cache')}: data.cache: stream reads each image once an epoch in the "
            f"order it comes, which cannot draw classes by weight (train.class_balance: "
            f"{spec.train.class_balance}); use data.cache: memory (or auto)"
        )
    _check_image_folder(spec, src)


def _check_image_folder(spec, src) -> None:
    """An image folder (data.resolution set) is decoded into memory once, never streamed."""
    d = spec.data
    if d.channels not in (1, 3):
        raise JobError(
            f"{src('data.channels')}: data.channels: {d.channels}; use 3 (RGB) or 1 (gray)"
        )
    if d.resolution and d.cache == "stream":
        raise JobError(
            f"{src('data.cache')}: data.cache: stream is not served for an image folder "
            "(data.resolution set), which is decoded into memory once; for data larger than "
            "memory, import it with `distgan data import` and stream the shards"
        )


def _check_split(spec, field: str, total: int, src) -> None:
    """``total`` (a global count) must split evenly across every worker count the job may train
    on: an elastic run's ranks then see equal batches, so DDP's mean gradient is the global
    batch's, exactly as on a fixed count. An uneven split would weight the smaller ranks' images
    more and break PacGAN's packs and the minibatch-std groups."""
    s = spec.scale
    if not s.elastic:
        if total % s.workers:
            raise JobError(
                f"{src(field)}: {field}: {total} does not split evenly across "
                f"scale.workers={s.workers}; use a multiple of {s.workers}"
            )
        return
    worlds = range(s.min_workers, s.max_workers + 1)
    bad = [w for w in worlds if total % w]
    if bad:
        every = math.lcm(*worlds)
        raise JobError(
            f"{src(field)}: {field}: {total} does not split evenly across {bad[0]} workers, "
            f"one of the counts scale.workers={s.workers} allows; use a multiple of {every} "
            f"(e.g. {-(-total // every) * every}) or narrow scale.workers"
        )


def _check_model_options(spec, src) -> None:
    """The rules that tie the model options, DiffAugment and compile to the other fields."""
    m = spec.model
    s = spec.scale
    for world in range(s.min_workers, s.max_workers + 1):  # an elastic run: every count
        per_worker = spec.train.batch_size // world
        at = f" with {world} workers" if s.elastic else ""
        if per_worker % m.pack:
            raise JobError(
                f"{src('model.pack')}: model.pack: {m.pack} does not divide the per-worker batch "
                f"of {per_worker}{at} (train.batch_size / scale.workers); use a divisor of "
                f"{per_worker} or a batch that is a multiple of {m.pack * world}"
            )
        if m.mbstd_group and (per_worker // m.pack) % m.mbstd_group:
            raise JobError(
                f"{src('model.mbstd_group')}: model.mbstd_group: {m.mbstd_group} does not divide "
                f"the {per_worker // m.pack} inputs D sees per worker{at} (train.batch_size / "
                "scale.workers / model.pack); use a divisor of it, or 0 for off"
            )
        if m.arch == "stylegan2" and not m.mbstd_group and per_worker % STYLEGAN2_MBSTD_GROUP:
            raise JobError(
                f"{src('model.mbstd_group')}: model.mbstd_group: 0 gives stylegan2's D groups of "
                f"{STYLEGAN2_MBSTD_GROUP} for its minibatch std, which do not divide the "
                f"{per_worker} images D sees per worker{at} (train.batch_size / scale.workers); "
                "set a divisor of it"
            )
    if spec.loss.pl_weight and m.arch != "stylegan2":
        raise JobError(
            f"{src('loss.pl_weight')}: loss.pl_weight: path length regularisation needs G's "
            f"styles, which {m.arch} has not; use model.arch: stylegan2 or loss.pl_weight: 0"
        )
    own = is_reference(m.arch)  # a user's builder serves what it serves (it raises otherwise)
    if m.output != "tanh" and m.arch != "mlp" and not own:
        raise JobError(
            f"{src('model.output')}: model.output: {m.output} is served by arch mlp only "
            f"({m.arch}'s G ends in tanh); remove it or use model.arch: mlp"
        )
    if spec.loss.ac_weight and not m.conditional:
        raise JobError(
            f"{src('loss.ac_weight')}: loss.ac_weight: AC-GAN's classifier learns the data's "
            "classes, which an unconditional model does not use; set model.conditional: true, or "
            "loss.ac_weight: 0"
        )
    if spec.loss.ac_weight and m.pack != 1:
        raise JobError(
            f"{src('loss.ac_weight')}: loss.ac_weight: AC-GAN's classifier names one image's "
            f"class, and model.pack: {m.pack} makes D judge {m.pack} images at once; set "
            "model.pack: 1, or loss.ac_weight: 0"
        )
    if m.conditional and m.arch not in CONDITIONAL_ARCHS and not own:
        raise JobError(
            f"{src('model.conditional')}: model.conditional: {m.arch} has no conditional version; "
            f"use model.arch: {' or '.join(CONDITIONAL_ARCHS)}, or model.conditional: false"
        )
    policy = [n.strip() for n in spec.train.diffaugment.split(",") if n.strip()]
    for name in policy:
        if name not in AUGMENTATIONS:
            raise JobError(
                f"{src('train.diffaugment')}: train.diffaugment: unknown augmentation {name!r}; "
                f"{close_hint(name, list(AUGMENTATIONS))} (a comma-separated list of "
                f"{', '.join(AUGMENTATIONS)}, or '' for off)"
            )
    if spec.train.ada_target and policy:
        raise JobError(
            f"{src('train.ada_target')}: train.ada_target: ADA and DiffAugment "
            f"(train.diffaugment: {spec.train.diffaugment}) would both augment what D sees; set "
            "train.diffaugment: '' or train.ada_target: 0"
        )
    if spec.train.compile and (spec.loss.r1_gamma or spec.loss.kind == "wgan-gp"):
        # Compiled backward graphs donate their buffers, so they cannot be differentiated again
        # (torch 2.13: "requires create_graph=False").
        penalty = "loss.r1_gamma" if spec.loss.r1_gamma else "loss.kind: wgan-gp"
        raise JobError(
            f"{src('train.compile')}: train.compile: a compiled D cannot be differentiated twice, "
            f"as the gradient penalty of {penalty} needs; set train.compile: false"
        )


def run_name_from(stem: str) -> str:
    """A job file's stem as a run name: every run of other characters becomes one '-'."""
    return re.sub(f"[^{RUN_NAME_CHARS}]+", "-", stem).strip("-") or "job"


def check_run_name(name: str, where: str) -> None:
    """Raises JobError unless ``name`` is empty or one path component of safe characters: it
    becomes part of the run's folder, locally and in object storage, and of Ray's run names."""
    if not name or (re.fullmatch(f"[{RUN_NAME_CHARS}]+", name) and name not in (".", "..")):
        return
    hint = run_name_from(name).strip(".") or "job"
    raise JobError(
        f"{where}: run.name: {name!r} is not a single folder name; use letters, digits, '.', "
        f"'_' and '-' only (no '/', no spaces), e.g. run.name: {hint}"
    )
