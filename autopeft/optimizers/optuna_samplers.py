"""Baselines from Optuna (random, TPE, NSGA-II, Optuna's own GP) behind autopeft's ask/tell interface.

The space is declared define-by-run: each ask suggests the free dimensions in space order,
skipping those whose condition does not hold, so conditional parameters reach Optuna as
they are. Optuna knows nothing of autopeft's constraints or of deduplication; a suggestion
that breaks either is told back as a failed trial (samplers ignore those) and redrawn.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, GPSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.trial import Trial, TrialState

from autopeft.errors import ConfigError
from autopeft.optimizers.base import Optimizer, initial_designs, register_optimizer, sample_unseen
from autopeft.space import Bool, Choice, Config, Dimension, Float, Int, SearchSpace
from autopeft.space.dimensions import Value

# Refused Optuna suggestions per ask before drawing uniformly among the unseen instead: a sampler
# refused this often in a row is stuck on what it knows (GPSampler cycled through 200 known
# configurations, 500-700 s an ask) or the space is nearly exhausted; the draw serves both.
_MAX_RETRIES = 10


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna logs every trial at INFO; autopeft reports trials itself. The verbosity is
    Optuna-global, so it is restored on exit rather than changed for the whole process."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _suggest(trial: Trial, dim: Dimension) -> Value:
    if isinstance(dim, Bool):
        return trial.suggest_categorical(dim.name, [False, True])
    if isinstance(dim, Choice):
        return trial.suggest_categorical(dim.name, list(dim.values))
    if isinstance(dim, Int):
        return trial.suggest_int(dim.name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, Float):
        return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)
    raise TypeError(f"got a {type(dim).__name__} dimension '{dim.name}', expected Bool, "
                    f"Choice, Int or Float")


class OptunaOptimizer(Optimizer):
    """An Optuna study driven through ask/tell; subclasses choose the sampler.

    Extra keyword options go to the sampler (e.g. ``population_size`` for NSGA-II).
    ``n_initial``: the first asks are the shared initial designs
    (:func:`~autopeft.optimizers.base.initial_designs`, the same as MOBO's for the same seed);
    samplers with a random start (TPE) start modelling after them.
    ``reference_point`` is accepted for a uniform interface and not used.
    """

    def __init__(self, space: SearchSpace, directions: Sequence[str], *, seed: int = 0,
                 reference_point: Sequence[float | None] | None = None, n_initial: int = 0,
                 **sampler_options: Any) -> None:
        super().__init__(space, directions, seed=seed, reference_point=reference_point)
        if isinstance(n_initial, bool) or not isinstance(n_initial, int) or n_initial < 0:
            raise ConfigError(f"got {n_initial!r}, expected an integer >= 0", key="n_initial")
        self._n_initial = n_initial
        self._initial: list[Config] | None = None  # drawn on the first ask (after any warm start)
        if n_initial and "n_startup_trials" in self.startup_option():
            sampler_options.setdefault("n_startup_trials", n_initial)
        try:
            sampler = self.make_sampler(seed, **sampler_options)
        except TypeError as err:
            raise ConfigError(f"bad option for {type(self).__name__}: {err}",
                              key="optimizer") from None
        with _quiet():
            self.study = optuna.create_study(directions=self.directions, sampler=sampler)
        self._rng = np.random.default_rng(seed)  # for the uniform fallback only
        self._asked: set[tuple] = set()
        self._trials: dict[tuple, Trial] = {}  # pending configurations -> their Optuna trial
        #: asks the sampler could not answer with a new valid configuration (drawn uniformly)
        self.fallbacks = 0

    @abstractmethod
    def make_sampler(self, seed: int, **options: Any) -> BaseSampler:
        """The Optuna sampler, seeded; ``options`` are the sampler's keyword arguments."""

    @classmethod
    def startup_option(cls) -> set[str]:
        """The sampler's keyword for its number of random start trials, if it has one."""
        return set()

    def ask(self) -> Config:
        with _quiet():
            design = next((c for c in self._designs() if self.space.key(c) not in self._asked), None)
            if design is not None:
                self.study.enqueue_trial(design)
                trial = self.study.ask()
                self._suggest_config(trial)
                return self._register(self.space.key(design), design, trial)
            refused: set[tuple] = set()
            for _ in range(_MAX_RETRIES):
                trial = self.study.ask()
                config = self._suggest_config(trial)
                key = self.space.key(config)
                if key not in self._asked and self.space.is_valid(config):
                    return self._register(key, config, trial)
                self.study.tell(trial, state=TrialState.FAIL)
                if key in refused:
                    # Proposed again though just refused: a refusal is not an observation, so
                    # a model-based sampler's best point does not move, and asking on only
                    # costs time (GPSampler spent 60-70 s a stuck ask asking again).
                    break
                refused.add(key)
            # The sampler keeps proposing known or invalid configurations (a small or nearly
            # exhausted space): draw uniformly and hand the draw to Optuna as a fixed trial.
            self.fallbacks += 1
            config = self._random_new()
            self.study.enqueue_trial(config)
            trial = self.study.ask()
            self._suggest_config(trial)
            return self._register(self.space.key(config), config, trial)

    def tell(self, config: Config, values: Sequence[float] | None,
             metrics: Mapping[str, float] | None = None) -> None:
        # ``metrics`` serve outcome constraints, which these baselines do not support.
        y = None if values is None else [float(v) for v in values]
        if y is not None and len(y) != len(self.directions):
            raise ValueError(f"got {len(y)} objective values, expected {len(self.directions)}")
        config = self.space.canonical(config)
        key = self.space.key(config)
        with _quiet():
            trial = self._trials.pop(key, None)
            if trial is None:  # told without an ask (e.g. from a resumed run): record it
                self.study.enqueue_trial(config)
                trial = self.study.ask()
                self._suggest_config(trial)
                self._asked.add(key)
            if y is not None and all(math.isfinite(v) for v in y):
                self.study.tell(trial, y)
            else:  # None, NaN or inf: a failed trial
                self.study.tell(trial, state=TrialState.FAIL)

    def tell_stopped(self, config: Config, values: Sequence[float], metrics: Mapping[str, float] | None = None,
                     *, fidelity: float) -> None:
        # Optuna's multi-objective samplers read only COMPLETE trials (a PRUNED one would be
        # thrown away): told complete, with its fidelity kept on the trial for the record.
        trial = self._trials.get(self.space.key(self.space.canonical(config)))
        if trial is not None:
            trial.set_user_attr("fidelity", float(fidelity))
        self.tell(config, values, metrics)

    def _designs(self) -> list[Config]:
        if self._initial is None:
            self._initial = initial_designs(self.space, self.seed, self._n_initial, self.warm_configs)
        return self._initial

    def _register(self, key: tuple, config: Config, trial: Trial) -> Config:
        self._asked.add(key)
        self._trials[key] = trial
        return config

    def _suggest_config(self, trial: Trial) -> Config:
        """The trial's values for the active free dimensions, in space order."""
        config: Config = {}
        for dim in self.space.dimensions:
            if dim.condition is None or dim.condition.holds({**self.space.fixed, **config}):
                config[dim.name] = _suggest(trial, dim)
        return config

    def _random_new(self) -> Config:
        return sample_unseen(self.space, self._rng, self._asked)


@register_optimizer("random")
class OptunaRandom(OptunaOptimizer):
    """Uniform random search (Optuna's ``RandomSampler``)."""

    def make_sampler(self, seed: int, **options: Any) -> BaseSampler:
        return RandomSampler(seed=seed, **options)


@register_optimizer("tpe")
class OptunaTPE(OptunaOptimizer):
    """Multi-objective TPE. ``multivariate`` models the dimensions jointly (the layer,
    rank and module choices interact), ``group`` splits the joint model along the
    conditional sub-spaces, and ``constant_liar`` keeps concurrent trials apart."""

    @classmethod
    def startup_option(cls) -> set[str]:
        return {"n_startup_trials"}

    def make_sampler(self, seed: int, **options: Any) -> BaseSampler:
        options = {"multivariate": True, "group": True, "constant_liar": True, **options}
        with warnings.catch_warnings():  # the three options above are marked experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            return TPESampler(seed=seed, **options)


@register_optimizer("nsga2")
class OptunaNSGA2(OptunaOptimizer):
    """NSGA-II with a population of 8 by default (Optuna's 50 would never leave the first
    generation within a 20-50 trial budget); ``population_size`` overrides it."""

    def make_sampler(self, seed: int, **options: Any) -> BaseSampler:
        return NSGAIISampler(seed=seed, **{"population_size": 8, **options})


@register_optimizer("optuna_gp")
class OptunaGP(OptunaOptimizer):
    """Optuna's ``GPSampler`` (a GP with log-EHVI for several objectives): the strongest
    multi-objective sampler Optuna has, the peer autopeft's MOBO is measured against.
    Conditional dimensions (a rank whose layer may be left out) fall outside its joint
    model and are drawn at random, as Optuna does for any define-by-run branch."""

    @classmethod
    def startup_option(cls) -> set[str]:
        return {"n_startup_trials"}

    def make_sampler(self, seed: int, **options: Any) -> BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return GPSampler(seed=seed, **{"warn_independent_sampling": False, **options})
