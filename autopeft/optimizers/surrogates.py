"""Surrogate models for MOBO: one model per output, and the copula warp of the outputs.

A surrogate fit maps ``n x d`` inputs and ``n x 1`` targets (larger is better) to a fitted
single-output BoTorch model; MOBO stacks one per objective (and per constrained metric) in
a ``ModelListGP``, so outputs may be observed on different rows.

[Eriksson2021] D. Eriksson, M. Jankowiak. High-Dimensional Bayesian Optimization with Sparse
    Axis-Aligned Subspaces. UAI 2021.
[Zhou2024] H. Zhou, X. Wan, I. Vulic, A. Korhonen. AutoPEFT: Automatic Configuration Search
    for Parameter-Efficient Fine-Tuning. TACL 2024.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from scipy.stats import norm, rankdata
from torch import Tensor

from autopeft.errors import ConfigError

# L-BFGS iterations per GP fit. Full convergence on noise-free data can take ~1000 (seconds
# at 100 points); after 200 the marginal log likelihood was within 4% of converged.
_FIT_MAXITER = 200

#: the copula's warped values are clamped to [_TAIL, -_TAIL] (the 1e-4 quantile, as AutoPEFT's code)
_TAIL = float(norm.ppf(1e-4))

SurrogateFit = Callable[..., Model]
_SURROGATES: dict[str, SurrogateFit] = {}


def register_surrogate(name: str) -> Callable[[SurrogateFit], SurrogateFit]:
    """Decorator: make a surrogate fit ``fit(X, y, *, seed, **settings)`` selectable as
    ``MOBO(..., surrogate=name)``."""

    def decorate(fit: SurrogateFit) -> SurrogateFit:
        _SURROGATES[name] = fit
        return fit

    return decorate


def surrogate_names() -> list[str]:
    return sorted(_SURROGATES)


def get_surrogate(name: str) -> SurrogateFit:
    if name not in _SURROGATES:
        raise ConfigError(f"unknown surrogate '{name}'; choose one of {surrogate_names()}",
                          key="surrogate")
    return _SURROGATES[name]


#: the parts of a GP's state that are hyperparameters (not data or its transforms)
_HYPERPARAMETERS = ("covar_module.", "likelihood.", "mean_module.")


@register_surrogate("gp")
def fit_gp(X: Tensor, y: Tensor, *, seed: int, init: dict[str, Tensor] | None = None,
           input_transform: InputTransform | None = None) -> Model:
    """A GP with BoTorch 0.18's default kernel and priors (an RBF kernel whose lengthscale
    priors scale with the dimension, Hvarfner et al. 2024), fitted by maximum likelihood.

    Args:
        X: ``n x d`` encoded configurations in [0, 1]^d (double).
        y: ``n x 1`` targets.
        seed: Unused: the fit is deterministic given the caller's torch seed.
        init: Hyperparameters to start from (:func:`hyperparameters` of the last fit on the
            same outputs): with a point more, the optimum moves little, and L-BFGS gets there
            in a fraction of the iterations a start from the priors takes.
        input_transform: Features computed from ``X`` (:class:`~autopeft.optimizers.known.ExactInputs`).
    """
    gp = SingleTaskGP(X, y, outcome_transform=Standardize(m=1), input_transform=input_transform)
    if init:
        gp.load_state_dict(init, strict=False)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp),
                     optimizer_kwargs={"options": {"maxiter": _FIT_MAXITER}})
    return gp


def hyperparameters(model: Model) -> dict[str, Tensor]:
    """A fitted GP's hyperparameters, to start its next fit from (``fit_gp(init=...)``)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(_HYPERPARAMETERS)}


@register_surrogate("saas")
def fit_saas(X: Tensor, y: Tensor, *, seed: int, warmup: int = 128, samples: int = 64,
             thinning: int = 4, input_transform: InputTransform | None = None) -> Model:
    """A fully Bayesian GP with the SAAS prior, sampled with NUTS [Eriksson2021] by one
    compiled sampler reused across fits (:mod:`autopeft.optimizers.saas`).

    The defaults are AutoPEFT's settings [Zhou2024] (``samples / thinning`` = 16 posterior
    draws); the model is a batch of GPs, one per draw, that acquisition functions average.

    Args:
        X: ``n x d`` encoded configurations in [0, 1]^d (double).
        y: ``n x 1`` targets.
        seed: Seeds NUTS (JAX's PRNG).
        warmup: NUTS warm-up steps.
        samples: NUTS samples kept before thinning.
        thinning: Keep every ``thinning``-th sample.
        input_transform: Features computed from ``X`` (as :func:`fit_gp`).
    """
    # Imported here: it loads JAX, which costs seconds and warns about every fork Ray makes.
    from autopeft.optimizers.saas import fit_saas_nuts

    return fit_saas_nuts(X, y, seed=seed, warmup=warmup, samples=samples, thinning=thinning,
                         input_transform=input_transform)


class CopulaWarp:
    """Empirical-CDF then standard-normal-quantile warp of one output [Zhou2024].

    Objectives such as accuracy pile up (many runs at the majority-class score, a few far
    better); ranks spread them evenly, so a stationary GP with Gaussian noise fits them.
    The map is monotone, so the Pareto order is kept, and it is extended linearly beyond the
    observed range so that a reference point or bound outside it maps consistently; the
    result is clamped to the normal quantiles of 1e-4 and 1 - 1e-4, as the authors clip the
    warped values, so that a reference far from the data (a slope from two tied-up values
    can reach -11 for an accuracy of 0.5 when the data span -0.8..1.7) lands near it.

    Args:
        values: ``n`` observed values (at least two distinct).
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        ranks = rankdata(values, method="average")  # ties share one warped value
        z = norm.ppf((ranks - 0.5) / len(values))
        self._x, first = np.unique(values, return_index=True)
        self._z = z[first]
        if len(self._x) < 2:
            raise ValueError(f"got {len(self._x)} distinct values, expected at least 2")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The warped ``values`` (any shape)."""
        v = np.asarray(values, dtype=np.float64)
        x, z = self._x, self._z
        low = z[0] + (v - x[0]) * (z[1] - z[0]) / (x[1] - x[0])
        high = z[-1] + (v - x[-1]) * (z[-1] - z[-2]) / (x[-1] - x[-2])
        warped = np.where(v < x[0], low, np.where(v > x[-1], high, np.interp(v, x, z)))
        return np.clip(warped, _TAIL, -_TAIL)


def quiet_fit(fit: SurrogateFit, X: Tensor, y: Tensor, **kwargs: Any) -> Model:
    """``fit(X, y, **kwargs)`` without BoTorch's notes on unscaled data: the encoding is in
    [0, 1] by construction and the outcome transform standardises the targets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputDataWarning)
        return fit(X, y, **kwargs)
