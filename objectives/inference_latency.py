"""Measured inference latency: milliseconds per dev example, adapter unmerged, batch of 64.

Times the trained model itself, so extra adapter layers (and where they sit) show up as the
cost they really have at serving time, which parameter counts do not tell.

Use: ``autopeft search --objective accuracy --objective latency_ms`` (an entry point in pyproject.toml)
"""

import time

import torch

import autopeft

WARMUP_BATCHES = 1
TIMED_BATCHES = 4


@autopeft.objective("minimize", test=False)  # a cost: the test split would time the same model
def latency_ms(trial: autopeft.TrialOutput) -> float:
    model = trial.model.eval()
    batches = trial.dev_batches[: WARMUP_BATCHES + TIMED_BATCHES]
    examples, seconds = 0, 0.0
    with torch.no_grad():
        for i, batch in enumerate(batches):
            batch = {k: v.to(trial.device) for k, v in batch.items() if k != "labels"}
            if trial.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**batch)
            if trial.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= WARMUP_BATCHES or len(batches) <= WARMUP_BATCHES:
                seconds += time.perf_counter() - start
                examples += len(next(iter(batch.values())))
    return 1000.0 * seconds / max(examples, 1)
