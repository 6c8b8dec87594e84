"""Optimizers: multi-objective BO (BoTorch) and Optuna baselines behind one ask/tell face,
and the same MOBO as an Optuna sampler.

The implementations load on first use (the registry imports them on its first lookup):
checking a search's input needs the interface, not BoTorch.
"""

from __future__ import annotations

from typing import Any

from autopeft.optimizers.base import OPTIMIZERS, Optimizer, make_optimizer, optimizer_names, register_optimizer

__all__ = ["MOBO", "MOBOSampler", "OPTIMIZERS", "Optimizer", "make_optimizer", "optimizer_names",
           "register_optimizer"]


def __getattr__(name: str) -> Any:
    if name == "MOBO":
        from autopeft.optimizers.mobo import MOBO
        return MOBO
    if name == "MOBOSampler":
        from autopeft.optimizers.sampler import MOBOSampler
        return MOBOSampler
    raise AttributeError(f"module 'autopeft.optimizers' has no attribute {name!r}")
