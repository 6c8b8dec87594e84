"""Pareto fronts and hypervolumes with mixed directions, on top of BoTorch's own math.

BoTorch maximises everything; these helpers flip minimised objectives so that callers can
speak in the user's directions. torch and BoTorch are imported where they are used: the
commands that read a stored search (``autopeft front``, ``trials``) need only the front mask,
and importing BoTorch (with torch and, where installed, JAX) took 9 of their 14 s on a
300-trial search (benchmarks/scale.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Direction = str  # "maximize" | "minimize"


def to_maximization(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """``n x m`` values with minimised columns negated, so that larger is better everywhere."""
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    return np.asarray(values, dtype=np.float64) * signs


def pareto_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Boolean mask over the ``n x m`` rows that no other row dominates (ties all kept)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(directions))
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    # By hand, in numpy: BoTorch's is_non_dominated is the same test, but importing it costs
    # seconds (see the module's docstring). Row i is dominated if some row is >= everywhere
    # and > somewhere; O(n^2 m) memory-light in chunks of rows.
    y = to_maximization(values, directions)
    mask = np.ones(len(y), dtype=bool)
    for start in range(0, len(y), 256):
        block = y[start:start + 256, None, :]
        dominated = ((y[None, :, :] >= block).all(-1) & (y[None, :, :] > block).any(-1)).any(-1)
        mask[start:start + 256] = ~dominated
    return mask


def infer_reference(values: np.ndarray, directions: Sequence[Direction],
                    given: Sequence[float | None] | None = None) -> np.ndarray:
    """A reference point in the user's directions: ``given`` where set, else BoTorch's
    nadir-based inference over all observed values (worst value minus 10% of the range).

    All observations rather than the front alone: the reference then only moves outwards as
    trials arrive, so the hypervolume reported during a search never goes down."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(directions))
    import torch
    from botorch.utils.multi_objective.hypervolume import infer_reference_point

    values = values[~np.isnan(values).any(axis=1)]
    y = torch.from_numpy(to_maximization(values, directions))
    inferred = infer_reference_point(y).numpy() if len(y) else np.zeros(len(directions))
    inferred = to_maximization(inferred[None, :], directions)[0]  # back to user directions
    if given is not None:
        inferred = np.array([g if g is not None else v for g, v in zip(given, inferred, strict=True)])
    return inferred


def hypervolume(values: np.ndarray, directions: Sequence[Direction], reference: np.ndarray) -> float:
    """Hypervolume dominated by ``values`` (``n x m``) above ``reference``."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(directions))
    if len(values) == 0:
        return 0.0
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    y = torch.from_numpy(to_maximization(values, directions))
    ref = torch.from_numpy(to_maximization(np.asarray(reference)[None, :], directions)[0])
    better = (y > ref).all(dim=-1)
    if not better.any():
        return 0.0
    y = y[better]
    return float(Hypervolume(ref_point=ref).compute(y[is_non_dominated(y)]))


def hypervolume_curve(values: np.ndarray, directions: Sequence[Direction],
                      reference: np.ndarray) -> list[float]:
    """Hypervolume of the first k rows, for k = 1..n (NaN rows, failed trials, count as nothing)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(directions))
    curve = []
    for k in range(1, len(values) + 1):
        seen = values[:k]
        curve.append(hypervolume(seen[~np.isnan(seen).any(axis=1)], directions, reference))
    return curve
