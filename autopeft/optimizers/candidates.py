"""Maximising MOBO's acquisition over a discrete, conditional space: a candidate set (local
moves around the Pareto set and uniform samples), an iterated local search from its best
members, and a gradient polish of the float coordinates of the winners.

BoTorch's discrete optimisers (``optimize_acqf_discrete``, ``..._local_search``) work on
fixed lattices; a space whose dimensions switch on and off with others (a rank only where
its layer is kept) and with constraints over them needs its own neighbourhood, so the local
search is written here over :meth:`SearchSpace.neighbours`, as AutoPEFT's is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.optim import optimize_acqf
from torch import Tensor

from autopeft.space import Config, Float, SearchSpace

_POLISHED = 3  # best candidates whose float coordinates are refined
_POLISH_ITERS = 50  # L-BFGS-B iterations per refinement


def candidate_set(space: SearchSpace, front: Sequence[Config], seen: set[tuple], size: int,
                  rng: np.random.Generator) -> list[Config]:
    """Up to ``size`` configurations not in ``seen``: up to half within two local-search
    steps of ``front`` (the current Pareto set), the rest uniform samples."""
    seen = set(seen)
    out: list[Config] = []

    def add(config: Config) -> None:
        key = space.key(config)
        if key not in seen:
            seen.add(key)
            out.append(config)

    local_budget = size // 2
    ring = [n for c in front for n in space.neighbours(c, rng)]
    ring = [ring[i] for i in rng.permutation(len(ring))]
    for config in ring:  # one step (already seen ones are still stepping stones below)
        if len(out) >= local_budget:
            break
        add(config)
    for config in ring:  # two steps
        if len(out) >= local_budget:
            break
        for neighbour in space.neighbours(config, rng):
            add(neighbour)
    out = out[:local_budget]
    for _ in range(2 * size):
        if len(out) >= size:
            break
        add(space.sample(rng))
    return out


def local_search(space: SearchSpace, score: Callable[[list[Config]], Tensor], start: list[Config],
                 seen: set[tuple], budget: int, rng: np.random.Generator, restarts: int = 4,
                 kick: int = 3, keep: Callable[[Config], bool] = lambda config: True) -> tuple[list[Config], Tensor]:
    """Iterated local search for high scores, from the best ``restarts`` of ``start``.

    The climbs run side by side: each round scores the unseen neighbours of every climber in
    one call of ``score`` (an acquisition costs about as much for 20 candidates as for 200),
    and each climber moves to its best neighbour while that improves. When every climb has
    stopped, ``restarts`` new ones start from kicks (``kick`` random neighbour steps) of the
    best point found, until ``budget`` more configurations have been scored; only those that
    ``keep`` accepts are scored. Returns every configuration scored (``start`` first) and the
    scores, shape ``N``.
    """
    configs = list(start)
    if not configs:
        return [], torch.empty(0)
    scores = [torch.nan_to_num(score(configs), nan=-math.inf)]
    known = {space.key(c) for c in configs} | set(seen)
    left = budget

    def scored(batch: list[Config]) -> Tensor:
        nonlocal left
        values = torch.nan_to_num(score(batch), nan=-math.inf)
        left -= len(batch)
        configs.extend(batch)
        scores.append(values)
        return values

    def fresh(candidates: list[Config]) -> list[Config]:
        out = []
        for c in candidates:
            if space.key(c) not in known:
                known.add(space.key(c))
                if keep(c):
                    out.append(c)
        return out

    first = scores[0]
    climbers = [(configs[i], float(first[i])) for i in first.argsort(descending=True)[:restarts].tolist()]
    while left > 0:
        while climbers and left > 0:
            moves = [fresh(space.neighbours(current, rng)) for current, _ in climbers]
            flat = [m for group in moves for m in group][:left]
            if not flat:
                break
            values = scored(flat)
            moved, offset = [], 0
            for (current, value), group in zip(climbers, moves):
                group_values = values[offset:offset + len(group)]
                offset += len(group)
                if len(group_values) and float(group_values.max()) > value:
                    i = int(group_values.argmax())
                    moved.append((group[i], float(group_values[i])))
            climbers = moved
        if left <= 0:
            break
        everything = torch.cat(scores)
        best = configs[int(everything.argmax())]
        kicked = []
        for _ in range(restarts):
            current = best
            for _ in range(kick):
                steps = space.neighbours(current, rng)
                if not steps:
                    break
                current = steps[int(rng.integers(len(steps)))]
            kicked.append(current)
        kicked = fresh(kicked)[:left]
        if not kicked:  # nothing new within reach of the best point
            break
        climbers = list(zip(kicked, scored(kicked).tolist()))
    return configs, torch.cat(scores)


def float_columns(space: SearchSpace) -> list[tuple[int, Float]]:
    """``(encoded column, dimension)`` of every float dimension."""
    out, col = [], 0
    for dim in space.dimensions:
        if isinstance(dim, Float):
            out.append((col, dim))
        col += dim.width
    return out


def polish(space: SearchSpace, acqf: AcquisitionFunction, candidates: list[Config],
           scores: Tensor, seen: set[tuple]) -> Config:
    """The best of ``candidates`` (scored ``scores``, shape ``N``) after moving the active
    float coordinates of the top few by L-BFGS-B on the acquisition, all other coordinates
    held. Discrete coordinates are never rounded from a continuous optimum."""
    best = int(scores.argmax())
    floats = float_columns(space)
    if not floats:
        return candidates[best]
    best_config, best_value = candidates[best], float(scores[best])
    for index in scores.argsort(descending=True)[:_POLISHED].tolist():
        config = candidates[index]
        active = [(col, dim) for col, dim in floats if dim.name in config]
        if not active:
            continue
        x = torch.from_numpy(space.encode(config))
        free = {col for col, _ in active}
        fixed = {i: float(x[i]) for i in range(len(x)) if i not in free}
        bounds = torch.stack([torch.zeros_like(x), torch.ones_like(x)])
        with warnings.catch_warnings():
            # An L-BFGS-B run that stops early still returns a point no worse than its start,
            # and the candidate is kept unless the polished point scores higher.
            warnings.simplefilter("ignore")
            point, value = optimize_acqf(acqf, bounds=bounds, q=1, num_restarts=1,
                                         batch_initial_conditions=x.view(1, 1, -1),
                                         fixed_features=fixed, options={"maxiter": _POLISH_ITERS},
                                         retry_on_optimization_warning=False)
        value = float(value)
        if not math.isfinite(value) or value <= best_value:
            continue
        decoded = space.decode(point.view(-1).numpy())
        moved = {**config, **{dim.name: decoded[dim.name] for _, dim in active}}
        if space.key(moved) not in seen:
            best_config, best_value = moved, value
    return best_config
