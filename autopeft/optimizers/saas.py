"""The SAAS fully Bayesian GP [Eriksson2021], fitted by NUTS with one compiled sampler reused
across fits.

BoTorch's ``fit_fully_bayesian_model_nuts`` runs numpyro's ``MCMC`` on ``SaasPyroModel.sample``,
which reads the training data from the model object. Two costs follow, both measured here:
every fit compiles NUTS again (6-9 s of a 12 s fit at 100 observations, for every objective
at every ask), and the compiled code is never released, so a process that fits a few
hundred models runs out of memory maps ("LLVM compilation error: Cannot allocate memory";
vm.max_map_count is 65530, and each fit added about 600). numpyro's ``jit_model_args`` does
not help: ``MCMC.run`` hands its sampling loop a fresh jit wrapper as a static argument, so
the loop compiles anew on every call.

Here the same prior and likelihood take the data as arguments, numpyro's NUTS kernels run
in one ``lax.scan`` jitted by us, and the data are padded to a multiple of ``_BUCKET`` rows:
one compilation serves every objective and every ask until the data outgrow the bucket. The
draws load into BoTorch's ``SaasFullyBayesianSingleTaskGP`` as BoTorch's own fit loads them.

Padding is exact: a padded row has no covariance with any other row, unit variance and a zero
target, so it adds a constant to the log density and nothing to its gradient.

[Eriksson2021] D. Eriksson, M. Jankowiak. High-Dimensional Bayesian Optimization with Sparse
    Axis-Aligned Subspaces. UAI 2021.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP, SaasPyroModel, matern52_kernel
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import Standardize
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model
from torch import Tensor

_BUCKET = 16  # rows: the padded size grows in these steps, one compilation per step
_MAX_TREE_DEPTH = 6  # BoTorch's default for NUTS

# The prior's sample sites (names and distributions) come from BoTorch's SaasPyroModel, so
# the samples load into its GP unchanged; the instance holds no data.
_PRIOR = SaasPyroModel()
_PRIOR.train_Yvar_jax = None  # noise is inferred

_chains: dict[tuple[int, int], Callable] = {}  # (warmup, samples) -> jitted chain
# numpyro's hmc() kernels keep their settings in closure variables that init_kernel sets
# while JAX traces it: two fits must not trace at once.
_lock = threading.Lock()


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


def _chain(warmup: int, samples: int, example_args: tuple) -> Callable:
    """A jitted ``chain(rng_key, init_params, *model_args) -> constrained draws`` for these
    NUTS settings; JAX compiles it once per padded data shape."""
    key = (warmup, samples)
    if key not in _chains:
        # The potential and postprocess functions take the model arguments (dynamic_args),
        # so these kernels serve any data.
        _, potential_gen, postprocess_gen, _ = initialize_model(
            jax.random.PRNGKey(0), saas_model, model_args=example_args, dynamic_args=True)
        init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

        def chain(rng_key: jax.Array, init_params: Any, *args: jax.Array) -> dict[str, jax.Array]:
            state = init_kernel(init_params, warmup, dense_mass=True, max_tree_depth=_MAX_TREE_DEPTH,
                                model_args=args, rng_key=rng_key)

            def step(state: Any, _: None) -> tuple[Any, Any]:
                state = sample_kernel(state, model_args=args)
                return state, state.z

            _, z = jax.lax.scan(step, state, None, length=warmup + samples)
            z = jax.tree.map(lambda v: v[warmup:], z)
            return jax.vmap(postprocess_gen(*args))(z)

        _chains[key] = jax.jit(chain)
    return _chains[key]


def fit_saas_nuts(X: Tensor, y: Tensor, *, seed: int, warmup: int = 128, samples: int = 64,
                  thinning: int = 4, input_transform: InputTransform | None = None
                  ) -> SaasFullyBayesianSingleTaskGP:
    """A ``SaasFullyBayesianSingleTaskGP`` on ``X`` (``n x d``) and ``y`` (``n x 1``) with
    ``samples / thinning`` NUTS posterior draws (a batch of GPs)."""
    gp = SaasFullyBayesianSingleTaskGP(X, y, outcome_transform=Standardize(m=1), input_transform=input_transform)
    # The pyro model holds the standardised targets that BoTorch's own fit would sample on.
    data = gp.pyro_model
    args = tuple(jnp.asarray(a) for a in padded(data.train_X.detach().cpu().numpy(),
                                                 data.train_Y.detach().cpu().numpy().reshape(-1)))
    init_key, chain_key = jax.random.split(jax.random.PRNGKey(seed % 2**31))
    with _lock:
        init_params, *_ = initialize_model(init_key, saas_model, model_args=args, dynamic_args=True)
        draws = _chain(warmup, samples, args)(chain_key, init_params, *args)
    draws = gp.pyro_model.postprocess_mcmc_samples(mcmc_samples={k: v for k, v in draws.items() if k != "Y"})
    gp.load_mcmc_samples({k: v[::thinning] for k, v in draws.items()})
    gp.eval()
    return gp
