"""Outcome constraints: bounds on an objective or on another reported metric, handled by
the acquisition function (the probability of feasibility weights each candidate) rather
than by discarding trials after they ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autopeft.errors import ConfigError

Op = Literal["<=", ">="]


@dataclass(frozen=True)
class OutcomeConstraint:
    """``target op bound``: ``target`` is an objective index or the name of a metric that
    :meth:`Optimizer.tell` receives in ``metrics`` (objectives may be named there too)."""

    target: int | str
    op: Op
    bound: float

    def satisfied(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound


def parse_constraints(spec: Any, num_objectives: int) -> list[OutcomeConstraint]:
    """Constraints from ``{"peak_memory_gb": ["<=", 8]}`` or ``[(0, ">=", 0.7), ...]``
    (what a YAML file or the Python API gives); ``None`` means none."""
    if spec is None:
        return []
    items = list(spec.items()) if isinstance(spec, Mapping) else list(spec)
    out = []
    for item in items:
        try:
            target, (op, bound) = (item[0], item[1]) if len(item) == 2 else (item[0], item[1:])
        except (TypeError, ValueError):
            raise ConfigError(f"got constraint {item!r}, expected (target, op, bound)",
                              key="outcome_constraints") from None
        if op not in ("<=", ">="):
            raise ConfigError(f"got operator {op!r} in constraint on {target!r}, expected "
                              f"'<=' or '>='", key="outcome_constraints")
        if isinstance(target, bool) or not isinstance(target, (int, str)) or (
                isinstance(target, int) and not 0 <= target < num_objectives):
            raise ConfigError(f"got constraint target {target!r}, expected a metric name or an "
                              f"objective index below {num_objectives}", key="outcome_constraints")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"got bound {bound!r} for {target!r}, expected a number",
                              key="outcome_constraints")
        out.append(OutcomeConstraint(target, op, float(bound)))
    return out


def constraint_value(constraint: OutcomeConstraint, values: Sequence[float],
                     metrics: Mapping[str, float]) -> float:
    """The constrained quantity of one trial; NaN when it was not reported."""
    if isinstance(constraint.target, int):
        return float(values[constraint.target])
    return float(metrics.get(constraint.target, float("nan")))


def meets_all(constraints: Sequence[OutcomeConstraint], constrained: Sequence[float]) -> bool:
    """Whether one trial's constrained quantities (``constraint_value`` of each constraint)
    meet every constraint. A quantity the trial did not report (NaN) does not: the one rule
    for the optimizer's acquisition and for the reported front."""
    return all(math.isfinite(v) and c.satisfied(v) for c, v in zip(constraints, constrained, strict=True))
