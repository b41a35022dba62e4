"""How a training stage splits the machine's cores between torch and loader processes.

Loader workers and torch's intra-op threads compete for the same cores: on a 2-core machine two
loader processes decoding JPEGs next to torch's two threads slowed training several times. The
plan: when the split's decoded images are held in memory (:mod:`data.cache`) there is nothing for
a worker to do, so no workers and every core to torch; otherwise ``data.num_workers`` workers and
the remaining cores to torch. Explicit ``data.train_workers`` / ``data.torch_threads`` win, and
an ``OMP_NUM_THREADS`` in the environment is taken as the user's thread count.
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def plan_workers(train_workers: int, num_workers: int, cached: bool) -> int:
    """Loader workers of a training stage: ``train_workers`` when >= 0, else 0 when the split is
    cached and ``num_workers`` when it is not."""
    if train_workers >= 0:
        return train_workers
    return 0 if cached else max(0, num_workers)


def plan_threads(torch_threads: int, workers: int, cores: int | None = None) -> int:
    """Torch intra-op threads: ``torch_threads`` when > 0, else ``OMP_NUM_THREADS`` when the
    environment sets it (the user's choice), else the cores the workers leave (at least 1)."""
    if torch_threads > 0:
        return torch_threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = available_cores() if cores is None else cores
    return max(1, cores - workers)


def apply_plan(train_workers: int, num_workers: int, torch_threads: int, cached: bool) -> tuple[int, int]:
    """Decide (workers, threads) and set torch's intra-op threads; returns the pair."""
    workers = plan_workers(train_workers, num_workers, cached)
    threads = plan_threads(torch_threads, workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return workers, threads
