"""Training strategies: methods that decide *while training* where an adapter goes and how
large it is (Flexora, IST, IncreLoRA, Light-PEFT), and their registry.

A strategy is a :class:`~autopeft.training.loop.TrainingHooks` with a name, a config dataclass
of knobs and one or more *stages*. For each stage the trial builds a model (the base model,
:meth:`TrainingStrategy.before_wrap`, :meth:`TrainingStrategy.wrap` with the adapter,
:meth:`TrainingStrategy.after_wrap`) and trains it with the strategy's hooks; only the last
stage is evaluated on dev, and :meth:`TrainingStrategy.finalize` turns its model into the
one that is saved and measured. A two-stage method (Flexora searches then retrains,
Light-PEFT estimates then prunes) pays for both stages in the trial's time.

In a search space a strategy is the ``strategy`` choice parameter; its knobs are the
parameters ``<strategy>_<field>`` (``ist_update_share``), each active only for its strategy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from datasets import Dataset

from autopeft.errors import SpaceError
from autopeft.plugins import Registry, subclass_of
from autopeft.models import ModelLayout
from autopeft.space import Choice, Scalar, SpaceSpec
from autopeft.training.loop import TrainingHooks

if TYPE_CHECKING:  # adapters build on this module's registry users, not the reverse
    from autopeft.adapters.base import AdapterBuilder, BuildContext

#: the search-space parameter that picks the strategy
STRATEGY_PARAMETER = "strategy"
NO_STRATEGY = "none"


@dataclass
class StrategyConfig:
    """Knobs of a strategy; subclasses add fields with defaults and ``metadata={"help": ...}``
    and check their values in ``__post_init__`` (ValueError with the field's name)."""


@dataclass
class StrategyContext:
    """What a strategy may use besides its knobs."""

    layout: ModelLayout
    device: torch.device
    seed: int
    #: tokenized training examples (the trial's fidelity already applied)
    train_tokens: Dataset
    #: ``loader(tokens, batch_size, shuffle)``: batches of model inputs, as the trial makes them
    loader: Callable[[Dataset, int, bool], Any]
    #: the trial's batch size
    batch_size: int = 16
    #: optimizer steps the trial's fidelity gives one stage
    planned_steps: int = 0


class TrainingStrategy(TrainingHooks):
    """One training strategy. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    #: adapters it composes with: adapter name -> the methods of that adapter it supports
    #: (``None``: every configuration of the adapter)
    supports: ClassVar[dict[str, frozenset[str] | None]] = {}
    #: the training stages in order; the last one is evaluated on dev and saved
    stages: ClassVar[tuple[str, ...]] = ("train",)
    #: whether the saved adapter has the parameters the configuration builds (so its count
    #: is known before training, for constraints); False where the strategy decides it
    keeps_parameter_count: ClassVar[bool] = False

    def __init__(self, config: StrategyConfig, ctx: StrategyContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = self.stages[0]

    # -- building each stage's model ----------------------------------------------------
    def stage_steps(self, stage: str, planned: int) -> int:
        """Optimizer steps of ``stage``; ``planned`` is what the trial's fidelity gives."""
        return planned

    def stage_data(self, stage: str, tokens: Dataset) -> Dataset:
        """The training examples of ``stage`` (e.g. without those held out for a gate)."""
        return tokens

    def stage_values(self, stage: str, values: dict[str, Any]) -> dict[str, Any]:
        """The adapter's parameter values for ``stage`` (e.g. only the layers selected)."""
        return values

    def before_wrap(self, stage: str, base: torch.nn.Module) -> torch.nn.Module:
        """The base model before the adapter is added (Light-PEFT prunes it here)."""
        return base

    def wrap(self, stage: str, base: torch.nn.Module, values: dict[str, Any], ctx: BuildContext,
             builder: AdapterBuilder) -> torch.nn.Module:
        """Add the adapter; by default as the adapter builder does."""
        return builder.apply(base, values, ctx)

    def after_wrap(self, stage: str, model: torch.nn.Module) -> torch.nn.Module:
        """The adapted model before it trains (gates, masks, rank state are added here)."""
        return model

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """After the last stage: the model that is saved, measured and scored (folded,
        converted); it must compute what the trained model computed."""
        return model

    def report(self) -> dict[str, Any]:
        """What the trial logs about the strategy's decisions: numbers, lists of numbers (per
        layer or module), dicts of numbers, or strings."""
        return {}

    def save(self, model: torch.nn.Module, path: Any) -> None:
        """Write what loading needs besides the adapter (e.g. a pruning plan) into ``path``."""

    @classmethod
    def prepare_base(cls, base: torch.nn.Module, path: Any) -> torch.nn.Module:
        """A fresh base model made ready for the adapter saved at ``path`` (the inverse of
        :meth:`save`)."""
        return base

    # -- search-space side ----------------------------------------------------------------
    @classmethod
    def knob(cls, field_name: str) -> str:
        """The search-space parameter name of a config field."""
        return f"{cls.name}_{field_name}"

    @classmethod
    def knobs(cls) -> dict[str, dataclasses.Field]:
        return {cls.knob(f.name): f for f in dataclasses.fields(cls.config_class)}

    @classmethod
    def config_from(cls, values: dict[str, Any]) -> StrategyConfig:
        """The config from assembled parameter values (missing or inactive knobs: defaults)."""
        given = {f.name: values[knob] for knob, f in cls.knobs().items() if values.get(knob) is not None}
        return cls.config_class(**given)

    @classmethod
    def supports_adapter(cls, adapter: str, method: Any = None) -> bool:
        if adapter not in cls.supports:
            return False
        methods = cls.supports[adapter]
        return methods is None or method is None or method in methods


class NoStrategy(TrainingStrategy):
    """Plain training: the adapter as configured, one stage."""

    name = NO_STRATEGY
    supports = {"lora": None, "peft": None, "sapa": None}
    keeps_parameter_count = True


#: every strategy by name: autopeft's and those of installed packages (group ``autopeft.strategies``)
STRATEGIES: Registry[type[TrainingStrategy]] = Registry(
    "strategies", check=subclass_of(TrainingStrategy), error=SpaceError, key=STRATEGY_PARAMETER)
STRATEGIES.register(NO_STRATEGY, NoStrategy)


def register_strategy(name: str) -> Callable[[type[TrainingStrategy]], type[TrainingStrategy]]:
    """Class decorator: make a strategy usable as ``strategy: NAME`` in a search space."""

    def decorate(cls: type[TrainingStrategy]) -> type[TrainingStrategy]:
        cls.name = name
        return STRATEGIES.register(name, cls)

    return decorate


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def strategy_class(name: str) -> type[TrainingStrategy]:
    return STRATEGIES.get(name)


def strategy_parameters() -> frozenset[str]:
    """Every parameter name a search space may use for strategies."""
    return frozenset({STRATEGY_PARAMETER}).union(*(cls.knobs() for _, cls in STRATEGIES.items()))


def make_strategy(values: dict[str, Any], ctx: StrategyContext) -> TrainingStrategy:
    """The strategy a configuration's assembled ``values`` ask for, with its knobs."""
    cls = strategy_class(values.get(STRATEGY_PARAMETER) or NO_STRATEGY)
    return cls(cls.config_from(values), ctx)


def check_strategy_space(spec: SpaceSpec) -> None:
    """SpaceError (file, key, line) for a strategy the registry lacks, a strategy paired with
    an adapter or method it does not support, a knob active for another strategy, or a knob
    value its strategy rejects."""
    param = spec.parameters.get(STRATEGY_PARAMETER)
    knob_owner = {knob: cls for _, cls in STRATEGIES.items() for knob in cls.knobs()}
    used = [n for n in spec.parameters if n in knob_owner]
    if param is None:
        if used:
            raise SpaceError(f"'{used[0]}' needs a '{STRATEGY_PARAMETER}' parameter above it",
                             source=spec.source, key=f"parameters.{used[0]}", line=spec.line_of(used[0]))
        return

    def fail(message: str, name: str = STRATEGY_PARAMETER) -> SpaceError:
        return SpaceError(message, source=spec.source, key=f"parameters.{name}", line=spec.line_of(name))

    if not isinstance(param, Scalar) or not isinstance(param.dimension, Choice):
        raise fail("'strategy' must be a choice parameter")
    names = list(param.dimension.values)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise fail(f"unknown strategy {unknown}; choose from {strategy_names()}")
    methods = _method_values(spec)
    for name in names:
        cls = STRATEGIES.get(name)
        for method in methods:
            if method is not None and not param.active_for("method", method):
                continue
            if not cls.supports_adapter(spec.adapter, method):
                what = f"adapter '{spec.adapter}'" + (f" with method '{method}'" if method else "")
                raise fail(f"strategy '{name}' does not work with {what}; it supports "
                           f"{_describe(cls.supports)}"
                           + ("; limit it with when: {method: [...]}" if method else ""))
    for knob in used:
        owner = knob_owner[knob]
        others = [n for n in names if n != owner.name and spec.parameters[knob].active_for(STRATEGY_PARAMETER, n)]
        if others:  # a knob limited to a strategy the space no longer offers is never active: fine
            raise fail(f"'{knob}' would be active for strategy {others or 'none'}; limit it with "
                       f"when: {{strategy: {owner.name}}}", knob)
        _check_knob_values(owner, knob, spec.parameters[knob], fail)


def _method_values(spec: SpaceSpec) -> list[Any]:
    method = spec.parameters.get("method")
    if isinstance(method, Scalar) and isinstance(method.dimension, Choice):
        return list(method.dimension.values)
    return [None]


def _describe(supports: dict[str, frozenset[str] | None]) -> str:
    return ", ".join(f"{a}" + (f" ({', '.join(sorted(m))})" if m is not None else "")
                     for a, m in sorted(supports.items()))


def _check_knob_values(cls: type[TrainingStrategy], knob: str, param: Any, fail: Callable) -> None:
    """Each value a knob can take (a choice's values, a range's ends) builds a valid config."""
    field_name = cls.knobs()[knob].name
    for value in param.extremes():
        try:
            cls.config_class(**{field_name: value})
        except (ValueError, TypeError) as err:
            raise fail(f"value {value!r}: {err}", knob) from None
