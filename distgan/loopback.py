"""Ray on this machine's loopback only: a local instance, and the nodes of a cluster that lives on
one machine (``cluster/local.sh``, the test clusters).

    loopback_only()                      # before ray.init: a local instance binds 127.0.0.1
    python -m distgan.loopback start --head --node-ip-address=127.0.0.1 ...   # a node
    python -m distgan.loopback start --address=127.0.0.1:6379 --node-ip-address=127.0.0.1 ...

Ray 2.60 binds a node's GCS, raylet, agents and worker processes to 127.0.0.1 only when the
node's address is exactly 127.0.0.1; for any other address it binds them to every interface.
And it rarely keeps 127.0.0.1: ``ray start --node-ip-address=127.0.0.1``, ``ray.init`` and a
driver's ``RAY_ADDRESS=127.0.0.1:PORT`` all turn "localhost" into the machine's own address
(``services.resolve_ip_for_localhost``), unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` says
that Ray runs on one machine only, as on a laptop OS. That switch also makes ``ray start
--address`` refuse to add a node to a cluster. So a node started here runs ``ray start`` with
the switch off for every process it starts (they read it from the environment) and, in this
process alone, lets a node join a cluster and keeps 127.0.0.1 as given.
"""

from __future__ import annotations

import os
import sys

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Makes this process, and the Ray processes it starts, take 127.0.0.1 as their node's
    address: a local instance about to start listens on loopback only (its GCS, raylet,
    workers, dashboard and agents; metrics included), and a driver reaches a cluster of nodes
    started by ``main`` at 127.0.0.1 (a driver with the switch on would look for its node at the
    machine's address). The variable reaches the processes Ray starts; the constant is this
    process's copy, read when ray was imported."""
    from ray._private import ray_constants

    os.environ[LOCAL_ONLY] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def main(argv: list[str]) -> int:
    """``ray ARGV`` (``start ...``) for a node on 127.0.0.1."""
    os.environ[LOCAL_ONLY] = "0"  # every process the node starts: 127.0.0.1 is its address
    from ray._private import ray_constants, services

    ray_constants.ENABLE_RAY_CLUSTER = True  # this process: a node may join a cluster ...
    services.resolve_ip_for_localhost = lambda host: host  # ... at 127.0.0.1, as given
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *argv]
    return ray_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
