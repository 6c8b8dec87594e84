"""autopeft's MOBO in a plain Optuna study (its Optuna-sampler face)."""

from __future__ import annotations

import math

import optuna
from optuna.testing import pytest_samplers
import pytest

from autopeft.optimizers import MOBOSampler
from autopeft.optimizers.sampler import to_search_space


pytestmark = pytest.mark.usefixtures("one_torch_thread")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 1e-3, 1.0, log=True)
    n = trial.suggest_int("n", 1, 8)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    flag = trial.suggest_categorical("flag", [False, True])
    quality = -abs(math.log10(x) + 1) + 0.1 * n + (0.2 if kind == "b" else 0.0) + 0.1 * flag
    return quality, n * (1 + flag)


def study(seed: int, n: int = 10, **options) -> optuna.Study:
    s = optuna.create_study(directions=["maximize", "minimize"],
                            sampler=MOBOSampler(seed=seed, n_candidates=200, mc_samples=16, **options))
    s.optimize(objective, n_trials=n)
    return s


def test_defaults_work_in_a_plain_study():
    s = optuna.create_study(directions=["maximize", "minimize"], sampler=MOBOSampler(seed=0))
    s.optimize(objective, n_trials=8)
    assert s.sampler.last_ask_source == "model"
    assert len({tuple(sorted(t.params.items())) for t in s.trials}) == 8
    assert s.best_trials


def test_seeded():
    first = [t.params for t in study(3).trials]
    assert [t.params for t in study(3).trials] == first
    assert [t.params for t in study(4, n=3).trials] != first[:3]


def test_running_trials_are_pending():
    s = study(0, n=8)
    running = [s.ask() for _ in range(3)]  # three workers at once
    for trial in running:
        objective(trial)  # suggests the parameters; the trials stay running
    assert len({tuple(sorted(t.params.items())) for t in running}) == 3


def test_distributions_map_onto_dimensions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    space = to_search_space({"lr": FloatDistribution(1e-5, 1e-1, log=True),
                             "r": IntDistribution(1, 64, log=True),
                             "k": CategoricalDistribution(["x", "y", "z"]),
                             "s": FloatDistribution(0.0, 1.0, step=0.25)})
    widths = {d.name: d.width for d in space.dimensions}
    assert widths == {"k": 3, "lr": 1, "r": 1, "s": 1}


def test_single_objective_study():
    s = optuna.create_study(direction="maximize",
                            sampler=MOBOSampler(seed=0, n_candidates=200, mc_samples=16))
    s.optimize(lambda t: objective(t)[0], n_trials=8)
    assert s.sampler.last_ask_source == "model"


@pytest.mark.parametrize("objective", [
    lambda t: (float(len(t.suggest_categorical("c", ["a", "bb", "ccc"]))), 0.0),
    lambda t: ((t.suggest_int("y", 0, 1) if t.suggest_categorical("x", [True, False])
                else t.suggest_int("z", 0, 1)) * 1.0, 0.0),
])
def test_more_trials_than_configurations(objective):
    # Before: "search space exhausted" failed every trial past the number of configurations.
    s = optuna.create_study(directions=["maximize", "minimize"],
                            sampler=MOBOSampler(seed=0, n_candidates=50, mc_samples=8))
    s.optimize(objective, n_trials=8)
    assert [t.state for t in s.trials] == [optuna.trial.TrialState.COMPLETE] * 8


class TestBasicConformance(pytest_samplers.BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: MOBOSampler(seed=0, n_candidates=50, mc_samples=8)


class TestMultiObjectiveConformance(pytest_samplers.MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: MOBOSampler(seed=0, n_candidates=50, mc_samples=8)
