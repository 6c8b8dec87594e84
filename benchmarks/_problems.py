"""Test problems for benchmarks/optimizers.py: BoTorch's multi-objective functions and a
synthetic problem shaped like a PEFT search space, all posed as define-by-run Optuna
objectives so that every optimizer (autopeft's MOBO through its Optuna face included) sees
the same trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import torch
from botorch.test_functions.multi_objective import DTLZ2, ZDT2, BraninCurrin, MultiObjectiveTestProblem

from autopeft.pareto import hypervolume


@dataclass(frozen=True)
class Problem:
    """A multi-objective problem with a known best hypervolume.

    ``evaluate`` suggests its parameters on an Optuna trial and returns the objective values
    in ``directions``; ``reference`` is the hypervolume reference in the same directions.
    """

    name: str
    directions: list[str]
    reference: np.ndarray
    max_hv: float
    evaluate: Callable[[optuna.Trial], list[float]]

    def hv_fraction(self, values: np.ndarray) -> float:
        """Hypervolume of the ``n x m`` values as a fraction of the true front's."""
        return hypervolume(values, self.directions, self.reference) / self.max_hv


def _botorch(name: str, problem: MultiObjectiveTestProblem) -> Problem:
    """A BoTorch problem (minimisation, ``negate=False``) with its own reference point."""
    low, high = problem.bounds.tolist()

    def evaluate(trial: optuna.Trial) -> list[float]:
        x = [trial.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(zip(low, high))]
        return problem(torch.tensor([x], dtype=torch.float64))[0].tolist()

    return Problem(name, ["minimize"] * problem.num_objectives, problem.ref_point.numpy().copy(),
                   float(problem.max_hv), evaluate)


PEFT_LAYERS = 14
PEFT_MAX_LOG2_RANK = 6
_BEST_LR = 3e-4


def peft_values(kept: list[bool], log2_rank: int, lr: float) -> list[float]:
    """Quality (max) and cost (min, % of the largest configuration) of a PEFT-like config.

    Quality saturates in the depth-weighted share of kept layers (later layers matter more),
    grows with the adapter size with diminishing returns and falls off away from the best
    learning rate; cost is kept layers times rank."""
    weights = np.arange(1, PEFT_LAYERS + 1, dtype=np.float64)
    coverage = float(weights[np.asarray(kept, dtype=bool)].sum() / weights.sum())
    structure = (1 - math.exp(-3 * coverage)) / (1 - math.exp(-3))
    size = 0.55 + 0.45 * math.sqrt(log2_rank / PEFT_MAX_LOG2_RANK)
    lr_fit = math.exp(-0.5 * ((math.log10(lr) - math.log10(_BEST_LR)) / 0.5) ** 2)
    quality = structure * size * (0.4 + 0.6 * lr_fit)
    cost = 100.0 * sum(kept) * 2 ** log2_rank / (PEFT_LAYERS * 2 ** PEFT_MAX_LOG2_RANK)
    return [quality, cost]


def _peft_problem() -> Problem:
    directions = ["maximize", "minimize"]
    # Quality at least 0.5 for at most 30% of the largest adapter: the region a user would
    # choose from. Against (0, 100) random search already fills 85% of the true front.
    reference = np.array([0.5, 30.0])

    def evaluate(trial: optuna.Trial) -> list[float]:
        kept = [trial.suggest_categorical(f"layer{i}", [False, True]) for i in range(PEFT_LAYERS)]
        log2_rank = trial.suggest_int("log2_rank", 0, PEFT_MAX_LOG2_RANK)
        lr = trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
        return peft_values(kept, log2_rank, lr)

    # The true front: quality rises with coverage at fixed cost, so for n kept layers the best
    # set is the n deepest; with the best learning rate that leaves layers x ranks to enumerate.
    front = [peft_values([i >= PEFT_LAYERS - n for i in range(PEFT_LAYERS)], r, _BEST_LR)
             for n in range(1, PEFT_LAYERS + 1) for r in range(PEFT_MAX_LOG2_RANK + 1)]
    max_hv = hypervolume(np.array(front), directions, reference)
    return Problem("peft_mixed", directions, reference, max_hv, evaluate)


UNSEEN_LAYERS = 10
UNSEEN_SIZES = (1, 2, 4, 8, 16, 32, 64)
_UNSEEN_LR = 2e-3


def unseen_values(kept: list[bool], size: int, lr: float) -> list[float]:
    """A mixed problem the MOBO defaults were never tuned on: middle layers matter most, a
    larger size helps less the more layers are kept, a narrower learning-rate optimum; cost
    is kept layers times size (% of the largest)."""
    x = np.arange(UNSEEN_LAYERS)
    weights = np.exp(-0.5 * ((x - (UNSEEN_LAYERS - 1) / 2) / 2.0) ** 2)
    coverage = float(weights[np.asarray(kept, dtype=bool)].sum() / weights.sum())
    per_layer = math.log2(size) / math.log2(UNSEEN_SIZES[-1])
    capacity = 1 - math.exp(-4 * coverage * (0.3 + 0.7 * per_layer ** (0.5 + coverage)))
    lr_fit = math.exp(-0.5 * ((math.log10(lr) - math.log10(_UNSEEN_LR)) / 0.3) ** 2)
    quality = capacity * (0.3 + 0.7 * lr_fit)
    cost = 100.0 * sum(kept) * size / (UNSEEN_LAYERS * UNSEEN_SIZES[-1])
    return [quality, cost]


def _unseen_problem() -> Problem:
    directions = ["maximize", "minimize"]
    reference = np.array([0.4, 40.0])

    def evaluate(trial: optuna.Trial) -> list[float]:
        kept = [trial.suggest_categorical(f"layer{i}", [False, True]) for i in range(UNSEEN_LAYERS)]
        size = trial.suggest_categorical("size", list(UNSEEN_SIZES))
        lr = trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
        return unseen_values(kept, size, lr)

    # Every layer subset and size at the best learning rate: 1024 x 7 points hold the front.
    front = [unseen_values([bool(m >> i & 1) for i in range(UNSEEN_LAYERS)], s, _UNSEEN_LR)
             for m in range(1, 2 ** UNSEEN_LAYERS) for s in UNSEEN_SIZES]
    max_hv = hypervolume(np.array(front), directions, reference)
    return Problem("mixed_unseen", directions, reference, max_hv, evaluate)


def problems() -> dict[str, Callable[[], Problem]]:
    """Problem factories by name."""
    return {
        "branin_currin": lambda: _botorch("branin_currin", BraninCurrin()),
        "zdt2": lambda: _botorch("zdt2", ZDT2(dim=6)),
        "dtlz2": lambda: _botorch("dtlz2", DTLZ2(dim=6, num_objectives=2)),
        "peft_mixed": _peft_problem,
        "mixed_unseen": _unseen_problem,
    }
