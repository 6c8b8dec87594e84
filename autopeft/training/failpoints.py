"""Fault injection for reliability tests and ``benchmarks/faults.py``, in the manner of Ray's
and etcd's failpoints: with ``AUTOPEFT_FAILPOINTS`` set (JSON), a share of trials fail in one
of the ways trials fail in practice. Which trials, and how, follows from a hash of each
trial's configuration, so the same trials fail in every run of a search (a resumed search
meets the faults its uninterrupted twin met). Unset, nothing here does anything.

    AUTOPEFT_FAILPOINTS='{"share": 0.5, "kinds": ["exception", "nan_loss"], "salt": 0}'

Ray workers inherit the variable from the driver that starts a local Ray; on a cluster, set it
where the workers start.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import time
from typing import Any

import torch

ENV = "AUTOPEFT_FAILPOINTS"
#: every kind of fault, in the order a trial's hash picks them
KINDS = ("exception", "nan_loss", "out_of_memory", "hang", "worker_killed")

_armed: str | None = None  # the fault of the trial this worker runs now


def fault_for(config: dict[str, Any]) -> str | None:
    """The fault ``config``'s trial meets under ``AUTOPEFT_FAILPOINTS``, or None."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    settings = json.loads(raw)
    share, kinds = float(settings.get("share", 0.0)), list(settings.get("kinds", KINDS))
    text = json.dumps(config, sort_keys=True, default=str) + str(settings.get("salt", 0))
    u = int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12
    return kinds[min(int(u / share * len(kinds)), len(kinds) - 1)] if u < share else None


def arm(config: dict[str, Any]) -> None:
    """At a trial's start: meet its fault now, or (a NaN loss) arm it for the training loop."""
    global _armed
    _armed = fault_for(config)
    if _armed == "exception":
        raise RuntimeError("injected fault: the trial raised")
    if _armed == "out_of_memory":
        # Grows until an allocation fails: at the trial's memory cap (limits.trial_memory), or
        # at once without one (a terabyte the kernel will not promise).
        capped = resource.getrlimit(resource.RLIMIT_DATA)[0] != resource.RLIM_INFINITY
        step = 2**28 if capped else 2**40
        hoard = []
        while True:
            hoard.append(torch.ones(step, dtype=torch.uint8))
    if _armed == "hang":
        time.sleep(10**6)
    if _armed == "worker_killed":
        os.kill(os.getpid(), signal.SIGKILL)


def poison(loss: torch.Tensor) -> torch.Tensor:
    """The training loss, NaN in a trial armed with ``nan_loss``."""
    return loss * float("nan") if _armed == "nan_loss" else loss
