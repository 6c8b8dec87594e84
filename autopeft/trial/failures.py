"""What a trial's failure is called, and a cap on a trial's memory that makes running out of
it an ordinary, recorded failure rather than the machine's out-of-memory killer."""

from __future__ import annotations

import resource
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

#: what the errors of an allocation that failed say (torch's CPU allocator raises RuntimeError)
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "cannot allocate memory")


def failure_reason(err: BaseException) -> str:
    """``err`` in one line; an allocation that failed is named as running out of memory."""
    detail = traceback.format_exception_only(type(err), err)[-1].strip().splitlines()[0]
    oom = isinstance(err, MemoryError) or any(s in str(err).lower() for s in _OUT_OF_MEMORY)
    return f"out of memory: {detail}" if oom else detail


def _data_bytes() -> int:
    """The process's data segment (heap and private mappings: what RLIMIT_DATA counts)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def memory_cap(gigabytes: float | None) -> Iterator[None]:
    """For the block, allocations past ``gigabytes`` more than the process holds now fail
    (MemoryError, or torch's "can't allocate memory"). None: no cap.

    RLIMIT_DATA rather than RLIMIT_AS: a worker's address space holds Ray's object store and
    CUDA's reservations, far more than it uses; the data segment is what allocations grow.
    Linux only (where /proc is); elsewhere the block runs uncapped."""
    if gigabytes is None:
        yield
        return
    try:
        before = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (_data_bytes() + int(gigabytes * 2**30), before[1]))
    except (OSError, ValueError):  # no /proc, or a hard limit below the cap: run as it is
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, before)
