"""A search space bound to a model: sampling, validity, neighbours and GP encoding.

Configurations are flat dicts ``{dimension name: value}`` holding only the dimensions that
are free (not fixed by the user) and active (their condition holds). That canonical form
is what the optimizers see, what deduplication compares and what MLflow logs as params.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopeft.errors import SpaceError
from autopeft.space.dimensions import Dimension, Value
from autopeft.space.parameters import AtLeast, Parameter

Config = dict[str, Value]

_MAX_REJECTIONS = 10_000


@dataclass(frozen=True)
class SpaceSpec:
    """A search-space file as parsed: the adapter and its parameters, not yet bound to a model."""

    adapter: str
    parameters: dict[str, Parameter]
    name: str = "custom"
    source: str | None = None
    description: str = ""

    def line_of(self, parameter: str) -> int | None:
        param = self.parameters.get(parameter)
        return param.line if param else None

    def bind(self, num_layers: int, fixed: dict[str, Any] | None = None) -> SearchSpace:
        """The space for a model with ``num_layers`` layers, with ``fixed`` parameters pinned."""
        fixed_dims: Config = {}
        for name, value in (fixed or {}).items():
            if name not in self.parameters:
                raise SpaceError(f"cannot fix unknown parameter '{name}'; the space has "
                                 f"{sorted(self.parameters)}", source=self.source, key=name)
            try:
                fixed_dims.update(self.parameters[name].flatten(value, num_layers))
            except ValueError as err:
                raise SpaceError(f"fixed value {err}", source=self.source, key=name) from None
        dims: list[Dimension] = []
        constraints: list[AtLeast] = []
        for param in self.parameters.values():
            try:
                dims.extend(param.expand(num_layers, self.parameters))
            except ValueError as err:
                raise SpaceError(str(err), source=self.source, key=param.name, line=param.line) from None
            constraints.extend(param.constraints(num_layers))
        space = SearchSpace(self, num_layers, dims, constraints, fixed_dims)
        space.sample(np.random.default_rng(0))  # fails early when no configuration is valid
        return space


@dataclass
class SearchSpace:
    """A :class:`SpaceSpec` bound to a model's layer count."""

    spec: SpaceSpec
    num_layers: int
    all_dimensions: list[Dimension]
    constraints: list[AtLeast]
    fixed: Config = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dimensions = [d for d in self.all_dimensions if d.name not in self.fixed]
        self._by_name = {d.name: d for d in self.all_dimensions}

    @property
    def encoded_width(self) -> int:
        return sum(d.width for d in self.dimensions)

    def _full(self, config: Config) -> Config:
        return {**self.fixed, **config}

    def canonical(self, config: Config) -> Config:
        """``config`` without fixed and inactive dimensions, in dimension order."""
        full = self._full(config)
        out: Config = {}
        for dim in self.dimensions:
            active = dim.condition is None or dim.condition.holds({**self.fixed, **out})
            if active and dim.name in full:
                out[dim.name] = full[dim.name]
        return out

    def is_valid(self, config: Config) -> bool:
        full = self._full(config)
        for dim in self.dimensions:
            active = dim.condition is None or dim.condition.holds(full)
            if active != (dim.name in config):
                return False
            if active:
                try:
                    dim.check(config[dim.name])
                except ValueError:
                    return False
        return all(c.holds(full) for c in self.constraints)

    def violated(self, config: Config) -> list[str]:
        """Descriptions of the constraints ``config`` breaks."""
        full = self._full(config)
        return [c.describe() for c in self.constraints if not c.holds(full)]

    def _fill(self, config: Config, rng: np.random.Generator) -> Config:
        """Complete a partial configuration: sample missing active dimensions, drop inactive ones."""
        out: Config = {}
        for dim in self.dimensions:
            if dim.condition is not None and not dim.condition.holds({**self.fixed, **out}):
                continue
            out[dim.name] = config[dim.name] if dim.name in config else dim.sample(rng)
        return out

    def sample(self, rng: np.random.Generator) -> Config:
        """A configuration drawn uniformly among those that satisfy the constraints."""
        for _ in range(_MAX_REJECTIONS):
            config = self._fill({}, rng)
            if all(c.holds(self._full(config)) for c in self.constraints):
                return config
        raise SpaceError(f"no valid configuration found in {_MAX_REJECTIONS} samples; the "
                         f"constraints ({'; '.join(c.describe() for c in self.constraints)}) "
                         f"cannot be met", source=self.spec.source)

    def neighbours(self, config: Config, rng: np.random.Generator) -> list[Config]:
        """Valid configurations that differ from ``config`` in one active dimension."""
        out = []
        for dim in self.dimensions:
            if dim.name not in config:
                continue
            for value in dim.neighbours(config[dim.name], rng):
                candidate = self._fill({**config, dim.name: value}, rng)
                if all(c.holds(self._full(candidate)) for c in self.constraints):
                    out.append(candidate)
        return out

    def encode(self, config: Config) -> np.ndarray:
        """The configuration as a vector in [0, 1]^encoded_width (inactive dimensions are 0)."""
        parts: list[float] = []
        for dim in self.dimensions:
            parts.extend(dim.encode(config[dim.name]) if dim.name in config else dim.encode_inactive())
        return np.asarray(parts, dtype=np.float64)

    @staticmethod
    def key(config: Config) -> tuple:
        """A hashable identity of a canonical configuration."""
        return tuple(sorted(config.items()))

    def assemble(self, config: Config) -> dict[str, Any]:
        """Parameter-level values (lists per layer, chosen subsets) for the adapter builders."""
        full = self._full(config)
        active: Config = {}
        for dim in self.all_dimensions:
            if dim.name in full and (dim.condition is None or dim.condition.holds(active)):
                active[dim.name] = full[dim.name]
        return {name: p.assemble(active, self.num_layers) for name, p in self.spec.parameters.items()}

    def dimension(self, name: str) -> Dimension:
        return self._by_name[name]
