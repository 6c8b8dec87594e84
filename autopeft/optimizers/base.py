"""The optimizer interface (ask/tell over a bound search space) and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from autopeft.errors import ConfigError, SpaceExhausted
from autopeft.plugins import Registry, subclass_of
from autopeft.space import Config, SearchSpace


class Optimizer(ABC):
    """Proposes configurations of ``space`` for objectives with the given directions.

    Contract: :meth:`ask` never returns a configuration that was already asked for (pending
    or told); :meth:`tell` reports the objective values of an asked configuration, or
    ``None`` when its trial failed. Several asks may be outstanding at once (concurrent
    trials); implementations account for pending configurations.
    """

    #: whether the constructor takes ``analytic`` and ``floors`` (see :class:`MOBO`): what a
    #: search knows of its objectives before any trial, which the search then passes
    uses_knowledge: bool = False

    def __init__(self, space: SearchSpace, directions: Sequence[str], *, seed: int = 0,
                 reference_point: Sequence[float | None] | None = None) -> None:
        for d in directions:
            if d not in ("maximize", "minimize"):
                raise ConfigError(f"direction must be 'maximize' or 'minimize', got {d!r}")
        self.space = space
        self.directions = list(directions)
        self.seed = seed
        self.reference_point = list(reference_point) if reference_point is not None else None
        #: configurations to try first, in place of random initial designs (:meth:`warm_start`)
        self.warm_configs: list[Config] = []

    def warm_start(self, configs: Sequence[Config]) -> None:
        """Try ``configs`` (another search's front: the same space, another task or model)
        before anything else, in place of as many random initial designs; call before the
        first :meth:`ask`. Those that are invalid here (another layer count) are left out."""
        self.warm_configs = list(configs)

    @abstractmethod
    def ask(self) -> Config:
        """A new canonical, valid configuration not asked for before."""

    @abstractmethod
    def tell(self, config: Config, values: Sequence[float] | None,
             metrics: Mapping[str, float] | None = None) -> None:
        """The objective values of ``config`` (user directions), or ``None`` if it failed;
        ``metrics``: other measured quantities by name, for outcome constraints."""

    def tell_stopped(self, config: Config, values: Sequence[float], metrics: Mapping[str, float] | None = None,
                     *, fidelity: float) -> None:
        """``config``'s trial was stopped early (a scheduler's rung) after ``fidelity`` (a
        fraction) of its training, with these objective values then: a low-fidelity
        observation, pessimistic in quality for a trial that would have trained on.

        By default it is told as an observation: the optimizer learns that the region ranked
        low when judged, which is why it was stopped. Optimizers that model fidelity override
        this."""
        self.tell(config, values, metrics)


def sample_unseen(space: SearchSpace, rng: np.random.Generator, asked: Collection[tuple],
                  draws: int = 1000) -> Config:
    """A uniformly drawn valid configuration whose key is not in ``asked``; after ``draws``
    draws without one the space counts as exhausted."""
    for _ in range(draws):
        config = space.sample(rng)
        if space.key(config) not in asked:
            return config
    raise SpaceExhausted(f"search space exhausted: no new configuration in {draws} random "
                     f"draws after {len(asked)} were asked")


def initial_designs(space: SearchSpace, seed: int, n: int, first: Sequence[Config] = ()) -> list[Config]:
    """``n`` distinct valid configurations that fill the space: a scrambled Sobol sequence over
    the encoding, each point read as the configuration it encodes (a dimension whose
    condition fails is left out; points that break a constraint are passed over), from a
    stream of their own, so that every optimizer given the same seed and ``n_initial``
    starts from the same designs (a comparison of optimizers then differs only in what the
    models choose after them). ``first`` (a warm start) take the place of the first designs,
    up to ``n`` of them."""
    from scipy.stats import qmc

    designs: list[Config] = []
    seen: set[tuple] = set()

    def add(config: Config) -> None:
        config = space.canonical(config)
        if len(designs) < n and space.key(config) not in seen and space.is_valid(config):
            seen.add(space.key(config))
            designs.append(config)

    for config in first:
        add(config)
    if len(designs) < n and space.encoded_width:
        sobol = qmc.Sobol(d=space.encoded_width, scramble=True, seed=np.random.default_rng([seed, 0x1D]))
        for point in sobol.random_base2(max(1, int(np.ceil(np.log2(4 * n))))):
            add(space.decode(point, raw=True))
    rng = np.random.default_rng([seed, 0x1E])
    for _ in range(n - len(designs)):  # a small or tightly constrained space: uniform draws
        try:
            config = sample_unseen(space, rng, seen)
        except SpaceExhausted:
            break
        seen.add(space.key(config))
        designs.append(config)
    return designs


#: every optimizer by name: autopeft's and those of installed packages (group ``autopeft.optimizers``)
OPTIMIZERS: Registry[type[Optimizer]] = Registry(
    "optimizers", check=subclass_of(Optimizer), error=ConfigError, key="optimizer",
    lazy={"mobo": "autopeft.optimizers.mobo", **dict.fromkeys(("random", "tpe", "nsga2", "optuna_gp"),
                                                              "autopeft.optimizers.optuna_samplers")})


def register_optimizer(name: str) -> Callable[[type[Optimizer]], type[Optimizer]]:
    """Class decorator: make an optimizer selectable by ``name`` (``--optimizer NAME``)."""
    return OPTIMIZERS.decorator(name)


def optimizer_names() -> list[str]:
    return OPTIMIZERS.names()


def make_optimizer(name: str, space: SearchSpace, directions: Sequence[str], *, seed: int = 0,
                   reference_point: Sequence[float | None] | None = None,
                   **options: Any) -> Optimizer:
    """The registered optimizer ``name``; unknown names are a :class:`ConfigError`."""
    return OPTIMIZERS.get(name)(space, directions, seed=seed, reference_point=reference_point, **options)
