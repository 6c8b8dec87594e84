"""The SAAS fully Bayesian GP [Eriksson2021], fitted by NUTS with one compiled sampler reused
across fits.

BoTorch's ``fit_fully_bayesian_model_nuts`` samples ``SaasPyroModel.sample``, which reads the
training data from the model object: JAX sees the data as constants, so every fit traces and
compiles NUTS again (6-9 s of a 12 s fit at 100 observations, paid for every objective at every
ask). Here the same prior and likelihood take the data as arguments (numpyro's
``jit_model_args``) and the data are padded to a multiple of ``_BUCKET`` rows, so one compiled
sampler serves every objective and every ask until the data outgrow the bucket. The samples are
loaded into BoTorch's ``SaasFullyBayesianSingleTaskGP`` as BoTorch's own fit would load them.

Padding is exact: a padded row has no covariance with any other row, unit variance and a zero
target, so it adds a constant to the log density and nothing to its gradient.

[Eriksson2021] D. Eriksson, M. Jankowiak. High-Dimensional Bayesian Optimization with Sparse
    Axis-Aligned Subspaces. UAI 2021.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP, SaasPyroModel, matern52_kernel
from botorch.models.transforms.outcome import Standardize
from numpyro.infer import MCMC, NUTS
from torch import Tensor

_BUCKET = 16  # rows: the padded size grows in these steps, one compilation per step
_MAX_TREE_DEPTH = 6  # BoTorch's default for NUTS

# The prior's sample sites (names and distributions) come from BoTorch's SaasPyroModel, so
# the samples load into its GP unchanged; the instance holds no data.
_PRIOR = SaasPyroModel()
_PRIOR.train_Yvar_jax = None  # noise is inferred

_samplers: dict[tuple[int, int, int], MCMC] = {}
_lock = threading.Lock()  # one MCMC object runs one chain at a time


def saas_model(X: jax.Array, y: jax.Array, real: jax.Array) -> None:
    """SAAS prior and GP likelihood of ``y`` (``N``, standardised) at ``X`` (``N x d``),
    counting only rows where ``real`` is 1; other rows are padding."""
    p = _PRIOR
    outputscale = p.sample_outputscale(concentration=p._outputscale_prior_concentration,
                                       rate=p._outputscale_prior_rate)
    mean = p.sample_mean()
    noise = p.sample_noise()
    lengthscale = p.sample_lengthscale(dim=X.shape[-1])
    K = outputscale * matern52_kernel(X=X, lengthscale=lengthscale) * jnp.outer(real, real)
    K = K + jnp.diag(noise * real + (1.0 - real))
    numpyro.sample("Y", dist.MultivariateNormal(loc=mean * real, covariance_matrix=K), obs=y * real)


def padded(X: np.ndarray, y: np.ndarray, bucket: int = _BUCKET) -> tuple[np.ndarray, ...]:
    """``X`` and ``y`` padded to the next multiple of ``bucket`` rows, and the 0/1 mask of
    the real rows."""
    n, d = X.shape
    size = -(-n // bucket) * bucket
    real = np.zeros(size, dtype=X.dtype)
    real[:n] = 1.0
    return (np.concatenate([X, np.full((size - n, d), 0.5, dtype=X.dtype)]),
            np.concatenate([y, np.zeros(size - n, dtype=y.dtype)]), real)


def _sampler(d: int, warmup: int, samples: int) -> MCMC:
    key = (d, warmup, samples)
    if key not in _samplers:
        _samplers[key] = MCMC(NUTS(saas_model, dense_mass=True, max_tree_depth=_MAX_TREE_DEPTH),
                              num_warmup=warmup, num_samples=samples, progress_bar=False,
                              jit_model_args=True)
    return _samplers[key]


def fit_saas_nuts(X: Tensor, y: Tensor, *, seed: int, warmup: int = 128, samples: int = 64,
                  thinning: int = 4) -> SaasFullyBayesianSingleTaskGP:
    """A ``SaasFullyBayesianSingleTaskGP`` on ``X`` (``n x d``) and ``y`` (``n x 1``) with
    ``samples / thinning`` NUTS posterior draws (a batch of GPs)."""
    gp = SaasFullyBayesianSingleTaskGP(X, y, outcome_transform=Standardize(m=1))
    # The pyro model holds the standardised targets that BoTorch's own fit would sample on.
    data = gp.pyro_model
    Xp, yp, real = padded(data.train_X.detach().cpu().numpy(),
                          data.train_Y.detach().cpu().numpy().reshape(-1))
    with _lock:
        mcmc = _sampler(X.shape[-1], warmup, samples)
        mcmc.run(jax.random.PRNGKey(seed % 2**31), jnp.asarray(Xp), jnp.asarray(yp), jnp.asarray(real))
        draws: dict[str, Any] = mcmc.get_samples()
    draws = gp.pyro_model.postprocess_mcmc_samples(mcmc_samples=dict(draws))
    gp.load_mcmc_samples({k: v[::thinning] for k, v in draws.items()})
    gp.eval()
    return gp
