"""Parameters as a search-space file declares them, and how they flatten into dimensions.

A parameter is what a user writes (``rank``: a per-layer choice); its dimensions are what an
optimizer decides (``rank.0`` ... ``rank.5``). Flattening needs the model's number of
layers, so one file serves a 6-layer and a 32-layer model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from autopeft.space.dimensions import Bool, Condition, Dimension, Value


@dataclass(frozen=True)
class AtLeast:
    """At least ``count`` of the boolean dimensions ``dimensions`` are true."""

    dimensions: tuple[str, ...]
    count: int
    parameter: str

    def holds(self, config: dict[str, Value]) -> bool:
        if not any(d in config for d in self.dimensions):
            return True  # the parameter is inactive (its condition does not hold)
        return sum(bool(config.get(d, False)) for d in self.dimensions) >= self.count

    def describe(self) -> str:
        return f"at least {self.count} of '{self.parameter}' selected"


@dataclass(frozen=True)
class Parameter(ABC):
    """One entry under ``parameters:`` in a search-space file."""

    name: str
    #: (parameter, allowed values) clauses that must all hold for this parameter to be active
    when: tuple[tuple[str, tuple[Value, ...]], ...] = field(default=(), kw_only=True)
    line: int | None = field(default=None, kw_only=True)

    @abstractmethod
    def expand(self, num_layers: int, others: dict[str, Parameter]) -> list[Dimension]:
        """The scalar dimensions of this parameter for a model with ``num_layers`` layers."""

    def constraints(self, num_layers: int) -> list[AtLeast]:
        return []

    @abstractmethod
    def assemble(self, config: dict[str, Value], num_layers: int) -> Any:
        """The parameter's value (scalar, list per layer, list of chosen items) from a flat
        configuration; inactive entries are ``None``."""

    @abstractmethod
    def flatten(self, value: Any, num_layers: int) -> dict[str, Any]:
        """A user-given (fixed) value as dimension values; ValueError when it does not fit."""

    def _condition(self, others: dict[str, Parameter], layer: int | None) -> Condition | None:
        clauses = []
        for ref, values in self.when:
            if isinstance(others[ref], PerLayer):
                if layer is None:
                    raise ValueError(f"'when' names per-layer parameter '{ref}', which only a "
                                     f"per-layer parameter can depend on")
                clauses.append((f"{ref}.{layer}", values))
            elif isinstance(others[ref], Scalar):
                clauses.append((ref, values))
            else:
                raise ValueError(f"'when' must name scalar or per-layer parameters, not '{ref}'")
        return Condition(tuple(clauses)) if clauses else None

    def extremes(self) -> list[Any]:
        """The values (or range ends) one entry of this parameter can take."""
        return []

    def active_for(self, parameter: str, value: Value) -> bool:
        """Whether this parameter can be active while scalar ``parameter`` equals ``value``."""
        return all(value in values for ref, values in self.when if ref == parameter)


@dataclass(frozen=True)
class Scalar(Parameter):
    """A single bool, choice, int or float. A number may take another range while an earlier
    scalar parameter (``ranges_by``) has one of the values in ``ranges``: the learning rate
    per training strategy. Each such range is a dimension of its own (``learning_rate.ist``),
    active for that value only, so an optimizer models each range on its own scale; the
    parameter's value is the active one's."""

    dimension: Dimension = field(default_factory=lambda: Bool(""))
    ranges_by: str | None = None
    ranges: tuple[tuple[Value, Dimension], ...] = ()

    def expand(self, num_layers: int, others: dict[str, Parameter]) -> list[Dimension]:
        condition = self._condition(others, None)
        if not self.ranges:
            return [replace(self.dimension, name=self.name, condition=condition)]
        clauses = condition.clauses if condition else ()
        own = {value for value, _ in self.ranges}
        rest = tuple(v for v in others[self.ranges_by].extremes() if v not in own)
        dims = [replace(self.dimension, name=self.name, condition=Condition((*clauses, (self.ranges_by, rest))))] if rest else []
        dims += [replace(dim, name=self.variant(value), condition=Condition((*clauses, (self.ranges_by, (value,)))))
                 for value, dim in self.ranges]
        return dims

    def variant(self, value: Value) -> str:
        """The dimension that holds this parameter while ``ranges_by`` equals ``value``."""
        return f"{self.name}.{value}"

    def extremes(self) -> list[Any]:
        return self.dimension.extremes() + [x for _, dim in self.ranges for x in dim.extremes()]

    def assemble(self, config: dict[str, Value], num_layers: int) -> Any:
        for name in [self.name, *(self.variant(v) for v, _ in self.ranges)]:
            if name in config:
                return config[name]
        return None

    def flatten(self, value: Any, num_layers: int) -> dict[str, Any]:
        # A fixed value is the user's choice for every range.
        checked = self.dimension.check(value)
        return {self.name: checked, **{self.variant(v): checked for v, _ in self.ranges}}


@dataclass(frozen=True)
class Subset(Parameter):
    """Any subset of ``values`` with at least ``min_size`` members (one bit each)."""

    values: tuple[str, ...] = ()
    min_size: int = 1

    def expand(self, num_layers: int, others: dict[str, Parameter]) -> list[Dimension]:
        condition = self._condition(others, None)
        return [Bool(f"{self.name}.{v}", condition=condition) for v in self.values]

    def constraints(self, num_layers: int) -> list[AtLeast]:
        dims = tuple(f"{self.name}.{v}" for v in self.values)
        return [AtLeast(dims, self.min_size, self.name)] if self.min_size else []

    def assemble(self, config: dict[str, Value], num_layers: int) -> Any:
        if not any(f"{self.name}.{v}" in config for v in self.values):
            return None
        return [v for v in self.values if config.get(f"{self.name}.{v}")]

    def flatten(self, value: Any, num_layers: int) -> dict[str, Any]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or any(v not in self.values for v in items):
            raise ValueError(f"got {value!r}, expected a list drawn from {list(self.values)}")
        if len(items) < self.min_size:
            raise ValueError(f"got {len(items)} items, expected at least {self.min_size}")
        return {f"{self.name}.{v}": v in items for v in self.values}


@dataclass(frozen=True)
class PerLayer(Parameter):
    """One ``element`` per transformer layer; ``min_selected`` for boolean elements."""

    element: Dimension = field(default_factory=lambda: Bool(""))
    min_selected: int = 0

    def expand(self, num_layers: int, others: dict[str, Parameter]) -> list[Dimension]:
        return [replace(self.element, name=f"{self.name}.{i}", condition=self._condition(others, i))
                for i in range(num_layers)]

    def extremes(self) -> list[Any]:
        return self.element.extremes()

    def constraints(self, num_layers: int) -> list[AtLeast]:
        if not self.min_selected:
            return []
        return [AtLeast(tuple(f"{self.name}.{i}" for i in range(num_layers)),
                        self.min_selected, self.name)]

    def assemble(self, config: dict[str, Value], num_layers: int) -> Any:
        return [config.get(f"{self.name}.{i}") for i in range(num_layers)]

    def flatten(self, value: Any, num_layers: int) -> dict[str, Any]:
        if isinstance(value, list):
            if len(value) != num_layers:
                raise ValueError(f"got {len(value)} values, the model has {num_layers} layers")
            return {f"{self.name}.{i}": self.element.check(v) for i, v in enumerate(value)}
        checked = self.element.check(value)
        return {f"{self.name}.{i}": checked for i in range(num_layers)}
