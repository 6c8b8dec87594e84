"""Measuring what a trial costs: trainable parameters, peak memory, time."""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from types import TracebackType

import psutil
import torch


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of the built model."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def release_free_memory() -> None:
    """Hand the heap's free memory back to the system (glibc's ``malloc_trim``), so that the
    resident set is what is live: Ray runs one trial after another in the same worker, and
    memory a finished trial freed stays resident, counted in the next trial's peak, unless
    it is returned. A no-op where the C library has no ``malloc_trim``."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory in MiB over a ``with`` block: allocated CUDA memory on a GPU, else the
    process's resident set size sampled every 20 ms (torch's CPU allocator keeps no peak),
    from a resident set with the heap's free memory returned (:func:`release_free_memory`)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            release_free_memory()
            process = psutil.Process()
            self.peak_mb = process.memory_info().rss / 2**20

            def sample() -> None:
                while not self._stop.wait(0.02):
                    self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def so_far(self) -> float:
        """The peak in MiB up to now, inside the ``with`` block (a rung's reading)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self.peak_mb

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, psutil.Process().memory_info().rss / 2**20)


class Stopwatch:
    """Accumulated wall time over several ``with`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._start
