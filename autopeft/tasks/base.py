"""The task interface: what a kind of fine-tuning brings (data preparation, model head, loss,
evaluation, metrics), and its registry.

The search, runner and tracking only see this interface, so a new task type (e.g. causal LM
supervised fine-tuning) plugs in beside classification in one module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from autopeft.errors import ConfigError
from autopeft.plugins import Registry, subclass_of


@dataclass
class TaskData:
    """The splits of a task, with everything needed to build its model head."""

    train: Dataset
    dev: Dataset
    test: Dataset
    label_names: list[str] = field(default_factory=list)
    description: str = ""
    #: what loading dropped, and why ("12 train rows dropped: text or label empty")
    notes: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """A model's predictions on a split and the task's metrics over them."""

    predictions: np.ndarray
    labels: np.ndarray
    metrics: dict[str, float]
    loss: float


class Task(ABC):
    """A kind of fine-tuning. Subclasses register with :func:`register_task`."""

    name: str = ""
    #: the PEFT ``task_type`` for configs of this task (e.g. ``SEQ_CLS``)
    peft_task_type: str = ""
    #: the metric a search maximises by default
    primary_metric: str = ""

    @abstractmethod
    def load_model(self, model_path: str, data: TaskData) -> torch.nn.Module:
        """The base model with this task's head, ready for a PEFT adapter."""

    @abstractmethod
    def tokenize(self, split: Dataset, tokenizer: Any, max_length: int) -> Dataset:
        """The split as model inputs (a torch-formatted dataset)."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> Evaluation:
        """Predictions, labels, metrics and mean loss over ``batches``."""

    def metric_names(self) -> list[str]:
        return [self.primary_metric]


#: every task type by name: autopeft's and those of installed packages (group ``autopeft.tasks``)
TASKS: Registry[type[Task]] = Registry("tasks", check=subclass_of(Task), error=ConfigError, key="task")


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a task type selectable by ``name``."""

    def decorate(cls: type[Task]) -> type[Task]:
        cls.name = name
        return TASKS.register(name, cls)

    return decorate


def make_task(name: str) -> Task:
    return TASKS.get(name)()
