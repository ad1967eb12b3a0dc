"""One thread budget for the whole process: DTW's pool, torch's intra-op pool and BLAS share it.

Without it each library sizes its own pool from the machine's core count, so two
choral jobs on one box (or one job beside anything else) oversubscribe the cores
and every job slows down several times. The budget is, first match wins:

1. what :func:`set_budget` was given (``choral --threads N``, the run config's ``threads``);
2. ``OMP_NUM_THREADS`` when it is a positive integer (what schedulers such as SLURM set);
3. the cores this process may run on (its CPU affinity), else the machine's count.

:func:`set_budget` also sizes torch's pool when torch is loaded; the teacher layer
calls :func:`apply_to_torch` when it loads torch later. DTW reads :func:`budget`
for its default ``n_jobs``.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

ENV_THREADS = "OMP_NUM_THREADS"
_chosen: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _from_environment() -> int | None:
    value = os.environ.get(ENV_THREADS, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return None


def budget() -> int:
    """The number of threads choral's parallel work may use in this process."""
    if _chosen is not None:
        return _chosen
    return _from_environment() or available_cores()


def chosen() -> int | None:
    """The budget :func:`set_budget` fixed, or None while it follows the environment."""
    return _chosen


def set_budget(threads: int | None) -> int:
    """Fix the budget (None: back to ``OMP_NUM_THREADS`` or the affinity) and size torch's pool to it."""
    global _chosen
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    _chosen = threads
    if "torch" in sys.modules:
        apply_to_torch()
    log.debug("thread budget %d (%s)", budget(), "set" if threads is not None else
              f"{ENV_THREADS}" if _from_environment() else "CPU affinity")
    return budget()


def apply_to_torch() -> None:
    """Size torch's intra-op pool to the budget (torch defaults to every physical core)."""
    import torch  # only once torch is in use: the kernels layer must not load it for DTW alone

    if torch.get_num_threads() != budget():
        torch.set_num_threads(budget())
