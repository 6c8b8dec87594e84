"""What a search knows before its first trial: where each objective stops counting (the
hypervolume's reference point), which objectives need no model, and below what a trial
learned nothing.

The reference point does not chase the front. Where the user gives none for an objective:
a quality objective takes the task's floor (the majority class's accuracy: a classifier at
or below it learned nothing), and a cost the configuration determines takes the largest
value the space allows (every configuration then counts). Only an objective with neither
falls back to BoTorch's inference from the trials so far. The rule is stated in the search's
log, its parent run and its hypervolume plot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopeft.objectives import Objective
from autopeft.space import Config, SearchSpace


@dataclass
class Knowledge:
    """Per objective name: the reference value and why it is that, the floor, and the exact
    function of a configuration's scope where there is one."""

    reference: dict[str, float] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    analytic: dict[str, Callable[[dict[str, Any]], float]] = field(default_factory=dict)


def search_knowledge(objectives: list[Objective], space: SearchSpace, floors: dict[str, tuple[float, str]],
                     given: dict[str, float]) -> Knowledge:
    """The reference rule, floors and analytic objectives of a search.

    Args:
        objectives: The search's objectives.
        space: The bound space (its parameter counter makes costs analytic).
        floors: The task's score without learning, per metric, and what it is.
        given: Reference values the user gave (config or the objective's own).
    """
    known = Knowledge()
    for o in objectives:
        if o.metric in floors:
            known.floors[o.name] = floors[o.metric][0]
        if o.analytic is not None and _analytic_in(space, o.analytic):
            known.analytic[o.name] = o.analytic
        if o.name in given:
            known.reference[o.name], known.why[o.name] = float(given[o.name]), "given"
        elif o.name in known.floors:
            known.reference[o.name], known.why[o.name] = known.floors[o.name], floors[o.metric][1]
        elif o.name in known.analytic:
            bound = extreme(space, o.analytic, o.direction == "minimize")
            if bound is not None:
                known.reference[o.name] = bound
                known.why[o.name] = f"the space's {'largest' if o.direction == 'minimize' else 'smallest'}"
    return known


def _analytic_in(space: SearchSpace, f: Callable[[dict[str, Any]], float]) -> bool:
    """Whether ``f`` can be computed for the space's configurations (one drawn to try)."""
    try:
        f(space.scope(space.sample(np.random.default_rng(0))))
    except KeyError:
        return False
    return True


def extreme(space: SearchSpace, f: Callable[[dict[str, Any]], float], largest: bool = True,
            samples: int = 256, seed: int = 0) -> float | None:
    """The largest (or smallest) value of an analytic ``f`` over the space: the best of
    ``samples`` uniform draws, then a climb over :meth:`SearchSpace.neighbours` while that
    improves (parameter counts grow with every switch and rank, so the climb reaches the
    all-on corner). ``None`` where ``f`` is unknown for every draw."""
    rng = np.random.default_rng(seed)
    sign = 1.0 if largest else -1.0

    def value(config: Config) -> float | None:
        try:
            return sign * float(f(space.scope(config)))
        except KeyError:
            return None

    scored = [(v, c) for c in (space.sample(rng) for _ in range(samples)) if (v := value(c)) is not None]
    if not scored:
        return None
    best, config = max(scored, key=lambda item: item[0])
    while True:
        moves = [(v, n) for n in space.neighbours(config, rng) if (v := value(n)) is not None and v > best]
        if not moves:
            return sign * best
        best, config = max(moves, key=lambda item: item[0])
