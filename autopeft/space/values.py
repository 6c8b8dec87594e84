"""What values a parameter can take at all, whatever a space file offers: a rank is a positive
integer, a dropout a probability. Checked when a space is read, so that a bad value fails the
search up front with its line instead of failing every trial that draws it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from autopeft.errors import SpaceError
from autopeft.space.space import SpaceSpec


@dataclass(frozen=True)
class ValueRule:
    """``holds(value)`` for every allowed value; ``expected`` says which those are."""

    holds: Callable[[Any], bool]
    expected: str


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


POSITIVE_INT = ValueRule(lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= 1,
                         "a positive integer")
POSITIVE = ValueRule(lambda v: _number(v) and v > 0, "a number > 0")
NON_NEGATIVE = ValueRule(lambda v: _number(v) and v >= 0, "a number >= 0")
FRACTION = ValueRule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
LOG2_SIZE = ValueRule(lambda v: isinstance(v, Integral) and not isinstance(v, bool) and 0 <= v <= 10,
                      "an integer in 0..10 (10 switches the module off)")


def check_values(spec: SpaceSpec, rules: dict[str, ValueRule]) -> None:
    """SpaceError (file, key, line) for the first value a parameter of ``spec`` can take that
    its rule forbids (choices are checked one by one, ranges by their ends)."""
    for name, rule in rules.items():
        param = spec.parameters.get(name)
        if param is None:
            continue
        for value in param.extremes():
            if not rule.holds(value):
                raise SpaceError(f"value {value!r} is not allowed: '{name}' must be {rule.expected}",
                                 source=spec.source, key=f"parameters.{name}", line=param.line)
