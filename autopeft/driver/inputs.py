"""The checks a search's input gets before torch, Ray, MLflow or BoTorch is imported.

``autopeft search`` runs them first, so that a typo in a flag, a space file or a path comes
back at once; :func:`autopeft.driver.drive.prepare` runs them again (they are cheap) before it
loads the model and data, so that the Python API checks in the same order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

from autopeft.driver.baselines import resolve_baselines
from autopeft.config import Fidelity, SearchConfig
from autopeft.costs import COSTS, RUNG_COSTS, TRIAL_FIGURES
from autopeft.errors import ConfigError, DataError, ModelError, ObjectiveError
from autopeft.objectives import Objective, resolve_objectives
from autopeft.optimizers.base import OPTIMIZERS
from autopeft.optimizers.outcomes import OutcomeConstraint, parse_constraints
from autopeft.schedulers import SCHEDULERS
from autopeft.space import SpaceSpec, load_space

if TYPE_CHECKING:
    from autopeft.tasks.base import Task, TaskDefaults

#: the metrics outcome constraints may name besides objectives and ``dev_*`` metrics
RESULT_METRICS = frozenset({*COSTS, *TRIAL_FIGURES})


@dataclass(frozen=True)
class CheckedInputs:
    objectives: list[Objective]
    constraints: list[OutcomeConstraint]
    spec: SpaceSpec


def check_inputs(config: SearchConfig) -> CheckedInputs:
    """Everything about ``config`` that can be checked without loading a model or data:
    settings, optimizer name, the space file, that the named model folder and data files
    exist, the task, objectives (against the task's metrics), reference point and outcome
    constraints. Raises an :class:`~autopeft.AutopeftError`."""
    config.check()
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{config.optimizer}'; choose one of {OPTIMIZERS.names()}",
                          key="optimizer")
    if config.baselines:
        resolve_baselines(config.baselines)
    for key in ("train_file", "dev_file", "test_file"):
        path = getattr(config.data, key)
        if path is not None and not Path(path).exists():
            raise DataError("data file not found", source=path, key=f"data.{key}")
    if config.model:
        check_model_reference(config.model)
    # The task's metrics and default objectives need its module, which imports torch: the
    # checks above come back without it.
    from autopeft.tasks import make_task

    task = make_task(config.task)
    if not task.builtin_model and not config.model:
        raise ConfigError(f"--model is required for a {config.task} task (only demo tasks bring their own)",
                          key="model")
    apply_task_defaults(config, task)
    spec = load_space(config.space)
    objectives = resolve_objectives(config.objectives)
    if len(objectives) < 2:
        raise ObjectiveError("a multi-objective search needs at least two objectives", key="objective")
    task.check_objectives([(o.name, o.metric) for o in objectives if o.metric])
    unknown = set(config.reference_point) - {o.name for o in objectives}
    if unknown:
        raise ConfigError(f"reference point given for unknown objective(s) {sorted(unknown)}",
                          key="reference_point")
    check_early_stopping(config, objectives)
    constraints = outcome_constraints(config, [o.name for o in objectives])
    return CheckedInputs(objectives, constraints, spec)


#: what a search uses for the settings left unset, unless its task says otherwise
UNSET_DEFAULTS = {"trials": 12, "space": "lora"}


def apply_task_defaults(config: SearchConfig, task: Task) -> None:
    """The task's objectives and ``defaults`` (else :data:`UNSET_DEFAULTS`) for the settings
    ``config`` leaves unset; its fidelity where no fidelity setting differs from its default."""
    defaults = task.defaults
    if not config.objectives:
        config.objectives = list(task.default_objectives)
    for key, default in UNSET_DEFAULTS.items():
        if getattr(config, key) is None:
            setattr(config, key, getattr(defaults, key) or default)
    if defaults.fidelity and config.fidelity == Fidelity():
        config.fidelity = task_fidelity(defaults)


def task_fidelity(defaults: TaskDefaults) -> Fidelity | None:
    """The fidelity a task's ``defaults`` give, if they give one."""
    return dataclasses.replace(Fidelity(), **defaults.fidelity) if defaults.fidelity else None


def check_early_stopping(config: SearchConfig, objectives: list[Objective]) -> None:
    """A known scheduler; with early stopping, objectives that can be judged part-way through
    training (quality on dev, and the costs of RUNG_COSTS)."""
    name = config.early_stopping.scheduler
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler '{name}'; choose one of {SCHEDULERS.names()}",
                          key="early_stopping.scheduler")
    if name == "fifo":
        return
    for o in objectives:
        if not o.test and o.name not in RUNG_COSTS:
            raise ConfigError(f"objective '{o.name}' is known only when a trial ends, so trials cannot "
                              f"be judged on it part-way; early stopping works with quality objectives "
                              f"and {sorted(RUNG_COSTS)} (or use --scheduler fifo)", key="early_stopping.scheduler")


def outcome_constraints(config: SearchConfig, objective_names: list[str]) -> list[OutcomeConstraint]:
    """The optimizer's outcome constraints, each on an objective or on a metric every trial
    reports; the search's front holds only trials that meet them."""
    constraints = parse_constraints(config.optimizer_options.get("outcome_constraints"), len(objective_names))
    known = set(objective_names) | RESULT_METRICS
    for c in constraints:
        if isinstance(c.target, str) and c.target not in known and not c.target.startswith("dev_"):
            raise ConfigError(f"constraint on unknown metric '{c.target}'; use an objective, a dev_ "
                              f"metric or one of {sorted(RESULT_METRICS)}",
                              key="optimizer_options.outcome_constraints")
    return constraints


def check_model_reference(model: str) -> None:
    """Fail early, with a clear message, for a local path that does not exist (a hub id is
    left to the loader)."""
    looks_local = model.startswith((".", "/", "~")) or Path(model).exists() or model.count("/") > 1
    if looks_local and not (Path(model).expanduser() / "config.json").is_file():
        where = "does not exist" if not Path(model).expanduser().exists() else "has no config.json"
        raise ModelError(f"model folder {where}", source=model, key="model")
