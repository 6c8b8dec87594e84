"""The task interface: what a kind of fine-tuning brings (data loading, tokenization and
collation, the model and how it is loaded, loss, evaluation, metrics with their directions and
what an objective receives), and its registry.

The search, runner and tracking only see this interface: a new task type is a module in this
folder and a line in the registry (``@register_task``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer, DataCollatorWithPadding

from autopeft.errors import ConfigError, ObjectiveError
from autopeft.objectives import Direction
from autopeft.plugins import Registry, subclass_of
from autopeft.space.values import ValueRule
from autopeft.tasks.data import DataSource

@dataclass(frozen=True)
class Metric:
    """A dev/test metric a task reports, and which way is better."""

    name: str
    direction: Direction

    def better(self, value: float, than: float) -> bool:
        return value > than if self.direction == "maximize" else value < than


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
    """A model's outputs on a split and the task's metrics over them.

    ``predictions``/``labels``: class ids for classification; for generative tasks the
    generated and the reference answers as strings (also in ``generations``/``references``).
    """

    predictions: np.ndarray
    labels: np.ndarray
    metrics: dict[str, float]
    loss: float
    generations: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelOptions:
    """How a trial loads its base model: the configuration dimensions of ``load_model``.

    ``precision``: ``fp32`` or ``bf16`` base weights (adapters train in fp32 either way, as
    PEFT keeps them); ``gradient_checkpointing``: recompute activations in the backward pass
    (less memory, more time); ``quantization``: ``none`` or ``4bit`` (QLoRA's NF4 base weights
    through bitsandbytes, on a GPU only)."""

    precision: str = "fp32"
    gradient_checkpointing: bool = False
    quantization: str = "none"

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ModelOptions:
        return cls(**{k: values[k] for k in MODEL_OPTIONS if values.get(k) is not None})

    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


#: the model-loading dimensions a space may set, with the values each allows
MODEL_OPTIONS: dict[str, ValueRule] = {
    "precision": ValueRule(lambda v: v in ("fp32", "bf16"), "'fp32' or 'bf16'"),
    "gradient_checkpointing": ValueRule(lambda v: isinstance(v, bool), "true or false"),
    "quantization": ValueRule(lambda v: v in ("none", "4bit"), "'none' or '4bit'"),
}


@dataclass(frozen=True)
class TaskDefaults:
    """Settings a task picks for its searches: ``trials`` and ``space`` where the config leaves
    them unset, ``fidelity`` (Fidelity's field values) where no fidelity setting differs from
    its default; ``why``: the line the search prints when the fidelity applies."""

    trials: int | None = None
    space: str | None = None
    fidelity: dict[str, int] | None = None
    why: str = ""


class Task(ABC):
    """A kind of fine-tuning. Subclasses register with :func:`register_task`."""

    name: str = ""
    #: the PEFT ``task_type`` for configs of this task (e.g. ``SEQ_CLS``)
    peft_task_type: str = ""
    #: every metric ``evaluate`` reports, with its direction
    metrics: tuple[Metric, ...] = ()
    #: the metric the best epoch of a trial is chosen on
    primary_metric: str = ""
    #: what a search optimises when the user names no objectives
    default_objectives: tuple[str, ...] = ()
    #: the data roles (``text``, ``label``, ``prompt``...) this task reads, required ones first
    required_columns: tuple[str, ...] = ()
    optional_columns: tuple[str, ...] = ()
    #: the transformers auto class a saved adapter's base loads with (model cards)
    auto_class: str = "AutoModel"
    #: examples per batch when evaluating
    eval_batch_size: int = 64
    #: what a search of this task uses where the user's config leaves it unset
    defaults: TaskDefaults = TaskDefaults()
    #: whether the task brings its model (:meth:`default_model`: the demos) and data
    builtin_model: bool = False

    def default_model(self) -> str | None:
        """The model searched when the user names none (demo tasks), else None."""
        return None

    @abstractmethod
    def load_data(self, source: DataSource, seed: int) -> TaskData:
        """Load, clean and split the user's tables (or the task's own data)."""

    def load_tokenizer(self, model_path: str) -> Any:
        return AutoTokenizer.from_pretrained(model_path)

    @abstractmethod
    def load_model(self, model_path: str, data: TaskData, options: ModelOptions = ModelOptions()
                   ) -> torch.nn.Module:
        """The base model with this task's head, loaded as ``options`` say, ready for PEFT."""

    @abstractmethod
    def tokenize(self, split: Dataset, tokenizer: Any, max_length: int) -> Dataset:
        """The split as model inputs (lists of token ids and whatever ``collate`` pads)."""

    def collator(self, tokenizer: Any) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """Pads a list of tokenized examples into a batch."""
        return DataCollatorWithPadding(tokenizer)

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                 tokenizer: Any = None) -> Evaluation:
        """Outputs, metrics and mean loss over ``batches`` (``tokenizer``: to decode generations)."""

    def floors(self, dev: Dataset) -> dict[str, tuple[float, str]]:
        """Each metric's score without learning, on the raw ``dev`` examples, and what it is
        (the majority class's accuracy): a trial at or below it learned nothing. None by
        default."""
        return {}

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def check_objectives(self, metrics_read: Sequence[tuple[str, str]], data: TaskData | None = None) -> None:
        """ObjectiveError for an objective (``(objective, metric it reads)``) whose metric this
        task does not report (for ``data``, where that depends on the data)."""
        for objective, metric in metrics_read:
            if metric not in self.metric_names():
                raise ObjectiveError(f"objective '{objective}' reads the metric '{metric}', which the "
                                     f"'{self.name}' task does not report (it reports "
                                     f"{self.metric_names()})", key="objective")


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
