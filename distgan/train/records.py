"""What a line of a run's ``metrics.jsonl`` holds, by group (train/loop.py writes them).

    group_of("d_grad_norm")  # "grad_norm"

One place for the names, read by the TensorBoard writer (train/tensorboard.py: tags
``group/key``) and by the HTML report (report/: one chart per group).
"""

from __future__ import annotations

from distgan.specs import METRIC_NAMES

STEP = "step"
GROUPS: dict[str, tuple[str, ...]] = {
    # gp: the gradient penalty, for the losses that have one; d_ac, g_ac: AC-GAN's cross-entropies
    "loss": ("d_loss", "g_loss", "gp", "d_ac", "g_ac"),
    "D": ("d_real", "d_fake"),  # D's mean output on real and generated images (σ for logistic)
    "grad_norm": ("d_grad_norm", "g_grad_norm"),  # before clipping, at log steps
    # gpu_mem_gb: rank 0's peak (CUDA only); workers: the world size (an elastic run's changes)
    "speed": ("images_per_s", "gpu_mem_gb", "workers"),
    "eval": METRIC_NAMES,  # in-training evaluation, at eval and checkpoint steps
    "optim": ("lr_g", "lr_d"),  # the rates in use (optim.lr_decay, the guard's lr_scale)
    "guard": ("skipped", "rollbacks", "lr_scale", "d_wins"),  # the divergence guard
    "progress": ("epoch", "images_seen", "elapsed_s"),
}
_GROUP_OF = {key: group for group, keys in GROUPS.items() for key in keys}


def group_of(key: str) -> str:
    """The group of a record's key; "other" for a key this list does not know."""
    return _GROUP_OF.get(key, "other")


def numbers(record: dict) -> dict[str, float]:
    """The record's numeric figures, without the step (strings such as a stop message and
    booleans dropped)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != STEP and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
