"""Multi-objective Bayesian optimisation with BoTorch over the (mixed, conditional) space.

Each objective (and each metric under an outcome constraint) gets its own surrogate on the
[0, 1] encoding of the configurations, a plain GP or a SAAS fully Bayesian GP, stacked in a
``ModelListGP``. The next configuration maximises qLogNEHVI [Daulton2021, Ament2023] over real
configurations: half of the scoring budget (``n_candidates``) goes to a candidate set (local
moves up to two steps from the current, feasible Pareto set, and uniform samples), the other
half to an iterated local search from the best of them, as AutoPEFT does [Zhou2024]. Choosing among real
configurations rather than rounding a continuous optimum keeps conditions and constraints
exact and never lands on a configuration already tried; only the continuous (float)
coordinates of the best candidates are then polished by gradient ascent.

Concurrent trials: each ask conditions on the pending configurations (``X_pending``), so a
batch of asks is qLogNEHVI's greedy sequential batch and its members differ.

[Daulton2021] S. Daulton, M. Balandat, E. Bakshy. Parallel Bayesian Optimization of
    Multiple Noisy Objectives with Expected Hypervolume Improvement. NeurIPS 2021.
[Ament2023] S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy. Unexpected
    Improvements to Expected Improvement for Bayesian Optimization. NeurIPS 2023.
[Zhou2024] H. Zhou, X. Wan, I. Vulic, A. Korhonen. AutoPEFT: Automatic Configuration Search
    for Parameter-Efficient Fine-Tuning. TACL 2024.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import (qLogExpectedHypervolumeImprovement,
                                                       qLogNoisyExpectedHypervolumeImprovement)
from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.exceptions.errors import ModelFittingError
from botorch.models import ModelListGP
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.box_decompositions import FastNondominatedPartitioning
from botorch.utils.sampling import manual_seed
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from autopeft.errors import ConfigError
from autopeft.optimizers.base import Optimizer, initial_designs, register_optimizer, sample_unseen
from autopeft.optimizers.candidates import candidate_set, local_search, polish
from autopeft.optimizers.knowledge import extreme
from autopeft.optimizers.known import Analytic, ExactInputs, ExactValues, MixedObjective, learned
from autopeft.optimizers.outcomes import constraint_value, meets_all, parse_constraints
from autopeft.optimizers.surrogates import (CopulaWarp, get_surrogate, hyperparameters, quiet_fit,
                                            register_surrogate, surrogate_names)
from autopeft.pareto import infer_reference, pareto_mask, to_maximization
from autopeft.space import Config, SearchSpace

__all__ = ["MOBO", "register_surrogate", "surrogate_names"]

_log = logging.getLogger(__name__)

_BATCH = 256  # candidates per acquisition call; bounds the memory of the MC evaluation
_MIN_MC_PER_DRAW = 8  # MC samples per posterior draw of a fully Bayesian surrogate
# Candidates that a fully Bayesian surrogate scores with qLogNEHVI after a qLogEHVI screen.
_SCREENED = 200

# initial: the random start; model: an acquisition maximiser; random: a later ask the model
# could not serve (fewer than 2 successes, an objective still constant, a failed fit, no
# unseen candidate).
AskSource = Literal["initial", "model", "random"]


def _allow_fused_kernel(allowed: bool) -> None:
    """Whether BoTorch may JIT-compile its fused qLogEHVI kernel at its next load attempt.
    BoTorch has no public switch: it compiles on the first acquisition it builds unless its
    loader has already run, so a kernel not yet loaded is skipped by marking that it did."""
    global _kernel_skipped
    from botorch.acquisition.multi_objective import logei

    if getattr(logei, "_C", None) is not None or not hasattr(logei, "_load_attempted"):
        return
    if not allowed and not logei._load_attempted:
        logei._load_attempted = _kernel_skipped = True
    elif allowed and _kernel_skipped:  # skipped here before: let BoTorch try after all
        logei._load_attempted = _kernel_skipped = False


_kernel_skipped = False


@register_optimizer("mobo")
class MOBO(Optimizer):
    """qLogNEHVI Bayesian optimisation over a discrete candidate set.

    Args:
        space: The bound search space.
        directions: ``"maximize"`` or ``"minimize"`` per objective (``m`` of them).
        seed: Seeds the candidate sampling, the surrogate fit and the MC sampler.
        reference_point: Hypervolume reference in the user's directions; ``None`` entries
            (or ``None``) are inferred at every ask from the current Pareto front (its nadir
            minus a tenth of its range, BoTorch's ``infer_reference_point``).
        n_initial: Uniformly random asks before the model takes over. Default
            ``max(2 * (m + 1), min(10, encoded_width // 2))``.
        n_candidates: Size of the candidate set scored by the acquisition per ask.
        mc_samples: Quasi-MC samples of the acquisition.
        surrogate: ``"gp"`` (fast, maximum likelihood) or ``"saas"`` (fully Bayesian, NUTS).
        saas_warmup, saas_samples, saas_thinning: NUTS settings of ``"saas"``; the defaults
            (128, 64, 4) are AutoPEFT's, smaller ones trade fidelity for speed.
        copula: Warp each objective by its empirical CDF and the normal quantile before
            fitting (AutoPEFT's choice; robust to skewed, piled-up scores).
        outcome_constraints: Bounds that configurations must meet, e.g.
            ``{"peak_memory_gb": ("<=", 8)}`` or ``[(1, "<=", 0.5)]`` (objective 1 at most
            0.5); a name refers to a metric given to :meth:`tell`. Each constrained metric
            gets a surrogate, and qLogNEHVI weights candidates by their chance to be feasible.
        polish: Refine the float coordinates of the best candidates by gradient ascent.
        analytic: Per objective, a function of a configuration's scope
            (:meth:`SearchSpace.scope`) giving its exact value, or ``None``: an objective that
            has one (the trainable share) is computed for every candidate, never modelled.
        floors: Per objective, the value at or beyond which a trial learned nothing (the
            majority class's accuracy), or ``None``. Such trials are modelled apart: the
            quality model fits the trials that learned, and a model of "learns" (1/0) weighs
            each candidate by its chance to learn, as an outcome constraint would.
        exact_inputs: Give every model the analytic objectives' exact values (the trainable
            share, log-scaled over the space's range) as inputs besides the encoding: whether a
            trial learns depends on its learning rate against its adapter's size, which the
            encoding spreads over rank, modules and layers.
        fused_kernel: Let BoTorch build its fused C++ qLogEHVI kernel on first use: asks
            1.3-1.7x faster at 8 trials (more as the front grows), for a one-off compile of
            about a minute per environment (cached in ``~/.cache/torch_extensions``) that
            lands in the middle of the search and needs a C++ compiler. Worth it for
            searches of many trials; off by default, which is BoTorch's PyTorch code.
    """

    uses_knowledge = True

    def __init__(self, space: SearchSpace, directions: Sequence[str], *, seed: int = 0,
                 reference_point: Sequence[float | None] | None = None,
                 n_initial: int | None = None, n_candidates: int = 2000, mc_samples: int = 128,
                 surrogate: str = "gp", saas_warmup: int = 128, saas_samples: int = 64,
                 saas_thinning: int = 4, copula: bool = False,
                 outcome_constraints: Any = None, polish: bool = True, fused_kernel: bool = False,
                 analytic: Sequence[Analytic | None] | None = None,
                 floors: Sequence[float | None] | None = None, exact_inputs: bool = False) -> None:
        super().__init__(space, directions, seed=seed, reference_point=reference_point)
        m = len(self.directions)
        self._fit = get_surrogate(surrogate)
        if reference_point is not None and len(reference_point) != m:
            raise ConfigError(f"got a reference point of {len(reference_point)} values, expected "
                              f"{m} (one per objective)", key="reference_point")
        if n_initial is None:
            n_initial = max(2 * (m + 1), min(10, space.encoded_width // 2))
        for name, value, low in (("n_initial", n_initial, 0), ("n_candidates", n_candidates, 1),
                                 ("mc_samples", mc_samples, 1), ("saas_warmup", saas_warmup, 1),
                                 ("saas_samples", saas_samples, 1), ("saas_thinning", saas_thinning, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"got {value!r}, expected an integer >= {low}", key=name)
        self.surrogate = surrogate
        self.surrogate_settings = ({"warmup": saas_warmup, "samples": saas_samples,
                                    "thinning": saas_thinning} if surrogate == "saas" else {})
        self.n_initial = n_initial
        self.n_candidates = n_candidates
        self.mc_samples = mc_samples
        self.copula = bool(copula)
        self.polish = bool(polish)
        self.fused_kernel = bool(fused_kernel)
        self.outcome_constraints = parse_constraints(outcome_constraints, m)
        for name, given in (("analytic", analytic), ("floors", floors)):
            if given is not None and len(given) != m:
                raise ConfigError(f"got {len(given)} values, expected {m} (one per objective)", key=name)
        self._exact = ExactValues(space, analytic or [None] * m)
        self.exact_inputs = bool(exact_inputs)
        self._ranges: dict[int, tuple[float, float]] = {}  # analytic objective -> space's range
        #: each modelled output's last fitted hyperparameters, the start of its next fit
        self._hyper: dict[str, dict[str, Tensor]] = {}
        self.floors = list(floors) if floors is not None else [None] * m
        self.last_ask_source: AskSource | None = None
        self._rng = np.random.default_rng(seed)
        self._asked: set[tuple] = set()  # pending, told and failed alike: never proposed again
        self._pending: dict[tuple, Config] = {}
        # Successful tells: (config, objective values in user directions, constrained values).
        self._observed: list[tuple[Config, np.ndarray, np.ndarray]] = []
        # Failed tells (an exception, a NaN loss, out of memory): told to the surrogates at the
        # worst values observed, so that a region that fails is not explored again and again.
        self._failed: list[Config] = []
        self._n_asks = 0
        self._initial: list[Config] | None = None  # the shared initial designs, drawn once

    def ask(self) -> Config:
        self._n_asks += 1
        config = None
        if len(self._asked) < self.n_initial:  # told-without-ask results count (resumed runs)
            self.last_ask_source = "initial"
            config = next((c for c in self._designs() if self.space.key(c) not in self._asked), None)
        else:
            config = self._model_ask() if len(self._observed) >= 2 else None
            self.last_ask_source = "model" if config is not None else "random"
        if config is None:
            config = self._random_new()
        self.add_pending(config)
        return config

    def add_pending(self, config: Config) -> None:
        """Mark ``config`` as being evaluated (asked elsewhere, e.g. an Optuna trial)."""
        key = self.space.key(config)
        self._asked.add(key)
        self._pending[key] = config

    def tell(self, config: Config, values: Sequence[float] | None,
             metrics: Mapping[str, float] | None = None) -> None:
        config = self.space.canonical(config)
        key = self.space.key(config)
        self._pending.pop(key, None)
        self._asked.add(key)  # also a configuration told without an ask (e.g. from a resumed run)
        y = None if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
        if y is not None and len(y) != len(self.directions):
            raise ValueError(f"got {len(y)} objective values, expected {len(self.directions)}")
        if y is None or not np.isfinite(y).all():  # NaN or inf: failed too
            self._failed.append(config)
            return
        c = np.array([constraint_value(oc, y, metrics or {}) for oc in self.outcome_constraints])
        self._observed.append((config, y, c))

    def _designs(self) -> list[Config]:
        if self._initial is None:
            self._initial = initial_designs(self.space, self.seed, self.n_initial, self.warm_configs)
        return self._initial

    def _random_new(self) -> Config:
        return sample_unseen(self.space, self._rng, self._asked)

    def _encode(self, configs: Sequence[Config]) -> Tensor:
        """``len(configs) x d`` double tensor of encoded configurations."""
        return torch.from_numpy(np.stack([self.space.encode(c) for c in configs]))

    def _model_ask(self) -> Config | None:
        """The configuration of highest acquisition value, or ``None`` where the model cannot
        tell configurations apart."""
        configs = [c for c, _, _ in self._observed] + self._failed
        n_ok = len(self._observed)
        values = np.stack([v for _, v, _ in self._observed])
        constrained = np.stack([c for _, _, c in self._observed])
        known = self._exact.known(configs)
        modelled = [j for j in range(len(self.directions)) if j not in known]
        # Trials that learned nothing (at or below a quality floor: the majority class) are
        # told to a "learns" model, not to the quality model, whose cliff they would be.
        learners = learned(values, self.floors, self.directions)
        # A floor splits the trials once two of them learned: then the quality model fits
        # those, and whether a configuration learns at all (failures too) has its own model.
        split = any(f is not None for f in self.floors) and learners.sum() >= 2
        fit_rows = learners if split else np.ones(n_ok, dtype=bool)
        if not modelled or (np.ptp(values[fit_rows][:, modelled], axis=0) == 0).any():
            # A constant objective (every early trial at the majority-class accuracy) carries
            # no ranking; a GP on it only fits noise, slowly. Random asks until it varies.
            return None
        if self._failed:
            # Failed configurations join the data at the worst value of each objective (in
            # the user's directions) and count as infeasible: they teach the surrogates where
            # not to go, and never become front members or set the reference.
            worst = np.where(np.array(self.directions) == "maximize", values.min(axis=0), values.max(axis=0))
            values = np.vstack([values, np.tile(worst, (len(self._failed), 1))])
            constrained = np.vstack([constrained, np.full((len(self._failed), constrained.shape[1]), np.nan)])
            fit_rows = np.concatenate([fit_rows, np.full(len(self._failed), not split)])
            learners = np.concatenate([learners, np.zeros(len(self._failed), dtype=bool)])
        for j in known:  # told values are the measured ones; the exact ones rule
            values[:, j] = [self._exact.of(c)[j] for c in configs]
        # Local search starts from the Pareto set of the feasible trials that learned (all
        # that did not fail, while none is): a front member that breaks a constraint or
        # learned nothing is no place to look nearby.
        failed = np.arange(len(configs)) >= n_ok
        feasible = ~failed & np.array([meets_all(self.outcome_constraints, row) for row in constrained])
        front_rows = next(rows for rows in (feasible & learners, feasible, ~failed) if rows.any())
        pool = np.flatnonzero(front_rows)
        front = [configs[i] for i, keep in zip(pool, pareto_mask(values[pool], self.directions)) if keep]
        # Half the scoring budget on the candidate set, half on a local search from its best.
        candidates = [c for c in candidate_set(self.space, front, self._asked, self.n_candidates // 2, self._rng)
                      if self._exactly_feasible(c)]
        if not candidates:
            return None
        X = self._encode(configs)
        X_pending = self._encode(list(self._pending.values())) if self._pending else None
        # A seed per (instance seed, ask number): asks replay exactly for the same tells, and
        # the global torch RNG is restored afterwards.
        seed = int(np.random.SeedSequence([self.seed, self._n_asks]).generate_state(1)[0])
        data = _Data(X, values, constrained, front_rows, fit_rows, learners, known, split)
        try:
            with manual_seed(seed):
                acqf, screen = self._acquisition(data, X_pending, seed)
                # A fully Bayesian model searches with its cheap screen, then rescores the best.
                candidates, scores = local_search(
                    self.space, lambda cs: _score(screen if screen is not None else acqf, self._encode(cs)), candidates,
                    self._asked, self.n_candidates - len(candidates), self._rng, keep=self._exactly_feasible)
                if screen is not None:
                    keep = torch.nan_to_num(scores, nan=-math.inf).argsort(descending=True)[:_SCREENED]
                    candidates = [candidates[i] for i in keep.tolist()]
                    scores = _score(acqf, self._encode(candidates))
                scores = torch.nan_to_num(scores, nan=-math.inf)
                if not torch.isfinite(scores).any():
                    return None
                if self.polish:
                    return polish(self.space, acqf, candidates, scores, self._asked)
        except (ModelFittingError, NotPSDError, NanError) as err:
            _log.warning("surrogate '%s' failed (%s); proposing a random configuration",
                         self.surrogate, err)
            return None
        return candidates[int(scores.argmax())]

    def _exactly_feasible(self, config: Config) -> bool:
        """Whether ``config`` meets the outcome constraints on analytic objectives, which are
        decided here exactly rather than weighed by a model's probability."""
        exact = self._exact.of(config)
        return all(exact[oc.target] is None or oc.satisfied(exact[oc.target])
                   for oc in self.outcome_constraints if isinstance(oc.target, int))

    def _acquisition(self, data: _Data, X_pending: Tensor | None, seed: int
                     ) -> tuple[AcquisitionFunction, AcquisitionFunction | None]:
        """qLogNEHVI (qLogNEI for one objective) on freshly fitted surrogates of the modelled
        outcomes, and for a fully Bayesian surrogate a cheaper screen (or ``None``).

        qLogNEHVI evaluates each candidate jointly with the baseline points under every
        posterior draw, which for SAAS's 16 draws costs minutes over thousands of candidates;
        qLogEHVI against the observed front looks at the candidate alone, so it screens them.
        """
        _allow_fused_kernel(self.fused_kernel)
        m = len(self.directions)
        signs = to_maximization(np.ones((1, m)), self.directions)[0]
        Y = to_maximization(data.values, self.directions)
        # Unset entries come from the nadir of the (feasible) Pareto front, BoTorch's rule: a
        # reference behind the worst trial ever seen would reward extending the front into
        # regions no one wants (DTLZ2: 0.15-0.85 of the true hypervolume across seeds). The
        # search gives every entry it can (the task's floor, the space's largest cost).
        pool = data.values[data.front_rows]
        front = pool[pareto_mask(pool, self.directions)]
        ref = to_maximization(infer_reference(front, self.directions, given=self.reference_point)[None, :],
                              self.directions)[0]
        warps = [CopulaWarp(Y[data.fit_rows, j]) if self.copula and j not in data.known else None for j in range(m)]
        transforms = [_Transform(signs[j], warps[j]) for j in range(m)]
        ref = np.array([t.warp_only(r) for r, t in zip(ref, transforms)])
        # Model outputs: the modelled objectives (fitted on the trials that learned), then
        # "learns" (1/0, where some trials learned nothing and some did), then constraints.
        columns: list[tuple[str, np.ndarray, np.ndarray]] = []  # (name, targets, rows fitted on)
        column_of: list[int | None] = []
        for j in range(m):
            if j in data.known:
                column_of.append(None)
                continue
            column_of.append(len(columns))
            columns.append((f"objective {j}", transforms[j].warp_only(Y[:, j]), data.fit_rows))
        constraints = []
        if data.split and not data.learners.all():
            constraints.append(_bound(len(columns), 0.5, upper=False))
            columns.append(("learns", data.learners.astype(np.float64), np.ones(len(Y), dtype=bool)))
        for k, oc in enumerate(self.outcome_constraints):
            if isinstance(oc.target, int):  # an objective: its (flipped, warped) model column
                if column_of[oc.target] is None:
                    continue  # analytic: candidates are filtered exactly instead
                j = oc.target
                upper = (oc.op == "<=") == (signs[j] > 0)
                constraints.append(_bound(column_of[j], transforms[j](np.array(oc.bound)).item(), upper))
            else:
                y = data.constrained[:, k]
                if np.isfinite(y).sum() < 2 or np.ptp(y[np.isfinite(y)]) == 0:
                    continue  # nothing to learn yet: the constraint joins once the metric varies
                constraints.append(_bound(len(columns), oc.bound, oc.op == "<="))
                columns.append((f"constraint {k}", y, np.isfinite(y)))
        X = data.X
        inputs = self._exact_inputs(data.known)
        models = []
        for name, y, rows in columns:
            keep = torch.from_numpy(rows & np.isfinite(y))
            if inputs is not None:  # more inputs, more lengthscales: not the same hyperparameters
                name = f"{name} + {len(inputs.objectives)} exact"
            # A plain GP starts from its last fit's hyperparameters (a fully Bayesian one samples anew).
            warm = {"init": self._hyper.get(name)} if self.surrogate == "gp" else {}
            models.append(quiet_fit(self._fit, X[keep], torch.from_numpy(y[rows & np.isfinite(y)]).unsqueeze(-1),
                                    seed=seed, input_transform=inputs, **self.surrogate_settings, **warm))
            if self.surrogate == "gp":
                self._hyper[name] = hyperparameters(models[-1])
        model = ModelListGP(*models)
        # A fully Bayesian model is a batch of GPs (one per posterior draw) and each gets its
        # own MC samples: share the budget among the draws, or scoring costs draws times more.
        draws = max(getattr(m_, "num_mcmc_samples", 1) for m_ in models)
        mc = max(_MIN_MC_PER_DRAW, math.ceil(self.mc_samples / draws))
        sampler = SobolQMCNormalSampler(torch.Size([mc]), seed=seed)
        objective = MixedObjective(self._exact, column_of, transforms)
        baseline = X[torch.from_numpy(data.fit_rows)]
        common = dict(model=model, X_pending=X_pending, sampler=sampler, constraints=constraints or None)
        if m == 1:
            return qLogNoisyExpectedImprovement(objective=GenericMCObjective(_First(objective)), X_baseline=baseline,
                                                prune_baseline=True, **common), None
        mc_objective = GenericMCMultiOutputObjective(objective)
        acqf = qLogNoisyExpectedHypervolumeImprovement(ref_point=ref.tolist(), objective=mc_objective,
                                                       X_baseline=baseline, prune_baseline=True, **common)
        if draws == 1:
            return acqf, None
        front_y = np.stack([transforms[j].warp_only(Y[:, j]) for j in range(m)], axis=-1)[data.front_rows]
        ref_t = torch.from_numpy(ref)
        screen = qLogExpectedHypervolumeImprovement(
            model=model, ref_point=ref_t, objective=mc_objective, X_pending=X_pending,
            partitioning=FastNondominatedPartitioning(ref_point=ref_t, Y=torch.from_numpy(front_y)),
            sampler=SobolQMCNormalSampler(torch.Size([mc]), seed=seed), constraints=constraints or None)
        return acqf, screen

    def _exact_inputs(self, known: Sequence[int]) -> ExactInputs | None:
        """The input transform that appends the analytic objectives known for every trial,
        or ``None`` (the option is off, or nothing is analytic)."""
        if not self.exact_inputs or not known:
            return None
        for j in known:
            if j not in self._ranges:
                f = self._exact.analytic[j]
                lo, hi = extreme(self.space, f, largest=False), extreme(self.space, f, largest=True)
                self._ranges[j] = (lo, hi) if lo is not None and hi is not None and hi > lo else (0.0, 1.0)
        return ExactInputs(self._exact, known, [self._ranges[j] for j in known])


@dataclass
class _Data:
    """What an ask fits on: ``X`` (``n x d`` encoded trials, failed ones last), their ``values``
    (user directions; analytic objectives exact) and ``constrained`` metrics, the rows the
    front comes from, the rows the objective models fit on, the rows that learned, the
    analytic objectives, and whether the trials that learned nothing are modelled apart."""

    X: Tensor
    values: np.ndarray
    constrained: np.ndarray
    front_rows: np.ndarray
    fit_rows: np.ndarray
    learners: np.ndarray
    known: list[int]
    #: whether the trials that learned nothing are modelled apart (a "learns" model)
    split: bool = False


class _Transform:
    """An objective's map from user-direction values to the model's scale: the sign that
    makes it maximised, then the copula warp (fitted on maximised values) if any."""

    def __init__(self, sign: float, warp: CopulaWarp | None) -> None:
        self.sign, self.warp = sign, warp

    def warp_only(self, maximised: np.ndarray) -> np.ndarray:
        return self.warp(maximised) if self.warp is not None else np.asarray(maximised, dtype=np.float64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return self.warp_only(self.sign * np.asarray(values, dtype=np.float64))


class _bound:
    """``Z[..., i] - bound`` (an upper bound) or ``bound - Z[..., i]``: BoTorch's constraint
    callables are feasible where <= 0. A class rather than a closure so that it pickles."""

    def __init__(self, i: int, bound: float, upper: bool) -> None:
        self.i, self.bound, self.upper = i, bound, upper

    def __call__(self, Z: Tensor) -> Tensor:
        return Z[..., self.i] - self.bound if self.upper else self.bound - Z[..., self.i]


class _First:
    """One objective's MC objective from a multi-output one."""

    def __init__(self, objective: MixedObjective) -> None:
        self.objective = objective

    def __call__(self, Z: Tensor, X: Tensor | None = None) -> Tensor:
        return self.objective(Z, X)[..., 0]


def _score(acqf: AcquisitionFunction, X: Tensor) -> Tensor:
    """Acquisition values of ``N x d`` candidates, each as a batch of ``q = 1``: shape ``N``."""
    with torch.no_grad():
        return torch.cat([acqf(chunk.unsqueeze(-2)) for chunk in X.split(_BATCH)])
