"""Peak memory per trial: what one trial freed does not count in the next one's peak."""

from __future__ import annotations

import pytest
import torch

from autopeft.training import measure
from autopeft.training.measure import PeakMemory


@pytest.mark.parametrize("released", [True, False])
def test_memory_a_finished_trial_freed_is_not_counted_in_the_next(released, monkeypatch) -> None:
    """Ray runs trials one after another in one worker: 800 MB of small tensors (heap, not
    mmap) freed by one must not show in the next one's peak resident set. The control run,
    with nothing returned to the system, shows that it would."""
    if not released:
        monkeypatch.setattr(measure, "release_free_memory", lambda: None)
    cpu = torch.device("cpu")
    with PeakMemory(cpu) as first:
        blocks = [torch.ones(2500) for _ in range(80_000)]
        pin = torch.ones(1)  # allocated above the blocks: the heap's top stays in use
        del blocks
    with PeakMemory(cpu) as second:
        torch.ones(100, 100)
    del pin
    if released:
        assert first.peak_mb > second.peak_mb + 500, (first.peak_mb, second.peak_mb)
    else:
        assert second.peak_mb > first.peak_mb - 100, (first.peak_mb, second.peak_mb)
