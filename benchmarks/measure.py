"""Stage clocks and peak-memory readings shared by the benchmarks.

Peak memory on the CPU is the process's peak resident set size (``VmHWM`` in
``/proc/self/status``), reset before each measured step by writing ``5`` to
``/proc/self/clear_refs`` (Linux 4.0 and later). On CUDA it is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from collections import defaultdict

import torch

GIB = 1024 ** 3


class StageClock:
    """Accumulates the time between consecutive :meth:`lap` calls under each lap's name.

    On CUDA every lap synchronises the device first, so a stage's kernels count in that stage.
    """

    def __init__(self, device: torch.device):
        self.synchronise = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self._last = 0.0

    def start(self) -> None:
        self._sync()
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def _sync(self) -> None:
        if self.synchronise:
            torch.cuda.synchronize()


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the file gives kB
    raise RuntimeError(f"{field} not found in /proc/self/status")


def resident_bytes() -> int:
    """Return the process's current resident set size."""
    return _status_bytes("VmRSS")


def peak_resident_bytes() -> int:
    """Return the process's peak resident set size since the last :func:`reset_peak_resident`."""
    return _status_bytes("VmHWM")


def release_memory() -> None:
    """Collect garbage and return the heap's free memory to the system (glibc only)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass  # not glibc: memory freed but kept by the allocator stays resident


def reset_peak_resident() -> int:
    """Release freed memory, reset the peak resident size and return the resident size it
    starts from.

    Raises:
        OSError: where ``/proc/self/clear_refs`` cannot be written (not Linux, or a sandbox that
            forbids it); peak figures would then include earlier steps.
    """
    release_memory()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return resident_bytes()


class MemoryGuard:
    """Ends the process with exit code :attr:`EXIT_CODE` when its resident size passes
    ``limit_bytes``, or when the machine's available memory falls below ``floor_bytes`` while
    :attr:`active` is set, before the kernel's out-of-memory killer picks a process on a
    machine shared with other work.

    A thread samples both every ``interval_s``; an allocation that overshoots within one
    interval is not caught.
    """

    EXIT_CODE = 3

    def __init__(self, limit_bytes: int, floor_bytes: int, interval_s: float = 0.02):
        self.limit_bytes = limit_bytes
        self.floor_bytes = floor_bytes
        self.interval_s = interval_s
        # Set while the process allocates for a step; an idle process does not stop when
        # other processes use the machine's memory.
        self.active = False
        thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)
        thread.start()

    def _watch(self) -> None:
        while True:
            resident, available = resident_bytes(), available_bytes()
            if resident > self.limit_bytes or (self.active and available < self.floor_bytes):
                os.write(2, (f"resident memory {resident / GIB:.1f} GiB (limit "
                             f"{self.limit_bytes / GIB:.1f} GiB), machine memory available "
                             f"{available / GIB:.1f} GiB (floor {self.floor_bytes / GIB:.1f} "
                             "GiB); stopping\n").encode())
                os._exit(self.EXIT_CODE)
            time.sleep(self.interval_s)


def available_bytes() -> int:
    """Return ``MemAvailable`` from ``/proc/meminfo``."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")
