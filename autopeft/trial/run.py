"""One trial: build the PEFT model for a configuration, train it cheaply, evaluate it on dev,
measure what it cost, and compute the objectives."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from autopeft.training import failpoints
from autopeft.adapters import AdapterBuilder, BuildContext
from autopeft.devices import DeviceReport, Placement, choose_device
from autopeft.trial.binding import get_adapter
from autopeft.trial.loading import ADAPTER_INFO, load_adapter
from autopeft.training.measure import PeakMemory, Stopwatch, count_parameters
from autopeft.models import ModelLayout
from autopeft.objectives import OBJECTIVE_PREFIX, Objective, TrialOutput
from autopeft.optimizers.knowledge import Knowledge
from autopeft.space import Config, SearchSpace
from autopeft.strategies import StrategyContext, TrainingStrategy, make_strategy
from autopeft.tasks.base import Evaluation, ModelOptions, Task, TaskData
from autopeft.config import Fidelity
from autopeft.training.loop import Hyperparameters, TrainingLoop, planned_steps, train




@dataclass
class SearchSetup:
    """What every trial of a search shares; built once by the driver, shipped to the workers."""

    task: Task
    model_path: str
    data: TaskData
    train_tokens: Dataset
    dev_tokens: Dataset
    layout: ModelLayout
    space: SearchSpace
    objectives: list[Objective]
    fidelity: Fidelity
    seed: int = 0
    #: fractions of a trial's (last stage's) training at which it reports its objectives on
    #: dev to the scheduler (the rungs of early stopping)
    milestones: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: each task metric's score without learning on the dev examples, and what it is
    floors: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: the hypervolume reference rule, floors and analytic objectives (set by ``prepare``)
    knowledge: Knowledge | None = None


@dataclass
class TrialResult:
    objectives: dict[str, float]
    metrics: dict[str, float]
    cost: dict[str, float]
    curves: list[dict[str, float]]
    best_epoch: int
    timing: dict[str, float] = field(default_factory=dict)
    #: the training strategy's name and what it decided (gates, ranks, pruning figures)
    strategy: dict[str, Any] = field(default_factory=dict)
    #: the trained model as saved (only with ``run_trial(..., keep_model=True)``)
    model: torch.nn.Module | None = field(default=None, repr=False)
    #: where it trained (the device, the GPUs Ray assigned it) and why
    placement: Placement | None = None


def pick_device() -> torch.device:
    """The device this process trains on (:func:`autopeft.devices.choose_device`)."""
    return torch.device(choose_device(DeviceReport.probe()).device)


def quiet_libraries() -> None:
    """Silence per-trial chatter: each trial loads a checkpoint without a task head (a warning
    every time), tokenizes (progress bars) and loads weights (progress bars)."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def loader(tokens: Dataset, tokenizer: Any, batch_size: int, shuffle: bool, seed: int,
           collate: Callable[[list[dict]], dict] | None = None) -> DataLoader:
    """Batches of ``tokens``; ``collate``: the task's (:meth:`Task.collator`), else padding."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(tokens.with_format("torch"), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, collate_fn=collate or DataCollatorWithPadding(tokenizer))


def by_length(tokens: Dataset) -> Dataset:
    """``tokens`` shortest first, for evaluation: each batch then pads to nearly its own
    length, which scores the demo's test split in 0.6 of the time. Predictions, labels and
    an objective's ``dev_batches`` all follow this order."""
    order = np.argsort([len(ids) for ids in tokens["input_ids"]], kind="stable")
    return tokens.select(order)


class _Trial:
    """The pieces one trial's stages share: its values, loaders, strategy and adapter."""

    def __init__(self, setup: SearchSetup, config: Config) -> None:
        self.setup = setup
        self.placement = choose_device(DeviceReport.probe())
        self.device = torch.device(self.placement.device)
        self.tokenizer = setup.task.load_tokenizer(setup.model_path)
        self.collate = setup.task.collator(self.tokenizer)
        self.values = setup.space.assemble(config)
        self.options = ModelOptions.from_values(self.values)
        self.hp = Hyperparameters.from_values(self.values)
        self.batch_size = self.hp.batch_size or setup.fidelity.batch_size
        self.builder: AdapterBuilder = get_adapter(setup.space.spec)
        planned = planned_steps(math.ceil(len(setup.train_tokens) / self.batch_size), setup.fidelity)
        ctx = StrategyContext(setup.layout, self.device, setup.seed, setup.train_tokens, self.loader,
                              self.batch_size, planned)
        self.strategy: TrainingStrategy = make_strategy(self.values, ctx)

    def loader(self, tokens: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return loader(tokens, self.tokenizer, batch_size, shuffle, self.setup.seed, self.collate)

    def build(self, stage: str, total_steps: int, train_loader: DataLoader) -> tuple[torch.nn.Module, int]:
        """The model of ``stage`` on the trial's device, and its base model's parameter count."""
        quiet_libraries()
        transformers.set_seed(self.setup.seed)
        strategy = self.strategy
        base = strategy.before_wrap(stage, self.setup.task.load_model(self.setup.model_path, self.setup.data,
                                                                      self.options))
        base_params = count_parameters(base)[1]
        ctx = BuildContext(self.setup.layout, self.setup.task.peft_task_type, total_steps,
                           calibration=lambda: train_loader)
        model = strategy.wrap(stage, base, strategy.stage_values(stage, self.values), ctx, self.builder)
        return strategy.after_wrap(stage, model.to(self.device)), base_params


def build_model(setup: SearchSetup, config: Config, total_steps: int = 0,
                train_loader: DataLoader | None = None) -> torch.nn.Module:
    """The model of ``config``'s first stage: the base model with its adapter (trainable parts
    only trainable), as a trial builds it."""
    trial = _Trial(setup, config)
    stage = trial.strategy.stages[0]
    batches = train_loader or trial.loader(setup.train_tokens, trial.batch_size, True)
    return trial.build(stage, total_steps, batches)[0]


def run_trial(setup: SearchSetup, config: Config, *, save_to: Path | None = None,
              on_epoch: Callable[[dict[str, float]], None] | None = None, keep_model: bool = False) -> TrialResult:
    """Train ``config`` through its strategy's stages and evaluate it on dev; raises on failure
    (the runner records it). Costs are measured on the model that is saved, over all stages."""
    started = time.perf_counter()
    failpoints.arm(config)
    trial = _Trial(setup, config)
    strategy, fidelity = trial.strategy, setup.fidelity
    dev_loader = trial.loader(setup.dev_tokens, setup.task.eval_batch_size, False)
    seen, eval_seconds, timing, steps_done = 0, 0.0, {}, 0
    with PeakMemory(trial.device) as memory, Stopwatch() as wall:
        for stage in strategy.stages:
            strategy.stage = stage
            last = stage == strategy.stages[-1]
            train_loader = trial.loader(strategy.stage_data(stage, setup.train_tokens), trial.batch_size, True)
            steps = strategy.stage_steps(stage, planned_steps(len(train_loader), fidelity) if last
                                         else strategy.ctx.planned_steps)
            model, base_params = trial.build(stage, steps, train_loader)
            rungs = _Rungs(trial, setup, config, memory, base_params, steps_done, on_epoch) if last else None
            outcome = train(model, setup.task, train_loader, dev_loader if last else None, trial.hp, fidelity,
                            trial.device, on_epoch if last else None,
                            hooks=[*trial.builder.training_hooks(model), strategy], steps=steps,
                            checkpoints={math.ceil(f * steps) for f in setup.milestones} if last else (),
                            on_checkpoint=rungs, tokenizer=trial.tokenizer)
            seen += outcome.examples_seen
            steps_done += outcome.steps
            eval_seconds += outcome.eval_seconds
            timing[f"{stage}_stage_seconds"] = outcome.train_seconds
            timing[f"{stage}_stage_examples_per_second"] = outcome.examples_seen / max(outcome.train_seconds, 1e-9)
        model = strategy.finalize(model)
    trainable, _ = count_parameters(model)
    # Every stage's training and the strategy's work between them; dev evaluation apart.
    train_seconds = wall.seconds - eval_seconds
    cost = {
        "trainable_params": float(trainable),
        # Trained parameters (the new task head included) over the base model's (head included).
        # AutoPEFT's paper counts adapter weights alone, without biases or head: its
        # percentages are lower than these for the same configuration.
        "trainable_percent": 100.0 * trainable / setup.layout.num_parameters,
        "base_params": float(base_params),
        "peak_memory_mb": memory.peak_mb,
        "train_seconds": train_seconds,
        "examples_per_second": seen / max(train_seconds, 1e-9),
    }
    output = TrialOutput(config=dict(config), values=trial.values, model=model, tokenizer=trial.tokenizer,
                         cost=cost, dev_batches=list(dev_loader), label_names=setup.data.label_names,
                         device=str(trial.device), **_outputs(outcome.best))
    objectives = {o.name: o(output) for o in setup.objectives}
    if save_to is not None:
        save_adapter(model, save_to, setup, config, trial)
    timing.update(trial_seconds=time.perf_counter() - started, eval_seconds=eval_seconds,
                  train_steps=float(steps_done))
    return TrialResult(objectives, outcome.best.metrics, cost, outcome.curves, outcome.best_epoch, timing,
                       {"name": strategy.name, **strategy.report()}, model if keep_model else None,
                       trial.placement)


def _outputs(evaluation: Evaluation) -> dict[str, Any]:
    """What an objective receives of an evaluation (the TrialOutput fields it fills)."""
    return {"predictions": evaluation.predictions, "labels": evaluation.labels, "metrics": evaluation.metrics,
            "generations": evaluation.generations, "references": evaluation.references}


class _Rungs:
    """At a rung, the objectives that can be known mid-training, added to the curve point for
    the scheduler: quality objectives on this evaluation, costs of :data:`RUNG_COSTS` as
    measured so far (parameter counts are final already, unless a strategy grows or prunes)."""

    def __init__(self, trial: _Trial, setup: SearchSetup, config: Config, memory: PeakMemory,
                 base_params: int, steps_before: int, report: Callable[[dict[str, float]], None] | None) -> None:
        self.trial, self.setup, self.config, self.memory = trial, setup, config, memory
        self.base_params, self.steps_before, self.report = base_params, steps_before, report

    def __call__(self, point: dict[str, float], evaluation: Evaluation, loop: TrainingLoop) -> None:
        if self.report is None:
            return
        # What the optimizer trains, not what requires grad now: IST freezes layers per step.
        setup = self.setup
        trainable = sum(p.numel() for group in loop.optimizer.param_groups for p in group["params"])
        cost = {"trainable_params": float(trainable),
                "trainable_percent": 100.0 * trainable / setup.layout.num_parameters,
                "base_params": float(self.base_params), "peak_memory_mb": self.memory.so_far()}
        output = TrialOutput(config=dict(self.config), values=self.trial.values, model=loop.model,
                             tokenizer=self.trial.tokenizer, cost=cost, label_names=setup.data.label_names,
                             device=str(self.trial.device), **_outputs(evaluation))
        loop.model.eval()
        try:
            values = {f"{OBJECTIVE_PREFIX}{o.name}": o(output) for o in setup.objectives}
        finally:
            loop.model.train()
        self.report({**point, "train_steps": float(self.steps_before + loop.step), **values})


def save_adapter(model: torch.nn.Module, path: Path, setup: SearchSetup, config: Config,
                 trial: _Trial) -> None:
    """The adapter's own format (PEFT's for PEFT methods), what its strategy needs to load
    it, and a note of where it came from (PEFT ignores the extra files)."""
    trial.builder.save(model, path)
    trial.strategy.save(model, path)
    info = {"base_model": setup.model_path, "task": setup.task.name, "config": config,
            "label_names": setup.data.label_names, "space": setup.space.spec.name,
            "adapter": setup.space.spec.adapter, "strategy": trial.strategy.name}
    (path / ADAPTER_INFO).write_text(json.dumps(info, indent=2, default=str))


def evaluate_adapter(setup: SearchSetup, adapter_dir: Path, split: Dataset) -> Evaluation:
    """Load a saved adapter onto a fresh base model (:func:`~autopeft.trial.loading.load_adapter`:
    stock PeftModel.from_pretrained for PEFT methods) and evaluate it on ``split`` (raw
    examples, e.g. the test split)."""
    return _reload_and_evaluate(setup, adapter_dir, split)[0]


def score_adapter(setup: SearchSetup, adapter_dir: Path, split: Dataset, config: Config,
                  cost: dict[str, float]) -> dict[str, float]:
    """The task's metrics and every objective that scores quality (``Objective.test``) of a
    saved adapter on ``split``: each objective is called with that split's predictions."""
    evaluation, model, tokenizer, batches = _reload_and_evaluate(setup, adapter_dir, split)
    output = TrialOutput(config=dict(config), values=setup.space.assemble(config), model=model,
                         tokenizer=tokenizer, cost=cost, dev_batches=batches, label_names=setup.data.label_names,
                         device=str(next(model.parameters()).device), **_outputs(evaluation))
    return {**evaluation.metrics, **{o.name: o(output) for o in setup.objectives if o.test}}


def _reload_and_evaluate(setup: SearchSetup, adapter_dir: Path, split: Dataset
                         ) -> tuple[Evaluation, torch.nn.Module, Any, list[dict]]:
    quiet_libraries()
    device = pick_device()
    task = setup.task
    tokenizer = task.load_tokenizer(setup.model_path)
    # The base as the adapter trained on it (bf16, 4-bit): dev and test score the same model.
    info = adapter_dir / ADAPTER_INFO
    config = json.loads(info.read_text())["config"] if info.is_file() else {}
    options = dataclasses.replace(ModelOptions.from_values(setup.space.assemble(config) if config else {}),
                                  gradient_checkpointing=False)
    base = task.load_model(setup.model_path, setup.data, options)
    model = load_adapter(base, adapter_dir).eval()
    if options.quantization == "none":  # a 4-bit model is placed on its GPU as it loads
        model = model.to(device)
    tokens = by_length(task.tokenize(split, tokenizer, setup.fidelity.max_length))
    batches = list(loader(tokens, tokenizer, task.eval_batch_size, False, setup.seed, task.collator(tokenizer)))
    evaluation = task.evaluate(model, ({k: v.to(device) for k, v in b.items()} for b in batches), tokenizer)
    return evaluation, model, tokenizer, batches
