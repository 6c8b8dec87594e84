"""What MOBO knows without a model: objectives computed exactly from a configuration (its
trainable share), and the floor below which a trial learned nothing (the majority class).

An analytic objective never gets a surrogate: BoTorch's acquisition sees it through a
multi-output MC objective that reads the modelled outcomes from the posterior samples and the
analytic ones from the candidates themselves, decoded back into configurations (BoTorch's
deterministic models cannot join a model list under a QMC sampler, so the MC objective is
where exact values enter).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from botorch.models.transforms.input import InputTransform
from torch import Tensor

from autopeft.space import Config, SearchSpace

#: an analytic objective: a configuration's scope (parameter values and derived counts) -> value
Analytic = Callable[[dict[str, Any]], float]


class ExactValues:
    """Exact values of the analytic objectives, cached by configuration.

    Args:
        space: The bound space (its :meth:`~SearchSpace.scope` feeds the functions).
        analytic: Per objective, its analytic function or ``None`` (modelled).
    """

    def __init__(self, space: SearchSpace, analytic: Sequence[Analytic | None]) -> None:
        self.space = space
        self.analytic = list(analytic)
        self._cache: dict[tuple, list[float | None]] = {}
        self._rows: dict[bytes, list[float | None]] = {}

    def of(self, config: Config) -> list[float | None]:
        """Each objective's exact value for ``config`` (``None``: not analytic, or unknown for
        this configuration, e.g. a strategy that decides its parameter count in training)."""
        key = self.space.key(config)
        if key not in self._cache:
            scope = self.space.scope(config)
            out: list[float | None] = []
            for f in self.analytic:
                try:
                    out.append(None if f is None else float(f(scope)))
                except KeyError:
                    out.append(None)
            self._cache[key] = out
        return self._cache[key]

    def known(self, configs: Sequence[Config]) -> list[int]:
        """The objectives exact for every one of ``configs``: those the search need not model."""
        rows = [self.of(c) for c in configs]
        return [i for i, f in enumerate(self.analytic)
                if f is not None and all(row[i] is not None for row in rows)]

    def at(self, X: Tensor, i: int) -> Tensor:
        """Objective ``i`` at encoded points ``X`` (``... x d``): each row read back as a
        configuration (:meth:`SearchSpace.decode`); NaN where unknown."""
        flat = X.detach().reshape(-1, X.shape[-1]).cpu().numpy()
        values = []
        for row in flat:
            key = row.tobytes()
            if key not in self._rows:
                self._rows[key] = self.of(self.space.canonical(self.space.decode(row)))
            value = self._rows[key][i]
            values.append(np.nan if value is None else value)
        return torch.tensor(values, dtype=X.dtype).reshape(X.shape[:-1])


class MixedObjective:
    """BoTorch MC objective: objective ``j`` (maximised, possibly warped) from model output
    ``columns[j]`` of the posterior samples, or exactly from the candidates where
    ``columns[j]`` is ``None``.

    Args:
        exact: The analytic values.
        columns: Per objective, its model output column, or ``None`` for an analytic one.
        transforms: Per objective, the map from its user-direction value to the model's
            scale (sign flip for minimised objectives, then the copula warp if any).
    """

    def __init__(self, exact: ExactValues, columns: Sequence[int | None],
                 transforms: Sequence[Callable[[np.ndarray], np.ndarray]]) -> None:
        self.exact, self.columns, self.transforms = exact, list(columns), list(transforms)

    def __call__(self, samples: Tensor, X: Tensor | None = None) -> Tensor:
        outputs = []
        for j, column in enumerate(self.columns):
            if column is not None:
                outputs.append(samples[..., column])
                continue
            raw = self.exact.at(X, j).numpy()
            value = torch.as_tensor(self.transforms[j](raw), dtype=samples.dtype)
            outputs.append(value.expand(samples.shape[:-1]))
        return torch.stack(outputs, dim=-1)


class ExactInputs(InputTransform):
    """BoTorch input transform that appends the exact values of analytic objectives to the
    encoded configuration, each scaled to [0, 1] over the space's range (on a log scale where
    the range is positive, as parameter counts span decades).

    Why: whether a trial learns at all depends on the learning rate against the adapter's size
    (on the demo's table, at 1e-3-2e-3, 83% of adapters under 0.1% trainable end at the
    majority class, none above 1%). The size is a product of rank, modules and layers that a
    GP on the encoding must rediscover; as one input of its own the models see it directly.
    No library transform computes a feature from a decoded configuration, hence this one.

    Args:
        exact: The analytic values.
        objectives: The analytic objectives to append, in order.
        bounds: Per appended objective, its smallest and largest value over the space.
    """

    def __init__(self, exact: ExactValues, objectives: Sequence[int],
                 bounds: Sequence[tuple[float, float]]) -> None:
        super().__init__()
        self.exact, self.objectives = exact, list(objectives)
        self.scales = [_Scale(lo, hi) for lo, hi in bounds]
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X: Tensor) -> Tensor:
        # A candidate whose value is unknown (a strategy that decides its size in training)
        # sits mid-range: no claim either way.
        extra = [torch.nan_to_num(scale(self.exact.at(X, j)), nan=0.5).to(X)
                 for j, scale in zip(self.objectives, self.scales)]
        return torch.cat([X, torch.stack(extra, dim=-1)], dim=-1)


class _Scale:
    """``[lo, hi] -> [0, 1]``, logarithmic where ``lo > 0``."""

    def __init__(self, lo: float, hi: float) -> None:
        self.log = lo > 0
        self.lo, self.hi = (math.log(lo), math.log(hi)) if self.log else (lo, hi)
        self.width = max(self.hi - self.lo, 1e-12)

    def __call__(self, values: Tensor) -> Tensor:
        values = values.clamp_min(1e-300).log() if self.log else values
        return (values - self.lo) / self.width


def learned(values: np.ndarray, floors: Sequence[float | None], directions: Sequence[str]) -> np.ndarray:
    """Rows (``n x m`` values in the user's directions) better than every objective's floor: the
    trials that learned something (a classifier above its majority class)."""
    keep = np.ones(len(values), dtype=bool)
    for j, (floor, direction) in enumerate(zip(floors, directions)):
        if floor is not None:
            keep &= values[:, j] > floor if direction == "maximize" else values[:, j] < floor
    return keep
