"""Adapter builders: from a configuration's parameter values to a PEFT config, by name.

A search-space file names its ``adapter``; the builder registered under that name declares
which parameters it reads, so an unknown parameter is caught before any trial runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model

from autopeft.space.values import ValueRule, check_values
from autopeft.errors import SpaceError
from autopeft.plugins import Registry, subclass_of
from autopeft.models import ModelLayout
from autopeft.space import SpaceSpec
from autopeft.tasks.base import MODEL_OPTIONS
from autopeft.training.loop import TRAINING_RULES, TrainingHooks

#: PEFT task types whose (new) head is trained with the adapter
HEAD_TASK_TYPES = frozenset({"SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS"})
#: parameters the training loop reads, whatever the adapter
TRAINING_PARAMETERS = frozenset(TRAINING_RULES)


@dataclass
class BuildContext:
    """What a builder may need besides the configuration's values."""

    layout: ModelLayout
    task_type: str  # PEFT's task type, e.g. "SEQ_CLS"
    #: optimizer steps the trial will take (schedules such as AdaLoRA's need it)
    total_steps: int = 0
    #: training batches, for data-driven initialisations (EVA); called at most once
    calibration: Callable[[], Iterable[dict]] | None = None

    @property
    def head(self) -> list[str] | None:
        """PEFT's ``modules_to_save``: the task head, by the rule parameter counts use
        (:func:`autopeft.models.head_modules`); None for task types without a trained head."""
        return list(self.layout.head_modules) or None if self.task_type in HEAD_TASK_TYPES else None


class AdapterBuilder(ABC):
    """Turns parameter values into an adapted model for a given model layout.

    Builders of PEFT methods implement :meth:`build` only; methods PEFT lacks (bottleneck
    adapters) override :meth:`apply`, :meth:`save` and :meth:`load` as well.
    """

    #: parameter names (in search-space files) this adapter understands
    parameters: frozenset[str] = frozenset()
    #: what values those parameters can take at all (checked when a space is read)
    value_rules: dict[str, ValueRule] = {}

    @abstractmethod
    def build(self, values: dict[str, Any], ctx: BuildContext) -> PeftConfig | None:
        """The PEFT config for ``values`` (assembled parameters; ``None`` where inactive), or
        ``None`` for a configuration without a PEFT part."""

    def apply(self, model: torch.nn.Module, values: dict[str, Any], ctx: BuildContext) -> torch.nn.Module:
        """``model`` with the adapter of ``values``; only the adapter (and head) trainable."""
        return get_peft_model(model, self.build(values, ctx))

    def count_parameters(self, values: dict[str, Any], layout: ModelLayout) -> int | None:
        """The exact trainable-parameter count of ``values`` without building the model (the
        head included), or ``None`` where the builder cannot tell; constraints use it."""
        return None

    def canonical(self, config: dict[str, Any], layout: ModelLayout) -> dict[str, Any]:
        """``config`` (flat dimension values) in the one form shared by every configuration
        that builds the same model, so the optimizer never pays twice for one model."""
        return config

    def training_hooks(self, model: torch.nn.Module) -> list[TrainingHooks]:
        """Hooks the adapter needs in the training loop of ``model`` (AdaLoRA's rank budget)."""
        return []

    def save(self, model: torch.nn.Module, path: Path) -> None:
        """Write the trained adapter to the folder ``path``."""
        model.save_pretrained(str(path))

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        """A fresh ``base`` model with the adapter saved at ``path``."""
        return PeftModel.from_pretrained(base, str(path))

    def check_space(self, spec: SpaceSpec) -> None:
        """Raise SpaceError when the space combines parameters in a way this adapter rejects."""

    def check_layout(self, spec: SpaceSpec, layout: ModelLayout) -> None:
        """Raise SpaceError when the space asks for something this model lacks."""


#: every adapter builder by name: autopeft's and those of installed packages (group
#: ``autopeft.adapters``, naming an :class:`AdapterBuilder` subclass)
ADAPTERS: Registry[type[AdapterBuilder]] = Registry("adapters", check=subclass_of(AdapterBuilder),
                                                   error=SpaceError, key="adapter")
_BUILDERS: dict[type[AdapterBuilder], AdapterBuilder] = {}  # builders are stateless: one each


def register_adapter(name: str) -> Callable[[type[AdapterBuilder]], type[AdapterBuilder]]:
    """Class decorator: make an adapter builder usable as ``adapter: NAME`` in a space file."""
    return ADAPTERS.decorator(name)


def adapter_builder(name: str, **where: Any) -> AdapterBuilder:
    """The builder registered as ``name``."""
    cls = ADAPTERS.get(name, **where)
    return _BUILDERS.setdefault(cls, cls())
