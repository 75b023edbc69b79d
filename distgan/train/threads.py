"""How many PyTorch threads a CPU worker computes with: ``threads_asked()`` reads the user's
OMP_NUM_THREADS in the driver (``Plan.threads``), before PyTorch is imported, so that a bad value
is one line of distgan's and not OpenMP's complaint."""

from __future__ import annotations

import os

from distgan.errors import JobError
from distgan.train.failures import submitted


def threads_asked() -> int:
    """OMP_NUM_THREADS from ``distgan train``'s (or ``tune``'s) environment: the PyTorch threads
    each CPU worker computes with, as PyTorch and torchrun take it; 0 when it is not set, and
    each worker then takes the cores of its node shared among the workers there. Honoured on a
    shared machine this matters: a worker's second thread that waits on a busy core spins (in
    OpenMP) instead of letting another process run, at several times the CPU per step.

    Not in a job that ``distgan submit`` sent: Ray's job supervisor sets the variable for its
    driver to its own reservation (1), which says nothing about the workers' nodes."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value or submitted():
        return 0
    try:
        threads = int(value)
    except ValueError:
        raise JobError(
            f"OMP_NUM_THREADS: {value!r} is not a whole number of threads; set it to one "
            "(e.g. OMP_NUM_THREADS=1), or unset it"
        ) from None
    if threads < 1:
        raise JobError(f"OMP_NUM_THREADS: {threads}; set it to 1 or more, or unset it")
    return threads
