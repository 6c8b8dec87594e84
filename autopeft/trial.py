"""One trial: build the PEFT model for a configuration, train it cheaply, evaluate it on dev,
measure what it cost, and compute the objectives."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding

from autopeft.adapters import BuildContext, get_adapter
from autopeft.measure import PeakMemory, count_parameters
from autopeft.models import ModelLayout
from autopeft.objectives import Objective, TrialOutput
from autopeft.space import Config, SearchSpace
from autopeft.tasks.base import Evaluation, Task, TaskData
from autopeft.training import Fidelity, Hyperparameters, planned_steps, train

ADAPTER_INFO = "autopeft.json"


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
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialResult:
    objectives: dict[str, float]
    metrics: dict[str, float]
    cost: dict[str, float]
    curves: list[dict[str, float]]
    best_epoch: int
    timing: dict[str, float] = field(default_factory=dict)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quiet_libraries() -> None:
    """Silence per-trial chatter: each trial loads a checkpoint without a task head (a warning
    every time), tokenizes (progress bars) and loads weights (progress bars)."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def loader(tokens: Dataset, tokenizer: Any, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(tokens.with_format("torch"), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, collate_fn=DataCollatorWithPadding(tokenizer))


def build_model(setup: SearchSetup, config: Config, total_steps: int = 0,
                train_loader: DataLoader | None = None) -> torch.nn.Module:
    """The base model with the adapter of ``config`` (trainable parts only trainable)."""
    quiet_libraries()
    transformers.set_seed(setup.seed)
    base = setup.task.load_model(setup.model_path, setup.data)
    values = setup.space.assemble(config)
    ctx = BuildContext(setup.layout, setup.task.peft_task_type, total_steps,
                       calibration=(lambda: train_loader) if train_loader is not None else None)
    return get_adapter(setup.space.spec).apply(base, values, ctx)


def run_trial(setup: SearchSetup, config: Config, *, save_to: Path | None = None,
              on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrialResult:
    """Train and evaluate ``config``; raises on failure (the runner records it)."""
    started = time.perf_counter()
    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(setup.model_path)
    values = setup.space.assemble(config)
    hp = Hyperparameters.from_values(values)
    batch_size = hp.batch_size or setup.fidelity.batch_size
    train_loader = loader(setup.train_tokens, tokenizer, batch_size, True, setup.seed)
    dev_loader = loader(setup.dev_tokens, tokenizer, 64, False, setup.seed)
    total_steps = planned_steps(len(train_loader), setup.fidelity)
    model = build_model(setup, config, total_steps, train_loader).to(device)
    trainable, total = count_parameters(model)
    hook = get_adapter(setup.space.spec).step_hook(model)
    with PeakMemory(device) as memory:
        outcome = train(model, setup.task, train_loader, dev_loader, hp, setup.fidelity, device, on_epoch,
                        step_hook=hook)
    cost = {
        "trainable_params": float(trainable),
        # The share of the base model (head included), as AutoPEFT reports it.
        "trainable_percent": 100.0 * trainable / setup.layout.num_parameters,
        "peak_memory_mb": memory.peak_mb,
        "train_seconds": outcome.train_seconds,
        "examples_per_second": outcome.examples_seen / max(outcome.train_seconds, 1e-9),
    }
    output = TrialOutput(config=dict(config), values=values, model=model, tokenizer=tokenizer,
                         predictions=outcome.best.predictions, labels=outcome.best.labels,
                         metrics=outcome.best.metrics, cost=cost, dev_batches=list(dev_loader),
                         label_names=setup.data.label_names, device=str(device))
    objectives = {o.name: o(output) for o in setup.objectives}
    if save_to is not None:
        save_adapter(model, save_to, setup, config)
    timing = {"trial_seconds": time.perf_counter() - started, "eval_seconds": outcome.eval_seconds}
    return TrialResult(objectives, outcome.best.metrics, cost, outcome.curves, outcome.best_epoch, timing)


def save_adapter(model: torch.nn.Module, path: Path, setup: SearchSetup, config: Config) -> None:
    """The adapter's own format (PEFT's for PEFT methods), plus a note of where it came from
    (PEFT ignores the extra file)."""
    get_adapter(setup.space.spec).save(model, path)
    info = {"base_model": setup.model_path, "task": setup.task.name, "config": config,
            "label_names": setup.data.label_names, "space": setup.space.spec.name}
    (path / ADAPTER_INFO).write_text(json.dumps(info, indent=2, default=str))


def evaluate_adapter(setup: SearchSetup, adapter_dir: Path, split: Dataset) -> Evaluation:
    """Load a saved adapter onto a fresh base model (stock PeftModel.from_pretrained for PEFT
    methods) and evaluate it on ``split`` (raw examples, e.g. the test split)."""
    quiet_libraries()
    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(setup.model_path)
    base = setup.task.load_model(setup.model_path, setup.data)
    model = get_adapter(setup.space.spec).load(base, adapter_dir).to(device).eval()
    tokens = setup.task.tokenize(split, tokenizer, setup.fidelity.max_length)
    batches = loader(tokens, tokenizer, 64, False, setup.seed)
    return setup.task.evaluate(model, ({k: v.to(device) for k, v in b.items()} for b in batches))
