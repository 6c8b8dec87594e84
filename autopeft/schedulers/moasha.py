"""MO-ASHA: multi-objective asynchronous successive halving (Schmucker et al., 2021;
Salinas et al., 2021; Syne Tune's ``MOASHA`` is the reference implementation)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.schedulers import TrialScheduler

from autopeft.config import EarlyStopping
from autopeft.schedulers import register_scheduler
from autopeft.schedulers.base import PROGRESS, Scheduler, rung_milestones
from autopeft.objectives import OBJECTIVE_PREFIX


def non_domination_ranks(losses: np.ndarray) -> np.ndarray:
    """The front index of each row of ``losses`` (n x m, all minimised): 0 for the
    non-dominated rows, 1 for those dominated only by rank-0 rows, and so on.

    Written out (O(m n^2), n is a rung's trials): Optuna's and BoTorch's versions are private
    or only find the first front."""
    n = len(losses)
    le = (losses[:, None, :] <= losses[None, :, :]).all(-1)
    lt = (losses[:, None, :] < losses[None, :, :]).any(-1)
    dominates = le & lt  # dominates[i, j]: row i dominates row j
    ranks = np.full(n, -1)
    remaining = np.ones(n, dtype=bool)
    rank = 0
    while remaining.any():
        dominated = (dominates & remaining[:, None]).any(0)
        current = remaining & ~dominated
        ranks[current] = rank
        remaining &= ~current
        rank += 1
    return ranks


def crowding_distances(losses: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within its set (boundary rows: infinite);
    identical rows get the same distance (computed once, on the distinct rows)."""
    unique, inverse = np.unique(losses, axis=0, return_inverse=True)
    n, m = unique.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(len(losses), np.inf)
    for j in range(m):
        order = np.argsort(unique[:, j], kind="stable")
        span = unique[order[-1], j] - unique[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (unique[order[2:], j] - unique[order[:-2], j]) / span
    return distance[inverse.reshape(-1)]


def priority_ranks(losses: np.ndarray) -> np.ndarray:
    """Each row's place in NSGA-II's order (non-domination rank, then larger crowding
    distance within the rank): how many rows come strictly before it, so ties share a place."""
    ranks = non_domination_ranks(losses)
    crowding = np.zeros(len(losses))
    for r in np.unique(ranks):
        members = ranks == r
        crowding[members] = crowding_distances(losses[members])
    better_rank = ranks[None, :] < ranks[:, None]
    same_rank_more_spread = (ranks[None, :] == ranks[:, None]) & (crowding[None, :] > crowding[:, None])
    return (better_rank | same_rank_more_spread).sum(1)


@register_scheduler("moasha")
class MOASHA(Scheduler):
    """Multi-objective asynchronous successive halving over ``settings.rungs`` rungs at
    ``reduction_factor ** -k`` of each trial's training (k = rungs, ..., 1)."""

    def __init__(self, objectives: Mapping[str, str], settings: EarlyStopping) -> None:
        super().__init__(objectives, settings)
        self._milestones = rung_milestones(settings)
        #: per rung, the loss vector (all objectives minimised) of each trial that reached it
        self.rungs: list[dict[str, np.ndarray]] = [{} for _ in self._milestones]

    @property
    def milestones(self) -> tuple[float, ...]:
        return self._milestones

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.decide(trial.trial_id, result)

    def decide(self, trial_id: str, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for ``trial_id`` after it reported ``result``."""
        losses = self._losses(result)
        if losses is None:
            return TrialScheduler.CONTINUE
        for milestone, recorded in reversed(list(zip(self._milestones, self.rungs))):
            # A trial reports once per rung (at ceil(milestone * steps)); slack for float error.
            if result[PROGRESS] + 1e-9 < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = losses
            # As in ASHA, a rung's first trials go on (promotion is relative to who is there),
            # and, as in Syne Tune's MOASHA, a tie with the last promoted place goes on too.
            ids = list(recorded)
            places = priority_ranks(np.stack([recorded[i] for i in ids]))
            place = places[ids.index(trial_id)]
            if place >= math.ceil(len(ids) / self.settings.reduction_factor):
                self.stopped[trial_id] = float(result[PROGRESS])
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE

    def _losses(self, result: Mapping[str, Any]) -> np.ndarray | None:
        """The objectives in ``result`` as losses (maximised ones negated); None for a report
        without all of them (an epoch's end, the final result)."""
        if PROGRESS not in result:
            return None
        values = []
        for name, direction in self.objectives.items():
            value = result.get(OBJECTIVE_PREFIX + name)
            if value is None:
                return None
            values.append(-float(value) if direction == "maximize" else float(value))
        return np.asarray(values)
