"""autopeft: find the Pareto front of PEFT configurations for a model and a task.

The public names load on first use (PEP 562): ``search`` pulls in torch, Ray, MLflow and
BoTorch, which ``autopeft --help``, an input error or an objective plugin's
``import autopeft`` should not wait for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads them
    from autopeft.config import SearchConfig  # noqa: F401
    from autopeft.errors import AutopeftError  # noqa: F401
    from autopeft.trial.loading import load_adapter  # noqa: F401
    from autopeft.objectives import Objective, TrialOutput, objective  # noqa: F401
    from autopeft.driver.drive import SearchResult, search  # noqa: F401
    from autopeft.driver.evaluation import evaluate  # noqa: F401

_EXPORTS = {
    "AutopeftError": "autopeft.errors",
    "Objective": "autopeft.objectives",
    "SearchConfig": "autopeft.config",
    "SearchResult": "autopeft.driver.drive",
    "TrialOutput": "autopeft.objectives",
    "evaluate": "autopeft.driver.evaluation",
    "load_adapter": "autopeft.trial.loading",
    "objective": "autopeft.objectives",
    "search": "autopeft.driver.drive",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
