"""Objectives: named, directed numbers computed from what a trial produced.

Built-ins read the task's dev metrics and the trial's measured costs. A custom objective is
a plain function of a :class:`TrialOutput` decorated with :func:`objective`, passed from
Python, named on the CLI as ``path/to/file.py:function``, or published by a package under
the entry-point group ``autopeft.objectives`` and named by its entry-point name (the plugins
in ``objectives/`` ship that way: ``--objective macro_f1``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from autopeft.costs import COSTS
from autopeft.errors import ObjectiveError
from autopeft.plugins import Registry, instance_of

Direction = Literal["maximize", "minimize"]
#: the prefix of objective values in what a trial reports (rungs and the final result)
OBJECTIVE_PREFIX = "objective/"


@dataclass
class TrialOutput:
    """Everything a trial produced, handed to each objective.

    ``predictions`` and ``labels`` are the dev split's (class ids for classification; for a
    causal LM with short answers, the greedy generations and the reference answers, as strings,
    also in ``generations`` and ``references``); ``metrics`` the task's dev metrics (best
    epoch); ``cost`` the figures measured on the saved model over all training stages
    (``trainable_params``, ``trainable_percent``, ``base_params``, ``peak_memory_mb``,
    ``train_seconds``, ``examples_per_second``).
    """

    config: dict[str, Any]
    values: dict[str, Any]
    model: Any
    tokenizer: Any
    predictions: np.ndarray
    labels: np.ndarray
    metrics: dict[str, float]
    cost: dict[str, float]
    dev_batches: list = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    device: str = "cpu"
    generations: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


#: what an analytic objective is computed from: a configuration's parameter values (as the
#: adapter builders get them) and the counts derived from them (``trainable_params``,
#: ``trainable_percent``), the scope a space's constraints see
Scope = dict[str, Any]


@dataclass(frozen=True)
class Objective:
    """A quantity to maximise or minimise; ``reference`` is its worst acceptable value;
    ``test``: whether the front's members are scored with it on the test split too (called
    with the test split's predictions), as every quality measure should be, and no cost;
    ``metric``: the task metric it reads, if it reads one (checked against the task's metrics
    before a search starts); ``analytic``: its exact value from the configuration alone,
    where it needs no training (a function of a :data:`Scope`; KeyError where the scope
    lacks what it needs): the optimizer then computes it for every candidate rather than
    modelling it."""

    name: str
    direction: Direction
    fn: Callable[[TrialOutput], float]
    reference: float | None = None
    test: bool = True
    metric: str | None = None
    analytic: Callable[[Scope], float] | None = None

    def __call__(self, output: TrialOutput) -> float:
        value = float(self.fn(output))
        if not math.isfinite(value):
            raise ObjectiveError(f"objective '{self.name}' returned {value}")
        return value


def objective(direction: Direction, name: str | None = None, reference: float | None = None,
              test: bool = True, analytic: Callable[[Scope], float] | None = None
              ) -> Callable[[Callable[[TrialOutput], float]], Objective]:
    """Decorator: ``@objective("maximize")`` turns a function of a TrialOutput into an Objective.

    ``reference``: the worst acceptable value (used where the search config gives none);
    ``test=False`` for a cost that the test split says nothing about; ``analytic``: the same
    value computed from the configuration alone (a function of a :data:`Scope`), for a
    cost known before training, which the optimizer then never has to model."""
    if direction not in ("maximize", "minimize"):
        raise ObjectiveError(f"direction must be 'maximize' or 'minimize', got {direction!r}")

    def wrap(fn: Callable[[TrialOutput], float]) -> Objective:
        return Objective(name or fn.__name__, direction, fn, reference, test, analytic=analytic)

    return wrap


def _metric(key: str) -> Callable[[TrialOutput], float]:
    return lambda out: out.metrics[key]


def _cost(key: str) -> Callable[[TrialOutput], float]:
    return lambda out: out.cost[key]


@dataclass(frozen=True)
class _Derived:
    """A count derived from the configuration (``scope[key]``): a class, not a closure, so
    that an optimizer holding it pickles into the search's journal."""

    key: str

    def __call__(self, scope: Scope) -> float:
        return float(scope[self.key])


#: the costs the configuration alone determines (where no strategy decides them in training)
ANALYTIC_COSTS = ("trainable_params", "trainable_percent")


#: every objective by name: the built-ins, the plugins autopeft ships (``objectives/`` in the
#: source tree) and those of installed packages, all found in the entry-point group
#: ``autopeft.objectives`` except the built-ins
OBJECTIVES: Registry[Objective] = Registry("objectives", check=instance_of(Objective), error=ObjectiveError,
                                           key="objective")
for _name, _direction in (("accuracy", "maximize"), ("exact_match", "maximize"), ("perplexity", "minimize")):
    OBJECTIVES.register(_name, Objective(_name, _direction, _metric(_name), metric=_name), "autopeft (built-in)")
for _name, (_direction, _) in COSTS.items():
    OBJECTIVES.register(_name, Objective(_name, _direction, _cost(_name), test=False,
                                         analytic=_Derived(_name) if _name in ANALYTIC_COSTS else None),
                        "autopeft (built-in)")


def load_objective_file(reference: str) -> Objective:
    """``path/to/file.py:function`` -> the Objective defined there."""
    path_text, _, func = reference.rpartition(":")
    path = Path(path_text)
    if not path_text or not func:
        raise ObjectiveError("expected FILE.py:FUNCTION", key=reference)
    if not path.is_file():
        raise ObjectiveError("objective file not found", source=path_text)
    module_name = f"autopeft_objective_{path.stem}_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file may raise anything at import
        raise ObjectiveError(f"importing failed: {type(err).__name__}: {err}", source=path_text) from None
    found = getattr(module, func, None)
    if found is None:
        raise ObjectiveError(f"defines no function '{func}'", source=path_text)
    if isinstance(found, Objective):
        return found
    raise ObjectiveError(f"'{func}' has no direction; decorate it with "
                         f"@autopeft.objective('maximize') or ('minimize')", source=path_text)


def resolve_objective(item: str | Objective) -> Objective:
    """A registered name (built-in or plugin), ``FILE.py:FUNCTION``, or an Objective as is."""
    if isinstance(item, Objective):
        return item
    if ":" in item and item.rpartition(":")[0].endswith(".py"):
        return load_objective_file(item)
    if item not in OBJECTIVES:
        raise ObjectiveError(f"unknown objective '{item}'; use one of {OBJECTIVES.names()} or "
                             f"FILE.py:FUNCTION", key="objective")
    return OBJECTIVES.get(item)


def resolve_objectives(items: list[str | Objective] | None, default: tuple[str, ...] = ()) -> list[Objective]:
    """The objectives named (the task's ``default`` when none is)."""
    objectives = [resolve_objective(i) for i in (items or default)]
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise ObjectiveError(f"objective names must be distinct, got {names}", key="objective")
    return objectives
