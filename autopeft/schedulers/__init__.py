"""Trial schedulers: whether a running trial trains on, decided from what it reported.

``fifo`` lets every trial finish (``fifo_rungs`` too, evaluating each at MO-ASHA's rungs on the
way, for tables that replay early stopping). ``moasha`` is multi-objective asynchronous successive
halving (MO-ASHA: Schmucker et al., 2021; Salinas et al., 2021; Syne Tune's ``MOASHA`` is the
reference): each trial evaluates on dev at rungs (fractions of its training) and goes on past
a rung only if it ranks in the top ``1 / reduction_factor`` of the trials that reached that
rung, ranked by non-dominated sorting of their objectives with crowding distance breaking
ties (NSGA-II's order). Ray Tune's own schedulers (ASHA, HyperBand, median stopping) rank by
one metric, and Optuna's pruners refuse multi-objective studies: hence this one.

A scheduler is a Ray Tune ``TrialScheduler`` that also says where trials report
(:attr:`Scheduler.milestones`); new ones register by name like optimizers do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from autopeft.config import EarlyStopping
from autopeft.errors import ConfigError
from autopeft.plugins import Registry

if TYPE_CHECKING:
    from autopeft.schedulers.base import Scheduler


def _subclass_of_scheduler(item: Any) -> None:
    from autopeft.schedulers.base import Scheduler

    if not (isinstance(item, type) and issubclass(item, Scheduler)):
        raise TypeError("expected a subclass of autopeft.schedulers.base.Scheduler")


#: every scheduler by name: autopeft's and those of installed packages (group
#: ``autopeft.schedulers``); the implementations import Ray, so they load on first lookup
SCHEDULERS: Registry[type[Scheduler]] = Registry(
    "schedulers", check=_subclass_of_scheduler, error=ConfigError, key="early_stopping.scheduler",
    lazy={"fifo": "autopeft.schedulers.base", "fifo_rungs": "autopeft.schedulers.base",
          "moasha": "autopeft.schedulers.moasha"})


def register_scheduler(name: str) -> Callable[[type[Scheduler]], type[Scheduler]]:
    """Class decorator: make a scheduler selectable by ``name`` (``--scheduler NAME``)."""
    return SCHEDULERS.decorator(name)


def make_scheduler(objectives: Mapping[str, str], settings: EarlyStopping) -> Scheduler:
    """The registered scheduler ``settings.scheduler``; an unknown name is a ConfigError."""
    return SCHEDULERS.get(settings.scheduler)(objectives, settings)
