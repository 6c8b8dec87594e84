"""A search space bound to a model: sampling, validity, neighbours and GP encoding.

Configurations are flat dicts ``{dimension name: value}`` holding only the dimensions that
are free (not fixed by the user) and active (their condition holds). That canonical form
is what the optimizers see, what deduplication compares and what MLflow logs as params.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopeft.errors import SpaceError
from autopeft.space.constraints import Expression
from autopeft.space.dimensions import Dimension, Value
from autopeft.space.parameters import AtLeast, Parameter

Config = dict[str, Value]
#: parameter values -> derived quantities (``trainable_params``, ``trainable_percent``)
Derive = Callable[[dict[str, Any]], dict[str, float]]
#: a configuration -> the form shared by every configuration that builds the same model
Canonical = Callable[[Config], Config]

_MAX_REJECTIONS = 10_000
#: where an active conditional dimension's encoding starts (inactive ones are 0)
ACTIVE_FLOOR = 0.25


@dataclass(frozen=True)
class SpaceSpec:
    """A search-space file as parsed: the adapter and its parameters, not yet bound to a model."""

    adapter: str
    parameters: dict[str, Parameter]
    name: str = "custom"
    source: str | None = None
    description: str = ""
    constraints: tuple[Expression, ...] = ()

    def line_of(self, parameter: str) -> int | None:
        param = self.parameters.get(parameter)
        return param.line if param else None

    def bind(self, num_layers: int, fixed: dict[str, Any] | None = None,
             derive: Derive | None = None, identity: Canonical | None = None) -> SearchSpace:
        """The space for a model with ``num_layers`` layers, with ``fixed`` parameters pinned;
        ``derive`` gives the derived quantities that constraints may use; ``identity`` maps
        configurations that build the same model to one form (their shared :meth:`SearchSpace.key`)."""
        for expression in self.constraints:
            if expression.uses_derived and derive is None:
                raise SpaceError(f"constraint {expression.describe()} uses "
                                 f"{sorted(expression.names & {'trainable_params', 'trainable_percent'})}, "
                                 f"which adapter '{self.adapter}' cannot compute before training",
                                 source=self.source, key="constraints", line=expression.line)
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
        space = SearchSpace(self, num_layers, dims, constraints, fixed_dims, derive, identity)
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
    derive: Derive | None = None
    identity: Canonical | None = None

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
        return not self.violated(config)

    def violated(self, config: Config) -> list[str]:
        """Descriptions of the constraints ``config`` breaks (stops at the first expression)."""
        full = self._full(config)
        broken = [c.describe() for c in self.constraints if not c.holds(full)]
        if broken or not self.spec.constraints:
            return broken
        scope = self.scope(config, derived=any(e.uses_derived for e in self.spec.constraints))
        return [e.describe() for e in self.spec.constraints if not e.holds(scope)][:1]

    def scope(self, config: Config, derived: bool = True) -> dict[str, Any]:
        """What constraints and analytic objectives see of ``config``: its parameter values
        (:meth:`assemble`) and, where the space can count them, ``trainable_params`` and
        ``trainable_percent`` (absent for a configuration whose strategy decides them)."""
        scope = self.assemble(config)
        if derived and self.derive is not None:
            scope.update(self.derive(scope))
        return scope

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
        broken: Counter[str] = Counter()
        for _ in range(_MAX_REJECTIONS):
            config = self._fill({}, rng)
            violated = self.violated(config)
            if not violated:
                return config
            broken.update(violated)
        worst = broken.most_common(1)[0][0]
        line = next((e.line for e in self.spec.constraints if e.describe() == worst), None)
        raise SpaceError(f"no configuration in {_MAX_REJECTIONS} samples meets the constraint "
                         f"{worst}; can any?", source=self.spec.source, key="constraints", line=line)

    def neighbours(self, config: Config, rng: np.random.Generator) -> list[Config]:
        """Valid configurations that differ from ``config`` in one active dimension."""
        out = []
        for dim in self.dimensions:
            if dim.name not in config:
                continue
            for value in dim.neighbours(config[dim.name], rng):
                candidate = self._fill({**config, dim.name: value}, rng)
                if not self.violated(candidate):
                    out.append(candidate)
        return out

    def encode(self, config: Config) -> np.ndarray:
        """The configuration as a vector in [0, 1]^encoded_width. An inactive dimension is 0;
        an active one that has a condition takes [ACTIVE_FLOOR, 1], so that "not there" (a
        rank whose layer is left out) is a code of its own, never the same as its lowest
        value (rank 2)."""
        parts: list[float] = []
        for dim in self.dimensions:
            if dim.name not in config:
                parts.extend(dim.encode_inactive())
            elif dim.condition is None:
                parts.extend(dim.encode(config[dim.name]))
            else:
                parts.extend(ACTIVE_FLOOR + (1 - ACTIVE_FLOOR) * u for u in dim.encode(config[dim.name]))
        return np.asarray(parts, dtype=np.float64)

    def decode(self, x: np.ndarray, *, raw: bool = False) -> Config:
        """The configuration nearest to the encoded point ``x`` (the inverse of :meth:`encode`
        on encoded configurations): dimensions whose condition fails are left out. ``raw``:
        read every column on its plain [0, 1] scale (a point drawn uniformly over the cube,
        as space-filling designs are), not :meth:`encode`'s scale for conditional ones.
        The result may break a constraint (:meth:`is_valid` tells)."""
        out: Config = {}
        col = 0
        for dim in self.dimensions:
            columns = np.asarray(x[col:col + dim.width], dtype=np.float64)
            col += dim.width
            if dim.condition is not None and not dim.condition.holds({**self.fixed, **out}):
                continue
            if dim.condition is not None and not raw:
                columns = (columns - ACTIVE_FLOOR) / (1 - ACTIVE_FLOOR)
            out[dim.name] = dim.decode(columns)
        return out

    def key(self, config: Config) -> tuple:
        """A hashable identity of a canonical configuration: equal for two configurations
        that build the same model."""
        return tuple(sorted((self.identity(config) if self.identity else config).items()))

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
