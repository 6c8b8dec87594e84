"""Peak memory per trial: what one trial freed does not count in the next one's peak."""

from __future__ import annotations

import torch

from autopeft.measure import PeakMemory


def test_memory_a_finished_trial_freed_is_not_counted_in_the_next() -> None:
    """Ray runs trials one after another in one worker: 800 MB of small tensors (heap, not
    mmap) freed by one must not show in the next one's peak resident set."""
    cpu = torch.device("cpu")
    with PeakMemory(cpu) as first:
        blocks = [torch.ones(2500) for _ in range(80_000)]
        del blocks
    with PeakMemory(cpu) as second:
        torch.ones(100, 100)
    assert first.peak_mb > second.peak_mb + 500, (first.peak_mb, second.peak_mb)
