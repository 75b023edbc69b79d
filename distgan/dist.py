"""torch.distributed helpers that also work with no process group (one process, world size 1).

loss = all_reduce_mean(loss)          # the mean over the ranks; loss itself in one process
if is_main(): write(metrics)          # rank 0 alone
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over all ranks (``x`` itself in one process)."""
    if not _active():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (so all stop at the same step)."""
    if not _active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``x`` over all ranks (``x`` itself in one process)."""
    if not _active():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def wait_for_all(device: torch.device | None = None) -> None:
    """Returns on every rank once every rank has called it (at once in one process)."""
    all_reduce_max(torch.zeros(1, device=device))


def all_gather_object(obj):
    """``[obj of rank 0, obj of rank 1, ...]``."""
    if not _active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """The tensors of all ranks (same shape on each), concatenated along dim 0 in rank order."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
