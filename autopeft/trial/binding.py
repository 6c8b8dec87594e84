"""A search space bound to a model: the adapter builder that checks it (with the training
and strategy parameters it may hold), its parameter counts for constraints and analytic
objectives, and the canonical form of a configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.adapters.base import TRAINING_PARAMETERS, AdapterBuilder, adapter_builder
from autopeft.errors import SpaceError
from autopeft.models import ModelLayout
from autopeft.space import Config, SearchSpace, SpaceSpec
from autopeft.space.space import Derive
from autopeft.strategies import NO_STRATEGY, STRATEGY_PARAMETER, check_strategy_space, strategy_class, strategy_parameters
from autopeft.space.values import check_values
from autopeft.tasks.base import MODEL_OPTIONS
from autopeft.training.loop import TRAINING_RULES


def get_adapter(spec: SpaceSpec) -> AdapterBuilder:
    """The builder for ``spec``; checks that every parameter is one it, training or a training
    strategy reads, and that the space's strategies work with this adapter."""
    builder = adapter_builder(spec.adapter, source=spec.source)
    allowed = builder.parameters | TRAINING_PARAMETERS | set(MODEL_OPTIONS) | strategy_parameters()
    for name in spec.parameters:
        if name not in allowed:
            raise SpaceError(f"'{spec.adapter}' takes no parameter '{name}'; allowed are "
                             f"{sorted(allowed)}", source=spec.source, key=f"parameters.{name}",
                             line=spec.line_of(name))
    check_values(spec, {**TRAINING_RULES, **MODEL_OPTIONS, **builder.value_rules})
    builder.check_space(spec)
    check_strategy_space(spec)
    return builder


@dataclass(frozen=True)
class _ParameterCount:
    """Trainable-parameter figures of a configuration, for constraints (a class rather than a
    closure: the space travels to Ray workers and into searcher checkpoints by pickle)."""

    builder: AdapterBuilder
    layout: ModelLayout

    def __call__(self, values: dict[str, Any]) -> dict[str, float]:
        if not strategy_class(values.get(STRATEGY_PARAMETER) or NO_STRATEGY).keeps_parameter_count:
            return {}  # the strategy decides the count while training: unknown beforehand
        count = self.builder.count_parameters(values, self.layout)
        if count is None:  # unknown for this configuration: constraints on it cannot hold
            return {}
        return {"trainable_params": count, "trainable_percent": 100.0 * count / self.layout.num_parameters}


@dataclass(frozen=True)
class _Identity:
    """The builder's canonical form of a configuration (a class, not a closure: it pickles)."""

    builder: AdapterBuilder
    layout: ModelLayout

    def __call__(self, config: Config) -> Config:
        return self.builder.canonical(config, self.layout)


def bind_space(spec: SpaceSpec, builder: AdapterBuilder, layout: ModelLayout,
               fixed: dict[str, Any] | None = None) -> SearchSpace:
    """``spec`` bound to a model: its layers, its parameter counts for constraints, and the
    builder's canonical form of a configuration."""
    builder.check_layout(spec, layout)
    return spec.bind(layout.num_layers, fixed=fixed, derive=parameter_counter(builder, layout),
                     identity=_Identity(builder, layout))


def parameter_counter(builder: AdapterBuilder, layout: ModelLayout) -> Derive | None:
    """``values -> {trainable_params, trainable_percent}`` without building a model, for
    constraints and ``autopeft space``; None where the builder cannot count (an empty dict
    for a configuration whose strategy decides its count while training)."""
    if type(builder).count_parameters is AdapterBuilder.count_parameters:
        return None
    return _ParameterCount(builder, layout)
