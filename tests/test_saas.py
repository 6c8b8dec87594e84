"""The SAAS surrogate's own NUTS model: the same density as BoTorch's, padding that changes
nothing, and a fit that predicts."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import Standardize
from numpyro.infer.util import log_density

from autopeft.optimizers import saas
from autopeft.optimizers.saas import fit_saas_nuts, padded, saas_model


def data(n, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.double)
    return X, torch.sin(3 * X[:, :1]) + X[:, 1:2] ** 2


PARAMS = [  # hyperparameter draws in the constrained space, as NUTS would visit them
    {"outputscale": 1.3, "mean": 0.2, "noise": 0.05, "kernel_tausq": 0.4,
     "_kernel_inv_length_sq": jnp.array([2.0, 0.5, 0.01, 0.1])},
    {"outputscale": 8.0, "mean": -0.7, "noise": 1e-3, "kernel_tausq": 3.0,
     "_kernel_inv_length_sq": jnp.array([0.1, 9.0, 0.2, 1.0])},
]


@pytest.mark.parametrize("params", PARAMS)
def test_density_equals_botorchs_and_padding_adds_only_a_constant(params):
    X, y = data(11)
    gp = SaasFullyBayesianSingleTaskGP(X, y, outcome_transform=Standardize(m=1))
    Xn, yn = gp.pyro_model.train_X.numpy(), gp.pyro_model.train_Y.numpy().reshape(-1)
    botorch_density, _ = log_density(gp.pyro_model.sample, (), {}, params)
    ours, _ = log_density(saas_model, (Xn, yn, np.ones(11)), {}, params)
    Xp, yp, real = padded(Xn, yn, bucket=16)
    assert Xp.shape == (16, 4) and real.sum() == 11
    with_padding, _ = log_density(saas_model, (Xp, yp, real), {}, params)
    assert float(ours) == pytest.approx(float(botorch_density), rel=1e-4)
    # Five padded rows, each an independent standard normal observed at 0.
    assert float(with_padding) - float(ours) == pytest.approx(-5 * 0.5 * np.log(2 * np.pi), abs=1e-3)


def test_fit_predicts_held_out_points_and_compiles_once_per_bucket():
    X, y = data(40)
    Xt, yt = data(50, seed=1)
    for n, compiled in ((30, 1), (29, 1), (40, 2)):  # 30 and 29 rows share the 32-row bucket
        gp = fit_saas_nuts(X[:n], y[:n], seed=0, warmup=32, samples=16, thinning=4)
        # Every compilation stays in memory for good (and numpyro's own MCMC.run compiles
        # at every call): one per bucket is what keeps a long search alive.
        assert saas._chains[32, 16]._cache_size() == compiled
        assert gp.num_mcmc_samples == 4
        with torch.no_grad():
            mean = gp.posterior(Xt).mixture_mean
        rmse = float(((mean - yt) ** 2).mean().sqrt())
        assert rmse < 0.3 * float(yt.std())


class _AppendMean(InputTransform):
    """Appends the mean of the coordinates: a feature computed from the inputs, as MOBO's
    exact trainable share is."""

    def __init__(self) -> None:
        super().__init__()
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X):
        return torch.cat([X, X.mean(-1, keepdim=True)], dim=-1)


def test_fit_uses_features_computed_from_the_inputs():
    # The target follows the mean of six coordinates: hard for an axis-aligned kernel from 24
    # points, easy with the mean as an input of its own.
    g = torch.Generator().manual_seed(0)
    X, Xt = torch.rand(24, 6, generator=g, dtype=torch.double), torch.rand(50, 6, generator=g, dtype=torch.double)

    def f(X):
        return torch.sin(12 * X.mean(-1, keepdim=True))

    rmse = {}
    for transform in (None, _AppendMean()):
        gp = fit_saas_nuts(X, f(X), seed=0, warmup=32, samples=16, thinning=4, input_transform=transform)
        assert gp.median_lengthscale.shape[-1] == 6 + (transform is not None)
        with torch.no_grad():
            rmse[transform is None] = float(((gp.posterior(Xt).mixture_mean - f(Xt)) ** 2).mean().sqrt())
    assert rmse[False] < 0.5 * rmse[True]
