"""The low-fidelity training loop of a trial.

Written by hand rather than with ``transformers.Trainer``: a trial needs a NaN check on
every step, the dev metric after every epoch with the best epoch's adapter kept, and (for
the training strategies to come) hooks inside the step; a short loop says all of that more
plainly than Trainer subclasses and callbacks would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from autopeft.errors import TrialError
from autopeft.measure import Stopwatch
from autopeft.tasks.base import Evaluation, Task


@dataclass
class Fidelity:
    """How cheaply each trial trains: the knobs that trade search cost for signal."""

    max_train_examples: int | None = 2000
    epochs: int = 1
    max_steps: int | None = None
    max_length: int = 64
    batch_size: int = 16
    max_eval_examples: int | None = None


@dataclass
class Hyperparameters:
    """Training settings a search space may set (else these defaults)."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    batch_size: int | None = None

    @classmethod
    def from_values(cls, values: dict) -> Hyperparameters:
        known = {k: values[k] for k in ("learning_rate", "weight_decay", "warmup_ratio", "batch_size")
                 if values.get(k) is not None}
        return cls(**known)


@dataclass
class TrainOutcome:
    best: Evaluation
    best_epoch: int
    curves: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    examples_seen: int = 0


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def planned_steps(batches_per_epoch: int, fidelity: Fidelity) -> int:
    """Optimizer steps a trial takes: all epochs, capped by ``max_steps``."""
    total = fidelity.epochs * batches_per_epoch
    return min(total, fidelity.max_steps) if fidelity.max_steps else total


def train(model: torch.nn.Module, task: Task, train_loader: DataLoader, dev_loader: DataLoader,
          hp: Hyperparameters, fidelity: Fidelity, device: torch.device,
          on_epoch: Callable[[dict[str, float]], None] | None = None,
          step_hook: Callable[[int], None] | None = None) -> TrainOutcome:
    """Train the trainable parameters of ``model``; keep the epoch with the best dev metric.
    ``step_hook(step)`` runs after every optimizer step, before gradients are cleared."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    total = planned_steps(len(train_loader), fidelity)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total), total)
    clock, eval_clock = Stopwatch(), Stopwatch()
    outcome: TrainOutcome | None = None
    best_state: dict[str, torch.Tensor] = {}
    step = seen = 0
    for epoch in range(1, fidelity.epochs + 1):
        model.train()
        losses = []
        with clock:
            for batch in train_loader:
                if step >= total:
                    break
                loss = task.loss(model, _to(batch, device))
                if not math.isfinite(loss.item()):
                    raise TrialError(f"training loss is {loss.item()} at step {step + 1}")
                loss.backward()
                optimizer.step()
                scheduler.step()
                if step_hook is not None:
                    step_hook(step)
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                seen += len(next(iter(batch.values())))
                step += 1
        model.eval()
        with eval_clock:
            evaluation = task.evaluate(model, (_to(b, device) for b in dev_loader))
        point = {"epoch": float(epoch), "train_loss": sum(losses) / max(len(losses), 1),
                 "dev_loss": evaluation.loss, **{f"dev_{k}": v for k, v in evaluation.metrics.items()}}
        if on_epoch:
            on_epoch(point)
        metric = evaluation.metrics[task.primary_metric]
        if outcome is None or metric > outcome.best.metrics[task.primary_metric]:
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            outcome = TrainOutcome(evaluation, epoch, outcome.curves if outcome else [])
        outcome.curves.append(point)
        if step >= total:
            break
    if outcome.best_epoch != len(outcome.curves):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in best_state:
                    param.copy_(best_state[name])
    outcome.train_seconds = clock.seconds
    outcome.eval_seconds = eval_clock.seconds
    outcome.examples_seen = seen
    return outcome
