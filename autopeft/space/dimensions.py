"""Scalar dimensions: the units an optimizer decides one value for.

A search-space file speaks of parameters (a per-layer vector, a subset of modules); a
bound :class:`~autopeft.space.space.SearchSpace` flattens them into these scalars, each
with an optional condition on another scalar and a fixed-width encoding in [0, 1] for
the Gaussian process.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Value = bool | int | float | str


@dataclass(frozen=True)
class Condition:
    """Active only when every clause holds: dimension ``name`` takes one of ``values``."""

    clauses: tuple[tuple[str, tuple[Value, ...]], ...]

    def holds(self, config: dict[str, Value]) -> bool:
        return all(name in config and config[name] in values for name, values in self.clauses)


@dataclass(frozen=True)
class Dimension(ABC):
    """One scalar of the search space."""

    name: str
    condition: Condition | None = field(default=None, kw_only=True)

    @property
    @abstractmethod
    def width(self) -> int:
        """Number of columns this dimension takes in the encoded vector."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Value:
        """A uniformly drawn value (log-uniform for log scales)."""

    @abstractmethod
    def encode(self, value: Value) -> list[float]:
        """``width`` numbers in [0, 1]."""

    @abstractmethod
    def decode(self, columns: np.ndarray) -> Value:
        """The value whose encoding is nearest to ``columns`` (``width`` numbers in [0, 1])."""

    @abstractmethod
    def neighbours(self, value: Value, rng: np.random.Generator) -> list[Value]:
        """Values one step away from ``value`` (used by local search over the space)."""

    @abstractmethod
    def check(self, value: Any) -> Value:
        """``value`` converted to this dimension's type; ValueError when it is not allowed."""

    def extremes(self) -> list[Value]:
        """Every value of a finite dimension, the ends of a range: what a rule on the values
        this dimension can take needs to check."""
        return list(getattr(self, "values", ())) or [getattr(self, "low"), getattr(self, "high")]

    def encode_inactive(self) -> list[float]:
        # Inactive dimensions encode as zeros so that all configurations that differ only in
        # values that do not matter map to the same point (the space moves an active
        # conditional dimension off zero: SearchSpace.encode).
        return [0.0] * self.width


@dataclass(frozen=True)
class Bool(Dimension):
    width = 1

    def sample(self, rng: np.random.Generator) -> bool:
        return bool(rng.integers(2))

    def encode(self, value: Value) -> list[float]:
        return [float(bool(value))]

    def decode(self, columns: np.ndarray) -> bool:
        return bool(columns[0] >= 0.5)

    def neighbours(self, value: Value, rng: np.random.Generator) -> list[Value]:
        return [not value]

    def extremes(self) -> list[Value]:
        return [False, True]

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"got {value!r}, expected true or false")
        return value


@dataclass(frozen=True)
class Choice(Dimension):
    """One of a finite set; ``ordinal`` keeps the order (numbers), ``onehot`` does not."""

    values: tuple[Value, ...] = ()
    encoding: Literal["ordinal", "onehot"] = "ordinal"

    @property
    def width(self) -> int:
        return len(self.values) if self.encoding == "onehot" else 1

    def sample(self, rng: np.random.Generator) -> Value:
        return self.values[int(rng.integers(len(self.values)))]

    def encode(self, value: Value) -> list[float]:
        index = self.values.index(value)
        if self.encoding == "onehot":
            return [float(i == index) for i in range(len(self.values))]
        return [index / max(len(self.values) - 1, 1)]

    def decode(self, columns: np.ndarray) -> Value:
        if self.encoding == "onehot":
            return self.values[int(np.argmax(columns))]
        return self.values[int(round(float(np.clip(columns[0], 0, 1)) * (len(self.values) - 1)))]

    def neighbours(self, value: Value, rng: np.random.Generator) -> list[Value]:
        index = self.values.index(value)
        if self.encoding == "onehot":
            return [v for v in self.values if v != value]
        return [self.values[i] for i in (index - 1, index + 1) if 0 <= i < len(self.values)]

    def check(self, value: Any) -> Value:
        for allowed in self.values:
            # True == 1 in Python; a boolean must not pass for a number or the reverse.
            if value == allowed and isinstance(value, bool) == isinstance(allowed, bool):
                return allowed
        raise ValueError(f"got {value!r}, expected one of {list(self.values)}")


@dataclass(frozen=True)
class _Range(Dimension):
    """A number in [low, high] (fields of the subclasses), encoded linearly on its scale."""

    width = 1

    def _scale(self, v: float) -> float:
        return math.log(v) if self.log else v

    def encode(self, value: Value) -> list[float]:
        lo, hi = self._scale(self.low), self._scale(self.high)
        return [(self._scale(float(value)) - lo) / (hi - lo) if hi > lo else 0.0]

    def _in_range(self, value: Any, kinds: type | tuple[type, ...], what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, kinds) or not self.low <= value <= self.high:
            raise ValueError(f"got {value!r}, expected {what} in [{self.low}, {self.high}]")


@dataclass(frozen=True)
class Int(_Range):
    """An integer in [low, high]; ``log`` spaces it on a log2 scale."""

    low: int = 0
    high: int = 1
    log: bool = False

    def sample(self, rng: np.random.Generator) -> int:
        if not self.log:
            return int(rng.integers(self.low, self.high + 1))
        return int(round(2 ** rng.uniform(math.log2(self.low), math.log2(self.high))))

    def decode(self, columns: np.ndarray) -> int:
        lo, hi = self._scale(self.low), self._scale(self.high)
        x = lo + float(np.clip(columns[0], 0, 1)) * (hi - lo)
        return min(max(int(round(math.exp(x) if self.log else x)), self.low), self.high)

    def neighbours(self, value: Value, rng: np.random.Generator) -> list[Value]:
        steps = (int(value) // 2, int(value) * 2) if self.log else (int(value) - 1, int(value) + 1)
        return [v for v in steps if self.low <= v <= self.high and v != value]

    def check(self, value: Any) -> int:
        self._in_range(value, int, "an integer")
        return value


@dataclass(frozen=True)
class Float(_Range):
    """A real number in [low, high]; ``log`` spaces it on a log scale."""

    low: float = 0.0
    high: float = 1.0
    log: bool = False

    def _unscale(self, u: float) -> float:
        lo, hi = self._scale(self.low), self._scale(self.high)
        x = lo + u * (hi - lo)
        return float(min(max(math.exp(x) if self.log else x, self.low), self.high))

    def sample(self, rng: np.random.Generator) -> float:
        return self._unscale(float(rng.uniform()))

    def decode(self, columns: np.ndarray) -> float:
        return self._unscale(float(np.clip(columns[0], 0, 1)))

    def neighbours(self, value: Value, rng: np.random.Generator) -> list[Value]:
        u = self.encode(value)[0]
        return [self._unscale(float(np.clip(u + rng.normal(0.0, 0.1), 0.0, 1.0))) for _ in range(2)]

    def check(self, value: Any) -> float:
        self._in_range(value, (int, float), "a number")
        return float(value)
