"""The low-fidelity training loop of a trial, and the hooks that strategies plug into it.

Written by hand rather than with ``transformers.Trainer``: a trial needs a NaN check on
every step, the dev metric after every epoch with the best epoch's adapter kept, and hooks
inside the step (training strategies, AdaLoRA's rank budget); a short loop says all of that
more plainly than Trainer subclasses and callbacks would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch.utils.data import DataLoader

from autopeft.training import failpoints
from autopeft.config import Fidelity
from autopeft.errors import TrialError
from autopeft.training.measure import Stopwatch
from autopeft.space.values import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, ValueRule
from autopeft.tasks.base import Evaluation, Task


@dataclass
class Hyperparameters:
    """Training settings a search space may set (else these defaults): the one declaration of
    which training parameters a space may use and what values each allows."""

    learning_rate: float = field(default=1e-3, metadata={"rule": POSITIVE})
    weight_decay: float = field(default=0.0, metadata={"rule": NON_NEGATIVE})
    warmup_ratio: float = field(default=0.06, metadata={"rule": FRACTION})
    #: clip the gradient's global norm to this before each step (0: never), as Hugging Face's
    #: Trainer does by default: without it, short trials at the learning rates that suit small
    #: adapters collapse to the majority class when the adapter is large
    max_grad_norm: float = field(default=1.0, metadata={"rule": NON_NEGATIVE})
    #: None: the fidelity's batch size
    batch_size: int | None = field(default=None, metadata={"rule": POSITIVE_INT})

    @classmethod
    def from_values(cls, values: dict) -> Hyperparameters:
        return cls(**{k: values[k] for k in TRAINING_RULES if values.get(k) is not None})


#: the training parameters every space may set, with the values each allows
TRAINING_RULES: dict[str, ValueRule] = {f.name: f.metadata["rule"] for f in fields(Hyperparameters)}


@dataclass
class TrainOutcome:
    best: Evaluation | None
    best_epoch: int
    curves: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    examples_seen: int = 0
    steps: int = 0


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def planned_steps(batches_per_epoch: int, fidelity: Fidelity) -> int:
    """Optimizer steps a trial takes: all epochs, capped by ``max_steps``."""
    total = fidelity.epochs * batches_per_epoch
    return min(total, fidelity.max_steps) if fidelity.max_steps else total


def linear_warmup_decay(warmup: int, total: int, start: int = 0) -> Callable[[int], float]:
    """The lr factor at scheduler step ``s``: up to 1 over ``warmup`` steps from ``start``
    (1/(warmup+1), 2/(warmup+1), ...), then linearly down towards 0 at ``total``.

    transformers' linear schedule starts its warm-up at 0, so the first step of every trial
    with a warm-up trained nothing (5% of a 20-step trial): here no step is wasted."""

    def factor(step: int) -> float:
        local = step - start
        if local < warmup:
            return (local + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - start - warmup))

    return factor


@dataclass
class TrainingLoop:
    """What the hooks see of a running loop; they may read everything and call its methods."""

    model: torch.nn.Module
    task: Task
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_loader: DataLoader
    device: torch.device
    total_steps: int
    warmup_steps: int
    hp: Hyperparameters
    #: optimizer steps taken so far (0 during the first step)
    step: int = 0
    epoch: int = 1
    #: the task loss of the current step (set before ``before_optimizer_step``)
    loss: torch.Tensor | None = None
    #: what the task's evaluation decodes generations with (generative tasks)
    tokenizer: Any = None

    def add_parameters(self, params: Sequence[torch.nn.Parameter], *, lr: float | None = None,
                       warmup_steps: int | None = None, weight_decay: float | None = None) -> None:
        """Train ``params`` from the next step on, as a new optimizer group with its own warm-up
        restarted now and the same linear decay to 0 at the end.

        ``LambdaLR`` keeps one lambda and one base rate per group and, in torch 2.13, raises
        on the next ``step()`` when a group was added without extending both: done here.
        """
        lr = self.hp.learning_rate if lr is None else lr
        group = {"params": list(params), "lr": 0.0, "initial_lr": lr,
                 "weight_decay": self.hp.weight_decay if weight_decay is None else weight_decay}
        self.optimizer.add_param_group(group)
        warmup = self.warmup_steps if warmup_steps is None else warmup_steps
        # The scheduler's counter is already ``step + 1`` when hooks run after its step.
        factor = linear_warmup_decay(warmup, self.total_steps, start=self.scheduler.last_epoch)
        self.scheduler.lr_lambdas.append(factor)
        self.scheduler.base_lrs.append(lr)
        group["lr"] = lr * factor(self.scheduler.last_epoch)


class TrainingHooks:
    """Optional hooks into the training loop; each does nothing unless overridden.

    Call order in :func:`train`::

        optimizer_groups(model)                  # extra parameter groups, at optimizer creation
        on_train_start(loop)
        per step:  before_step(loop, batch)       # e.g. choose which layers train
                   task loss + extra_loss(loop, batch), NaN check, backward
                   before_optimizer_step(loop)    # gradients are there, not yet clipped
                   clip to hp.max_grad_norm; optimizer.step(); scheduler.step()
                   after_optimizer_step(loop)     # (clipped) gradients still there; may add parameters
                   zero_grad
        per epoch: on_epoch_end(loop, evaluation) # evaluation is None in stages without dev
        on_train_end(loop)

    Hooks of several owners (the adapter, the strategy) run in the order they are given.
    """

    #: False for hooks that change the model's shape while it trains (ranks grown): an
    #: earlier epoch's weights would no longer fit, so the loop keeps the last epoch
    restorable: bool = True

    def optimizer_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """Extra optimizer groups (``{"params": [...], "lr": ...}``); their parameters are left
        out of the default group."""
        return []

    def on_train_start(self, loop: TrainingLoop) -> None: ...

    def before_step(self, loop: TrainingLoop, batch: dict[str, torch.Tensor]) -> None: ...

    def extra_loss(self, loop: TrainingLoop, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to the task loss of this step (a regulariser), or ``None``."""
        return None

    def before_optimizer_step(self, loop: TrainingLoop) -> None: ...

    def after_optimizer_step(self, loop: TrainingLoop) -> None: ...

    def on_epoch_end(self, loop: TrainingLoop, evaluation: Evaluation | None) -> None: ...

    def on_train_end(self, loop: TrainingLoop) -> None: ...


def _optimizer(model: torch.nn.Module, hp: Hyperparameters, hooks: Sequence[TrainingHooks]
               ) -> torch.optim.Optimizer:
    extra = [g for h in hooks for g in h.optimizer_groups(model)]
    taken = {id(p) for g in extra for p in g["params"]}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [{"params": params}] + [{"weight_decay": 0.0, **g} for g in extra]
    return torch.optim.AdamW(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)


def _cycle(loader: Iterable[dict], epochs: int | None) -> Iterator[tuple[int, dict]]:
    """(epoch, batch) pairs over ``epochs`` passes, or endlessly when ``epochs`` is None."""
    epoch = 1
    while epochs is None or epoch <= epochs:
        empty = True
        for batch in loader:
            empty = False
            yield epoch, batch
        if empty:
            return
        epoch += 1


def train(model: torch.nn.Module, task: Task, train_loader: DataLoader, dev_loader: DataLoader | None,
          hp: Hyperparameters, fidelity: Fidelity, device: torch.device,
          on_epoch: Callable[[dict[str, float]], None] | None = None,
          hooks: Sequence[TrainingHooks] = (), steps: int | None = None,
          checkpoints: Collection[int] = (), on_checkpoint: OnCheckpoint | None = None,
          tokenizer: Any = None) -> TrainOutcome:
    """Train the trainable parameters of ``model`` for ``steps`` optimizer steps (default: the
    fidelity's epochs, capped by ``max_steps``).

    With a ``dev_loader`` the dev metric is computed after every epoch and the epoch with the
    best one is kept (its weights restored at the end, unless a hook changes the model's
    shape while training: then the last epoch is kept); without one (a strategy's search or
    estimation stage) the loop just trains, for as many passes as ``steps`` needs. After each
    step in ``checkpoints`` (before the last) dev is evaluated too and ``on_checkpoint`` told
    (rungs of early stopping; such a point is never kept as the best epoch).
    """
    evaluating = dev_loader is not None
    total = planned_steps(len(train_loader), fidelity) if steps is None else steps
    optimizer = _optimizer(model, hp, hooks)
    warmup = int(hp.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup, total))
    loop = TrainingLoop(model, task, optimizer, scheduler, train_loader, device, total, warmup, hp,
                        tokenizer=tokenizer)
    keep_best = evaluating and all(h.restorable for h in hooks)
    outcome = TrainOutcome(best=None, best_epoch=0)
    epochs = _Epochs(loop, outcome, dev_loader, hooks, on_epoch, keep_best)
    wall = Stopwatch()
    with wall:
        for hook in hooks:
            hook.on_train_start(loop)
        model.train()
        for epoch, batch in _cycle(train_loader, fidelity.epochs if evaluating else None):
            if loop.step >= total:
                break
            if epoch != loop.epoch:
                epochs.end()
                loop.epoch = epoch
            _step(loop, to_device(batch, device), hooks)
            epochs.losses.append(loop.loss.item())
            outcome.examples_seen += len(next(iter(batch.values())))
            if evaluating and loop.step in checkpoints and loop.step < total and on_checkpoint:
                on_checkpoint(*epochs.checkpoint(), loop)
        epochs.end()
        for hook in hooks:
            hook.on_train_end(loop)
        epochs.restore_best()
    outcome.eval_seconds = epochs.clock.seconds
    outcome.train_seconds = wall.seconds - outcome.eval_seconds
    outcome.steps = loop.step
    return outcome


def _step(loop: TrainingLoop, batch: dict[str, torch.Tensor], hooks: Sequence[TrainingHooks]) -> None:
    """One optimizer step, with the hooks in their documented order."""
    for hook in hooks:
        hook.before_step(loop, batch)
    loss = loop.loss = loop.task.loss(loop.model, batch)
    for hook in hooks:
        extra = hook.extra_loss(loop, batch)
        if extra is not None:
            loss = loss + extra
    loss = failpoints.poison(loss)
    if not math.isfinite(loss.item()):
        raise TrialError(f"training loss is {loss.item()} at step {loop.step + 1}")
    loss.backward()
    for hook in hooks:
        hook.before_optimizer_step(loop)
    if loop.hp.max_grad_norm:
        # After the hooks: what they read (importance scores) is the raw gradient.
        torch.nn.utils.clip_grad_norm_([p for g in loop.optimizer.param_groups for p in g["params"]],
                                       loop.hp.max_grad_norm)
    loop.optimizer.step()
    loop.scheduler.step()
    for hook in hooks:
        hook.after_optimizer_step(loop)
    loop.optimizer.zero_grad(set_to_none=True)
    loop.step += 1


#: ``(point, evaluation, loop)`` at a checkpoint: the curve point as an epoch's end reports it
OnCheckpoint = Callable[[dict[str, float], Evaluation, TrainingLoop], None]


class _Epochs:
    """End-of-epoch work: dev evaluation, the curve point, the best epoch's weights, hooks."""

    def __init__(self, loop: TrainingLoop, outcome: TrainOutcome, dev_loader: DataLoader | None,
                 hooks: Sequence[TrainingHooks], on_epoch: Callable[[dict[str, float]], None] | None,
                 keep_best: bool) -> None:
        self.loop, self.outcome, self.dev_loader = loop, outcome, dev_loader
        self.hooks, self.on_epoch, self.keep_best = hooks, on_epoch, keep_best
        self.losses: list[float] = []
        self.clock = Stopwatch()
        self.best_state: dict[str, torch.Tensor] = {}
        #: the last checkpoint's (step, evaluation): an epoch ending there reuses it
        self._last: tuple[int, Evaluation] | None = None

    def _evaluate(self) -> Evaluation:
        loop = self.loop
        if self._last is not None and self._last[0] == loop.step:
            return self._last[1]
        loop.model.eval()
        with self.clock:
            evaluation = loop.task.evaluate(loop.model, (to_device(b, loop.device) for b in self.dev_loader),
                                            loop.tokenizer)
        loop.model.train()
        return evaluation

    def _point(self, evaluation: Evaluation, epoch: float) -> dict[str, float]:
        loop = self.loop
        return {"epoch": epoch, "step": float(loop.step), "progress": loop.step / max(loop.total_steps, 1),
                "train_loss": sum(self.losses) / max(len(self.losses), 1),
                "dev_loss": evaluation.loss, **{f"dev_{k}": v for k, v in evaluation.metrics.items()}}

    def checkpoint(self) -> tuple[dict[str, float], Evaluation]:
        """Dev evaluation in the middle of an epoch, and its curve point (epochs as a fraction)."""
        evaluation = self._evaluate()
        self._last = (self.loop.step, evaluation)
        return self._point(evaluation, self.loop.step / max(len(self.loop.train_loader), 1)), evaluation

    def end(self) -> None:
        loop, evaluation = self.loop, None
        if self.dev_loader is not None:
            evaluation = self._evaluate()
            point = self._point(evaluation, float(loop.epoch))
            if self.on_epoch:
                self.on_epoch(point)
            primary = loop.task.metric(loop.task.primary_metric)
            best = self.outcome.best
            if not self.keep_best or best is None or primary.better(evaluation.metrics[primary.name],
                                                                    best.metrics[primary.name]):
                self.outcome.best, self.outcome.best_epoch = evaluation, loop.epoch
                if self.keep_best:
                    self._remember()
            self.outcome.curves.append(point)
        self.losses = []
        for hook in self.hooks:
            hook.on_epoch_end(loop, evaluation)

    def _remember(self) -> None:
        # What the optimizer trains, not what requires grad now: a strategy may have frozen
        # part of it for the current step only (IST).
        trained = {id(p) for group in self.loop.optimizer.param_groups for p in group["params"]}
        self.best_state = {n: p.detach().clone() for n, p in self.loop.model.named_parameters()
                           if id(p) in trained}

    def restore_best(self) -> None:
        if not self.keep_best or self.outcome.best_epoch == len(self.outcome.curves):
            return
        with torch.no_grad():
            for name, param in self.loop.model.named_parameters():
                if name in self.best_state:
                    param.copy_(self.best_state[name])
