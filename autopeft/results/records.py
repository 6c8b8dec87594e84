"""What a search knows about its trials, and the Pareto front over them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopeft.costs import COSTS
from autopeft.optimizers.outcomes import OutcomeConstraint, constraint_value, meets_all
from autopeft.pareto import hypervolume, hypervolume_curve, infer_reference, pareto_mask, to_maximization



@dataclass
class TrialRecord:
    """One trial: its configuration, state and results."""

    number: int
    trial_id: str
    config: dict[str, Any]
    status: str = "running"  # running | completed | stopped (early, by the scheduler) | failed | interrupted
    objectives: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    adapter_dir: Path | None = None
    run_id: str | None = None
    pareto: bool = False
    test_metrics: dict[str, float] = field(default_factory=dict)
    feasible: bool = True  # meets the search's outcome constraints (if any)
    strategy: str = "none"  # the training strategy the configuration uses
    #: what the strategy decided (gates, selected layers, ranks, pruning figures)
    strategy_report: dict[str, Any] = field(default_factory=dict)
    #: the Ray node it ran on (its IP address), where Ray said
    node: str | None = None
    #: the device it trained on and why (``cpu: no CUDA device ...``), and the GPUs Ray assigned it
    device: str | None = None
    gpus: str | None = None
    #: how many times it started (more than once when a crash interrupted it)
    attempts: int = 1

    @property
    def name(self) -> str:
        return f"trial-{self.number:04d}"


@dataclass(frozen=True)
class ObjectiveInfo:
    name: str
    direction: str
    #: the value at or beyond which a trial learned nothing (the majority class's accuracy)
    floor: float | None = None


def learned(record: TrialRecord, objectives: list[ObjectiveInfo]) -> bool:
    """Whether ``record`` beat every objective's floor: a trial at the majority class learned
    nothing, and is listed among the trials but never put on a front."""
    for o in objectives:
        value = record.objectives.get(o.name)
        if o.floor is not None and value is not None and (
                value <= o.floor if o.direction == "maximize" else value >= o.floor):
            return False
    return True


def objective_matrix(records: list[TrialRecord], objectives: list[ObjectiveInfo]) -> np.ndarray:
    """``n x m`` objective values of ``records`` (NaN where a trial has none)."""
    return np.array([[r.objectives.get(o.name, np.nan) for o in objectives] for r in records],
                    dtype=np.float64).reshape(len(records), len(objectives))


def meets(record: TrialRecord, constraints: Sequence[OutcomeConstraint],
          objectives: list[ObjectiveInfo]) -> bool:
    """Whether ``record`` meets every outcome constraint (a value it did not report does not)."""
    values = [record.objectives.get(o.name, math.nan) for o in objectives]
    named = {**record.metrics, **record.objectives}
    return meets_all(constraints, [constraint_value(c, values, named) for c in constraints])


def front_of(records: list[TrialRecord], objectives: list[ObjectiveInfo]) -> list[TrialRecord]:
    """The completed, feasible records that learned (:func:`learned`) and that no other such
    record dominates, best first."""
    done = [r for r in records if r.status == "completed" and r.feasible and learned(r, objectives)]
    if not done:
        return []
    mask = pareto_mask(objective_matrix(done, objectives), [o.direction for o in objectives])
    front = [r for r, keep in zip(done, mask, strict=True) if keep]
    first = objectives[0]
    return sorted(front, key=lambda r: r.objectives[first.name], reverse=first.direction == "maximize")


def hypervolume_history(records: list[TrialRecord], objectives: list[ObjectiveInfo],
                        reference: np.ndarray) -> list[float]:
    """Hypervolume after each trial, in trial order (failed and infeasible trials, and those
    that learned nothing, add nothing)."""
    ordered = sorted(records, key=lambda r: r.number)
    values = objective_matrix([r for r in ordered], objectives)
    for i, r in enumerate(ordered):
        if r.status != "completed" or not r.feasible or not learned(r, objectives):
            values[i] = np.nan
    return hypervolume_curve(values, [o.direction for o in objectives], reference)


class HypervolumeLog:
    """The hypervolume autopeft shows and logs after each finished trial, by one rule.

    The reference point is, per objective, the value given for it (by the user, or by the
    search's rule: the task's floor for quality, the space's largest value for a cost known
    from the configuration; ``why`` says which), else BoTorch's inference over the completed,
    feasible trials so far (the worst value minus a tenth of the range), which only ever
    moves outwards: each new reference is the elementwise worse of the last one and the
    inferred one. A trial therefore never lowers the hypervolume (a bigger set, measured
    from a reference at least as far out). Trials that learned nothing count for nothing.
    The progress line, the MLflow metric and ``hypervolume.png`` all read :attr:`curve`.
    """

    def __init__(self, objectives: list[ObjectiveInfo], given: dict[str, float] | None = None,
                 why: dict[str, str] | None = None) -> None:
        self.objectives = objectives
        self.directions = [o.direction for o in objectives]
        self.given = [(given or {}).get(o.name) for o in objectives]
        self.why = dict(why or {})
        self.reference: np.ndarray | None = None
        self.curve: list[float] = []

    @property
    def rule(self) -> str:
        parts = [f"{o.name} {g:.4g} ({self.why.get(o.name, 'given')})" if g is not None else f"{o.name} inferred"
                 for o, g in zip(self.objectives, self.given)]
        text = "reference: " + ", ".join(parts)
        if any(g is None for g in self.given):
            text += " (inferred: worst value so far - 10% of the range, only moving out)"
        return text

    def add(self, records: list[TrialRecord]) -> float:
        """The hypervolume of ``records`` after one more trial finished; appended to the curve."""
        done = [r for r in records if r.status == "completed" and r.feasible and learned(r, self.objectives)]
        if not done:
            self.curve.append(0.0)
            if self.reference is None and all(g is not None for g in self.given):
                self.reference = np.array(self.given, dtype=np.float64)
            return 0.0
        values = objective_matrix(done, self.objectives)
        inferred = infer_reference(values, self.directions, self.given)
        if self.reference is not None:
            # Worse in the user's directions: lower for maximised, higher for minimised.
            inferred = np.where(to_maximization(inferred[None, :], self.directions)[0]
                                < to_maximization(self.reference[None, :], self.directions)[0],
                                inferred, self.reference)
        self.reference = inferred
        value = hypervolume(values, self.directions, self.reference)
        self.curve.append(value)
        return value


def front_table(front: list[TrialRecord], objectives: list[ObjectiveInfo]) -> pd.DataFrame:
    """One row per front member: objectives, test scores, costs, then the configuration."""
    rows = []
    for r in front:
        row: dict[str, Any] = {"trial": r.name}
        row.update({o.name: r.objectives.get(o.name) for o in objectives})
        row.update({f"test_{k}": v for k, v in r.test_metrics.items()})
        row.update({k: r.metrics[k] for k in COSTS if k in r.metrics and k not in row})
        row.update({f"param:{k}": v for k, v in r.config.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def parse_param(text: str) -> Any:
    """A configuration value read back from MLflow, where params are strings."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def summarize_config(config: dict[str, Any], num_layers: int | None = None) -> str:
    """A short human reading of a flat configuration (per-layer vectors collapsed)."""
    groups: dict[str, list] = {}
    scalars = {}
    for key, value in config.items():
        head, _, tail = key.partition(".")
        if tail:
            groups.setdefault(head, []).append((tail, value))
        else:
            scalars[key] = value
    for head, items in list(groups.items()):
        # one named non-bool entry is a number's range for one strategy (learning_rate.ist)
        if len(items) == 1 and not items[0][0].isdigit() and not isinstance(items[0][1], bool):
            scalars[head] = groups.pop(head)[0][1]
    parts = []
    for head, items in groups.items():
        if all(isinstance(v, bool) for _, v in items) and not all(t.isdigit() for t, _ in items):
            parts.append(f"{head}={'+'.join(t for t, v in items if v)}")
        elif all(isinstance(v, bool) for _, v in items):
            parts.append(f"{head}={''.join('1' if v else '0' for _, v in items)}")
        else:
            parts.append(f"{head}={','.join(f'{t}:{v}' for t, v in items)}")
    parts += [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items()]
    return " ".join(parts)
