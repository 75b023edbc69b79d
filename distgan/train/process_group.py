"""The workers' torch process group, with its store listening on the master's address only.

    TorchTrainer(..., torch_config=BoundStoreTorchConfig(backend="gloo"))

Ray Train's own set-up (``init_process_group`` with ``env://``) makes rank 0 start torch's
TCPStore, which listens on every interface whatever ``MASTER_ADDR`` says. This one has rank 0
bind the store's socket to the master's address (127.0.0.1 on a local run, the node's address on
a cluster) and hand it to the store, then joins the process group through that store: a local run
listens on loopback only (DESIGN.md, Security). The rest is Ray's: the backend choice, the
environment variables torch and other libraries read, and the timeout.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train._internal.utils import get_address_and_port
from ray.train.torch.config import TorchConfig, _set_torch_distributed_env_vars, _TorchBackend

_LISTENING: dict[str, object] = {}  # in rank 0's process: the bound socket and the store


def _listen(address: str) -> int:
    """Rank 0: a socket bound to ``address`` for the store; returns its port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(socket.SOMAXCONN)
    _LISTENING["socket"] = sock
    return sock.getsockname()[1]


def _join(backend: str, rank: int, world_size: int, address: str, port: int, timeout_s: int):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    timeout = timedelta(seconds=timeout_s)
    if rank == 0:  # the store serves from the socket bound above (libuv's cannot take one)
        store = dist.TCPStore(address, port, world_size, True, timeout, use_libuv=False,
                              master_listen_fd=_LISTENING["socket"].fileno())  # fmt: skip
    else:
        store = dist.TCPStore(address, port, world_size, False, timeout, use_libuv=False)
    _LISTENING["store"] = store  # the process group keeps using it
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout)  # fmt: skip


class _BoundStoreBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: BoundStoreTorchConfig) -> None:
        address, _ = worker_group.execute_single(0, get_address_and_port)
        port = worker_group.execute_single(0, _listen, address)
        worker_group.execute(_set_torch_distributed_env_vars)
        world = len(worker_group)
        ray.get([
            worker_group.execute_single_async(
                i, _join, backend_config.backend, i, world, address, port,
                backend_config.timeout_s,
            )
            for i in range(world)
        ])  # fmt: skip


@dataclass
class BoundStoreTorchConfig(TorchConfig):
    """Ray's TorchConfig whose process group's store listens on the master's address only;
    ``backend`` must be named ("gloo" or "nccl")."""

    @property
    def backend_cls(self):
        return _BoundStoreBackend
