"""The scheduler interface: a Ray Tune ``TrialScheduler`` that also says where trials report."""

from __future__ import annotations

from collections.abc import Mapping

from ray.tune.schedulers import FIFOScheduler

from autopeft.config import EarlyStopping
from autopeft.schedulers import register_scheduler

#: the fraction of its training a trial had done at a report (see :func:`autopeft.trial.run.run_trial`)
PROGRESS = "progress"


class Scheduler(FIFOScheduler):
    """Runs every trial to its end (``fifo``); the base of autopeft's schedulers.

    ``objectives``: name -> ``"maximize"``/``"minimize"`` of the search's objectives.
    """

    def __init__(self, objectives: Mapping[str, str], settings: EarlyStopping) -> None:
        super().__init__()
        self.objectives = dict(objectives)
        self.settings = settings
        #: the trials stopped early, by Tune trial id, with the progress at which they stopped
        self.stopped: dict[str, float] = {}

    @property
    def milestones(self) -> tuple[float, ...]:
        """Fractions of each trial's training at which it evaluates on dev and reports its
        objectives (none: trials report after each epoch only)."""
        return ()


def rung_milestones(settings: EarlyStopping) -> tuple[float, ...]:
    """MO-ASHA's rungs: ``reduction_factor ** -k`` of a trial's training, k = rungs, ..., 1."""
    return tuple(settings.reduction_factor ** -k for k in range(settings.rungs, 0, -1))


class RungReports(Scheduler):
    """Runs every trial to its end, evaluating it on dev at MO-ASHA's rungs on the way
    (``fifo_rungs``): the learning curves a table of trials needs to replay early stopping
    (``benchmarks/peft_table.py``), at the cost of those evaluations and nothing stopped."""

    @property
    def milestones(self) -> tuple[float, ...]:
        return rung_milestones(self.settings)


# Registered here, not by decorator: the registry's check needs the class bound first.
register_scheduler("fifo")(Scheduler)
register_scheduler("fifo_rungs")(RungReports)
