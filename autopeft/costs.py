"""The costs a trial measures, in one table: the built-in cost objectives, the front table's
columns, the MLflow metrics and the names outcome constraints accept are all read from it."""

from __future__ import annotations

#: name -> (direction, what it measures)
COSTS: dict[str, tuple[str, str]] = {
    "trainable_params": ("minimize", "parameters that train (adapter and head), counted on the saved model"),
    "trainable_percent": ("minimize", "trainable_params as a percentage of the base model's parameters"),
    "base_params": ("minimize", "parameters of the base model after any pruning (Light-PEFT)"),
    "peak_memory_mb": ("minimize", "peak memory of the trial: CUDA peak on a GPU, resident-set peak on CPU"),
    "train_seconds": ("minimize", "wall time of all training stages"),
    "examples_per_second": ("maximize", "training throughput over all stages"),
}

#: other figures every trial reports (usable in outcome constraints, logged to MLflow)
TRIAL_FIGURES: dict[str, str] = {
    "best_epoch": "the epoch whose adapter was kept (best dev metric)",
    "eval_seconds": "wall time of the dev evaluation",
    "trial_seconds": "wall time of the whole trial",
    "train_steps": "optimizer steps taken over all training stages (the compute a trial spent)",
}

#: the costs known part-way through training, at a scheduler's rungs (parameter counts are
#: final from the start unless a strategy grows or prunes; memory is the peak so far)
RUNG_COSTS = frozenset({"trainable_params", "trainable_percent", "base_params", "peak_memory_mb"})
