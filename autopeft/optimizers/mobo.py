"""Multi-objective Bayesian optimisation with BoTorch over the (mixed, conditional) space.

Each objective gets its own surrogate on the [0, 1] encoding of the configurations (by
default a ``SingleTaskGP`` per objective in a ``ModelListGP``). The next configuration
maximises qLogNEHVI over a finite candidate set: local-search neighbours (up to two steps)
of the current Pareto set plus uniform samples. Choosing among real configurations rather
than rounding a continuous optimum keeps conditions and constraints exact.

[Daulton2021] S. Daulton, M. Balandat, E. Bakshy. Parallel Bayesian Optimization of
    Multiple Noisy Objectives with Expected Hypervolume Improvement. NeurIPS 2021.
[Ament2023] S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy. Unexpected
    Improvements to Expected Improvement for Bayesian Optimization. NeurIPS 2023.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.sampling import manual_seed
from gpytorch.mlls import SumMarginalLogLikelihood
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from autopeft.errors import ConfigError, SpaceError
from autopeft.optimizers.base import Optimizer, register_optimizer
from autopeft.pareto import infer_reference, pareto_mask, to_maximization
from autopeft.space import Config, SearchSpace

_log = logging.getLogger(__name__)

_MAX_DRAWS = 1000  # uniform draws without a new configuration before the space counts as exhausted
_BATCH = 256  # candidates per acquisition call; bounds the memory of the MC evaluation
# L-BFGS iterations per GP fit. Full convergence on noise-free data can take ~1000 (seconds
# at 100 points); after 200 the marginal log likelihood was within 4% of converged.
_FIT_MAXITER = 200

# initial: the random start; model: an acquisition maximiser; random: a later ask the model
# could not serve (fewer than 2 successes, a failed fit, no unseen candidate).
AskSource = Literal["initial", "model", "random"]
SurrogateFit = Callable[[Tensor, Tensor], Model]
_SURROGATES: dict[str, SurrogateFit] = {}


def register_surrogate(name: str) -> Callable[[SurrogateFit], SurrogateFit]:
    """Decorator: make a surrogate fit selectable as ``MOBO(..., surrogate=name)``."""

    def decorate(fit: SurrogateFit) -> SurrogateFit:
        _SURROGATES[name] = fit
        return fit

    return decorate


def surrogate_names() -> list[str]:
    return sorted(_SURROGATES)


@register_surrogate("gp")
def fit_gp(X: Tensor, Y: Tensor) -> Model:
    """Independent GPs, one per objective, with hyperparameters fitted by maximum likelihood.

    Args:
        X: ``n x d`` encoded configurations in [0, 1]^d (double).
        Y: ``n x m`` objective values, larger is better.

    Returns:
        A ``ModelListGP`` with ``m`` outputs (each standardised internally).
    """
    gps = [SingleTaskGP(X, Y[:, i:i + 1], outcome_transform=Standardize(m=1))
           for i in range(Y.shape[-1])]
    model = ModelListGP(*gps)
    fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model),
                     optimizer_kwargs={"options": {"maxiter": _FIT_MAXITER}})
    return model


@register_optimizer("mobo")
class MOBO(Optimizer):
    """qLogNEHVI Bayesian optimisation over a discrete candidate set [Daulton2021, Ament2023].

    Args:
        space: The bound search space.
        directions: ``"maximize"`` or ``"minimize"`` per objective (``m`` of them).
        seed: Seeds the candidate sampling, the surrogate fit and the MC sampler.
        reference_point: Hypervolume reference in the user's directions; ``None`` entries
            (or ``None``) are inferred from the observed front at every ask.
        n_initial: Uniformly random asks before the model takes over. Default
            ``max(2 * (m + 1), min(10, encoded_width // 2))``: enough points to fit ``m`` GPs,
            while leaving most of a 20-50 trial budget to the model.
        n_candidates: Size of the candidate set scored by the acquisition per ask.
        mc_samples: Quasi-MC samples of the acquisition.
        surrogate: A registered surrogate (see :func:`surrogate_names`).
    """

    def __init__(self, space: SearchSpace, directions: Sequence[str], *, seed: int = 0,
                 reference_point: Sequence[float | None] | None = None,
                 n_initial: int | None = None, n_candidates: int = 2000, mc_samples: int = 128,
                 surrogate: str = "gp") -> None:
        super().__init__(space, directions, seed=seed, reference_point=reference_point)
        m = len(self.directions)
        if surrogate not in _SURROGATES:
            raise ConfigError(f"unknown surrogate '{surrogate}'; choose one of {surrogate_names()}",
                              key="surrogate")
        if reference_point is not None and len(reference_point) != m:
            raise ConfigError(f"got a reference point of {len(reference_point)} values, expected "
                              f"{m} (one per objective)", key="reference_point")
        if n_initial is None:
            n_initial = max(2 * (m + 1), min(10, space.encoded_width // 2))
        for name, value, low in (("n_initial", n_initial, 0), ("n_candidates", n_candidates, 1),
                                 ("mc_samples", mc_samples, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"got {value!r}, expected an integer >= {low}", key=name)
        self.surrogate = surrogate
        self.n_initial = n_initial
        self.n_candidates = n_candidates
        self.mc_samples = mc_samples
        self.last_ask_source: AskSource | None = None
        self._rng = np.random.default_rng(seed)
        self._asked: set[tuple] = set()  # pending, told and failed alike: never proposed again
        self._pending: dict[tuple, Config] = {}
        self._observed: list[tuple[Config, np.ndarray]] = []  # successful tells, user directions
        self._n_asks = 0

    def ask(self) -> Config:
        self._n_asks += 1
        config = None
        if len(self._asked) < self.n_initial:  # told-without-ask results count (resumed runs)
            self.last_ask_source = "initial"
        else:
            config = self._model_ask() if len(self._observed) >= 2 else None
            self.last_ask_source = "model" if config is not None else "random"
        if config is None:
            config = self._random_new()
        key = self.space.key(config)
        self._asked.add(key)
        self._pending[key] = config
        return config

    def tell(self, config: Config, values: Sequence[float] | None) -> None:
        config = self.space.canonical(config)
        key = self.space.key(config)
        self._pending.pop(key, None)
        self._asked.add(key)  # also a configuration told without an ask (e.g. from a resumed run)
        if values is None:
            return
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(y) != len(self.directions):
            raise ValueError(f"got {len(y)} objective values, expected {len(self.directions)}")
        if np.isfinite(y).all():  # NaN or inf: a failed trial, kept out of the surrogate
            self._observed.append((config, y))

    def _random_new(self) -> Config:
        for _ in range(_MAX_DRAWS):
            config = self.space.sample(self._rng)
            if self.space.key(config) not in self._asked:
                return config
        raise SpaceError(f"search space exhausted: no new configuration in {_MAX_DRAWS} random "
                         f"draws after {len(self._asked)} were asked")

    def _encode(self, configs: Sequence[Config]) -> Tensor:
        """``len(configs) x d`` double tensor of encoded configurations."""
        return torch.from_numpy(np.stack([self.space.encode(c) for c in configs]))

    def _model_ask(self) -> Config | None:
        """The candidate of highest qLogNEHVI, or ``None`` where the model cannot tell."""
        configs = [c for c, _ in self._observed]
        values = np.stack([v for _, v in self._observed])
        candidates = self._candidates(configs, values)
        if not candidates:
            return None
        ref = infer_reference(values, self.directions, given=self.reference_point)
        X = self._encode(configs)
        Y = torch.from_numpy(to_maximization(values, self.directions))
        X_pending = self._encode(list(self._pending.values())) if self._pending else None
        # A seed per (instance seed, ask number): asks replay exactly for the same tells, and
        # the global torch RNG is restored afterwards.
        seed = int(np.random.SeedSequence([self.seed, self._n_asks]).generate_state(1)[0])
        try:
            with manual_seed(seed):
                model = _SURROGATES[self.surrogate](X, Y)
                acqf = qLogNoisyExpectedHypervolumeImprovement(
                    model=model,
                    ref_point=to_maximization(ref[None, :], self.directions)[0].tolist(),
                    X_baseline=X, X_pending=X_pending, prune_baseline=True,
                    sampler=SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=seed))
                scores = _score(acqf, self._encode(candidates))
        except (ModelFittingError, NotPSDError, NanError) as err:
            _log.warning("surrogate '%s' failed (%s); proposing a random configuration",
                         self.surrogate, err)
            return None
        scores = torch.nan_to_num(scores, nan=-math.inf)
        if not torch.isfinite(scores).any():
            return None
        return candidates[int(scores.argmax())]

    def _candidates(self, configs: list[Config], values: np.ndarray) -> list[Config]:
        """Unseen configurations: up to half of ``n_candidates`` within two local-search steps
        of the Pareto set, the rest uniform samples."""
        seen = set(self._asked)
        out: list[Config] = []

        def add(config: Config) -> None:
            key = self.space.key(config)
            if key not in seen:
                seen.add(key)
                out.append(config)

        local_budget = self.n_candidates // 2
        front = [c for c, keep in zip(configs, pareto_mask(values, self.directions)) if keep]
        ring = [n for c in front for n in self.space.neighbours(c, self._rng)]
        ring = [ring[i] for i in self._rng.permutation(len(ring))]
        for config in ring:  # one step (already seen ones are still stepping stones below)
            if len(out) >= local_budget:
                break
            add(config)
        for config in ring:  # two steps
            if len(out) >= local_budget:
                break
            for neighbour in self.space.neighbours(config, self._rng):
                add(neighbour)
        out = out[:local_budget]
        for _ in range(2 * self.n_candidates):
            if len(out) >= self.n_candidates:
                break
            add(self.space.sample(self._rng))
        return out


def _score(acqf: qLogNoisyExpectedHypervolumeImprovement, X: Tensor) -> Tensor:
    """Acquisition values of ``N x d`` candidates, each as a batch of ``q = 1``: shape ``N``."""
    with torch.no_grad():
        return torch.cat([acqf(chunk.unsqueeze(-2)) for chunk in X.split(_BATCH)])
