"""A stage's peak resident memory, measured without touching the kernel's high-water mark.

Resetting the high-water mark (``/proc/self/clear_refs`` 5) would give an exact per-stage peak, but
it also resets what ``getrusage`` and so ``/usr/bin/time -v`` report for the whole process: an
external measurement of the run would then see only the last stage's peak. So the mark is left
alone and a stage's peak is:

- exact when the stage raised the process's high-water mark (``VmHWM`` grew during it): the peak
  of the run so far happened in this stage, and it is the new mark;
- otherwise the largest resident size a background thread saw, sampling ``/proc/self/statm`` every
  ``interval`` seconds (a spike shorter than that can be missed; it was below the run's peak anyway).
  The default 0.2 s costs a 2-thread training loop on 2 cores ~1 %; 0.02 s cost 5-10 %, the woken
  thread stalling torch's OpenMP threads (``benchmarks/stage_peak.py --interval``).

Where ``/proc`` is absent (not Linux) the stage's peak is ``getrusage``'s whole-process maximum.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def high_water_mib() -> float:
    """The process's peak resident memory so far (``VmHWM``; ``getrusage`` without ``/proc``), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resident_mib() -> float | None:
    """The process's resident memory now (``/proc/self/statm``), MiB; None without ``/proc``."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_MIB
    except (OSError, IndexError, ValueError):
        return None


def children_high_water_mib() -> float:
    """The largest finished child process's peak resident memory (``getrusage`` children), MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


class StagePeak:
    """Context manager: the peak resident memory (MiB) of the code it wraps, read by :meth:`peak_mib`
    inside or after the block (see the module docstring for how)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0.0
        self._start_mark = 0.0

    def _sample(self) -> float | None:
        now = resident_mib()
        if now is not None and now > self._sampled:
            self._sampled = now
        return now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "StagePeak":
        self._start_mark = high_water_mib()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="stage-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def peak_mib(self) -> float:
        """The exact new high-water mark if the block raised it, else the largest sampled size."""
        now = self._sample()
        mark = high_water_mib()
        return mark if now is None or mark > self._start_mark else self._sampled
