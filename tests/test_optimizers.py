"""The optimizers' ask/tell contract on a synthetic two-objective LoRA problem."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from autopeft.errors import ConfigError, SpaceError
from autopeft.optimizers import make_optimizer, optimizer_names
from autopeft.pareto import hypervolume
from autopeft.space import Bool, Config, Scalar, SpaceSpec, load_space

LAYERS = 4
DIRECTIONS = ["maximize", "minimize"]
# The region of interest (quality above 0.5, cost below 100): the hypervolume there separates
# search from luck better than one above (0, largest cost), which random search nearly fills.
REFERENCE = np.array([0.5, 100.0])
NAMES = ["mobo", "nsga2", "optuna_gp", "random", "tpe"]
# Smaller candidate sets and MC sample counts keep the MOBO runs to ~1 s per ask.
OPTIONS = {"mobo": {"n_initial": 6, "n_candidates": 300, "mc_samples": 32}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def space():
    return load_space("lora").bind(LAYERS)


def objective(config: Config) -> list[float]:
    """Quality (max): later layers, a learning rate near 1e-3, larger ranks and more modules
    help. Cost (min): summed rank of kept layers times the number of target modules."""
    kept = [i for i in range(LAYERS) if config[f"layers.{i}"]]
    modules = sum(bool(v) for k, v in config.items() if k.startswith("target_modules."))
    quality = 0.5 * sum(i + 1 for i in kept) / sum(range(1, LAYERS + 1))
    quality += 0.3 * (1 - abs(math.log10(config["learning_rate"]) + 3))
    quality += 0.1 * sum(math.log2(config[f"rank.{i}"]) for i in kept) / (4 * LAYERS)
    quality += 0.1 * modules / 6
    return [quality, float(sum(config[f"rank.{i}"] for i in kept) * modules)]


def run(space, name: str, seed: int, n: int, fail_every: int = 0, batch: int = 4):
    """Ask ``batch`` at a time, then tell them; every ``fail_every``-th trial fails."""
    opt = make_optimizer(name, space, DIRECTIONS, seed=seed, reference_point=list(REFERENCE),
                         **OPTIONS.get(name, {}))
    configs, values, sources = [], [], []
    while len(configs) < n:
        asked = [opt.ask() for _ in range(min(batch, n - len(configs)))]
        sources.append(getattr(opt, "last_ask_source", None))
        for config in asked:
            configs.append(config)
            failed = fail_every and len(configs) % fail_every == 0
            values.append(None if failed else objective(config))
            opt.tell(config, values[-1])
    return configs, values, sources


_RUNS: dict[tuple, tuple] = {}


def cached_run(space, name: str, seed: int):
    if (name, seed) not in _RUNS:
        _RUNS[name, seed] = run(space, name, seed, n=25, fail_every=6)
    return _RUNS[name, seed]


def test_names():
    assert set(NAMES) <= set(optimizer_names())


@pytest.mark.parametrize("name", NAMES)
def test_asks_are_valid_and_new(space, name):
    configs, values, _ = cached_run(space, name, 0)
    assert all(space.is_valid(c) and space.canonical(c) == c for c in configs)
    # Failed configurations (every 6th) are among those never asked for again.
    assert len({space.key(c) for c in configs}) == len(configs)
    assert sum(v is None for v in values) == 4


@pytest.mark.parametrize("name", NAMES)
def test_seeded(space, name):
    first = run(space, name, 3, n=10)[0]
    assert run(space, name, 3, n=10)[0] == first
    assert run(space, name, 4, n=4)[0] != first[:4]


def test_mobo_uses_the_model_and_beats_random(space):
    _, values, sources = cached_run(space, "mobo", 0)
    assert sources[0] == "initial" and set(sources[2:]) == {"model"}

    def hv(vals):
        return hypervolume(np.array([v for v in vals if v is not None]), DIRECTIONS, REFERENCE)

    random_hvs = [hv(cached_run(space, "random", seed)[1]) for seed in range(3)]
    assert hv(values) >= statistics.median(random_hvs)


def test_nan_is_a_failure_and_constant_objectives_ask_randomly(space, recwarn):
    opt = make_optimizer("mobo", space, DIRECTIONS, n_initial=2, n_candidates=50, mc_samples=8)
    nan = opt.ask()
    opt.tell(nan, [float("nan"), 1.0])
    for i in range(4):
        config = opt.ask()
        assert space.key(config) != space.key(nan)
        opt.tell(config, [1.0, float(i)])  # quality constant (every trial at majority class)
    assert opt.last_ask_source == "random"
    assert len(opt._observed) == 4
    opt.tell(opt.ask(), [2.0, 0.5])  # once it varies, the model takes over
    opt.ask()
    assert opt.last_ask_source == "model"
    assert not [w for w in recwarn if "not standardized" in str(w.message)]


def test_mobo_without_successes_samples_randomly(space):
    opt = make_optimizer("mobo", space, DIRECTIONS, n_initial=1)
    for _ in range(3):
        opt.tell(opt.ask(), None)
    assert opt.last_ask_source == "random"


@pytest.mark.parametrize("name", NAMES)
def test_exhausted_space(name):
    flag = Scalar("flag", dimension=Bool(""))
    tiny = SpaceSpec(adapter="lora", parameters={"flag": flag}).bind(1)
    opt = make_optimizer(name, tiny, DIRECTIONS)
    seen = [opt.ask(), opt.ask()]
    assert {c["flag"] for c in seen} == {False, True}
    with pytest.raises(SpaceError, match="exhausted"):
        opt.ask()


@pytest.mark.parametrize("options", [{"surrogate": "forest"}, {"n_initial": -1},
                                     {"n_candidates": 0}, {"reference_point": [0.0]}])
def test_mobo_bad_options(space, options):
    with pytest.raises(ConfigError):
        make_optimizer("mobo", space, DIRECTIONS, **options)


def test_bad_names_and_options(space):
    with pytest.raises(ConfigError, match="unknown optimizer"):
        make_optimizer("nope", space, DIRECTIONS)
    with pytest.raises(ConfigError):
        make_optimizer("nsga2", space, DIRECTIONS, populaton_size=4)
    with pytest.raises(ConfigError):
        make_optimizer("random", space, ["maximise", "minimize"])


def test_tell_without_ask_is_recorded(space):
    config = space.sample(np.random.default_rng(7))
    for name in NAMES:
        opt = make_optimizer(name, space, DIRECTIONS, **OPTIONS.get(name, {}))
        opt.tell(config, objective(config))
        assert all(space.key(opt.ask()) != space.key(config) for _ in range(8))


def test_every_optimizer_starts_from_the_same_designs():
    # A comparison of optimizers should differ only in what their models choose afterwards.
    space = load_space("lora").bind(4)
    first = {}
    for name in ("mobo", "tpe", "random", "nsga2", "optuna_gp"):
        opt = make_optimizer(name, space, ["maximize", "minimize"], seed=3, n_initial=4)
        asks = []
        for _ in range(4):
            config = opt.ask()
            asks.append(space.key(config))
            x = space.encode(config)
            opt.tell(config, [float(x.mean()), float(x.sum())])
        first[name] = asks
    assert first["mobo"] == first["tpe"] == first["random"] == first["nsga2"] == first["optuna_gp"]
    assert len(set(first["mobo"])) == 4


def test_a_stuck_sampler_falls_back_at_once(space):
    """A sampler that proposes again what it was just refused (a model-based sampler whose best
    point is already evaluated) is not asked 200 times: the second refusal of the same
    configuration hands the ask to the uniform fallback."""
    from optuna.samplers import BaseSampler

    from autopeft.optimizers.optuna_samplers import OptunaOptimizer

    class Stubborn(BaseSampler):  # always the first choice / the lower bound
        calls = 0

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            if name == "learning_rate":
                Stubborn.calls += 1
            choices = getattr(distribution, "choices", None)
            return choices[0] if choices is not None else distribution.low

    class StubbornOptimizer(OptunaOptimizer):
        def make_sampler(self, seed, **options):
            return Stubborn()

    opt = StubbornOptimizer(space, DIRECTIONS, seed=0)
    first = opt.ask()
    opt.tell(first, [0.5, 1.0])
    Stubborn.calls, before = 0, opt.fallbacks
    second = opt.ask()
    assert space.key(second) != space.key(first) and space.is_valid(second)
    assert Stubborn.calls == 2 and opt.fallbacks == before + 1
