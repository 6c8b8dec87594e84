"""autopeft's MOBO as an Optuna sampler: the same optimizer core in a plain Optuna study.

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MOBOSampler(seed=0))

Relative sampling over the intersection search space (the parameters every finished trial
has) drives :class:`~autopeft.optimizers.mobo.MOBO`: each trial rebuilds it from the
study's trials (completed ones told, running ones pending), so the sampler keeps no search
state of its own and works with any storage and with parallel workers. Parameters
outside that space (the first trial, define-by-run branches) are drawn by an independent
sampler, random by default, and so are all of them once the relative space has nothing new
left (never proposing a configuration twice is autopeft's rule where it can hold; a sampler
must still always return a value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import SpaceExhausted
from autopeft.optimizers.mobo import MOBO
from autopeft.space import Choice, Config, Dimension, Float, Int, SearchSpace, SpaceSpec


def dimension(name: str, dist: BaseDistribution) -> Dimension:
    """The autopeft dimension of an Optuna distribution: floats (log or linear) as
    :class:`Float`, integers as :class:`Int`, stepped ones and categoricals as :class:`Choice`
    (ordinal for steps and two-way choices, one-hot otherwise: Optuna's categories have no
    order)."""
    if isinstance(dist, FloatDistribution):
        if dist.step is None:
            return Float(name, low=dist.low, high=dist.high, log=dist.log)
        n = int(round((dist.high - dist.low) / dist.step))
        return Choice(name, values=tuple(dist.low + i * dist.step for i in range(n + 1)))
    if isinstance(dist, IntDistribution):
        if dist.step == 1 and not dist.log:
            return Int(name, low=dist.low, high=dist.high)
        if dist.step == 1:
            # Int(log=True) steps by doubling; Optuna's log ints take every integer.
            return Choice(name, values=tuple(range(dist.low, dist.high + 1)))
        return Choice(name, values=tuple(range(dist.low, dist.high + 1, dist.step)))
    if isinstance(dist, CategoricalDistribution):
        encoding = "ordinal" if len(dist.choices) <= 2 else "onehot"
        return Choice(name, values=tuple(dist.choices), encoding=encoding)
    raise TypeError(f"got a {type(dist).__name__}, expected a Float, Int or Categorical distribution")


def to_search_space(distributions: dict[str, BaseDistribution]) -> SearchSpace:
    """An autopeft search space with one dimension per Optuna parameter (no conditions)."""
    dims = [dimension(name, distributions[name]) for name in sorted(distributions)]
    return SearchSpace(SpaceSpec(adapter="optuna", parameters={}, name="optuna"), 0, dims, [])


class MOBOSampler(BaseSampler):
    """autopeft's multi-objective Bayesian optimisation (SAAS or plain GP surrogates,
    qLogNEHVI) as an Optuna sampler.

    Args:
        seed: Seeds every random choice; the same seed and trials give the same suggestions.
        independent_sampler: Draws parameters outside the relative search space (default:
            ``RandomSampler(seed=seed)``).
        **options: :class:`~autopeft.optimizers.mobo.MOBO` options (``surrogate="saas"``,
            ``n_initial``, ``copula``, ``reference_point``, ``outcome_constraints``, ...); a
            constraint on a named metric reads the trial's user attribute of that name.
    """

    def __init__(self, *, seed: int | None = None, independent_sampler: BaseSampler | None = None,
                 **options: Any) -> None:
        self._seed = int(np.random.SeedSequence(seed).generate_state(1)[0]) if seed is None else seed
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._options = options
        self._spaces = IntersectionSearchSpace(include_pruned=True)
        self.last_ask_source: str | None = None

    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._independent.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: dist for name, dist in self._spaces.calculate(study).items()
                if not dist.single()}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        space = to_search_space(search_space)
        directions = ["maximize" if d == StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
        # A fresh optimizer per trial, seeded by (seed, trial number): reproducible, and
        # consistent with whatever other workers wrote to the storage meanwhile.
        seed = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
        mobo = MOBO(space, directions, seed=seed, **self._options)
        for past in study.get_trials(deepcopy=False):
            config = _config(space, past)
            if config is None or past.number == trial.number:
                continue
            if past.state == TrialState.COMPLETE:
                mobo.tell(config, past.values, past.user_attrs)
            elif past.state == TrialState.RUNNING:
                mobo.add_pending(config)
            else:  # failed or pruned: never proposed again
                mobo.tell(config, None)
        try:
            config = mobo.ask()
        except SpaceExhausted:
            # An Optuna sampler must always give a value: with nothing new left, the
            # independent sampler draws (and may repeat), as Optuna's own samplers do.
            self.last_ask_source = "independent"
            return {}
        self.last_ask_source = mobo.last_ask_source
        return config

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)


def _config(space: SearchSpace, trial: FrozenTrial) -> Config | None:
    """The trial's values for ``space``'s parameters, or ``None`` if it lacks any."""
    config: Config = {}
    for dim in space.dimensions:
        if dim.name not in trial.params:
            return None
        value = trial.params[dim.name]
        if isinstance(dim, Choice) and value not in dim.values:
            return None  # a value outside today's distribution (a changed define-by-run)
        config[dim.name] = value
    return config
