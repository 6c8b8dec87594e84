"""Optimizers: multi-objective BO (BoTorch) and Optuna baselines behind one ask/tell face,
and the same MOBO as an Optuna sampler."""

from autopeft.optimizers.base import Optimizer, make_optimizer, optimizer_names, register_optimizer

# Importing the implementations registers them.
from autopeft.optimizers import mobo as _mobo  # noqa: F401,E402
from autopeft.optimizers import optuna_samplers as _optuna_samplers  # noqa: F401,E402
from autopeft.optimizers.mobo import MOBO  # noqa: E402
from autopeft.optimizers.sampler import MOBOSampler  # noqa: E402

__all__ = ["MOBO", "MOBOSampler", "Optimizer", "make_optimizer", "optimizer_names",
           "register_optimizer"]
